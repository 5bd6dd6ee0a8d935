//! Team chat rooms: WeCom group robots, DingTalk custom robots (signed), Feishu/Lark custom bots
//! (signed) and Slack incoming webhooks. A room is a row of `chat_rooms`, for one site or for
//! every site; its alarms are posted with a link to the alarm in the dashboard, never with a
//! person's acknowledgement link (anyone in the room could use it). WeCom, DingTalk and Feishu
//! answer errors with HTTP 200, so success is read from the answer's code.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use utoipa::ToSchema;

use super::providers::{Outgoing, SendError, variable};

/// Which robot a room is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// 企业微信 group robot: `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`.
    Wecom,
    /// 钉钉 custom robot, signed (加签): `https://oapi.dingtalk.com/robot/send?access_token=…`.
    Dingtalk,
    /// 飞书/Lark custom bot, signed (签名校验): `https://open.feishu.cn/open-apis/bot/v2/hook/…`.
    Feishu,
    /// Slack incoming webhook: `https://hooks.slack.com/services/…`.
    Slack,
}

impl ChatKind {
    /// Its name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            ChatKind::Wecom => "wecom",
            ChatKind::Dingtalk => "dingtalk",
            ChatKind::Feishu => "feishu",
            ChatKind::Slack => "slack",
        }
    }

    /// The kind of a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        [ChatKind::Wecom, ChatKind::Dingtalk, ChatKind::Feishu, ChatKind::Slack].into_iter().find(|k| k.name() == name)
    }

    /// The hosts its webhooks live on; a room's URL must be on one (or on a host the paging
    /// configuration's `chat_hosts` adds), so a room cannot make the server post elsewhere.
    pub fn hosts(self) -> &'static [&'static str] {
        match self {
            ChatKind::Wecom => &["qyapi.weixin.qq.com"],
            ChatKind::Dingtalk => &["oapi.dingtalk.com"],
            ChatKind::Feishu => &["open.feishu.cn", "open.larksuite.com"],
            ChatKind::Slack => &["hooks.slack.com"],
        }
    }
}

/// DingTalk's signature: base64 HMAC-SHA256 keyed by the secret over `<ms>\n<secret>`.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Feishu's signature: base64 HMAC-SHA256 keyed by `<seconds>\n<secret>` over nothing (not
/// DingTalk's recipe).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let mac =
        Hmac::<Sha256>::new_from_slice(format!("{timestamp_s}\n{secret}").as_bytes()).expect("HMAC takes any key");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The post's title and lines, in the room's language.
pub fn words_of(message: &Outgoing) -> (String, Vec<String>) {
    let p = &message.params;
    let text = |k: &str| variable(p, k, 200);
    let zh = message.language == "zh";
    match p["kind"].as_str() {
        Some("test") => (
            if zh { "Chillcloud 测试消息".into() } else { "Chillcloud test message".into() },
            vec![if zh { "这个群会收到报警。".into() } else { "Alarms will be posted to this room.".into() }],
        ),
        Some("digest") => (
            if zh {
                format!("Chillcloud {} 条报警", text("count"))
            } else {
                format!("Chillcloud: {} alarms", text("count"))
            },
            vec![text("fault")],
        ),
        _ => (
            if zh {
                format!("{}级报警 · {}", text("grade"), text("unit"))
            } else {
                format!("Grade {} alarm · {}", text("grade"), text("unit"))
            },
            vec![text("fault"), text("value")],
        ),
    }
}

/// Where the post links to: the alarm in the dashboard (the alarm list for a digest).
fn link(message: &Outgoing, public_url: &str) -> String {
    match message.params["alarm"].as_i64() {
        Some(alarm) if message.params["kind"].as_str() == Some("alarm") => format!("{public_url}/#/alarm/{alarm}"),
        _ => format!("{public_url}/#/alarms"),
    }
}

