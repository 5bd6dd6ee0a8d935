//! Message providers, reached through their real HTTP APIs: Aliyun SMS (`SendSms`, RPC
//! signature v1), Tencent Cloud SMS (API 3.0, TC3-HMAC-SHA256), Twilio (Messages API), a
//! generic webhook signed with HMAC-SHA256, and the console (log and outbox only, the demo
//! default); voice calls through Aliyun's voice service (`SingleCallByTts`), Tencent's voice
//! message service (`SendTtsVoice`) and Twilio's Calls API with TwiML; team chat rooms
//! ([`super::chat`]). Secrets are read from files and never logged.

use std::path::PathBuf;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::info;

/// A provider as configured (`[[providers]]` in the paging file).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// Aliyun SMS.
    Aliyun {
        /// API endpoint, `https://dysmsapi.aliyuncs.com`.
        endpoint: String,
        /// AccessKey id.
        access_key_id: String,
        /// File holding the AccessKey secret.
        access_key_secret_file: PathBuf,
        /// Registered signature (签名).
        sign_name: String,
        /// Template codes by message kind; see [`Kind::variables`] for each one's variables.
        templates: Templates,
        /// Longest variable value Aliyun takes (35 for notification templates).
        #[serde(default = "default_aliyun_param_chars")]
        param_max_chars: usize,
        /// Region, `cn-hangzhou` by default.
        #[serde(default = "default_aliyun_region")]
        region: String,
        /// File holding the secret part of the reply (SmsUp) push URL,
        /// `<public-url>/hooks/aliyun/<secret>`: Aliyun does not sign its pushes.
        reply_token_file: Option<PathBuf>,
    },
    /// Tencent Cloud SMS.
    Tencent {
        /// API endpoint, `https://sms.tencentcloudapi.com`.
        endpoint: String,
        /// SecretId.
        secret_id: String,
        /// File holding the SecretKey.
        secret_key_file: PathBuf,
        /// SMS application id.
        sdk_app_id: String,
        /// Registered signature.
        sign_name: String,
        /// Template ids by message kind; each template's `{1}`, `{2}`… are the kind's variables
        /// in [`Kind::variables`] order, without `token` (Tencent takes no link in a variable).
        templates: Templates,
        /// Longest variable value Tencent takes: 12 characters for accounts verified as a person
        /// (Tencent's review standards; enterprise accounts have no limit).
        #[serde(default = "default_tencent_param_chars")]
        param_max_chars: usize,
        /// Region, `ap-guangzhou` by default.
        #[serde(default = "default_tencent_region")]
        region: String,
        /// File holding the secret part of the reply callback URL,
        /// `<public-url>/hooks/tencent/<secret>`: Tencent does not sign its callbacks.
        reply_token_file: Option<PathBuf>,
    },
    /// Twilio.
    Twilio {
        /// API endpoint, `https://api.twilio.com`.
        endpoint: String,
        /// Account SID.
        account_sid: String,
        /// File holding the auth token (also checks inbound webhooks' signatures).
        auth_token_file: PathBuf,
        /// Sending number, E.164.
        from: String,
    },
    /// A generic HTTPS webhook, signed.
    Webhook {
        /// The URL messages are POSTed to.
        url: String,
        /// File holding the HMAC secret.
        secret_file: PathBuf,
    },
    /// Aliyun voice notification calls (语音服务, `SingleCallByTts`): a registered text-to-speech
    /// template per language speaks the alarm. Keypresses come in its call reports, pushed to
    /// `<public-url>/hooks/aliyun-voice/<report token>`.
    AliyunVoice {
        /// API endpoint, `https://dyvmsapi.aliyuncs.com`.
        endpoint: String,
        /// AccessKey id.
        access_key_id: String,
        /// File holding the AccessKey secret.
        access_key_secret_file: PathBuf,
        /// TTS template codes (`TTS_…`) by language; variables `grade`, `unit`, `fault`, `value`.
        templates: Spoken,
        /// The number calls show (专属模式); none: Aliyun's shared pool.
        called_show_number: Option<String>,
        /// Region, `cn-hangzhou` by default.
        #[serde(default = "default_aliyun_region")]
        region: String,
        /// File holding the secret part of the call report URL (Aliyun does not sign reports).
        report_token_file: Option<PathBuf>,
    },
    /// Tencent Cloud voice message calls (VMS API 3.0, `SendTtsVoice`). Keypresses come in its
    /// callbacks, to `<public-url>/hooks/tencent-voice/<report token>`.
    TencentVoice {
        /// API endpoint, `https://vms.tencentcloudapi.com`.
        endpoint: String,
        /// SecretId.
        secret_id: String,
        /// File holding the SecretKey.
        secret_key_file: PathBuf,
        /// Voice application id (`VoiceSdkAppid`).
        voice_sdk_app_id: String,
        /// Template ids by language; `{1}`…`{4}` are grade, unit, fault and value.
        templates: Spoken,
        /// Region, `ap-guangzhou` by default.
        #[serde(default = "default_tencent_region")]
        region: String,
        /// File holding the secret part of the callback URL (Tencent does not sign callbacks).
        report_token_file: Option<PathBuf>,
    },
    /// Twilio calls (Calls API with TwiML): the call says the alarm and `<Gather>`s one key,
    /// which Twilio posts, signed, to `<public-url>/hooks/twilio-voice/<link token>`.
    TwilioVoice {
        /// API endpoint, `https://api.twilio.com`.
        endpoint: String,
        /// Account SID.
        account_sid: String,
        /// File holding the auth token.
        auth_token_file: PathBuf,
        /// Calling number, E.164.
        from: String,
    },
    /// Logs the message; it stays visible in the outbox.
    Console,
    /// Web Push to a person's browsers ([`super::push`]; not listed in `[[providers]]`).
    #[serde(skip)]
    Push,
    /// A team chat room's robot, from the `chat_rooms` table (not listed in `[[providers]]`).
    #[serde(skip)]
    Chat {
        /// Which robot.
        kind: super::chat::ChatKind,
        /// Its webhook URL (it holds the robot's key).
        url: String,
    },
    /// E-mail through the `[email]` SMTP server (not listed in `[[providers]]`: mail is its own
    /// channel).
    #[serde(skip)]
    Mail,
}

