//! Secrets and what is done with them, one way each: random tokens, how tokens are stored
//! (a digest), keyed MACs, comparison in constant time, and text made safe for HTML.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// `BYTES` random bytes, in hex: sessions, API tokens, invitations and share links take 32, the
/// server's generated secrets and MQTT passwords 24, command and device ids 16.
pub fn random_hex<const BYTES: usize>() -> String {
    hex::encode(rand::random::<[u8; BYTES]>())
}

/// 256 random bits, in hex: the secret of a session, a token, an invitation or a share link.
pub fn random_secret() -> String {
    random_hex::<32>()
}

/// SHA-256 of a secret: sessions, tokens, invitations and share links are stored as this, so a
/// copy of the database does not hold anything that lets its reader in.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// HMAC-SHA-256 of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Text made safe to put in HTML, in element content and in quoted attributes.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_of_their_length() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(random_hex::<16>().len(), 32);
    }

    #[test]
    fn comparison_and_escaping() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(escape_html(r#"<a href="x">&</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
