//! Web Push: the request body and the `Authorization` header for a push message.
//!
//! The message is sent per RFC 8030; its body is encrypted per RFC 8291 (content encoding
//! `aes128gcm` of RFC 8188, as one record), and the server identifies itself with VAPID
//! (RFC 8292: an ES256 JWT plus its public key). Pure RustCrypto, no OpenSSL.

use std::fmt;

use aes_gcm::{
    Aes128Gcm, KeyInit,
    aead::{Aead, Nonce},
};
use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use hkdf::Hkdf;
use p256::{
    FieldBytes, PublicKey, SecretKey,
    ecdsa::{Signature, SigningKey, signature::Signer},
    elliptic_curve::sec1::ToSec1Point,
};
use sha2::Sha256;

/// Why a push message cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum WebPushError {
    /// A key (the subscription's `p256dh`, or a private key) is malformed or not on P-256.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The subscription's `auth` secret is malformed or not 16 bytes.
    #[error("invalid auth secret: {0}")]
    InvalidAuth(String),
    /// The plaintext does not fit one 4096-byte push message.
    #[error("message of {len} bytes is longer than the {MAX_PLAINTEXT} bytes a push message holds")]
    TooLong {
        /// Length of the rejected plaintext.
        len: usize,
    },
    /// The endpoint is not an http(s) URL with a host.
    #[error("bad push endpoint: {0}")]
    BadEndpoint(String),
    /// The VAPID subject is not a `mailto:` or `https:` URI.
    #[error("bad VAPID subject {0:?}: it must be a mailto: or https: URI")]
    BadSubject(String),
}

/// Largest plaintext that fits one 4096-byte push message (4096 − 86 header − 16 tag − 1 delimiter).
pub const MAX_PLAINTEXT: usize = 3993;

/// Record size written in the header: the whole message is one record of at most this size.
const RECORD_SIZE: u32 = 4096;
/// An uncompressed SEC1 P-256 point: 0x04 || X || Y.
const PUBLIC_KEY_LEN: usize = 65;
const AUTH_LEN: usize = 16;
const SALT_LEN: usize = 16;
/// RFC 8188 delimiter of the last (here: only) record; 0x01 would make browsers drop it.
const LAST_RECORD: u8 = 0x02;
/// RFC 8292 allows at most 24 h; 12 h leaves room for clock skew on either side.
const VAPID_LIFETIME_S: i64 = 12 * 3600;
/// The JOSE header of every VAPID token.
const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"ES256"}"#;

/// base64url without padding on output; on input padding is optional, as browsers vary.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The server's VAPID key pair (ES256 / P-256).
#[derive(Clone)]
pub struct VapidKey {
    signing_key: SigningKey,
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret scalar stays out of logs; the public key identifies the pair.
        f.debug_struct("VapidKey").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        Self { signing_key: SigningKey::from(random_secret_key()) }
    }

    /// The key pair of a 32-byte private scalar (big-endian), as stored by [`Self::to_bytes`].
    pub fn from_bytes(secret: &[u8]) -> Result<Self, WebPushError> {
        let scalar: &[u8; 32] = secret
            .try_into()
            .map_err(|_| WebPushError::InvalidKey(format!("VAPID private key is {} bytes, not 32", secret.len())))?;
        let signing_key = SigningKey::from_bytes(&FieldBytes::from(*scalar))
            .map_err(|_| WebPushError::InvalidKey("VAPID private key is not a valid P-256 scalar".into()))?;
        Ok(Self { signing_key })
    }

    /// The 32-byte private scalar (big-endian).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.signing_key.to_bytes().into()
    }

    /// base64url (no padding) of the 65-byte uncompressed public key: the browser's
    /// `applicationServerKey` and the `k=` of the header.
    pub fn public_key(&self) -> String {
        let point = self.signing_key.verifying_key().to_sec1_point(false);
        BASE64URL.encode(point.as_bytes())
    }

    /// The `Authorization` header value for a push to `endpoint` at `now_unix` (seconds):
    /// `vapid t=<JWT>, k=<public key>`. The token's `aud` is the endpoint's origin, `exp` is
    /// 12 h after `now_unix`, and `sub` is `subject` (a `mailto:` or `https:` URI).
    pub fn authorization(&self, endpoint: &str, subject: &str, now_unix: i64) -> Result<String, WebPushError> {
        let audience = origin(endpoint)?;
        let lower_subject = subject.to_ascii_lowercase();
        let subject_ok = ["mailto:", "https:"]
            .iter()
            .any(|scheme| lower_subject.len() > scheme.len() && lower_subject.starts_with(scheme));
        if !subject_ok {
            return Err(WebPushError::BadSubject(subject.to_owned()));
        }
        let claims = serde_json::json!({
            "aud": audience,
            "exp": now_unix.saturating_add(VAPID_LIFETIME_S),
            "sub": subject,
        });
        let signing_input = format!("{}.{}", BASE64URL.encode(JWT_HEADER), BASE64URL.encode(claims.to_string()));
        // JWS ES256 wants the fixed 64-byte r || s, not DER.
        let signature: Signature = self.signing_key.sign(signing_input.as_bytes());
        let jwt = format!("{signing_input}.{}", BASE64URL.encode(signature.to_bytes()));
        Ok(format!("vapid t={jwt}, k={}", self.public_key()))
    }
}

