//! Web Push to the dashboards people installed (RFC 8030), encrypted for each browser (RFC
//! 8291) and signed with the server's VAPID key (RFC 8292, [`super::webpush`]). The
//! notification's action acknowledges through the message's signed link. A person's message
//! goes to each of their subscribed browsers (at most 10); one that the push service says is
//! gone (404, 410) is forgotten. Push services live on a few known hosts: a subscription
//! elsewhere is refused, so a browser cannot make the server post to any address it likes.

use serde_json::{Value, json};
use sqlx::PgPool;
use tracing::{debug, info};

use super::{
    providers::{Outgoing, SendError, request_error, variable},
    webpush::{self, VapidKey},
};

/// The hosts of the browsers' push services (Chrome, Firefox, Safari, Edge), each with its
/// subdomains.
pub const PUSH_HOSTS: &[&str] =
    &["fcm.googleapis.com", "push.services.mozilla.com", "push.apple.com", "notify.windows.com"];

/// Subscriptions a person may have.
pub const MAX_SUBSCRIPTIONS: i64 = 10;

/// Whether an endpoint is on a push service: https on a known host or a subdomain of one, or
/// a host the configuration adds (`push_hosts`, which may be plain http: a local push service).
pub fn endpoint_allowed(endpoint: &str, extra_hosts: &[String]) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else { return false };
    let Some(host) = url.host_str() else { return false };
    let known = |h: &str| host == h || host.ends_with(&format!(".{h}"));
    if extra_hosts.iter().any(|h| known(h)) {
        return matches!(url.scheme(), "https" | "http");
    }
    url.scheme() == "https" && PUSH_HOSTS.iter().any(|h| known(h))
}

/// What the service worker shows (server/ui/sw.js): title, text, the alarm's page and the
/// acknowledgement link of its action.
pub fn payload(message: &Outgoing) -> Value {
    let p = &message.params;
    let text = |k: &str| variable(p, k, 120);
    let zh = message.language == "zh";
    let kind = p["kind"].as_str().unwrap_or("alarm");
    let token = p["token"].as_str().filter(|t| !t.is_empty() && kind != "test");
    let grade: i64 = p["grade"].as_str().and_then(|g| g.parse().ok()).unwrap_or(4);
    let title = match kind {
        "test" => if zh { "Chillcloud 测试推送" } else { "Chillcloud test notification" }.to_owned(),
        "digest" => {
            if zh {
                format!("Chillcloud {} 条报警", text("count"))
            } else {
                format!("Chillcloud: {} alarms", text("count"))
            }
        }
        _ if zh => format!("{}级报警 · {}", text("grade"), text("unit")),
        _ => format!("Grade {} alarm · {}", text("grade"), text("unit")),
    };
    let body = match kind {
        "test" => if zh { "推送已开通。" } else { "Push notifications work on this device." }.to_owned(),
        "digest" => text("fault"),
        _ => format!("{} {}", text("fault"), text("value")),
    };
    let url = match p["alarm"].as_i64() {
        Some(alarm) if kind == "alarm" => format!("/#/alarm/{alarm}"),
        _ => "/#/alarms".into(),
    };
    json!({
        "title": title,
        "body": body,
        "tag": match p["alarm"].as_i64() { Some(alarm) if kind == "alarm" => format!("alarm-{alarm}"), _ => format!("{kind}-{}", message.id) },
        "url": url,
        "ack": token.map(|t| format!("/a/{t}?via=push")),
        "ack_label": if zh { "确认" } else { "Acknowledge" },
        "grade": grade,
        "renotify": true,
    })
}

/// A subscription as stored.
#[derive(Debug, sqlx::FromRow)]
struct Subscription {
    id: i64,
    endpoint: String,
    p256dh: String,
    auth: String,
}