/// A voice template per language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spoken {
    /// Chinese.
    pub zh: String,
    /// English.
    pub en: String,
}

impl Spoken {
    fn get(&self, language: &str) -> &str {
        if language == "zh" { &self.zh } else { &self.en }
    }
}

/// The registered template of each message kind (Aliyun template codes, Tencent template ids).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// One alarm.
    pub alarm: String,
    /// Several alarms for one person, folded into one message.
    pub digest: String,
    /// A ticket's clock breached, to the site's managers.
    pub breach: String,
    /// A closed ticket's satisfaction question, to the owner.
    pub feedback: String,
    /// A service alarm (the server itself cannot work), to the service team. Optional: without
    /// it, such messages go to the next provider.
    #[serde(default)]
    pub service: Option<String>,
    /// A signed remote-doctor report, to the owner. Optional like `service`.
    #[serde(default)]
    pub report: Option<String>,
}

impl Templates {
    fn get(&self, kind: Kind) -> Result<&str, SendError> {
        match kind {
            Kind::Alarm | Kind::Test => Ok(&self.alarm),
            Kind::Digest => Ok(&self.digest),
            Kind::Breach => Ok(&self.breach),
            Kind::Feedback => Ok(&self.feedback),
            Kind::Service => {
                self.service.as_deref().ok_or_else(|| SendError::Failed("no template for service alarms".into()))
            }
            Kind::Report => self.report.as_deref().ok_or_else(|| SendError::Failed("no template for reports".into())),
        }
    }
}

/// What a message is about, which picks its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One alarm.
    Alarm,
    /// Several alarms.
    Digest,
    /// A breached ticket clock.
    Breach,
    /// A satisfaction question.
    Feedback,
    /// A service alarm: the server cannot do its work.
    Service,
    /// A signed remote-doctor report, for its owner.
    Report,
    /// "Send me a test": an alarm's template with the words of a test.
    Test,
}

impl Kind {
    /// The kind's name, as stored in the message's `params.kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Alarm => "alarm",
            Kind::Digest => "digest",
            Kind::Breach => "breach",
            Kind::Feedback => "feedback",
            Kind::Service => "service",
            Kind::Report => "report",
            Kind::Test => "test",
        }
    }

    fn from_params(params: &Value) -> Self {
        match params["kind"].as_str() {
            Some("digest") => Kind::Digest,
            Some("breach") => Kind::Breach,
            Some("feedback") => Kind::Feedback,
            Some("service") => Kind::Service,
            Some("report") => Kind::Report,
            Some("test") => Kind::Test,
            _ => Kind::Alarm,
        }
    }

    /// The variables of the kind's template, in order. `token` is a signed link's token: the
    /// template holds the URL around it (`<public-url>/a/${token}` for alarms and digests,
    /// `<public-url>/f/${token}` for feedback), since providers refuse URLs in variables.
    /// `code` is what a reply quotes.
    ///
    /// | kind | variables |
    /// |---|---|
    /// | alarm | grade, unit, fault, value, code, token |
    /// | digest | count, grade, fault, code, token |
    /// | breach | ticket, grade, fault, clock |
    /// | feedback | ticket, code, token |
    /// | service | fault, since |
    /// | report | unit, period, report (the template holds `<public-url>/#/report/${report}`) |
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["fault", "since"],
            Kind::Alarm | Kind::Test => &["grade", "unit", "fault", "value", "code", "token"],
            Kind::Digest => &["count", "grade", "fault", "code", "token"],
            Kind::Breach => &["ticket", "grade", "fault", "clock"],
            Kind::Feedback => &["ticket", "code", "token"],
            Kind::Report => &["unit", "period", "report"],
        }
    }
}

fn default_aliyun_param_chars() -> usize {
    35
}

fn default_tencent_param_chars() -> usize {
    12
}

fn default_aliyun_region() -> String {
    "cn-hangzhou".into()
}

fn default_tencent_region() -> String {
    "ap-guangzhou".into()
}

/// A provider ready to send: its configuration with the secret loaded.
#[derive(Clone)]
pub struct Provider {
    config: ProviderConfig,
    secret: String,
    /// The secret of the reply push URL (Aliyun, Tencent), or of the call report URL.
    reply_token: Option<String>,
    /// The server's base URL, for the URLs a provider calls back.
    public_url: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("kind", &self.name()).finish_non_exhaustive()
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer in time: the message may or may not have gone out.
    #[error("timed out")]
    Timeout,
    /// The provider refused or could not be reached: the message did not go out.
    #[error("{0}")]
    Failed(String),
    /// The channel cannot reach this person at all (no browser subscribed to push, every
    /// subscription gone): the message moves on to the next channel at once.
    #[error("{0}")]
    Unreachable(String),
}