/// Encrypts `plaintext` for a subscription (its `keys.p256dh` and `keys.auth`, base64url with or
/// without padding, as browsers give them), with a fresh sender key pair and salt: the whole
/// request body.
pub fn encrypt(p256dh: &str, auth: &str, plaintext: &[u8]) -> Result<Vec<u8>, WebPushError> {
    let ua_public =
        decode_base64(p256dh).map_err(|e| WebPushError::InvalidKey(format!("p256dh is not base64url: {e}")))?;
    let auth = decode_base64(auth).map_err(|e| WebPushError::InvalidAuth(format!("auth is not base64url: {e}")))?;
    let as_private: [u8; 32] = random_secret_key().to_bytes().into();
    let salt: [u8; SALT_LEN] = rand::random();
    encrypt_with(&ua_public, &auth, plaintext, &as_private, &salt)
}

/// The same with the sender's private key and salt given (the RFC 8291 test vector), record
/// size 4096.
pub fn encrypt_with(
    ua_public: &[u8],
    auth: &[u8],
    plaintext: &[u8],
    as_private: &[u8; 32],
    salt: &[u8; 16],
) -> Result<Vec<u8>, WebPushError> {
    let ua_key = parse_ua_public(ua_public)?;
    let auth: &[u8; AUTH_LEN] = auth
        .try_into()
        .map_err(|_| WebPushError::InvalidAuth(format!("auth is {} bytes, not {AUTH_LEN}", auth.len())))?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(WebPushError::TooLong { len: plaintext.len() });
    }
    let as_secret = SecretKey::from_bytes(&FieldBytes::from(*as_private))
        .map_err(|_| WebPushError::InvalidKey("sender private key is not a valid P-256 scalar".into()))?;
    let as_public = as_secret.public_key().to_sec1_point(false);
    let as_public = as_public.as_bytes();

    let ecdh = as_secret.diffie_hellman(&ua_key);
    let (cek, nonce) = derive_key_and_nonce(ecdh.raw_secret_bytes().as_slice(), auth, ua_public, as_public, salt);

    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    let ciphertext = Aes128Gcm::new(&cek.into())
        .encrypt(&Nonce::<Aes128Gcm>::from(nonce), record.as_slice())
        .expect("AES-GCM only fails beyond 64 GiB and the record is under 4 KiB");

    // RFC 8188 header: salt || rs || idlen || keyid (the sender's public key).
    let mut body = Vec::with_capacity(SALT_LEN + 4 + 1 + PUBLIC_KEY_LEN + ciphertext.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

/// The origin (scheme://host[:port]) of an endpoint URL, the VAPID `aud`.
///
/// Scheme and host are lowercased and a default port (80 for http, 443 for https) is dropped,
/// as in the web's serialization of an origin.
pub fn origin(endpoint: &str) -> Result<String, WebPushError> {
    let bad = |why: &str| WebPushError::BadEndpoint(format!("{why}: {endpoint:?}"));
    let (scheme, rest) = endpoint.trim().split_once("://").ok_or_else(|| bad("not an absolute URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(bad("scheme is not http or https")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials are not part of an origin.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("host contains whitespace"));
    }
    // An IPv6 literal keeps its brackets and may contain colons.
    let (host, port) = if host_port.starts_with('[') {
        let end = host_port.find(']').ok_or_else(|| bad("unclosed IPv6 literal"))?;
        let (host, after) = host_port.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad("junk after IPv6 literal"))?)),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    let host = host.to_ascii_lowercase();
    let port = match port {
        None | Some("") => None,
        Some(port) => {
            let number: u16 = port.parse().map_err(|_| bad("port is not a number"))?;
            (number != default_port).then_some(number)
        }
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Decodes base64url with or without padding; standard-alphabet input (`+`, `/`), which some
/// client code produces with `btoa`, is accepted too.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let url_safe: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    BASE64URL.decode(url_safe)
}

/// The subscription's public key: 65 bytes, uncompressed, on P-256.
fn parse_ua_public(ua_public: &[u8]) -> Result<PublicKey, WebPushError> {
    if ua_public.len() != PUBLIC_KEY_LEN || ua_public[0] != 0x04 {
        return Err(WebPushError::InvalidKey(format!(
            "p256dh must be a 65-byte uncompressed point (0x04 …), got {} bytes",
            ua_public.len()
        )));
    }
    PublicKey::from_sec1_bytes(ua_public).map_err(|_| WebPushError::InvalidKey("p256dh is not a point on P-256".into()))
}

/// RFC 8291 §3.4 and RFC 8188 §2.2: the content-encryption key and nonce of the only record.
fn derive_key_and_nonce(
    ecdh_secret: &[u8],
    auth: &[u8; AUTH_LEN],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8; SALT_LEN],
) -> ([u8; 16], [u8; 12]) {
    const EXPAND_OK: &str = "HKDF-SHA256 expands up to 8160 bytes; these outputs are at most 32";

    // The receiver's key comes first in key_info.
    let mut key_info = Vec::with_capacity(14 + 2 * PUBLIC_KEY_LEN);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh_secret).expand(&key_info, &mut ikm).expect(EXPAND_OK);

    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).expect(EXPAND_OK);
    // Only one record, so the sequence number XORed into the nonce is zero.
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce).expect(EXPAND_OK);
    (cek, nonce)
}

