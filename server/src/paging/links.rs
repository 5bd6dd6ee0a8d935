//! Signed links: acknowledge an alarm, or score a closed ticket, from a phone without signing
//! in. A link names one subject (the alarm or the ticket), one person and one purpose, and
//! expires; it is an HMAC-SHA256 over those, keyed by the server's secret, so nothing is stored
//! and nothing else can be done with it.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Acknowledge the alarm.
    Acknowledge,
    /// Score the closed ticket.
    Feedback,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Acknowledge => "ack",
            Purpose::Feedback => "feedback",
        }
    }
}

/// A verified link's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The alarm (acknowledge) or the ticket (feedback).
    pub subject: i64,
    /// Who the link was sent to.
    pub person_id: i64,
    /// Unix seconds after which it is refused.
    pub expires: i64,
}

/// Why a link is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a link this server made, or altered.
    #[error("this link is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("this link has expired")]
    Expired,
}

fn mac(secret: &[u8], payload: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(payload.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Makes the token of a link.
pub fn sign(secret: &[u8], purpose: Purpose, grant: &Grant) -> String {
    let payload = format!("{}.{}.{}.{}", purpose.tag(), grant.subject, grant.person_id, grant.expires);
    // 16 bytes of MAC keep the link short enough for an SMS and are far beyond guessing.
    let tag = URL_SAFE_NO_PAD.encode(&mac(secret, &payload)[..16]);
    format!("{}.{}.{}.{tag}", grant.subject, grant.person_id, grant.expires)
}

/// Checks a token for `purpose` at `now` (unix seconds).
pub fn verify(secret: &[u8], purpose: Purpose, token: &str, now: i64) -> Result<Grant, LinkError> {
    let mut parts = token.split('.');
    let mut number = || parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or(LinkError::Invalid);
    let grant = Grant { subject: number()?, person_id: number()?, expires: number()? };
    let tag = token.rsplit('.').next().ok_or(LinkError::Invalid)?;
    let given = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkError::Invalid)?;
    let payload = format!("{}.{}.{}.{}", purpose.tag(), grant.subject, grant.person_id, grant.expires);
    let expected = &mac(secret, &payload)[..16];
    let same = crate::api::constant_time_eq(&given, expected);
    if !same || token.split('.').count() != 4 {
        return Err(LinkError::Invalid);
    }
    if now > grant.expires {
        return Err(LinkError::Expired);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_for_its_alarm_until_it_expires_and_not_altered() {
        let grant = Grant { subject: 42, person_id: 7, expires: 1_000 };
        let token = sign(b"secret", Purpose::Acknowledge, &grant);
        assert_eq!(verify(b"secret", Purpose::Acknowledge, &token, 999), Ok(grant));
        assert_eq!(verify(b"secret", Purpose::Acknowledge, &token, 1_001), Err(LinkError::Expired));
        assert_eq!(verify(b"other", Purpose::Acknowledge, &token, 999), Err(LinkError::Invalid));
        let forged = token.replacen("42.", "43.", 1);
        assert_eq!(verify(b"secret", Purpose::Acknowledge, &forged, 999), Err(LinkError::Invalid));
        assert_eq!(verify(b"secret", Purpose::Acknowledge, "1.2.3", 0), Err(LinkError::Invalid));
    }
}