/// What is sent: the rendered text and the template parameters, keyed for idempotency.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The outbox message's id (Aliyun voice echoes it, as `OutId`, in call reports).
    pub id: i64,
    /// Unique per message; providers that honour a key get it.
    pub idempotency_key: String,
    /// `en` or `zh`.
    pub language: String,
    /// Phone number (E.164) or, for webhooks, the person's id.
    pub address: String,
    /// The whole text, for providers that take text.
    pub body: String,
    /// Template parameters: `kind` and its [`Kind::variables`], and `link`, the whole URL.
    pub params: Value,
}

impl Provider {
    /// Loads the provider's secret file; `public_url` is the server's base URL.
    pub fn load(config: ProviderConfig, public_url: &str) -> std::io::Result<Self> {
        let file = match &config {
            ProviderConfig::Aliyun { access_key_secret_file: f, .. }
            | ProviderConfig::Tencent { secret_key_file: f, .. }
            | ProviderConfig::Twilio { auth_token_file: f, .. }
            | ProviderConfig::Webhook { secret_file: f, .. }
            | ProviderConfig::AliyunVoice { access_key_secret_file: f, .. }
            | ProviderConfig::TencentVoice { secret_key_file: f, .. }
            | ProviderConfig::TwilioVoice { auth_token_file: f, .. } => Some(f),
            ProviderConfig::Console | ProviderConfig::Mail | ProviderConfig::Push | ProviderConfig::Chat { .. } => None,
        };
        let secret = match file {
            Some(file) => std::fs::read_to_string(file)?.trim().to_owned(),
            None => String::new(),
        };
        let reply_token = match &config {
            ProviderConfig::Aliyun { reply_token_file: Some(f), .. }
            | ProviderConfig::Tencent { reply_token_file: Some(f), .. }
            | ProviderConfig::AliyunVoice { report_token_file: Some(f), .. }
            | ProviderConfig::TencentVoice { report_token_file: Some(f), .. } => {
                let token = std::fs::read_to_string(f)?.trim().to_owned();
                if token.len() < 16 {
                    return Err(std::io::Error::other("a reply token needs at least 16 characters"));
                }
                Some(token)
            }
            _ => None,
        };
        Ok(Self { config, secret, reply_token, public_url: public_url.trim_end_matches('/').to_owned() })
    }

    /// The reply (or call report) URL's secret, for a provider of kind `kind` (`aliyun`,
    /// `tencent`, `aliyun_voice`, `tencent_voice`).
    pub fn reply_token(&self, kind: &str) -> Option<&str> {
        (self.name() == kind).then_some(self.reply_token.as_deref()).flatten()
    }

    /// The console provider.
    pub fn console() -> Self {
        Self::bare(ProviderConfig::Console)
    }

    /// The e-mail channel, sent by [`super::email::Email`].
    pub fn mail() -> Self {
        Self::bare(ProviderConfig::Mail)
    }

    /// The Web Push channel, sent by [`super::push`].
    pub fn push() -> Self {
        Self::bare(ProviderConfig::Push)
    }

    /// Whether this is the Web Push channel.
    pub fn is_push(&self) -> bool {
        matches!(self.config, ProviderConfig::Push)
    }

    /// A chat room's robot, with its signing secret (DingTalk, Feishu), if it has one.
    pub fn chat(kind: super::chat::ChatKind, url: String, secret: Option<String>, public_url: &str) -> Self {
        Self {
            config: ProviderConfig::Chat { kind, url },
            secret: secret.unwrap_or_default(),
            reply_token: None,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    fn bare(config: ProviderConfig) -> Self {
        Self { config, secret: String::new(), reply_token: None, public_url: String::new() }
    }

    /// Whether this is the e-mail channel.
    pub fn is_mail(&self) -> bool {
        matches!(self.config, ProviderConfig::Mail)
    }

    /// The provider's kind, for logs and the outbox.
    pub fn name(&self) -> &'static str {
        match self.config {
            ProviderConfig::Aliyun { .. } => "aliyun",
            ProviderConfig::Tencent { .. } => "tencent",
            ProviderConfig::Twilio { .. } => "twilio",
            ProviderConfig::Webhook { .. } => "webhook",
            ProviderConfig::AliyunVoice { .. } => "aliyun_voice",
            ProviderConfig::TencentVoice { .. } => "tencent_voice",
            ProviderConfig::TwilioVoice { .. } => "twilio_voice",
            ProviderConfig::Console => "console",
            ProviderConfig::Mail => "smtp",
            ProviderConfig::Push => "webpush",
            ProviderConfig::Chat { kind, .. } => kind.name(),
        }
    }

    /// The outbox channel it carries: `sms` (the text providers, the webhook and the console),
    /// `voice`, `email` or `chat`.
    pub fn channel(&self) -> &'static str {
        match self.config {
            ProviderConfig::AliyunVoice { .. }
            | ProviderConfig::TencentVoice { .. }
            | ProviderConfig::TwilioVoice { .. } => "voice",
            ProviderConfig::Mail => "email",
            ProviderConfig::Push => "push",
            ProviderConfig::Chat { .. } => "chat",
            _ => "sms",
        }
    }