/// The request body for a room of `kind` (without DingTalk's query signature).
pub fn body(kind: ChatKind, message: &Outgoing, public_url: &str, secret: &str, now_s: i64) -> Value {
    let (title, lines) = words_of(message);
    let link = link(message, public_url);
    let open = if message.language == "zh" { "查看报警" } else { "Open the alarm" };
    match kind {
        ChatKind::Wecom => {
            let mut content = format!("**{title}**\n");
            for line in &lines {
                content.push_str(&format!("> {line}\n"));
            }
            content.push_str(&format!("[{open}]({link})"));
            json!({"msgtype": "markdown", "markdown": {"content": content}})
        }
        ChatKind::Dingtalk => {
            let mut text = format!("### {title}\n\n");
            for line in &lines {
                text.push_str(&format!("> {line}\n\n"));
            }
            text.push_str(&format!("[{open}]({link})"));
            json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
        }
        ChatKind::Feishu => {
            let mut content: Vec<Value> = lines.iter().map(|line| json!([{"tag": "text", "text": line}])).collect();
            content.push(json!([{"tag": "a", "text": open, "href": link}]));
            let language = if message.language == "zh" { "zh_cn" } else { "en_us" };
            let mut body = json!({
                "msg_type": "post",
                "content": {"post": {language: {"title": title, "content": content}}},
            });
            if !secret.is_empty() {
                body["timestamp"] = Value::String(now_s.to_string());
                body["sign"] = Value::String(feishu_sign(secret, now_s));
            }
            body
        }
        ChatKind::Slack => {
            let escape = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            let mut text = format!("*{}*", escape(&title));
            for line in &lines {
                text.push_str(&format!("\n{}", escape(line)));
            }
            text.push_str(&format!("\n<{link}|{open}>"));
            json!({
                "text": format!("{title}: {}", lines.join("; ")),
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            })
        }
    }
}

/// Posts a message to a room; returns a reference for the outbox.
pub async fn send(
    client: &reqwest::Client,
    kind: ChatKind,
    url: &str,
    secret: &str,
    public_url: &str,
    message: &Outgoing,
) -> Result<String, SendError> {
    let now = chrono::Utc::now();
    let body = body(kind, message, public_url, secret, now.timestamp());
    let mut request = client.post(url).header("Content-Type", "application/json").body(body.to_string());
    if kind == ChatKind::Dingtalk && !secret.is_empty() {
        let timestamp = now.timestamp_millis();
        request = request.query(&[("timestamp", timestamp.to_string()), ("sign", dingtalk_sign(secret, timestamp))]);
    }
    let response = request.send().await.map_err(super::providers::request_error)?;
    let status = response.status();
    let retry_after = response.headers().get("Retry-After").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.map_err(|_| SendError::Timeout)?;
    let reference = format!("{}-{}", kind.name(), message.idempotency_key);
    match kind {
        ChatKind::Slack if status.is_success() && text.trim() == "ok" => Ok(reference),
        ChatKind::Slack => Err(SendError::Failed(match retry_after {
            Some(after) => format!("{status} {text} (retry after {after} s)"),
            None => format!("{status} {text}"),
        })),
        _ => {
            let answer: Value = serde_json::from_str(&text)
                .map_err(|_| SendError::Failed(format!("{status}: not the robot's JSON answer")))?;
            // WeCom and DingTalk: `errcode`; Feishu: `code` (its `StatusCode` is legacy).
            let code = answer.get("errcode").or_else(|| answer.get("code")).and_then(Value::as_i64);
            match code {
                Some(0) if status.is_success() => Ok(reference),
                _ => Err(SendError::Failed(format!(
                    "{status}: {} {}",
                    code.map_or("?".into(), |c| c.to_string()),
                    answer.get("errmsg").or_else(|| answer.get("msg")).and_then(Value::as_str).unwrap_or_default()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_documented_recipes() {
        // Recomputed from each provider's documented recipe (docs/research/paging-channels.md):
        // the same inputs give different signatures, so mixing the two up is caught.
        assert_eq!(dingtalk_sign("SECxxx", 1599360473), "ICZBczHOSiUT7rfTALaFxWUy6Nv9LueTZWTtB3teRcg=");
        assert_eq!(feishu_sign("SECxxx", 1599360473), "LwreZZxjbsFzPj2ewRYSLSOrW7Tb5faNB4UZoY/PPtg=");
    }

    #[test]
    fn a_post_links_to_the_alarm_and_carries_no_personal_link() {
        let message = Outgoing {
            id: 1,
            idempotency_key: "k".into(),
            language: "zh".into(),
            address: "chat:1".into(),
            body: String::new(),
            params: json!({"kind": "alarm", "alarm": 42, "grade": "1", "unit": "2号机", "fault": "高压",
                           "value": "1.9 MPa", "token": "secret-token", "link": "https://x/a/secret-token"}),
        };
        for kind in [ChatKind::Wecom, ChatKind::Dingtalk, ChatKind::Feishu, ChatKind::Slack] {
            let text = body(kind, &message, "https://x", "s", 0).to_string();
            assert!(text.contains("https://x/#/alarm/42"), "{kind:?}: {text}");
            assert!(!text.contains("secret-token"), "{kind:?}: {text}");
        }
    }
}