/// Pushes a message to every browser of `person_id`; returns the push service's reference for
/// the first that took it. No browser left: [`SendError::Unreachable`], so the message goes on
/// to the next channel.
pub async fn send(
    pool: &PgPool,
    vapid: &VapidKey,
    subject: &str,
    client: &reqwest::Client,
    person_id: i64,
    message: &Outgoing,
) -> Result<String, SendError> {
    let subscriptions: Vec<Subscription> = sqlx::query_as(
        "select id, endpoint, p256dh, auth from push_subscriptions where person_id = $1 order by id limit $2",
    )
    .bind(person_id)
    .bind(MAX_SUBSCRIPTIONS)
    .fetch_all(pool)
    .await
    .map_err(|e| SendError::Failed(e.to_string()))?;
    if subscriptions.is_empty() {
        return Err(SendError::Unreachable("no browser subscribed to push".into()));
    }
    let plaintext = payload(message).to_string();
    let grade = message.params["grade"].as_str().and_then(|g| g.parse::<u8>().ok()).unwrap_or(4);
    let mut first = None;
    let mut errors = Vec::new();
    let mut gone = 0;
    for subscription in &subscriptions {
        let sent = async {
            let body = webpush::encrypt(&subscription.p256dh, &subscription.auth, plaintext.as_bytes())
                .map_err(|e| SendError::Failed(e.to_string()))?;
            let authorization = vapid
                .authorization(&subscription.endpoint, subject, chrono::Utc::now().timestamp())
                .map_err(|e| SendError::Failed(e.to_string()))?;
            let response = client
                .post(&subscription.endpoint)
                .header("Authorization", authorization)
                .header("Content-Encoding", "aes128gcm")
                .header("Content-Type", "application/octet-stream")
                // Kept a day for a phone that is off; a later page of the same alarm replaces it.
                .header("TTL", "86400")
                .header("Urgency", if grade <= 2 { "high" } else { "normal" })
                .header("Topic", topic(message))
                .body(body)
                .send()
                .await
                .map_err(request_error)?;
            Ok::<_, SendError>((response.status(), response.headers().get("Location").cloned()))
        };
        match sent.await {
            Ok((status, location)) if status.is_success() => {
                let reference = location.and_then(|l| l.to_str().ok().map(str::to_owned)).unwrap_or_default();
                first.get_or_insert(reference);
                let _ = sqlx::query("update push_subscriptions set last_sent_at = now() where id = $1")
                    .bind(subscription.id)
                    .execute(pool)
                    .await;
            }
            Ok((status, _)) if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE => {
                info!(subscription = subscription.id, %status, "a browser's push subscription is gone; forgotten");
                let _ = sqlx::query("delete from push_subscriptions where id = $1")
                    .bind(subscription.id)
                    .execute(pool)
                    .await;
                gone += 1;
            }
            Ok((status, _)) => errors.push(format!("push service answered {status}")),
            Err(error) => errors.push(error.to_string()),
        }
    }
    match first {
        Some(reference) => Ok(reference),
        None if gone == subscriptions.len() => Err(SendError::Unreachable("every push subscription is gone".into())),
        None => {
            debug!(person_id, ?errors, "push not taken");
            Err(SendError::Failed(errors.join("; ")))
        }
    }
}

/// The message's `Topic`: a later push of the same alarm replaces one still waiting (at most
/// 32 characters of the base64url alphabet).
fn topic(message: &Outgoing) -> String {
    match message.params["alarm"].as_i64() {
        Some(alarm) => format!("alarm-{alarm}"),
        None => format!("message-{}", message.id),
    }
}

/// The server's VAPID key, derived from its link secret: every server sharing that secret
/// (a cluster) signs with the same key, and nothing more is stored.
pub fn vapid_key(link_secret: &[u8]) -> VapidKey {
    (0u32..)
        .find_map(|round| {
            let seed = crate::secrets::hmac_sha256(link_secret, &[b"vapid", &round.to_be_bytes()]);
            VapidKey::from_bytes(&seed).ok()
        })
        .expect("a valid P-256 scalar within a few rounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_push_services_are_posted_to() {
        assert!(endpoint_allowed("https://fcm.googleapis.com/fcm/send/abc", &[]));
        assert!(endpoint_allowed("https://updates.push.services.mozilla.com/wpush/v2/x", &[]));
        assert!(endpoint_allowed("https://web.push.apple.com/Q", &[]));
        assert!(!endpoint_allowed("http://fcm.googleapis.com/fcm/send/abc", &[]), "https only");
        assert!(!endpoint_allowed("https://evilfcm.googleapis.com.example/x", &[]));
        assert!(!endpoint_allowed("https://169.254.169.254/latest", &[]));
        assert!(!endpoint_allowed("http://127.0.0.1:8080/push/1", &[]));
        assert!(endpoint_allowed("http://127.0.0.1:8080/push/1", &["127.0.0.1".into()]));
    }

    #[test]
    fn the_vapid_key_is_the_same_for_the_same_secret() {
        assert_eq!(vapid_key(b"one").public_key(), vapid_key(b"one").public_key());
        assert_ne!(vapid_key(b"one").public_key(), vapid_key(b"two").public_key());
    }
}