    /// Twilio's auth token (of its SMS or its voice provider), to check inbound webhooks.
    pub fn twilio_auth_token(&self, voice: bool) -> Option<&str> {
        match self.config {
            ProviderConfig::Twilio { .. } if !voice => Some(self.secret.as_str()),
            ProviderConfig::TwilioVoice { .. } if voice => Some(self.secret.as_str()),
            _ => None,
        }
    }

    /// Sends one message; returns the provider's reference for it.
    pub async fn send(&self, client: &reqwest::Client, message: &Outgoing) -> Result<String, SendError> {
        match &self.config {
            ProviderConfig::Console => {
                // Not the text: it holds a signed acknowledgement link and a reply code, which
                // act for the person. The outbox API shows it to those allowed to read it.
                info!(
                    key = message.idempotency_key,
                    address = message.address,
                    "console message (its text is in the outbox)"
                );
                Ok(format!("console-{}", message.idempotency_key))
            }
            ProviderConfig::Mail => Err(SendError::Failed("e-mail is sent by the SMTP channel".into())),
            ProviderConfig::Push => Err(SendError::Failed("push is sent by the push channel".into())),
            ProviderConfig::Aliyun {
                endpoint, access_key_id, sign_name, templates, param_max_chars, region, ..
            } => {
                let kind = Kind::from_params(&message.params);
                let variables: serde_json::Map<String, Value> = kind
                    .variables()
                    .iter()
                    .map(|k| ((*k).to_owned(), Value::String(variable(&message.params, k, *param_max_chars))))
                    .collect();
                let call = Aliyun { client, endpoint, access_key_id, region, secret: &self.secret };
                let body = call
                    .request(
                        "SendSms",
                        vec![
                            ("OutId", message.idempotency_key.clone()),
                            ("PhoneNumbers", message.address.clone()),
                            ("SignName", sign_name.clone()),
                            ("TemplateCode", templates.get(kind)?.to_owned()),
                            ("TemplateParam", Value::Object(variables).to_string()),
                        ],
                    )
                    .await?;
                match body["Code"].as_str() {
                    Some("OK") => Ok(body["BizId"].as_str().unwrap_or_default().to_owned()),
                    _ => Err(SendError::Failed(format!("{} {}", body["Code"], body["Message"]))),
                }
            }
            ProviderConfig::Tencent {
                endpoint,
                secret_id,
                sdk_app_id,
                sign_name,
                templates,
                param_max_chars,
                region,
                ..
            } => {
                let kind = Kind::from_params(&message.params);
                let variables: Vec<String> = kind
                    .variables()
                    .iter()
                    .filter(|k| **k != "token")
                    .map(|k| variable(&message.params, k, *param_max_chars))
                    .collect();
                let body = json!({
                    "PhoneNumberSet": [message.address],
                    "SmsSdkAppId": sdk_app_id,
                    "SignName": sign_name,
                    "TemplateId": templates.get(kind)?,
                    "TemplateParamSet": variables,
                    "SessionContext": message.idempotency_key,
                })
                .to_string();
                let call = Tencent { client, endpoint, secret_id, region, secret: &self.secret };
                let answer = call.request("SendSms", body).await?;
                let status = &answer["Response"]["SendStatusSet"][0];
                match status["Code"].as_str() {
                    Some("Ok") => Ok(status["SerialNo"].as_str().unwrap_or_default().to_owned()),
                    _ => Err(SendError::Failed(format!(
                        "{}",
                        if answer["Response"]["Error"].is_null() { status } else { &answer["Response"]["Error"] }
                    ))),
                }
            }
            ProviderConfig::Twilio { endpoint, account_sid, from, .. } => {
                let call = Twilio { client, endpoint, account_sid, secret: &self.secret };
                let form = [("To", message.address.as_str()), ("From", from.as_str()), ("Body", message.body.as_str())];
                let answer = call.create("Messages", Some(&message.idempotency_key), &form).await?;
                Ok(answer["sid"].as_str().unwrap_or_default().to_owned())
            }
            ProviderConfig::AliyunVoice { endpoint, access_key_id, templates, called_show_number, region, .. } => {
                let call = Aliyun { client, endpoint, access_key_id, region, secret: &self.secret };
                let mut params = vec![
                    // Mainland numbers only, written without the country code.
                    ("CalledNumber", message.address.strip_prefix("+86").unwrap_or(&message.address).to_owned()),
                    ("TtsCode", templates.get(&message.language).to_owned()),
                    ("TtsParam", Value::Object(spoken_variables(&message.params)).to_string()),
                    ("PlayTimes", "2".into()),
                    // Echoed in call reports: 1 to 15 bytes.
                    ("OutId", message.id.to_string()),
                ];
                if let Some(number) = called_show_number {
                    params.push(("CalledShowNumber", number.clone()));
                }
                let body = call.request("SingleCallByTts", params).await?;
                match body["Code"].as_str() {
                    Some("OK") => Ok(body["CallId"].as_str().unwrap_or_default().to_owned()),
                    _ => Err(SendError::Failed(format!("{} {}", body["Code"], body["Message"]))),
                }
            }
            ProviderConfig::TencentVoice { endpoint, secret_id, voice_sdk_app_id, templates, region, .. } => {
                let variables = spoken_variables(&message.params);
                let spoken: Vec<Value> =
                    ["grade", "unit", "fault", "value"].iter().map(|k| variables[*k].clone()).collect();
                let body = json!({
                    "TemplateId": templates.get(&message.language),
                    "TemplateParamSet": spoken,
                    "CalledNumber": message.address,
                    "VoiceSdkAppid": voice_sdk_app_id,
                    "PlayTimes": 2,
                    "SessionContext": message.id.to_string(),
                })
                .to_string();
                let call = Tencent { client, endpoint, secret_id, region, secret: &self.secret };
                let answer = call.request_for("vms", "SendTtsVoice", "2020-09-02", body).await?;
                match answer["Response"]["SendStatus"]["CallId"].as_str() {
                    Some(call_id) => Ok(call_id.to_owned()),
                    None => Err(SendError::Failed(format!("{}", answer["Response"]["Error"]))),
                }
            }
            ProviderConfig::TwilioVoice { endpoint, account_sid, from, .. } => {
                // A test call has no alarm to acknowledge: it only speaks.
                let gather = match (Kind::from_params(&message.params), message.params["token"].as_str()) {
                    (Kind::Alarm, Some(token)) => Some(format!("{}/hooks/twilio-voice/{token}", self.public_url)),
                    _ => None,
                };
                let twiml = twiml(&message.body, &message.language, gather.as_deref());
                let form = [
                    ("To", message.address.as_str()),
                    ("From", from.as_str()),
                    ("Twiml", twiml.as_str()),
                    // Rings for up to 30 s; an answering machine's greeting is not a person.
                    ("Timeout", "30"),
                    ("MachineDetection", "Enable"),
                ];
                let call = Twilio { client, endpoint, account_sid, secret: &self.secret };
                let answer = call.create("Calls", None, &form).await?;
                Ok(answer["sid"].as_str().unwrap_or_default().to_owned())
            }
            ProviderConfig::Chat { kind, url } => {
                super::chat::send(client, *kind, url, &self.secret, &self.public_url, message).await
            }
            ProviderConfig::Webhook { url, .. } => {
                let body = json!({
                    "id": message.idempotency_key,
                    "to": message.address,
                    "text": message.body,
                    "params": message.params,
                })
                .to_string();
                let timestamp = chrono::Utc::now().timestamp();
                let signature = webhook_signature(&self.secret, timestamp, &body);
                let response = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("X-Chillcloud-Signature", format!("t={timestamp},v1={signature}"))
                    .body(body)
                    .send()
                    .await
                    .map_err(request_error)?;
                if response.status().is_success() {
                    Ok(message.idempotency_key.clone())
                } else {
                    Err(SendError::Failed(format!("answered {}", response.status())))
                }
            }
        }
    }
    /// Whether a message this provider timed out on went out after all, asked through its
    /// status API before the message is sent anywhere again. `since` is when it first timed out.
    /// `send_timeout` is how long the attempt waited: it began that long before `since`.
    pub async fn after_timeout(
        &self,
        client: &reqwest::Client,
        pool: &sqlx::PgPool,
        message: &Outgoing,
        since: DateTime<Utc>,
        send_timeout: std::time::Duration,
    ) -> Result<AfterTimeout, SendError> {
        let attempt_began = since - chrono::Duration::from_std(send_timeout).unwrap_or_default();
        match &self.config {
            // Twilio creates the call before it answers; the recipient's lease means no other
            // call to this number from us began after this attempt did.
            ProviderConfig::TwilioVoice { endpoint, account_sid, from, .. } => {
                let call = Twilio { client, endpoint, account_sid, secret: &self.secret };
                // Newest first; not by `StartTime`, which a call still queued has not got yet.
                let calls = call.list("Calls", "calls", &message.address, from, 20).await?;
                let placed = calls.iter().find(|call| {
                    call["date_created"]
                        .as_str()
                        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                        .is_some_and(|created| created >= attempt_began - chrono::Duration::seconds(5))
                });
                Ok(placed.map_or(AfterTimeout::Resend, |call| {
                    AfterTimeout::Sent(call["sid"].as_str().unwrap_or_default().to_owned())
                }))
            }
            // Aliyun and Tencent have no call list: a call report (which Aliyun marks with our
            // `OutId`, Tencent with the number) shows the call was placed. Reports come when the
            // call ends, so until `unsure_wait` there may be none yet.
            ProviderConfig::AliyunVoice { .. } | ProviderConfig::TencentVoice { .. } => {
                let reported: Option<String> = sqlx::query_scalar(
                    "select call_id from voice_events where provider = $1
                       and (outbox_id = $2 or (outbox_id is null and number = $3 and received_at >= $4))
                     order by id limit 1",
                )
                .bind(self.name())
                .bind(message.id)
                .bind(message.address.trim_start_matches('+'))
                .bind(attempt_began)
                .fetch_optional(pool)
                .await
                .map_err(|e| SendError::Failed(e.to_string()))?;
                Ok(reported.map_or(AfterTimeout::Wait, AfterTimeout::Sent))
            }
            // Aliyun lists a message as soon as it takes it, with our `OutId`, by China's date.
            ProviderConfig::Aliyun { endpoint, access_key_id, region, .. } => {
                let call = Aliyun { client, endpoint, access_key_id, region, secret: &self.secret };
                // Aliyun files a message under its China date when it took it, which may be a
                // little before `since` (when the answer timed out): every date from then on.
                let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is an offset");
                let first = (since - chrono::Duration::minutes(5)).with_timezone(&china).date_naive();
                let last = Utc::now().with_timezone(&china).date_naive();
                let dates: Vec<chrono::NaiveDate> = first.iter_days().take_while(|d| *d <= last).take(7).collect();
                // QuerySendDetails documents mainland numbers as 11 digits, others with the
                // country code and no `+`.
                let number = message.address.strip_prefix("+86").or_else(|| message.address.strip_prefix('+'));
                let number = number.unwrap_or(&message.address).to_owned();
                for date in dates {
                    for page in 1..=20 {
                        let body = call
                            .request(
                                "QuerySendDetails",
                                vec![
                                    ("PhoneNumber", number.clone()),
                                    ("SendDate", date.format("%Y%m%d").to_string()),
                                    ("PageSize", "50".into()),
                                    ("CurrentPage", page.to_string()),
                                ],
                            )
                            .await?;
                        if body["Code"].as_str() != Some("OK") {
                            return Err(SendError::Failed(format!("{} {}", body["Code"], body["Message"])));
                        }
                        let records =
                            body["SmsSendDetailDTOs"]["SmsSendDetailDTO"].as_array().cloned().unwrap_or_default();
                        if records.iter().any(|r| r["OutId"].as_str() == Some(message.idempotency_key.as_str())) {
                            return Ok(AfterTimeout::Sent(format!("aliyun-out-id-{}", message.idempotency_key)));
                        }
                        if records.len() < 50 {
                            break;
                        }
                    }
                }
                Ok(AfterTimeout::Resend)
            }
            // Tencent lists carrier receipts only, which may lag, and echoes our `SessionContext`
            // only where its support has enabled that: a match proves a send, no match proves
            // nothing.
            ProviderConfig::Tencent { endpoint, secret_id, sdk_app_id, region, .. } => {
                let call = Tencent { client, endpoint, secret_id, region, secret: &self.secret };
                let body = json!({
                    "BeginTime": since.timestamp() - 60,
                    "Offset": 0,
                    "Limit": 100,
                    "PhoneNumber": message.address,
                    "SmsSdkAppId": sdk_app_id,
                })
                .to_string();
                let answer = call.request("PullSmsSendStatusByPhoneNumber", body).await?;
                if !answer["Response"]["Error"].is_null() {
                    return Err(SendError::Failed(format!("{}", answer["Response"]["Error"])));
                }
                let records = answer["Response"]["PullSmsSendStatusSet"].as_array().cloned().unwrap_or_default();
                Ok(records
                    .iter()
                    .find(|r| r["SessionContext"].as_str() == Some(message.idempotency_key.as_str()))
                    .map_or(AfterTimeout::Wait, |r| {
                        AfterTimeout::Sent(r["SerialNo"].as_str().unwrap_or_default().to_owned())
                    }))
            }
            // Twilio creates the message resource before it answers; it carries no key of ours,
            // but the body (with its reply code) to this number is ours.
            ProviderConfig::Twilio { endpoint, account_sid, from, .. } => {
                let call = Twilio { client, endpoint, account_sid, secret: &self.secret };
                let messages = call.list("Messages", "messages", &message.address, from, 100).await?;
                Ok(messages
                    .iter()
                    .find(|m| m["body"].as_str() == Some(message.body.as_str()))
                    .map_or(AfterTimeout::Resend, |m| {
                        AfterTimeout::Sent(m["sid"].as_str().unwrap_or_default().to_owned())
                    }))
            }
            // A webhook's receiver deduplicates by the message's `id`; the console cannot time
            // out; SMTP has no way to ask, and a second e-mail or chat post does little harm.
            ProviderConfig::Webhook { .. }
            | ProviderConfig::Console
            | ProviderConfig::Mail
            | ProviderConfig::Push
            | ProviderConfig::Chat { .. } => Ok(AfterTimeout::Resend),
        }
    }
}

