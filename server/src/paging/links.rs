//! Signed links: acknowledge an alarm, or score a closed ticket, from a phone without signing
//! in. A link names one subject (the alarm or the ticket), one person and one purpose, and
//! expires; it is an HMAC-SHA256 over those, keyed by the server's secret, so nothing is stored
//! and nothing else can be done with it. The token is at most 35 characters (numbers in base 36,
//! 80 bits of MAC), so it fits one template variable of Aliyun SMS, whose registered template
//! holds the rest of the URL: providers refuse URLs inside variables.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

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

fn mac(secret: &[u8], payload: &str) -> [u8; 32] {
    crate::secrets::hmac_sha256(secret, &[payload.as_bytes()])
}

/// Bytes of MAC kept: 80 bits are far beyond guessing online and keep the token short.
const MAC_BYTES: usize = 10;

/// Makes the token of a link: `<subject>-<person>-<expiry>-<mac>`, numbers in base 36. No dots:
/// providers take a dotted word for a domain, and refuse domains in variables.
pub fn sign(secret: &[u8], purpose: Purpose, grant: &Grant) -> String {
    let payload = format!("{}.{}.{}.{}", purpose.tag(), grant.subject, grant.person_id, grant.expires);
    let tag = URL_SAFE_NO_PAD.encode(&mac(secret, &payload)[..MAC_BYTES]);
    format!("{}-{}-{}-{tag}", base36(grant.subject), base36(grant.person_id), base36(grant.expires))
}

/// Checks a token for `purpose` at `now` (unix seconds).
pub fn verify(secret: &[u8], purpose: Purpose, token: &str, now: i64) -> Result<Grant, LinkError> {
    // The MAC's alphabet has `-` too: it is the rest after the third.
    let parts: Vec<&str> = token.splitn(4, '-').collect();
    let [subject, person_id, expires, tag] = parts[..] else { return Err(LinkError::Invalid) };
    let number = |p: &str| i64::from_str_radix(p, 36).ok().filter(|n| *n >= 0 && base36(*n) == p);
    let (Some(subject), Some(person_id), Some(expires)) = (number(subject), number(person_id), number(expires)) else {
        return Err(LinkError::Invalid);
    };
    let grant = Grant { subject, person_id, expires };
    let given = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkError::Invalid)?;
    let payload = format!("{}.{}.{}.{}", purpose.tag(), grant.subject, grant.person_id, grant.expires);
    if !crate::secrets::constant_time_eq(&given, &mac(secret, &payload)[..MAC_BYTES]) {
        return Err(LinkError::Invalid);
    }
    if now > grant.expires {
        return Err(LinkError::Expired);
    }
    Ok(grant)
}

/// Lowercase base 36, the one spelling `verify` accepts.
fn base36(mut n: i64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
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
        let forged = token.replacen("16-", "17-", 1);
        assert_ne!(forged, token);
        assert_eq!(verify(b"secret", Purpose::Acknowledge, &forged, 999), Err(LinkError::Invalid));
        // The same numbers spelt otherwise are refused, so one grant has one token.
        let padded = format!("0{token}");
        assert_eq!(verify(b"secret", Purpose::Acknowledge, &padded, 999), Err(LinkError::Invalid));
        assert_eq!(verify(b"secret", Purpose::Acknowledge, "1-2-3", 0), Err(LinkError::Invalid));
        assert_eq!(verify(b"secret", Purpose::Acknowledge, "-1-2-3-x", 0), Err(LinkError::Invalid));
    }

    #[test]
    fn a_token_fits_one_aliyun_template_variable_for_years_of_alarms() {
        let grant = Grant { subject: 2_000_000_000, person_id: 1_000_000, expires: 4_102_444_800 };
        let token = sign(b"secret", Purpose::Feedback, &grant);
        assert!(token.len() <= 35, "{token} is {} characters", token.len());
        assert_eq!(verify(b"secret", Purpose::Feedback, &token, 0), Ok(grant));
    }
}