/// A uniformly random P-256 private key, drawn through `rand` 0.9 (p256's own `random` wants a
/// newer `rand_core`).
fn random_secret_key() -> SecretKey {
    loop {
        // Fails only for zero or a value ≥ the group order: probability about 2^-32.
        if let Ok(key) = SecretKey::from_bytes(&FieldBytes::from(rand::random::<[u8; 32]>())) {
            return key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::{VerifyingKey, signature::Verifier};

    // RFC 8291 Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const AS_PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const NONCE: &str = "4h_95klXJ5E_qnoN";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn b64(text: &str) -> Vec<u8> {
        decode_base64(text).expect("test constants are valid base64url")
    }

    fn array<const N: usize>(text: &str) -> [u8; N] {
        b64(text).try_into().expect("test constant has the expected length")
    }

    /// What a push service's client does: the receiver's side of RFC 8291.
    fn decrypt(body: &[u8], ua_private: &SecretKey, auth: &[u8; AUTH_LEN]) -> Vec<u8> {
        let salt: [u8; SALT_LEN] = body[..16].try_into().expect("16-byte salt");
        let record_size = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes"));
        assert_eq!(record_size, RECORD_SIZE);
        let id_len = usize::from(body[20]);
        assert_eq!(id_len, PUBLIC_KEY_LEN);
        let as_public = &body[21..21 + id_len];
        let ciphertext = &body[21 + id_len..];
        assert!(ciphertext.len() <= RECORD_SIZE as usize);

        let as_key = PublicKey::from_sec1_bytes(as_public).expect("sender key on the curve");
        let ecdh = ua_private.diffie_hellman(&as_key);
        let ua_public = ua_private.public_key().to_sec1_point(false);
        let (cek, nonce) =
            derive_key_and_nonce(ecdh.raw_secret_bytes().as_slice(), auth, ua_public.as_bytes(), as_public, &salt);
        let mut record =
            Aes128Gcm::new(&cek.into()).decrypt(&Nonce::<Aes128Gcm>::from(nonce), ciphertext).expect("tag verifies");
        while record.last() == Some(&0) {
            record.pop();
        }
        assert_eq!(record.pop(), Some(LAST_RECORD), "last-record delimiter");
        record
    }

    #[test]
    fn rfc8291_appendix_a_vector() {
        let body = encrypt_with(&b64(UA_PUBLIC), &b64(AUTH), PLAINTEXT.as_bytes(), &array(AS_PRIVATE), &array(SALT))
            .expect("vector encrypts");
        assert_eq!(body.len(), 144);
        assert_eq!(BASE64URL.encode(&body), BODY);
    }

    #[test]
    fn rfc8291_appendix_a_intermediates() {
        let as_secret = SecretKey::from_slice(&b64(AS_PRIVATE)).expect("vector key");
        assert_eq!(BASE64URL.encode(as_secret.public_key().to_sec1_point(false).as_bytes()), AS_PUBLIC);
        let ua_key = parse_ua_public(&b64(UA_PUBLIC)).expect("vector key");
        let ecdh = as_secret.diffie_hellman(&ua_key);
        assert_eq!(BASE64URL.encode(ecdh.raw_secret_bytes()), ECDH_SECRET);
        let (cek, nonce) = derive_key_and_nonce(
            ecdh.raw_secret_bytes().as_slice(),
            &array(AUTH),
            &b64(UA_PUBLIC),
            &b64(AS_PUBLIC),
            &array(SALT),
        );
        assert_eq!(BASE64URL.encode(cek), CEK);
        assert_eq!(BASE64URL.encode(nonce), NONCE);

        // And the receiver side opens the vector's body.
        let ua_private = SecretKey::from_slice(&b64(UA_PRIVATE)).expect("vector key");
        assert_eq!(decrypt(&b64(BODY), &ua_private, &array(AUTH)), PLAINTEXT.as_bytes());
    }

    #[test]
    fn round_trip_with_fresh_keys_and_salt() {
        let ua_private = random_secret_key();
        let ua_public = ua_private.public_key().to_sec1_point(false);
        let auth: [u8; AUTH_LEN] = rand::random();
        // Browsers hand out unpadded base64url; padded input must work as well.
        let p256dh = BASE64URL.encode(ua_public.as_bytes());
        let auth_padded = base64::engine::general_purpose::URL_SAFE.encode(auth);
        assert!(auth_padded.ends_with("=="));

        let message = br#"{"title":"Chiller 3 high discharge pressure","ack":"https://x/a/1"}"#;
        let first = encrypt(&p256dh, &auth_padded, message).expect("encrypts");
        let second = encrypt(&p256dh, &BASE64URL.encode(auth), message).expect("encrypts");
        assert_eq!(decrypt(&first, &ua_private, &auth), message);
        assert_eq!(decrypt(&second, &ua_private, &auth), message);
        assert_ne!(first[..16], second[..16], "salt is fresh per message");
        assert_ne!(first[21..86], second[21..86], "sender key is fresh per message");

        let largest = vec![b'x'; MAX_PLAINTEXT];
        let body = encrypt(&p256dh, &BASE64URL.encode(auth), &largest).expect("fits");
        assert_eq!(body.len(), 4096);
        assert_eq!(decrypt(&body, &ua_private, &auth), largest);
    }

    #[test]
    fn vapid_authorization_header() {
        let key = VapidKey::generate();
        let restored = VapidKey::from_bytes(&key.to_bytes()).expect("round trip");
        assert_eq!(restored.public_key(), key.public_key());
        assert!(!format!("{key:?}").contains(&BASE64URL.encode(key.to_bytes())));

        let now = 1_800_000_000;
        let subject = "mailto:ops@example.com";
        for (endpoint, audience) in [
            ("http://127.0.0.1:4567/push/abc", "http://127.0.0.1:4567"),
            ("https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91b", "https://fcm.googleapis.com"),
        ] {
            let header = key.authorization(endpoint, subject, now).expect("header is made");
            let rest = header.strip_prefix("vapid t=").expect("vapid scheme");
            let (jwt, k) = rest.split_once(", k=").expect("t and k parameters");
            assert_eq!(k, key.public_key());

            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3);
            let jose: serde_json::Value = serde_json::from_slice(&b64(parts[0])).expect("header JSON");
            assert_eq!(jose, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
            let claims: serde_json::Value = serde_json::from_slice(&b64(parts[1])).expect("claims JSON");
            assert_eq!(claims["aud"], audience);
            assert_eq!(claims["sub"], subject);
            let exp = claims["exp"].as_i64().expect("numeric exp");
            assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}");

            let verifying_key = VerifyingKey::from_sec1_bytes(&b64(k)).expect("k is a P-256 key");
            let signature_bytes = b64(parts[2]);
            assert_eq!(signature_bytes.len(), 64, "raw r || s");
            let signature = Signature::from_slice(&signature_bytes).expect("signature parses");
            let signing_input = format!("{}.{}", parts[0], parts[1]);
            verifying_key.verify(signing_input.as_bytes(), &signature).expect("signature verifies");
        }

        assert!(matches!(
            key.authorization("https://push.example/x", "ops@example.com", now),
            Err(WebPushError::BadSubject(_))
        ));
        assert!(matches!(key.authorization("ftp://push.example/x", subject, now), Err(WebPushError::BadEndpoint(_))));
    }

    #[test]
    fn origins() {
        let cases = [
            ("https://Push.Example.com/a/b?c#d", "https://push.example.com"),
            ("https://push.example.com:443/x", "https://push.example.com"),
            ("https://push.example.com:8443", "https://push.example.com:8443"),
            ("http://localhost:80/x", "http://localhost"),
            ("http://user:pw@host:81/x", "http://host:81"),
            ("http://[::1]:4567/push", "http://[::1]:4567"),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(origin(endpoint).expect(endpoint), expected);
        }
        for endpoint in [
            "push.example.com/x",
            "mailto:a@b",
            "https:///x",
            "https://host:port/x",
            "https://host:70000/",
            "http://[::1/x",
        ] {
            assert!(matches!(origin(endpoint), Err(WebPushError::BadEndpoint(_))), "{endpoint}");
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let ua_public = b64(UA_PUBLIC);
        let auth = b64(AUTH);
        let as_private = array(AS_PRIVATE);
        let salt = array(SALT);

        // p256dh: wrong length, compressed form, off the curve.
        let short = encrypt_with(&ua_public[..64], &auth, b"x", &as_private, &salt);
        assert!(matches!(short, Err(WebPushError::InvalidKey(_))));
        let mut compressed = ua_public[..33].to_vec();
        compressed[0] = 0x02;
        let compressed = encrypt_with(&compressed, &auth, b"x", &as_private, &salt);
        assert!(matches!(compressed, Err(WebPushError::InvalidKey(_))));
        let mut off_curve = ua_public.clone();
        off_curve[64] ^= 1;
        let off_curve = encrypt_with(&off_curve, &auth, b"x", &as_private, &salt);
        assert!(matches!(off_curve, Err(WebPushError::InvalidKey(_))));
        assert!(matches!(encrypt("not base64!", AUTH, b"x"), Err(WebPushError::InvalidKey(_))));

        // auth: not 16 bytes.
        let auth_15 = encrypt_with(&ua_public, &auth[..15], b"x", &as_private, &salt);
        assert!(matches!(auth_15, Err(WebPushError::InvalidAuth(_))));
        assert!(matches!(encrypt(UA_PUBLIC, "AAAA", b"x"), Err(WebPushError::InvalidAuth(_))));

        // plaintext: one byte over the limit.
        let too_long = vec![0u8; MAX_PLAINTEXT + 1];
        assert!(matches!(
            encrypt(UA_PUBLIC, AUTH, &too_long),
            Err(WebPushError::TooLong { len }) if len == MAX_PLAINTEXT + 1
        ));

        assert!(matches!(VapidKey::from_bytes(&[1u8; 31]), Err(WebPushError::InvalidKey(_))));
        assert!(matches!(VapidKey::from_bytes(&[0u8; 32]), Err(WebPushError::InvalidKey(_))));
    }
}