/// What to do with a message a provider timed out on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterTimeout {
    /// It went out: the provider's reference for it.
    Sent(String),
    /// It did not go out (or a second copy is harmless): send it again.
    Resend,
    /// The provider cannot tell yet.
    Wait,
}

/// An Aliyun RPC API call (version 2017-05-25), signed.
struct Aliyun<'a> {
    client: &'a reqwest::Client,
    endpoint: &'a str,
    access_key_id: &'a str,
    region: &'a str,
    secret: &'a str,
}

impl Aliyun<'_> {
    async fn request(&self, action: &str, mut params: Vec<(&str, String)>) -> Result<Value, SendError> {
        params.extend([
            ("AccessKeyId", self.access_key_id.to_owned()),
            ("Action", action.to_owned()),
            ("Format", "JSON".into()),
            ("RegionId", self.region.to_owned()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            // A fresh nonce for every request: Aliyun refuses a nonce seen before.
            ("SignatureNonce", format!("{:032x}", rand::random::<u128>())),
            ("SignatureVersion", "1.0".into()),
            ("Timestamp", Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("Version", "2017-05-25".into()),
        ]);
        let signature = aliyun_signature("POST", &params, self.secret);
        params.push(("Signature", signature));
        let response =
            self.client.post(format!("{}/", self.endpoint)).form(&params).send().await.map_err(request_error)?;
        answer(response).await
    }
}

/// A Tencent Cloud SMS API 3.0 call (version 2021-01-11), signed with TC3-HMAC-SHA256.
struct Tencent<'a> {
    client: &'a reqwest::Client,
    endpoint: &'a str,
    secret_id: &'a str,
    region: &'a str,
    secret: &'a str,
}

impl Tencent<'_> {
    async fn request(&self, action: &str, body: String) -> Result<Value, SendError> {
        self.request_for("sms", action, "2021-01-11", body).await
    }

    /// A call to another product's API (`service` as in the credential scope: `vms`).
    async fn request_for(&self, service: &str, action: &str, version: &str, body: String) -> Result<Value, SendError> {
        let host = self.endpoint.split("://").nth(1).unwrap_or(self.endpoint).trim_end_matches('/').to_owned();
        let timestamp = Utc::now().timestamp();
        let authorization = tencent_authorization(service, self.secret_id, self.secret, &host, timestamp, &body);
        let response = self
            .client
            .post(format!("{}/", self.endpoint))
            .header("Authorization", authorization)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Host", &host)
            .header("X-TC-Action", action)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Version", version)
            .header("X-TC-Region", self.region)
            .body(body)
            .send()
            .await
            .map_err(request_error)?;
        answer(response).await
    }
}

/// A Twilio REST API call (version 2010-04-01), with HTTP basic auth.
struct Twilio<'a> {
    client: &'a reqwest::Client,
    endpoint: &'a str,
    account_sid: &'a str,
    secret: &'a str,
}

impl Twilio<'_> {
    fn url(&self, resource: &str) -> String {
        format!("{}/2010-04-01/Accounts/{}/{resource}.json", self.endpoint, self.account_sid)
    }

    /// Creates a `Messages` or `Calls` resource; its JSON, or Twilio's error.
    async fn create(
        &self,
        resource: &str,
        idempotency_key: Option<&str>,
        form: &[(&str, &str)],
    ) -> Result<Value, SendError> {
        let mut request = self.client.post(self.url(resource)).basic_auth(self.account_sid, Some(self.secret));
        if let Some(key) = idempotency_key {
            request = request.header("I-Twilio-Idempotency-Token", key);
        }
        let response = request.form(form).send().await.map_err(request_error)?;
        let status = response.status();
        let answer = answer(response).await?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(SendError::Failed(format!("{status}: {}", answer["message"])))
        }
    }

    /// The newest `page_size` resources (under `key` in the answer) to `to` from `from`.
    async fn list(
        &self,
        resource: &str,
        key: &str,
        to: &str,
        from: &str,
        page_size: u32,
    ) -> Result<Vec<Value>, SendError> {
        let page_size = page_size.to_string();
        let response = self
            .client
            .get(self.url(resource))
            .basic_auth(self.account_sid, Some(self.secret))
            .query(&[("To", to), ("From", from), ("PageSize", page_size.as_str())])
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        let answer = answer(response).await?;
        if !status.is_success() {
            return Err(SendError::Failed(format!("{status}: {}", answer["message"])));
        }
        Ok(answer[key].as_array().cloned().unwrap_or_default())
    }
}

/// A provider's JSON answer. Without a JSON body, a refusal (4xx, 503 unavailable) means the
/// request was turned away before the provider took it: not sent. Any other error page (a
/// 500, or a 502 or 504 from a proxy in front of the provider) may follow a real send.
async fn answer(response: reqwest::Response) -> Result<Value, SendError> {
    let status = response.status();
    match response.json().await {
        Ok(body) => Ok(body),
        Err(_) if status.is_client_error() || status == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
            Err(SendError::Failed(format!("answered {status}")))
        }
        Err(_) => Err(SendError::Timeout),
    }
}

/// Only an error before the request left (no connection, a bad request) means "not sent"; any
/// later one (a reset, an unreadable answer) may follow a real send, so it counts as a timeout:
/// the same provider is asked again before the next one could send a second copy.
pub(crate) fn request_error(error: reqwest::Error) -> SendError {
    if error.is_connect() || error.is_builder() {
        SendError::Failed(error.without_url().to_string())
    } else {
        SendError::Timeout
    }
}

/// One template variable as a string of at most `max_chars` characters (providers count a
/// Chinese character as one). Codes and tokens are made short enough; free text is cut.
pub(crate) fn variable(params: &Value, key: &str, max_chars: usize) -> String {
    let text = match &params[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    // Both providers refuse an empty variable.
    if text.is_empty() {
        return "-".into();
    }
    shorten(&text, max_chars)
}

/// `text` in at most `max_chars` characters: whole when it fits, else cut between two words and
/// ended with "…" (a Chinese character is a word of its own; a number is never cut).
pub fn shorten(text: &str, max_chars: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max_chars {
        return text.to_owned();
    }
    let room = max_chars.saturating_sub(1);
    // Letters, digits and what a number or a unit is written with belong to their word.
    let in_word = |c: char| c.is_ascii_alphanumeric() || "_.°%/-+".contains(c);
    let cut = (1..=room).rev().find(|&at| !in_word(chars[at - 1]) || !in_word(chars[at])).unwrap_or(room);
    let head: String = chars[..cut].iter().collect();
    let head = head.trim_end_matches(|c: char| c.is_whitespace() || ",;:，、；：".contains(c));
    format!("{head}…")
}

/// The variables a call speaks (`grade`, `unit`, `fault`, `value`), each short enough that
/// together they stay under Aliyun's 250 characters.
fn spoken_variables(params: &Value) -> serde_json::Map<String, Value> {
    ["grade", "unit", "fault", "value"]
        .iter()
        .map(|k| ((*k).to_owned(), Value::String(variable(params, k, 60))))
        .collect()
}

/// What a call says, in the person's language, ending with how to acknowledge.
pub fn speech(params: &Value, language: &str) -> String {
    let v = spoken_variables(params);
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let kind = Kind::from_params(params);
    match (language, kind) {
        ("zh", Kind::Test) => "这是 Chillcloud 的测试电话：报警会这样打给您。".into(),
        (_, Kind::Test) => "This is a test call from Chillcloud: alarms will call you like this.".into(),
        ("zh", _) => format!(
            "Chillcloud 报警。{}级，{}：{}。{}。确认请按 1。",
            text("grade"),
            text("unit"),
            text("fault"),
            text("value")
        ),
        _ => format!(
            "Chillcloud alarm. Grade {}, {}: {}. {}. Press 1 to acknowledge.",
            text("grade"),
            text("unit"),
            text("fault"),
            text("value")
        ),
    }
}

/// The `<Say>` attributes for a language: Mandarin needs a voice that speaks it (Amazon Polly's
/// Zhiyu); Twilio's default voice does not, and a `<Say>` it cannot speak fails.
pub fn say_in(language: &str) -> &'static str {
    if language == "zh" {
        r#"voice="Polly.Zhiyu" language="cmn-CN""#
    } else {
        r#"voice="Polly.Joanna" language="en-US""#
    }
}

/// The TwiML of a call: say the alarm twice while waiting for one key, which Twilio posts to
/// `gather`; without a key, say how else to acknowledge. No `gather`: just say it.
pub fn twiml(text: &str, language: &str, gather: Option<&str>) -> String {
    let escape = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let say = say_in(language);
    let fallback = if language == "zh" {
        "未收到按键。请用短信或链接确认。"
    } else {
        "No key was pressed. Acknowledge by text message or link."
    };
    match gather {
        Some(gather) => format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="dtmf" numDigits="1" timeout="8" action="{}" method="POST"><Say {say} loop="2">{}</Say></Gather><Say {say}>{fallback}</Say></Response>"#,
            escape(gather),
            escape(text)
        ),
        None => {
            format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say {say}>{}</Say></Response>"#, escape(text))
        }
    }
}

/// Aliyun's percent-encoding: RFC 3986 unreserved characters stay, everything else is `%XX`
/// (so a space is `%20`, `*` is `%2A`, `~` stays).
fn aliyun_encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// Aliyun RPC signature v1: HMAC-SHA1 with `secret&` over
/// `METHOD&%2F&encode(sorted, encoded query)`, base64.
pub fn aliyun_signature(method: &str, params: &[(&str, String)], secret: &str) -> String {
    let mut pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (aliyun_encode(k), aliyun_encode(v))).collect();
    pairs.sort();
    let canonical: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let string_to_sign = format!("{method}&{}&{}", aliyun_encode("/"), aliyun_encode(&canonical.join("&")));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Tencent Cloud API 3.0 `Authorization` header (TC3-HMAC-SHA256) for a JSON POST to `/` of
/// product `service` (`sms`, `vms`), signing `content-type` and `host`.
pub fn tencent_authorization(
    service: &str,
    secret_id: &str,
    secret_key: &str,
    host: &str,
    timestamp: i64,
    body: &str,
) -> String {
    let date = chrono::DateTime::from_timestamp(timestamp, 0).unwrap_or_default().format("%Y-%m-%d").to_string();
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:{host}\n\ncontent-type;host\n{}",
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    let scope = format!("{date}/{service}/tc3_request");
    let string_to_sign =
        format!("TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), &date);
    let secret_service = hmac_sha256(&secret_date, service);
    let secret_signing = hmac_sha256(&secret_service, "tc3_request");
    let signature = hex::encode(hmac_sha256(&secret_signing, &string_to_sign));
    format!("TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}")
}

/// The webhook signature: hex HMAC-SHA256 of `<unix seconds>.<body>`.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &format!("{timestamp}.{body}")))
}

/// Twilio's webhook signature: base64 HMAC-SHA1 with the auth token over the full URL followed
/// by the POST parameters sorted by name, each name then its value.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_variables_are_cut_between_words_with_an_ellipsis() {
        assert_eq!(shorten("Cannot hold the chilled-water setpoint", 35), "Cannot hold the chilled-water…");
        assert_eq!(shorten("short enough", 35), "short enough");
        assert_eq!(shorten("supply_deviation 3.25 K, supply_trend 0.01 K/min", 35), "supply_deviation 3.25 K…");
        assert_eq!(shorten("冷冻水出水温度无法保持设定值，请尽快检查机组运行状态和水系统", 20).chars().count(), 20);
        assert_eq!(shorten("abcdefghijklmnopqrstuvwxyz", 10), "abcdefghi…");
    }

    #[test]
    fn aliyun_encoding_follows_rfc_3986() {
        assert_eq!(aliyun_encode("a b*c~d/é"), "a%20b%2Ac~d%2F%C3%A9");
    }

    #[test]
    fn twilio_signature_matches_the_documented_example() {
        // Twilio's security documentation example: auth token 12345, this URL and parameters
        // give 0/KCTR6DLpKmkAf8muzZqo1nDgQ=.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let signature = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params);
        assert_eq!(signature, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }
}
