//! Fake SMS providers and a fake customer webhook for tests: local HTTP servers that check each
//! request the way the real service does, so the server's provider clients (written separately
//! from the providers' public documentation) are tested against an independent reading of the
//! same documents.
//!
//! - [`FakeProvider::aliyun`]: Aliyun SMS `SendSms` and `QuerySendDetails`, RPC API 2017-05-25;
//!   checks signature v1 (HMAC-SHA1), nonce replay, 15 min clock skew, the parameters and the
//!   template variable rules (35 characters, no links).
//! - [`FakeProvider::tencent`]: Tencent Cloud SMS `SendSms` and `PullSmsSendStatusByPhoneNumber`,
//!   API 3.0, 2021-01-11; checks TC3-HMAC-SHA256, 5 min clock skew, the headers, the JSON body and
//!   the template variable rules (12 characters, no links).
//! - [`FakeProvider::twilio`]: Twilio `POST` and `GET /2010-04-01/Accounts/{AccountSid}/Messages.json`;
//!   checks HTTP basic auth and the form fields, honours the idempotency token, lists messages
//!   with the `To`, `From` and `DateSent` filters.
//! - [`FakeProvider::webhook`]: a customer's endpoint for Chillcloud's signed webhooks; checks
//!   `X-Chillcloud-Signature` and 5 min clock skew.
//!
//! Voice:
//! - [`FakeProvider::aliyun_voice`]: Aliyun 语音服务 `SingleCallByTts`, RPC API 2017-05-25, with
//!   the SMS fake's signature, nonce, clock and format checks; the call parameters, the TTS
//!   variable rules (under 250 characters together, no links) and one call per number a minute.
//! - [`FakeProvider::tencent_voice`]: Tencent Cloud VMS `SendTtsVoice`, API 3.0, 2020-09-02, with
//!   the SMS fake's TC3-HMAC-SHA256 check for service `vms`.
//! - [`FakeProvider::twilio`] also serves the Calls API: `POST` and `GET
//!   /2010-04-01/Accounts/{AccountSid}/Calls.json`, checking inline TwiML and its `<Gather>`.
//!
//! Team chat robots (each with its per-robot rate limit):
//! - [`FakeProvider::wecom`]: WeCom group robot, `POST /cgi-bin/webhook/send?key=…`.
//! - [`FakeProvider::dingtalk`]: DingTalk custom robot, 加签 (`timestamp` and `sign` in the query).
//! - [`FakeProvider::feishu`]: Feishu custom bot, 签名校验 (`timestamp` and `sign` in the body).
//! - [`FakeProvider::slack`]: Slack incoming webhook.
//!
//! Every fake binds `127.0.0.1:0`, serves from a tokio task and stops when dropped. Its [`Mode`]
//! can be switched at any time, and so can its account-dependent [`Options`]. It keeps a log of
//! [`Delivered`] messages (only requests that passed every check and were accepted), the
//! [`Rejection`]s with their reasons, and [`Counters`]. Tests wait with
//! [`FakeProvider::wait_delivered`], which polls against a deadline.
//!
//! The lookup APIs (Aliyun `QuerySendDetails`, Tencent `PullSmsSendStatusByPhoneNumber`, Twilio's
//! message list) answer from that delivery log, so a client whose send timed out can ask whether
//! the message went out before sending it again; [`Mode::AcceptThenHang`] makes exactly that
//! happen (delivered, never answered). A delivery's carrier receipt comes in
//! [`Options::receipt_delay`] after it was accepted (at once by default); until then the lookups
//! show it as the providers show a message without a receipt.
//!
//! ```ignore
//! let sms = FakeProvider::aliyun("LTAI5tTestKeyId", "test-secret").await;
//! // … configure the server's Aliyun endpoint as `sms.url()` and raise an alarm …
//! let sent = sms.wait_delivered(1, Duration::from_secs(10)).await;
//! assert_eq!(sent[0].recipient, "13800000000");
//! sms.assert_no_rejections();
//! ```
//!
//! [`TwilioWebhook`] builds the request Twilio sends to a customer's URL for an inbound SMS
//! ([`TwilioWebhook::inbound_sms`]) or for the digits of a `<Gather>`
//! ([`TwilioWebhook::gather`]), signed with `X-Twilio-Signature`, so server tests can post a
//! realistic reply.
//!
//! Sources, cited again beside each check:
//! - Aliyun "Signature mechanism" for RPC APIs (help.aliyun.com/document_detail/28839.html;
//!   English: alibabacloud.com/help/doc-detail/127287.htm), the SMS "HTTP protocol and signature"
//!   worked example (help.aliyun.com/document_detail/56189.html), "Request syntax and signature
//!   method V2 for RPC APIs" (alibabacloud.com/help/en/sdk/product-overview/rpc-mechanism),
//!   `SendSms` (help.aliyun.com/document_detail/55284.html), the client error codes of the
//!   management OpenAPI (developer.aliyun.com/ask/278265, help.aliyun.com/document_detail/51132.html)
//!   and the SMS API error codes (help.aliyun.com/document_detail/101346.html; the older table
//!   with the variable codes is copied in developer.aliyun.com/ask/278548 and
//!   alibabacloud.com/help/doc-detail/73694.htm). Template variables: "长变量短信发送与字符限制"
//!   (help.aliyun.com/zh/document_detail/3041859.html), the notification template rules
//!   (help.aliyun.com/document_detail/463270.htm) and developer.aliyun.com/ask/220871.
//!   `QuerySendDetails`: help.aliyun.com/document_detail/419277.html (English:
//!   help.aliyun.com/en/sms/developer-reference/api-dysmsapi-2017-05-25-querysenddetails), the
//!   2017 edition with the output table (help.aliyun.com/document_detail/59840.html), and the
//!   API's generated SDK models (aliyun/alibabacloud-java-sdk, dysmsapi-20170525,
//!   `QuerySendDetailsRequest`/`QuerySendDetailsResponseBody`).
//! - Tencent Cloud API 3.0 "Signature v3" (the same page under each product, e.g.
//!   tencentcloud.com/document/api/1150/49447), `SendSms` 2021-01-11
//!   (cloud.tencent.com/document/api/382/55981), SMS error codes
//!   (cloud.tencent.com/document/api/382/38780 and /59177; the legacy numeric table
//!   cloud.tencent.com/document/product/382/3771), "正文模板审核标准" (body template review
//!   standards: tencentcloud.com/zh/document/product/382/40659 of 2024-05-24, and the current
//!   cloud.tencent.com/document/product/382/39023). `PullSmsSendStatusByPhoneNumber` 2021-01-11
//!   (tencentcloud.com/document/api/382/40518; 2019-07-11: cloud.tencent.com/document/api/382/38773),
//!   the `PullSmsSendStatus` data type (in the same pages, and tencentcloud-sdk-python
//!   `sms/v20210111/models.py`), `PullSmsSendStatus` (cloud.tencent.com/document/product/382/55977)
//!   and the v5 pages it replaced (pull queue: /382/5810; by number: /382/5811).
//! - Twilio Messages resource (twilio.com/docs/messaging/api/message-resource, including "Read
//!   multiple Message resources"), the error dictionary (twilio.com/docs/errors/NNNNN) and
//!   "Secure webhooks" (twilio.com/docs/usage/webhooks/webhooks-security, formerly
//!   docs/usage/security).
//!   Voice: the Call resource (twilio.com/docs/voice/api/call-resource), TwiML `<Gather>`
//!   (twilio.com/docs/voice/twiml/gather) and the voice webhook parameters
//!   (twilio.com/docs/usage/webhooks/voice-webhooks).
//! - Aliyun voice: `SingleCallByTts` (help.aliyun.com/document_detail/393519.html, /114035.html)
//!   and its error codes (help.aliyun.com/document_detail/178344.html,
//!   help.aliyun.com/zh/vms/the-error-code-list). Tencent VMS: `SendTtsVoice`
//!   (cloud.tencent.com/document/api/1128/51558) and its error codes (/1128/51567).
//! - The chat robots' pages are cited in their modules; the formats, signatures, error codes and
//!   test vectors are gathered in docs/research/paging-channels.md.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// The header Chillcloud signs its webhooks with: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "X-Chillcloud-Signature";
/// The idempotency header Twilio puts on the webhooks it sends; the fake Twilio API honours it too.
pub const TWILIO_IDEMPOTENCY_HEADER: &str = "I-Twilio-Idempotency-Token";

/// Which service a fake stands in for, with the one set of credentials it accepts.
#[derive(Clone, Debug)]
pub enum Provider {
    /// Aliyun (Alibaba Cloud) SMS, `SendSms`, RPC style, API version 2017-05-25.
    Aliyun {
        /// The AccessKey ID the fake knows; any other is `InvalidAccessKeyId.NotFound`.
        access_key_id: String,
        /// Its AccessKey secret (the HMAC-SHA1 key is this followed by `&`).
        access_key_secret: String,
    },
    /// Tencent Cloud SMS, `SendSms`, API 3.0, version 2021-01-11.
    Tencent {
        /// The SecretId the fake knows; any other is `AuthFailure.SecretIdNotFound`.
        secret_id: String,
        /// Its SecretKey (the TC3 key derivation starts from `"TC3" + SecretKey`).
        secret_key: String,
        /// The one `SmsSdkAppId` that exists.
        sdk_app_id: String,
    },
    /// Twilio Programmable Messaging, `Messages.json` of API 2010-04-01.
    Twilio {
        /// The Account SID (`AC…`): the basic-auth user and the `{AccountSid}` of the path.
        account_sid: String,
        /// The Auth Token: the basic-auth password.
        auth_token: String,
    },
    /// A customer's endpoint receiving Chillcloud's signed JSON webhooks.
    Webhook {
        /// The shared secret of `X-Chillcloud-Signature`.
        secret: String,
    },
    /// Aliyun 语音服务 (dyvmsapi), `SingleCallByTts`, RPC style, API version 2017-05-25: the same
    /// signature v1 as [`Provider::Aliyun`].
    AliyunVoice {
        /// The AccessKey ID the fake knows; any other is `InvalidAccessKeyId.NotFound`.
        access_key_id: String,
        /// Its AccessKey secret (the HMAC-SHA1 key is this followed by `&`).
        access_key_secret: String,
    },
    /// Tencent Cloud VMS (语音消息), `SendTtsVoice`, API 3.0, version 2020-09-02: TC3-HMAC-SHA256
    /// with service `vms`.
    TencentVoice {
        /// The SecretId the fake knows; any other is `AuthFailure.SecretIdNotFound`.
        secret_id: String,
        /// Its SecretKey.
        secret_key: String,
        /// The one `VoiceSdkAppid` that exists.
        voice_sdk_app_id: String,
    },
    /// A WeCom (企业微信) group robot webhook, `POST /cgi-bin/webhook/send?key=…`.
    WeCom {
        /// The robot's key, the webhook URL's only credential.
        key: String,
    },
    /// A DingTalk custom robot in 加签 mode, `POST /robot/send?access_token=…&timestamp=…&sign=…`.
    DingTalk {
        /// The robot's `access_token`.
        access_token: String,
        /// The robot's `SEC…` signing secret.
        secret: String,
    },
    /// A Feishu / Lark custom bot with 签名校验, `POST /open-apis/bot/v2/hook/<token>`.
    Feishu {
        /// The hook token, the last path segment.
        token: String,
        /// The bot's signing secret.
        secret: String,
    },
    /// A Slack incoming webhook, `POST /services/T…/B…/…`.
    Slack {
        /// The one path that exists, e.g. `/services/T000/B000/XXXX`.
        path: String,
    },
}

/// How a fake answers; switchable at any time with [`FakeProvider::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Check every request and accept the good ones.
    Succeed,
    /// Check every request, and answer the good sends with the provider's error instead of
    /// sending: Aliyun `isv.BUSINESS_LIMIT_CONTROL` (HTTP 200), Tencent a per-number
    /// `LimitExceeded.PhoneNumberThirtySecondLimit` in `SendStatusSet` (HTTP 200), Twilio
    /// error 20500 (HTTP 500, messages and calls), the webhook HTTP 500; Aliyun voice
    /// `isp.SYSTEM_ERROR` and Tencent VMS `InternalError.UpstreamError` (HTTP 200); WeCom and
    /// DingTalk errcode -1 "system busy", Feishu code 1500 "internal error" (HTTP 200), Slack
    /// HTTP 500 `rollup_error`. Counted as `failed`. Lookups are answered as in
    /// [`Mode::Succeed`].
    Fail,
    /// Refuse everything unchecked with `503 Service Unavailable` and `Connection: close`.
    /// Counted as `refused`.
    Down,
    /// The next `count` requests are neither checked, delivered nor answered: the connection
    /// is held open until the client gives up. Counted as `timed_out`; then back to
    /// [`Mode::Succeed`].
    Hang {
        /// How many more requests to swallow.
        count: u32,
    },
    /// The next `count` good sends are checked and delivered (logged, so the lookup APIs find
    /// them) but never answered: the connection is held open like [`Mode::Hang`] until the
    /// client gives up. This is "the provider sent the SMS but the client timed out". Counted
    /// as `delivered` and `accepted_unanswered`; then back to [`Mode::Succeed`]. Rejected
    /// requests, Twilio idempotent replays and lookups in between are answered as usual and do
    /// not count down.
    AcceptThenHang {
        /// How many more delivered sends to leave unanswered.
        count: u32,
    },
}

/// Behaviour that depends on the provider account's settings rather than on the request;
/// switchable at any time with [`FakeProvider::set_options`]. [`Options::default`] is the
/// strictest documented account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Check the template variables of `SendSms` (Aliyun `TemplateParam` values, Tencent
    /// `TemplateParamSet` items) as the providers do: the length limits below, and no link in a
    /// variable. Default `true`.
    pub template_variable_rules: bool,
    /// Aliyun: the most characters a variable value may have, `isv.PARAM_LENGTH_LIMIT` beyond.
    /// Default 35, "单个模板变量的长度可以超过默认的 35 字符上限" once the limit is lifted on
    /// request (help.aliyun.com/zh/document_detail/3041859.html).
    pub aliyun_variable_max_chars: usize,
    /// Tencent: the most characters a variable value may have,
    /// `InvalidParameterValue.TemplateParameterLengthLimit` beyond. Default `Some(12)`:
    /// "个人认证用户创建的短信正文模板每个变量取值最多支持12个字。企业认证用户没有变量取值长度限制"
    /// (review standards, 2024-05-24); `None` for an enterprise-verified account. The current
    /// page defers to the console ("每个变量取值长度，请以短信控制台 > 模板创建页 信息为准"),
    /// so 12 is the strictest documented limit.
    pub tencent_variable_max_chars: Option<usize>,
    /// Tencent: whether `PullSmsSendStatusByPhoneNumber` echoes the `SendSms` request's
    /// `SessionContext`. Default `false`: the field is "与请求中的 SessionContext 一致，默认为空，
    /// 如需开通请联系腾讯云短信小助手评估" (data type `PullSmsSendStatus`), i.e. empty unless
    /// Tencent's SMS helper switched it on for the account.
    pub tencent_pull_session_context: bool,
    /// How long after a message was accepted its delivery receipt comes in. Until then Aliyun
    /// reports it with `SendStatus` 1 (等待回执), Tencent does not list it at all (a pull only
    /// returns receipts) and Twilio lists it `queued`/`accepted` with no `date_sent`. Default
    /// zero (a receipt at once). Twilio calls are listed `queued` with no `start_time` until
    /// then, `in-progress` with a `start_time` after.
    pub receipt_delay: Duration,
    /// Aliyun voice: at most one `SingleCallByTts` per called number per minute, as Aliyun
    /// throttles a number ("1次/分钟、5次/小时、20次/24小时", API错误码
    /// help.aliyun.com/document_detail/178344.html), answered `isv.BUSINESS_LIMIT_CONTROL` with
    /// HTTP 200. Only the per-minute limit is modelled. Default `true`.
    pub aliyun_voice_frequency_limit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            template_variable_rules: true,
            aliyun_variable_max_chars: 35,
            tencent_variable_max_chars: Some(12),
            tencent_pull_session_context: false,
            receipt_delay: Duration::ZERO,
            aliyun_voice_frequency_limit: true,
        }
    }
}

/// A message the fake accepted: one per recipient (Aliyun and Tencent send one request to
/// several numbers), one per call, one per webhook or chat request.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The phone number as sent (Aliyun `PhoneNumbers` item or `CalledNumber`, Tencent
    /// `PhoneNumberSet` item or `CalledNumber`, Twilio `To`), the request path for the webhook
    /// and Slack, the robot's key (WeCom), `access_token` (DingTalk) or hook token (Feishu).
    pub recipient: String,
    /// Twilio `Body`; a Twilio call's `Twiml` (or `Url`, or `ApplicationSid`); the webhook's raw
    /// JSON body; the chat message's text (WeCom `content`, DingTalk `text.content` or the
    /// markdown/actionCard/link `text`, Feishu the text or the post's title and lines joined
    /// with newlines, Slack `text`); `None` for the template providers.
    pub text: Option<String>,
    /// Aliyun `TemplateCode` or `TtsCode`, Tencent `TemplateId`.
    pub template: Option<String>,
    /// Template parameters: Aliyun `TemplateParam` or `TtsParam` (a JSON object), Tencent
    /// `TemplateParamSet` (a JSON array); the parsed JSON body for the webhook and the chat
    /// robots.
    pub params: Option<Value>,
    /// Aliyun `SignName` or `CalledShowNumber`, Tencent `SignName`, Twilio `From` (or
    /// `MessagingServiceSid`).
    pub sender: Option<String>,
    /// The caller's idempotency key: Aliyun `OutId`, Tencent `SessionContext`, Twilio
    /// `I-Twilio-Idempotency-Token`, the webhook body's `id`.
    pub idempotency_key: Option<String>,
    /// The provider's id for the message: Aliyun `BizId` or `CallId`, Tencent `SerialNo` or
    /// `CallId`, Twilio `sid`; a random id of the fake's for the chat robots, which answer none.
    pub provider_id: String,
    /// When the request arrived.
    pub received_at: Instant,
    /// When the request arrived, Unix milliseconds (wall clock).
    pub received_unix_ms: i64,
}

/// A request the fake turned away because a check failed.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// The provider's error code as answered (e.g. `SignatureDoesNotMatch`, `20003`).
    pub code: String,
    /// What exactly was wrong.
    pub reason: String,
    /// When the request arrived.
    pub received_at: Instant,
}

/// What happened to the requests a fake received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages delivered (one per recipient), i.e. the length of the delivery log.
    pub delivered: usize,
    /// Requests rejected by a check (see [`FakeProvider::rejections`]).
    pub rejected: usize,
    /// Good requests answered with a provider error in [`Mode::Fail`].
    pub failed: usize,
    /// Requests refused in [`Mode::Down`].
    pub refused: usize,
    /// Requests swallowed in [`Mode::Hang`].
    pub timed_out: usize,
    /// Twilio requests whose idempotency token was already used: answered with the first
    /// message or call, not sent again.
    pub deduplicated: usize,
    /// Good sends delivered but never answered in [`Mode::AcceptThenHang`] (requests, not
    /// messages; their messages are counted in `delivered` too).
    pub accepted_unanswered: usize,
    /// Lookups answered: Aliyun `QuerySendDetails`, Tencent `PullSmsSendStatusByPhoneNumber`,
    /// Twilio `GET Messages.json` and `GET Calls.json`.
    pub lookups: usize,
}

/// A running fake: see the module documentation.
pub struct FakeProvider {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    provider: Provider,
    state: Mutex<FakeState>,
}

struct FakeState {
    mode: Mode,
    delivered: Vec<Delivered>,
    rejections: Vec<Rejection>,
    counters: Counters,
    /// Aliyun `SignatureNonce`s already used by an authenticated request.
    nonces: HashSet<String>,
    /// Twilio idempotency token → the message answered the first time.
    twilio_tokens: HashMap<String, Value>,
    /// Every Twilio message created, oldest first, for the message list.
    twilio_messages: Vec<TwilioMessage>,
    /// Twilio Call resources created, for the call list.
    twilio_calls: Vec<TwilioMessage>,
    /// Accepted sends per rate-limit key (a called number, a robot), oldest first, for the
    /// sliding-window limits.
    sends: HashMap<String, Vec<Instant>>,
    /// Slack's token buckets per webhook: tokens left and when they were counted.
    buckets: HashMap<String, (f64, Instant)>,
    options: Options,
}

/// A Twilio Message or Call resource as created, and when (Unix milliseconds).
struct TwilioMessage {
    resource: Value,
    created_unix_ms: i64,
}

impl FakeProvider {
    /// Starts a fake on `127.0.0.1:0`, in [`Mode::Succeed`]. It accepts connections as soon as
    /// this returns.
    pub async fn start(provider: Provider) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a fake provider on 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake provider address");
        let shared = Arc::new(Shared {
            provider,
            state: Mutex::new(FakeState {
                mode: Mode::Succeed,
                delivered: Vec::new(),
                rejections: Vec::new(),
                counters: Counters::default(),
                nonces: HashSet::new(),
                twilio_tokens: HashMap::new(),
                twilio_messages: Vec::new(),
                twilio_calls: Vec::new(),
                sends: HashMap::new(),
                buckets: HashMap::new(),
                options: Options::default(),
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            // Only ends when aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}"), shared, server }
    }

    /// A fake Aliyun SMS endpoint (`https://dysmsapi.aliyuncs.com` in production).
    pub async fn aliyun(access_key_id: &str, access_key_secret: &str) -> Self {
        Self::start(Provider::Aliyun {
            access_key_id: access_key_id.to_owned(),
            access_key_secret: access_key_secret.to_owned(),
        })
        .await
    }

    /// A fake Tencent Cloud SMS endpoint (`https://sms.tencentcloudapi.com` in production).
    pub async fn tencent(secret_id: &str, secret_key: &str, sdk_app_id: &str) -> Self {
        Self::start(Provider::Tencent {
            secret_id: secret_id.to_owned(),
            secret_key: secret_key.to_owned(),
            sdk_app_id: sdk_app_id.to_owned(),
        })
        .await
    }

    /// A fake Twilio REST API (`https://api.twilio.com` in production).
    pub async fn twilio(account_sid: &str, auth_token: &str) -> Self {
        Self::start(Provider::Twilio { account_sid: account_sid.to_owned(), auth_token: auth_token.to_owned() }).await
    }

    /// A fake customer endpoint for Chillcloud's signed webhooks; any path is accepted and
    /// logged as the recipient.
    pub async fn webhook(secret: &str) -> Self {
        Self::start(Provider::Webhook { secret: secret.to_owned() }).await
    }

    /// A fake Aliyun voice endpoint (`https://dyvmsapi.aliyuncs.com` in production).
    pub async fn aliyun_voice(access_key_id: &str, access_key_secret: &str) -> Self {
        Self::start(Provider::AliyunVoice {
            access_key_id: access_key_id.to_owned(),
            access_key_secret: access_key_secret.to_owned(),
        })
        .await
    }

    /// A fake Tencent Cloud VMS endpoint (`https://vms.tencentcloudapi.com` in production).
    pub async fn tencent_voice(secret_id: &str, secret_key: &str, voice_sdk_app_id: &str) -> Self {
        Self::start(Provider::TencentVoice {
            secret_id: secret_id.to_owned(),
            secret_key: secret_key.to_owned(),
            voice_sdk_app_id: voice_sdk_app_id.to_owned(),
        })
        .await
    }

    /// A fake WeCom group robot (`https://qyapi.weixin.qq.com` in production); the robot's
    /// webhook is `{url}/cgi-bin/webhook/send?key={key}`.
    pub async fn wecom(key: &str) -> Self {
        Self::start(Provider::WeCom { key: key.to_owned() }).await
    }

    /// A fake DingTalk custom robot in 加签 mode (`https://oapi.dingtalk.com` in production);
    /// the robot's webhook is `{url}/robot/send?access_token={access_token}`.
    pub async fn dingtalk(access_token: &str, secret: &str) -> Self {
        Self::start(Provider::DingTalk { access_token: access_token.to_owned(), secret: secret.to_owned() }).await
    }

    /// A fake Feishu custom bot with 签名校验 (`https://open.feishu.cn` in production); the bot's
    /// webhook is `{url}/open-apis/bot/v2/hook/{token}`.
    pub async fn feishu(token: &str, secret: &str) -> Self {
        Self::start(Provider::Feishu { token: token.to_owned(), secret: secret.to_owned() }).await
    }

    /// A fake Slack incoming webhook (`https://hooks.slack.com` in production) answering on
    /// `path` (`/services/T…/B…/…`); the webhook is `{url}{path}`.
    pub async fn slack(path: &str) -> Self {
        Self::start(Provider::Slack { path: path.to_owned() }).await
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What this fake stands in for.
    pub fn provider(&self) -> &Provider {
        &self.shared.provider
    }

    /// Switches the mode; requests already being answered are not affected.
    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    /// The current mode ([`Mode::Hang`] and [`Mode::AcceptThenHang`] count down as requests
    /// arrive).
    pub fn mode(&self) -> Mode {
        self.state().mode
    }

    /// Switches the account-dependent behaviour; requests already being answered are not
    /// affected.
    pub fn set_options(&self, options: Options) {
        self.state().options = options;
    }

    /// The current [`Options`].
    pub fn options(&self) -> Options {
        self.state().options
    }

    /// The messages delivered so far, oldest first.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.state().delivered.clone()
    }

    /// The requests rejected so far, oldest first.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.state().rejections.clone()
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.state().counters
    }

    /// Panics, listing them, if any request was rejected.
    pub fn assert_no_rejections(&self) {
        let rejections = self.rejections();
        assert!(rejections.is_empty(), "{} rejected {} request(s): {rejections:#?}", self.url, rejections.len());
    }

    /// The idempotency keys delivered more than once (each listed once), for asserting that a
    /// retry did not put a second copy on somebody's phone.
    pub fn duplicate_deliveries(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut duplicates = Vec::new();
        for key in self.state().delivered.iter().filter_map(|d| d.idempotency_key.clone()) {
            if !seen.insert(key.clone()) && !duplicates.contains(&key) {
                duplicates.push(key);
            }
        }
        duplicates
    }

    /// Polls every 10 ms until at least `n` messages were delivered and returns the log, or
    /// panics after `timeout` with the counters and rejections.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let state = self.state();
                if state.delivered.len() >= n {
                    return state.delivered.clone();
                }
                if Instant::now() >= deadline {
                    panic!(
                        "{} delivered {} of {n} message(s) within {timeout:?}; counters {:?}; rejections {:#?}",
                        self.url,
                        state.delivered.len(),
                        state.counters,
                        state.rejections
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared.state.lock().expect("fake provider state")
    }
}

impl Drop for FakeProvider {
    /// Stops accepting connections. A request held by [`Mode::Hang`] stays open until its
    /// client gives up or the test's runtime ends.
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One request as received.
struct Incoming {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
    unix_ms: i64,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn unix_s(&self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }

    fn content_type_is(&self, mime: &str) -> bool {
        self.header("content-type")
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
    }
}

/// What a provider made of a request, and its answer.
struct Reply {
    verdict: Verdict,
    response: Response,
}

enum Verdict {
    Delivered(Vec<Delivered>),
    Rejected { code: String, reason: String },
    Failed,
    Replayed,
    // A lookup, answered.
    Answered,
}

impl Reply {
    fn rejected(code: &str, reason: impl Into<String>, response: Response) -> Self {
        Self { verdict: Verdict::Rejected { code: code.to_owned(), reason: reason.into() }, response }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Incoming {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
        at: Instant::now(),
        unix_ms: Utc::now().timestamp_millis(),
    };
    {
        let mut state = shared.state.lock().expect("fake provider state");
        let mode = state.mode;
        match mode {
            Mode::Hang { count } if count > 0 => {
                state.mode = if count > 1 { Mode::Hang { count: count - 1 } } else { Mode::Succeed };
                state.counters.timed_out += 1;
            }
            Mode::Down => {
                state.counters.refused += 1;
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::CONNECTION, "close")], "503 Service Unavailable")
                    .into_response();
            }
            _ => {
                let fail = mode == Mode::Fail;
                let reply = match &shared.provider {
                    Provider::Aliyun { access_key_id, access_key_secret } => {
                        aliyun::process(&mut state, access_key_id, access_key_secret, &req, fail)
                    }
                    Provider::Tencent { secret_id, secret_key, sdk_app_id } => {
                        tencent::process(&state, secret_id, secret_key, sdk_app_id, &req, fail)
                    }
                    Provider::Twilio { account_sid, auth_token } => {
                        twilio::process(&mut state, account_sid, auth_token, &req, fail)
                    }
                    Provider::Webhook { secret } => webhook::process(secret, &req, fail),
                    Provider::AliyunVoice { access_key_id, access_key_secret } => {
                        aliyun::process_voice(&mut state, access_key_id, access_key_secret, &req, fail)
                    }
                    Provider::TencentVoice { secret_id, secret_key, voice_sdk_app_id } => {
                        tencent::process_voice(secret_id, secret_key, voice_sdk_app_id, &req, fail)
                    }
                    Provider::WeCom { key } => wecom::process(&mut state, key, &req, fail),
                    Provider::DingTalk { access_token, secret } => {
                        dingtalk::process(&mut state, access_token, secret, &req, fail)
                    }
                    Provider::Feishu { token, secret } => feishu::process(&mut state, token, secret, &req, fail),
                    Provider::Slack { path } => slack::process(&mut state, path, &req, fail),
                };
                match reply.verdict {
                    Verdict::Delivered(messages) => {
                        state.counters.delivered += messages.len();
                        state.delivered.extend(messages);
                        if let Mode::AcceptThenHang { count } = mode
                            && count > 0
                        {
                            // Sent, but the answer never leaves: fall through to the hang.
                            state.mode =
                                if count > 1 { Mode::AcceptThenHang { count: count - 1 } } else { Mode::Succeed };
                            state.counters.accepted_unanswered += 1;
                        } else {
                            return reply.response;
                        }
                    }
                    Verdict::Rejected { code, reason } => {
                        state.counters.rejected += 1;
                        state.rejections.push(Rejection { code, reason, received_at: req.at });
                        return reply.response;
                    }
                    Verdict::Failed => {
                        state.counters.failed += 1;
                        return reply.response;
                    }
                    Verdict::Replayed => {
                        state.counters.deduplicated += 1;
                        return reply.response;
                    }
                    Verdict::Answered => {
                        state.counters.lookups += 1;
                        return reply.response;
                    }
                }
            }
        }
    }
    // Mode::Hang, Mode::AcceptThenHang: never answer. Hyper drops this future when the client
    // closes the connection.
    std::future::pending::<Response>().await
}

// ---------------------------------------------------------------------------------------------
// Shared encoding helpers
// ---------------------------------------------------------------------------------------------

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XY` a byte
/// (a malformed `%` stays as it is), the result UTF-8 (invalid bytes replaced). This is how
/// servers (Aliyun's Java front end, Twilio, axum) read query strings and form bodies.
fn form_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex_value(raw[i + 1]), hex_value(raw[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string or form body into its pairs, in order.
fn parse_form(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (form_decode(&pair[..i]), form_decode(&pair[i + 1..])),
            None => (form_decode(pair), String::new()),
        })
        .collect()
}

fn percent_encode(s: &str, keep: impl Fn(u8) -> bool, space_as_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else if b == b' ' && space_as_plus {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` serialisation (WHATWG URL standard): alphanumerics and
/// `*-._` as they are, space as `+`, every other byte of the UTF-8 as `%XY`.
fn form_encode(pairs: &[(String, String)]) -> String {
    let component = |s: &str| percent_encode(s, |b| b.is_ascii_alphanumeric() || b"*-._".contains(&b), true);
    pairs.iter().map(|(k, v)| format!("{}={}", component(k), component(v))).collect::<Vec<_>>().join("&")
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json;charset=utf-8")], body.to_string()).into_response()
}

/// `F655A8D5-B967-440B-8683-DAD6FF8DE990`, the shape of Aliyun's `RequestId`.
fn request_id() -> String {
    let s = format!("{:032X}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..])
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Compares two byte strings in time independent of where they differ, as the providers'
/// signature checks do.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The id the fake logs for a delivery the provider answers without one (the chat webhooks).
fn local_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Sliding-window rate limits: the first `(most, per)` that one more send under `key` at `now`
/// would exceed, counting the sends logged with [`record_send`].
fn rate_exceeded(
    state: &FakeState,
    key: &str,
    now: Instant,
    limits: &[(usize, Duration)],
) -> Option<(usize, Duration)> {
    let sends = state.sends.get(key).map(Vec::as_slice).unwrap_or_default();
    limits.iter().copied().find(|(most, per)| {
        let since = now.checked_sub(*per);
        sends.iter().filter(|at| since.is_none_or(|since| **at > since)).count() >= *most
    })
}

/// Logs an accepted send under `key` for [`rate_exceeded`], forgetting sends older than a day.
fn record_send(state: &mut FakeState, key: &str, now: Instant) {
    let sends = state.sends.entry(key.to_owned()).or_default();
    if let Some(day_ago) = now.checked_sub(Duration::from_secs(24 * 3600)) {
        sends.retain(|at| *at > day_ago);
    }
    sends.push(now);
}

/// A URL the providers accept as a callback or action: absolute, `http` or `https`, with a host.
fn is_absolute_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.and_then(|r| r.split(['/', '?', '#']).next())
        .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
        && !url.contains(char::is_whitespace)
}

/// Top-level domains (and the short-link domains' ones) that make a dotted word a host name.
const LINK_TLDS: &[&str] = &[
    "com", "cn", "net", "org", "io", "co", "cc", "me", "top", "xyz", "info", "biz", "gov", "edu", "app", "dev", "ai",
    "ly", "gl", "gd", "tv", "link", "site", "online", "vip", "shop", "club", "hk", "mo", "tw", "jp", "uk", "us", "de",
    "ru", "so", "la", "to", "im",
];

/// Whether a template variable value carries a link, which neither Aliyun ("isv.PARAM_NOT_SUPPORT_URL
/// 不支持url为变量 / 域名和ip请固化到模板申请中") nor Tencent ("变量内不支持传入链接（包含短链接）")
/// accept. Neither documents its detector; this one takes a scheme (`http://`, any `xxx://`),
/// `www.`, an IPv4 address, or a dotted host name ending in a common top-level domain
/// (`t.cn/abc`, `chill.example.com`), and leaves numbers such as `12.5` or `v1.2` alone.
fn looks_like_link(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    if lower.contains("://") || lower.contains("www.") {
        return true;
    }
    lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')).any(|word| {
        let labels: Vec<&str> = word.trim_matches('.').split('.').collect();
        if labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
            return false;
        }
        let ipv4 = labels.len() == 4 && labels.iter().all(|label| label.len() <= 3 && label.parse::<u8>().is_ok());
        ipv4 || labels.last().is_some_and(|tld| LINK_TLDS.contains(tld))
    })
}

/// China Standard Time (UTC+8), the clock of Aliyun's `SendDate` and record times.
fn beijing(unix_ms: i64) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    DateTime::from_timestamp_millis(unix_ms).unwrap_or_default().with_timezone(&offset)
}

/// A number's digits without `+` or an international `00` prefix.
fn international_digits(number: &str) -> &str {
    number.strip_prefix('+').or_else(|| number.strip_prefix("00")).unwrap_or(number)
}

/// Country calling codes the fakes split numbers by (longest first), with their ISO codes.
const COUNTRY_CODES: &[(&str, &str)] =
    &[("852", "HK"), ("853", "MO"), ("886", "TW"), ("86", "CN"), ("44", "GB"), ("65", "SG"), ("60", "MY"), ("1", "US")];

/// A mainland China mobile number (11 digits from 1), in whichever form the send used: bare,
/// `86…`, `+86…` or `0086…`.
fn mainland_mobile(number: &str) -> Option<&str> {
    let is_mobile = |n: &str| n.len() == 11 && n.starts_with('1') && n.bytes().all(|b| b.is_ascii_digit());
    if is_mobile(number) {
        return Some(number);
    }
    international_digits(number).strip_prefix("86").filter(|n| is_mobile(n))
}

// ---------------------------------------------------------------------------------------------
// Aliyun SMS and voice
// ---------------------------------------------------------------------------------------------

mod aliyun {
    use super::*;

    const VERSION: &str = "2017-05-25";
    /// `HostId` of the gateway errors: the product's endpoint.
    const SMS_HOST_ID: &str = "dysmsapi.aliyuncs.com";
    const VOICE_HOST_ID: &str = "dyvmsapi.aliyuncs.com";
    /// "用户时间和服务器时间超过15分钟" → `InvalidTimeStamp.Expired` (developer.aliyun.com/ask/278265).
    const MAX_SKEW_S: i64 = 15 * 60;
    /// `SendSms`: "上限为 1000 个手机号码" (help.aliyun.com/document_detail/55284.html).
    const MAX_NUMBERS: usize = 1000;

    #[derive(Clone, Copy, PartialEq)]
    enum Format {
        Json,
        Xml,
    }

    /// Aliyun's `percentEncode` (signature mechanism, step 1.2): `A-Z a-z 0-9 - _ . ~` as they
    /// are, every other byte of the UTF-8 as `%XY` with upper-case hex, so a space is `%20`
    /// (not `+`), `*` is `%2A` and `~` stays `~`.
    pub(super) fn percent_encode(s: &str) -> String {
        super::percent_encode(s, |b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b), false)
    }

    /// StringToSign = HTTPMethod + "&" + percentEncode("/") + "&" + percentEncode(the
    /// canonicalized query string): every parameter but `Signature`, name and value each
    /// percent-encoded, sorted by name, joined as `name=value` with `&` (signature mechanism,
    /// steps 1 and 2).
    pub(super) fn string_to_sign(method: &str, params: &[(String, String)]) -> String {
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| name != "Signature")
            .map(|(name, value)| (percent_encode(name), percent_encode(value)))
            .collect();
        pairs.sort();
        let canonical = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        format!("{method}&{}&{}", percent_encode("/"), percent_encode(&canonical))
    }

    /// Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", UTF-8 of StringToSign)) (step 3).
    pub(super) fn sign(access_key_secret: &str, string_to_sign: &str) -> String {
        let mut mac = HmacSha1::new_from_slice(format!("{access_key_secret}&").as_bytes()).expect("HMAC takes any key");
        mac.update(string_to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    fn xml_escape(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    }

    /// An answer in the requested `Format`: JSON, or XML (the default when `Format` is absent,
    /// per the common parameters table: "Valid values: JSON, XML. Default: XML").
    fn respond(format: Format, status: StatusCode, root: &str, fields: &[(&str, &str)]) -> Response {
        match format {
            Format::Json => {
                let object: serde_json::Map<String, Value> =
                    fields.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
                json_response(status, &Value::Object(object))
            }
            Format::Xml => {
                let inner: String = fields.iter().map(|(k, v)| format!("<{k}>{}</{k}>", xml_escape(v))).collect();
                let body = format!("<?xml version='1.0' encoding='UTF-8'?><{root}>{inner}</{root}>");
                (status, [(header::CONTENT_TYPE, "text/xml;charset=utf-8")], body).into_response()
            }
        }
    }

    /// A gateway error (authentication, parameters): `{RequestId, HostId, Code, Message}` with
    /// the HTTP status of the error code table.
    fn gateway_error(
        host_id: &str,
        format: Format,
        status: StatusCode,
        code: &str,
        message: &str,
        reason: &str,
    ) -> Reply {
        let request_id = request_id();
        let response = respond(
            format,
            status,
            "Error",
            &[("RequestId", &request_id), ("HostId", host_id), ("Code", code), ("Message", message)],
        );
        Reply::rejected(code, reason, response)
    }

    /// A business error (the `isv.*` codes): HTTP 200, `{Code, Message, RequestId}`, no `BizId`
    /// (help.aliyun.com/document_detail/101346.html). `root` names the XML document after the
    /// action (`SendSmsResponse`, `QuerySendDetailsResponse`).
    fn business_error(format: Format, root: &str, code: &str, message: &str) -> Response {
        let request_id = request_id();
        respond(format, StatusCode::OK, root, &[("Code", code), ("Message", message), ("RequestId", &request_id)])
    }

    /// One XML element for a JSON value: an object's fields become child elements in turn, an
    /// array repeats its element once per item (`"SmsSendDetailDTO": [a, b]` is two
    /// `<SmsSendDetailDTO>`), `null` is left out.
    fn xml_element(name: &str, value: &Value, out: &mut String) {
        match value {
            Value::Null => {}
            Value::Array(items) => items.iter().for_each(|item| xml_element(name, item, out)),
            Value::Object(fields) => {
                out.push_str(&format!("<{name}>"));
                fields.iter().for_each(|(child, value)| xml_element(child, value, out));
                out.push_str(&format!("</{name}>"));
            }
            Value::String(text) => out.push_str(&format!("<{name}>{}</{name}>", xml_escape(text))),
            other => out.push_str(&format!("<{name}>{other}</{name}>")),
        }
    }

    /// An answer with nested fields (`QuerySendDetails`), as JSON or as XML.
    fn respond_value(format: Format, root: &str, body: &Value) -> Response {
        match format {
            Format::Json => json_response(StatusCode::OK, body),
            Format::Xml => {
                let mut xml = String::from("<?xml version='1.0' encoding='UTF-8'?>");
                xml_element(root, body, &mut xml);
                (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml;charset=utf-8")], xml).into_response()
            }
        }
    }

    /// The Aliyun products faked here: SMS (dysmsapi) and voice (dyvmsapi), both RPC APIs of
    /// version 2017-05-25 signed alike.
    #[derive(Clone, Copy, PartialEq)]
    enum Product {
        Sms,
        Voice,
    }

    /// The RPC actions this fake serves.
    #[derive(Clone, Copy, PartialEq)]
    enum Action {
        SendSms,
        QuerySendDetails,
        SingleCallByTts,
    }

    impl Action {
        /// The action's required parameters: `SendSms` (55284.html) PhoneNumbers, SignName,
        /// TemplateCode; `QuerySendDetails` (419277.html; `@Validation(required = true)` in the
        /// generated SDK model) PhoneNumber, SendDate, PageSize, CurrentPage (BizId optional);
        /// `SingleCallByTts` (help.aliyun.com/document_detail/393519.html) CalledNumber, TtsCode.
        fn required(self) -> &'static [&'static str] {
            match self {
                Action::SendSms => &["PhoneNumbers", "SignName", "TemplateCode"],
                Action::QuerySendDetails => &["PhoneNumber", "SendDate", "PageSize", "CurrentPage"],
                Action::SingleCallByTts => &["CalledNumber", "TtsCode"],
            }
        }
    }

    /// The request's parameters (query, and form body for POST), in order.
    struct Params(Vec<(String, String)>);

    impl Params {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        }

        fn param(&self, name: &str) -> &str {
            self.get(name).unwrap_or_default()
        }
    }

    /// Aliyun SMS: `SendSms` and `QuerySendDetails`.
    pub(super) fn process(
        state: &mut FakeState,
        access_key_id: &str,
        access_key_secret: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        process_product(Product::Sms, state, access_key_id, access_key_secret, req, fail)
    }

    /// Aliyun voice: `SingleCallByTts`, with the same RPC checks as SMS.
    pub(super) fn process_voice(
        state: &mut FakeState,
        access_key_id: &str,
        access_key_secret: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        process_product(Product::Voice, state, access_key_id, access_key_secret, req, fail)
    }

    fn process_product(
        product: Product,
        state: &mut FakeState,
        access_key_id: &str,
        access_key_secret: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        let host_id = match product {
            Product::Sms => SMS_HOST_ID,
            Product::Voice => VOICE_HOST_ID,
        };
        // Parameters come in the query (GET) or the query and the form body (POST); both are
        // signed alike, only the method in StringToSign differs.
        let mut params = parse_form(req.query.as_bytes());
        if req.method == Method::POST && req.content_type_is("application/x-www-form-urlencoded") {
            params.extend(parse_form(&req.body));
        }
        let params = Params(params);

        // "Format … Valid values: JSON, XML. Default: XML." (rpc-mechanism, common parameters);
        // `InvalidParameter.Format` "仅支持 XML/JSON" (developer.aliyun.com/ask/278265).
        let format = match params.get("Format") {
            None => Format::Xml,
            Some(f) if f.eq_ignore_ascii_case("XML") => Format::Xml,
            Some(f) if f.eq_ignore_ascii_case("JSON") => Format::Json,
            Some(other) => {
                return gateway_error(
                    host_id,
                    Format::Xml,
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter.Format",
                    "Specified parameter format is not valid.",
                    &format!("Format={other:?}, only JSON or XML"),
                );
            }
        };
        let bad = |status: StatusCode, code: &str, message: &str, reason: String| {
            gateway_error(host_id, format, status, code, message, &reason)
        };
        let missing = |name: &str| {
            bad(
                StatusCode::BAD_REQUEST,
                &format!("Missing{name}"),
                &format!("{name} is mandatory for this action."),
                format!("parameter {name} is missing or empty"),
            )
        };

        // RPC APIs are called on `/` ("https://Endpoint/?Action=xx&Version=xx&Parameters").
        if req.path != "/" {
            return bad(
                StatusCode::NOT_FOUND,
                "InvalidApi.NotFound",
                "Specified api is not found, please check your url and method.",
                format!("path {:?}, RPC calls go to /", req.path),
            );
        }
        // "UnsupportedHTTPMethod" (developer.aliyun.com/ask/278265); both actions take GET or POST.
        if req.method != Method::GET && req.method != Method::POST {
            return bad(
                StatusCode::BAD_REQUEST,
                "UnsupportedHTTPMethod",
                "This http method not supported.",
                format!("method {}", req.method),
            );
        }
        // Required common parameters (rpc-mechanism: Action, Version, AccessKeyId,
        // SignatureNonce, Timestamp, Signature, SignatureMethod, SignatureVersion). Missing one
        // is "Missing{ParameterName} … is mandatory for this action." 400 (ask/278265).
        for name in [
            "Action",
            "Version",
            "AccessKeyId",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
            "Timestamp",
            "Signature",
        ] {
            if params.get(name).is_none_or(str::is_empty) {
                return missing(name);
            }
        }
        // "InvalidApi.NotFound … 404" for an unknown Action/Version pair.
        let action = match (product, params.param("Action"), params.param("Version")) {
            (Product::Sms, "SendSms", VERSION) => Action::SendSms,
            (Product::Sms, "QuerySendDetails", VERSION) => Action::QuerySendDetails,
            (Product::Voice, "SingleCallByTts", VERSION) => Action::SingleCallByTts,
            (_, action, version) => {
                let expected = match product {
                    Product::Sms => "SendSms or QuerySendDetails",
                    Product::Voice => "SingleCallByTts",
                };
                return bad(
                    StatusCode::NOT_FOUND,
                    "InvalidApi.NotFound",
                    "Specified api is not found, please check your url and method.",
                    format!("Action={action:?} Version={version:?}, expected {expected} {VERSION}"),
                );
            }
        };
        if let Some(name) = action.required().iter().find(|name| params.get(name).is_none_or(str::is_empty)) {
            return missing(name);
        }
        // "SignatureMethod: … Only HMAC-SHA1 is supported." / "SignatureVersion: … 1.0"
        // (signature mechanism overview); `InvalidSignatureMethod` 400, `IncompleteSignature`
        // 400 (ask/278265, document_detail/51132).
        if params.param("SignatureMethod") != "HMAC-SHA1" {
            return bad(
                StatusCode::BAD_REQUEST,
                "InvalidSignatureMethod",
                "Specified signature method is not valid.",
                format!("SignatureMethod={:?}, expected HMAC-SHA1", params.param("SignatureMethod")),
            );
        }
        if params.param("SignatureVersion") != "1.0" {
            return bad(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
                format!("SignatureVersion={:?}, expected 1.0", params.param("SignatureVersion")),
            );
        }
        // "InvalidAccessKeyId.NotFound  Specified access key is not found. 404".
        if params.param("AccessKeyId") != access_key_id {
            return bad(
                StatusCode::NOT_FOUND,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
                format!("unknown AccessKeyId {:?}", params.param("AccessKeyId")),
            );
        }
        // "Timestamp … ISO 8601 … yyyy-MM-ddTHH:mm:ssZ format. The time must be in UTC."
        // (common parameters); `InvalidTimeStamp.Format` / `InvalidTimeStamp.Expired` (more than
        // 15 minutes from the server's clock) 400 (ask/278265).
        let Ok(timestamp) = NaiveDateTime::parse_from_str(params.param("Timestamp"), "%Y-%m-%dT%H:%M:%SZ") else {
            return bad(
                StatusCode::BAD_REQUEST,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
                format!("Timestamp={:?}, expected yyyy-MM-ddTHH:mm:ssZ (UTC)", params.param("Timestamp")),
            );
        };
        let skew = timestamp.and_utc().timestamp() - req.unix_s();
        if skew.abs() > MAX_SKEW_S {
            return bad(
                StatusCode::BAD_REQUEST,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
                format!("Timestamp {} is {skew} s from now (limit {MAX_SKEW_S} s)", params.param("Timestamp")),
            );
        }
        // The signature (signature mechanism); `SignatureDoesNotMatch` 400. Aliyun's message
        // quotes its own StringToSign, which is what one needs to debug a client.
        let string_to_sign = string_to_sign(req.method.as_str(), &params.0);
        if sign(access_key_secret, &string_to_sign) != params.param("Signature") {
            return bad(
                StatusCode::BAD_REQUEST,
                "SignatureDoesNotMatch",
                &format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
                ),
                format!(
                    "Signature {:?} does not match; server StringToSign {string_to_sign}",
                    params.param("Signature")
                ),
            );
        }
        // "SignatureNonce: A unique random number used to prevent replay attacks. You must use a
        // different random number for each request." `SignatureNonceUsed` 400 (ask/278265).
        // Only authenticated requests consume a nonce.
        let nonce = params.param("SignatureNonce").to_owned();
        if !state.nonces.insert(nonce.clone()) {
            return bad(
                StatusCode::BAD_REQUEST,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
                format!("SignatureNonce {nonce:?} replayed"),
            );
        }

        match action {
            Action::SendSms => send_sms(state, &params, format, req, fail),
            Action::QuerySendDetails => query_send_details(state, &params, format, req),
            Action::SingleCallByTts => single_call_by_tts(state, &params, format, req, fail),
        }
    }

    /// `SingleCallByTts` (help.aliyun.com/document_detail/393519.html, /114035.html): one
    /// text-to-speech notification call. Business errors are HTTP 200 with a `Code` from the
    /// voice API error table (help.aliyun.com/document_detail/178344.html, and the SDK table
    /// help.aliyun.com/zh/vms/the-error-code-list):
    ///
    /// - `CalledNumber` one number ("被叫号码…仅支持同时呼叫一个号码") → `isv.MOBILE_NUMBER_ILLEGAL`
    ///   "号码格式非法"; `CalledShowNumber` optional (empty: the shared pool, 公共模式), digits →
    ///   `isv.DISPLAY_NUMBER_ILLEGAL` "号显不合法".
    /// - `TtsParam` a JSON object (`{"AckNum":"123456"}`) whose values are strings, "所有变量
    ///   合计不超过250个字符", no links; `isv.INVALID_PARAMETERS` "参数异常" for a malformed one,
    ///   `isv.PARAM_LENGTH_LIMIT` "参数长度受限" for 250 characters or more,
    ///   `isv.PARAM_NOT_SUPPORT_URL` "变量不支持URL参数" for a link (these two follow
    ///   [`Options::template_variable_rules`]).
    /// - `PlayTimes` 1–3, `Volume` 0–100, `Speed` −500–500 (integers), `OutId` 1–15 bytes;
    ///   `isv.INVALID_PARAMETERS` otherwise.
    /// - Per called number one call per minute ([`Options::aliyun_voice_frequency_limit`]):
    ///   `isv.BUSINESS_LIMIT_CONTROL` "触发流控".
    /// - [`Mode::Fail`]: `isp.SYSTEM_ERROR` "系统错误".
    /// - Success `{"Code":"OK","Message":"OK","RequestId":"…","CallId":"…"}`, `CallId` unique
    ///   (the documented shape `116012354148^1…`).
    fn single_call_by_tts(state: &mut FakeState, params: &Params, format: Format, req: &Incoming, fail: bool) -> Reply {
        const ROOT: &str = "SingleCallByTtsResponse";
        /// "所有变量合计不超过250个字符" (TtsParam).
        const MAX_PARAM_CHARS: usize = 250;
        let business = |code: &str, message: &str, reason: String| {
            Reply::rejected(code, reason, business_error(format, ROOT, code, message))
        };
        let invalid = |reason: String| business("isv.INVALID_PARAMETERS", "参数异常", reason);

        let called = params.param("CalledNumber").trim();
        if called.contains(',') || !is_phone_number(called) {
            return business("isv.MOBILE_NUMBER_ILLEGAL", "号码格式非法", format!("CalledNumber {called:?}"));
        }
        let show = params.get("CalledShowNumber").filter(|n| !n.is_empty());
        if let Some(show) = show
            && !is_phone_number(show)
        {
            return business("isv.DISPLAY_NUMBER_ILLEGAL", "号显不合法", format!("CalledShowNumber {show:?}"));
        }
        let tts_param = match params.get("TtsParam").filter(|p| !p.is_empty()) {
            None => None,
            Some(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(object)) if object.values().all(Value::is_string) => Some(object),
                _ => return invalid(format!("TtsParam {raw:?} is not a JSON object of strings")),
            },
        };
        if state.options.template_variable_rules
            && let Some(variables) = &tts_param
        {
            let mut total = 0;
            for (name, value) in variables {
                let value = value.as_str().unwrap_or_default();
                if looks_like_link(value) {
                    return business(
                        "isv.PARAM_NOT_SUPPORT_URL",
                        "变量不支持URL参数",
                        format!("TtsParam {name}={value:?} carries a link"),
                    );
                }
                total += value.chars().count();
            }
            if total >= MAX_PARAM_CHARS {
                return business(
                    "isv.PARAM_LENGTH_LIMIT",
                    "参数长度受限",
                    format!("TtsParam values have {total} characters together, limit under {MAX_PARAM_CHARS}"),
                );
            }
        }
        for (name, range) in [("PlayTimes", 1..=3), ("Volume", 0..=100), ("Speed", -500..=500)] {
            if let Some(raw) = params.get(name)
                && !raw.parse::<i64>().is_ok_and(|n| range.contains(&n))
            {
                return invalid(format!("{name}={raw:?}, expected an integer in {range:?}"));
            }
        }
        let out_id = params.get("OutId").map(str::to_owned);
        if let Some(out_id) = &out_id
            && !(1..=15).contains(&out_id.len())
        {
            return invalid(format!("OutId of {} bytes, expected 1 to 15", out_id.len()));
        }
        let number_key = format!("aliyun-voice:{}", query_form(called));
        if state.options.aliyun_voice_frequency_limit
            && let Some((most, per)) = rate_exceeded(state, &number_key, req.at, &[(1, Duration::from_secs(60))])
        {
            return business(
                "isv.BUSINESS_LIMIT_CONTROL",
                "触发流控",
                format!("CalledNumber {called} already called {most} time(s) within {per:?}"),
            );
        }
        if fail {
            return Reply {
                verdict: Verdict::Failed,
                response: business_error(format, ROOT, "isp.SYSTEM_ERROR", "系统错误"),
            };
        }

        record_send(state, &number_key, req.at);
        let call_id = format!(
            "{}^{}",
            100_000_000_000 + rand::random::<u64>() % 900_000_000_000,
            100_000_000_000 + rand::random::<u64>() % 900_000_000_000
        );
        let request_id = request_id();
        let delivered = Delivered {
            recipient: called.to_owned(),
            text: None,
            template: Some(params.param("TtsCode").to_owned()),
            params: tts_param.map(Value::Object),
            sender: show.map(str::to_owned),
            idempotency_key: out_id,
            provider_id: call_id.clone(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        let response = respond(
            format,
            StatusCode::OK,
            ROOT,
            &[("Code", "OK"), ("Message", "OK"), ("RequestId", &request_id), ("CallId", &call_id)],
        );
        Reply { verdict: Verdict::Delivered(vec![delivered]), response }
    }

    /// `SendSms`'s business checks, HTTP 200 with an `isv.*` code (101346.html), and the sending.
    fn send_sms(state: &FakeState, params: &Params, format: Format, req: &Incoming, fail: bool) -> Reply {
        const ROOT: &str = "SendSmsResponse";
        let numbers: Vec<String> = params.param("PhoneNumbers").split(',').map(|n| n.trim().to_owned()).collect();
        if numbers.len() > MAX_NUMBERS {
            let response = business_error(format, ROOT, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制");
            return Reply::rejected(
                "isv.MOBILE_COUNT_OVER_LIMIT",
                format!("{} numbers, limit {MAX_NUMBERS}", numbers.len()),
                response,
            );
        }
        // PhoneNumbers: "国内短信:+/+86/0086/86 或无任何前缀的手机号码 …
        // 国际/港澳台消息:国际区号+号码" (55284.html).
        if let Some(number) = numbers.iter().find(|n| !is_phone_number(n)) {
            let response = business_error(format, ROOT, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
            return Reply::rejected("isv.MOBILE_NUMBER_ILLEGAL", format!("phone number {number:?}"), response);
        }
        // "TemplateParam … 请传入JSON 字符串" (55284.html); `isv.INVALID_JSON_PARAM` "JSON参数不合法，
        // 只接受字符串值" (101346.html): a JSON object whose values are strings.
        let template_param = match params.get("TemplateParam") {
            None => None,
            Some(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(object)) if object.values().all(Value::is_string) => Some(object),
                _ => {
                    let message = "JSON参数不合法，只接受字符串值";
                    let response = business_error(format, ROOT, "isv.INVALID_JSON_PARAM", message);
                    return Reply::rejected(
                        "isv.INVALID_JSON_PARAM",
                        format!("TemplateParam {raw:?} is not a JSON object of strings"),
                        response,
                    );
                }
            },
        };
        // Template variables. "isv.PARAM_NOT_SUPPORT_URL 不支持url为变量 — 域名和ip请固化到模板申请中"
        // and "isv.PARAM_LENGTH_LIMIT 变量长度受限" (the error table as copied in
        // developer.aliyun.com/ask/278548; 101346.html's messages "不支持URL", "参数超出长度限制");
        // the limit is 35 characters per value by default ("单个模板变量的长度可以超过默认的 35
        // 字符上限" once lifted, help.aliyun.com/zh/document_detail/3041859.html; "通知类模板，
        // 变量限制为1至35个字符", developer.aliyun.com/ask/220871). A character is a Unicode
        // scalar value (a Chinese character counts one, as in Aliyun's length rules). The answer's
        // Message is the one Aliyun was seen to give, "参数超过长度限制:35".
        if state.options.template_variable_rules
            && let Some(variables) = &template_param
        {
            let max = state.options.aliyun_variable_max_chars;
            for (name, value) in variables {
                let value = value.as_str().unwrap_or_default();
                if looks_like_link(value) {
                    let response = business_error(format, ROOT, "isv.PARAM_NOT_SUPPORT_URL", "不支持URL");
                    return Reply::rejected(
                        "isv.PARAM_NOT_SUPPORT_URL",
                        format!("TemplateParam {name}={value:?} carries a link"),
                        response,
                    );
                }
                let chars = value.chars().count();
                if chars > max {
                    let message = format!("参数超过长度限制:{max}");
                    let response = business_error(format, ROOT, "isv.PARAM_LENGTH_LIMIT", &message);
                    return Reply::rejected(
                        "isv.PARAM_LENGTH_LIMIT",
                        format!("TemplateParam {name} has {chars} characters, limit {max}"),
                        response,
                    );
                }
            }
        }

        if fail {
            // "isv.BUSINESS_LIMIT_CONTROL 触发业务流控" (101346.html), HTTP 200.
            return Reply {
                verdict: Verdict::Failed,
                response: business_error(format, ROOT, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"),
            };
        }

        // Success: `{"Code":"OK","Message":"OK","BizId":"…","RequestId":"…"}` (55284.html).
        let biz_id = format!("{}^0", 100_000_000_000_000 + rand::random::<u64>() % 900_000_000_000_000);
        let request_id = request_id();
        let out_id = params.get("OutId").map(str::to_owned);
        let template_param = template_param.map(Value::Object);
        let delivered = numbers
            .into_iter()
            .map(|recipient| Delivered {
                recipient,
                text: None,
                template: Some(params.param("TemplateCode").to_owned()),
                params: template_param.clone(),
                sender: Some(params.param("SignName").to_owned()),
                idempotency_key: out_id.clone(),
                provider_id: biz_id.clone(),
                received_at: req.at,
                received_unix_ms: req.unix_ms,
            })
            .collect();
        let response = respond(
            format,
            StatusCode::OK,
            ROOT,
            &[("Code", "OK"), ("Message", "OK"), ("BizId", &biz_id), ("RequestId", &request_id)],
        );
        Reply { verdict: Verdict::Delivered(delivered), response }
    }

    /// The form `QuerySendDetails` documents for `PhoneNumber` and answers in `PhoneNum`:
    /// "国内短信：11 位手机号码 … 国际/港澳台消息：国际区号+号码" (419277.html), whatever prefix
    /// (`+86`, `0086`, `86`, none) the send used.
    fn query_form(number: &str) -> String {
        mainland_mobile(number).unwrap_or_else(|| international_digits(number)).to_owned()
    }

    /// `QuerySendDetails`: the send records of one number on one day (419277.html).
    ///
    /// - `PhoneNumber` one number ("只能传入一个手机号码"); `SendDate` `yyyyMMdd`, "支持查询最近
    ///   30 天的记录"; `PageSize` "取值范围为 1~50"; `CurrentPage` from 1; `BizId` optional ("只能
    ///   传入一个 Bizid 的值"), the `BizId` SendSms answered.
    /// - Answer `{Code, Message, RequestId, TotalCount, SmsSendDetailDTOs: {SmsSendDetailDTO:
    ///   [{PhoneNum, SendStatus, ErrCode, TemplateCode, Content, SendDate, ReceiveDate, OutId}]}}`
    ///   (the generated SDK model). `SendStatus` "1：等待回执，2：发送失败，3：发送成功"; `ErrCode`
    ///   "DELIVERED" once delivered; dates `yyyy-MM-dd HH:mm:ss`. `TotalCount` is a number as in
    ///   the 2017 output table (59840.html: "TotalCount Number"); the current reference types it
    ///   `string`.
    /// - Bad values are `isv.INVALID_PARAMETERS` "参数异常" ("For example, the SendDate format
    ///   should be yyyymmdd", alibabacloud.com/help/doc-detail/73694.htm); a malformed number
    ///   `isv.MOBILE_NUMBER_ILLEGAL` as in SendSms.
    ///
    /// Not documented, the fake's reading: `SendDate` and the record dates are China Standard
    /// Time (UTC+8), the clock of Aliyun's console; records come oldest first; `Content` is
    /// synthetic (the fake does not know the template's text): `【SignName】TemplateCode
    /// {TemplateParam}`; `OutId` is left out when the send had none.
    fn query_send_details(state: &FakeState, params: &Params, format: Format, req: &Incoming) -> Reply {
        const ROOT: &str = "QuerySendDetailsResponse";
        let invalid = |reason: String| {
            let response = business_error(format, ROOT, "isv.INVALID_PARAMETERS", "参数异常");
            Reply::rejected("isv.INVALID_PARAMETERS", reason, response)
        };
        let Some(page_size) = params.param("PageSize").parse::<usize>().ok().filter(|n| (1..=50).contains(n)) else {
            return invalid(format!("PageSize={:?}, expected 1 to 50", params.param("PageSize")));
        };
        let Some(current_page) = params.param("CurrentPage").parse::<usize>().ok().filter(|n| *n >= 1) else {
            return invalid(format!("CurrentPage={:?}, expected 1 or more", params.param("CurrentPage")));
        };
        let raw_date = params.param("SendDate");
        let send_date = Some(raw_date)
            .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok());
        let Some(send_date) = send_date else {
            return invalid(format!("SendDate={raw_date:?}, expected yyyyMMdd"));
        };
        let number = params.param("PhoneNumber");
        if !is_phone_number(number) {
            let response = business_error(format, ROOT, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
            return Reply::rejected("isv.MOBILE_NUMBER_ILLEGAL", format!("PhoneNumber {number:?}"), response);
        }
        let wanted = query_form(number);
        let biz_id = params.get("BizId").filter(|b| !b.is_empty());
        let receipt_ms = i64::try_from(state.options.receipt_delay.as_millis()).unwrap_or(i64::MAX);
        let thirty_days_ms = 30 * 24 * 3600 * 1000;
        let records: Vec<&Delivered> = state
            .delivered
            .iter()
            .filter(|d| query_form(&d.recipient) == wanted)
            .filter(|d| beijing(d.received_unix_ms).date_naive() == send_date)
            .filter(|d| req.unix_ms - d.received_unix_ms <= thirty_days_ms)
            .filter(|d| biz_id.is_none_or(|b| b == d.provider_id))
            .collect();
        let time = |unix_ms: i64| beijing(unix_ms).format("%Y-%m-%d %H:%M:%S").to_string();
        let page: Vec<Value> = records
            .iter()
            .skip((current_page - 1) * page_size)
            .take(page_size)
            .map(|d| {
                let receipted = req.unix_ms >= d.received_unix_ms.saturating_add(receipt_ms);
                let sign = d.sender.as_deref().unwrap_or_default();
                let template = d.template.as_deref().unwrap_or_default();
                let variables = d.params.as_ref().map(Value::to_string).unwrap_or_default();
                let mut dto = json!({
                    "PhoneNum": query_form(&d.recipient),
                    "SendStatus": if receipted { 3 } else { 1 },
                    "ErrCode": if receipted { "DELIVERED" } else { "" },
                    "TemplateCode": template,
                    "Content": format!("【{sign}】{template} {variables}").trim_end(),
                    "SendDate": time(d.received_unix_ms),
                    "ReceiveDate": if receipted { time(d.received_unix_ms + receipt_ms) } else { String::new() },
                });
                if let Some(out_id) = &d.idempotency_key {
                    dto["OutId"] = Value::from(out_id.as_str());
                }
                dto
            })
            .collect();
        let body = json!({
            "Code": "OK",
            "Message": "OK",
            "RequestId": request_id(),
            "TotalCount": records.len(),
            "SmsSendDetailDTOs": { "SmsSendDetailDTO": page },
        });
        Reply { verdict: Verdict::Answered, response: respond_value(format, ROOT, &body) }
    }

    fn is_phone_number(n: &str) -> bool {
        let digits = n.strip_prefix('+').unwrap_or(n);
        (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    }
}

// ---------------------------------------------------------------------------------------------
// Tencent Cloud SMS and VMS (voice)
// ---------------------------------------------------------------------------------------------

mod tencent {
    use super::*;

    const VERSION: &str = "2021-01-11";
    const SERVICE: &str = "sms";
    /// "if the difference is over five minutes, the call will definitely fail" (Signature v3);
    /// `AuthFailure.SignatureExpire` "Timestamp and server time cannot differ by more than five
    /// minutes" (error codes).
    const MAX_SKEW_S: i64 = 5 * 60;
    /// "单次请求最多支持200个手机号" (SendSms).
    const MAX_NUMBERS: usize = 200;
    /// SessionContext: "注意长度需小于512字节" (SendSms).
    const MAX_SESSION_CONTEXT: usize = 512;

    /// CanonicalRequest = HTTPRequestMethod \n CanonicalURI (`/` for API 3.0) \n
    /// CanonicalQueryString (empty for POST) \n CanonicalHeaders \n SignedHeaders \n
    /// Lowercase(HexEncode(SHA256(payload))) (Signature v3, step 1). `canonical_headers` is
    /// one `name:value\n` per signed header.
    pub(super) fn canonical_request(
        method: &str,
        canonical_query: &str,
        canonical_headers: &str,
        signed_headers: &str,
        payload: &[u8],
    ) -> String {
        let hashed_payload = hex::encode(Sha256::digest(payload));
        format!("{method}\n/\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{hashed_payload}")
    }

    /// StringToSign = "TC3-HMAC-SHA256" \n RequestTimestamp \n CredentialScope \n
    /// Lowercase(HexEncode(SHA256(CanonicalRequest))) (step 2).
    pub(super) fn string_to_sign(timestamp: i64, credential_scope: &str, canonical_request: &str) -> String {
        let hashed = hex::encode(Sha256::digest(canonical_request.as_bytes()));
        format!("TC3-HMAC-SHA256\n{timestamp}\n{credential_scope}\n{hashed}")
    }

    /// SecretDate = HMAC_SHA256("TC3" + SecretKey, Date); SecretService = HMAC_SHA256(SecretDate,
    /// Service); SecretSigning = HMAC_SHA256(SecretService, "tc3_request") (step 3).
    pub(super) fn signing_key(secret_key: &str, date: &str, service: &str) -> Vec<u8> {
        let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
        let secret_service = hmac_sha256(&secret_date, service.as_bytes());
        hmac_sha256(&secret_service, b"tc3_request")
    }

    /// Signature = HexEncode(HMAC_SHA256(SecretSigning, StringToSign)) (step 3).
    pub(super) fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
        hex::encode(hmac_sha256(&signing_key(secret_key, date, service), string_to_sign.as_bytes()))
    }

    /// Every API 3.0 error: HTTP 200 and `{"Response":{"Error":{"Code","Message"},"RequestId"}}`
    /// (error codes page).
    fn error(code: &str, message: &str, reason: impl Into<String>) -> Reply {
        let body = json!({
            "Response": {
                "Error": { "Code": code, "Message": message },
                "RequestId": request_id().to_lowercase(),
            }
        });
        Reply::rejected(code, reason, json_response(StatusCode::OK, &body))
    }

    fn signature_failure(reason: impl Into<String>) -> Reply {
        error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
            reason,
        )
    }

    /// The parts of `Authorization: TC3-HMAC-SHA256 Credential=<SecretId>/<Date>/<Service>/
    /// tc3_request, SignedHeaders=<…>, Signature=<…>` (step 4).
    struct Authorization {
        secret_id: String,
        date: String,
        service: String,
        terminator: String,
        signed_headers: String,
        signature: String,
    }

    fn parse_authorization(value: &str) -> Option<Authorization> {
        let (algorithm, rest) = value.split_once(' ')?;
        if algorithm != "TC3-HMAC-SHA256" {
            return None;
        }
        let mut fields = HashMap::new();
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            fields.insert(name, value);
        }
        let credential: Vec<&str> = fields.get("Credential")?.split('/').collect();
        let [secret_id, date, service, terminator] = credential[..] else { return None };
        Some(Authorization {
            secret_id: secret_id.to_owned(),
            date: date.to_owned(),
            service: service.to_owned(),
            terminator: terminator.to_owned(),
            signed_headers: (*fields.get("SignedHeaders")?).to_owned(),
            signature: (*fields.get("Signature")?).to_owned(),
        })
    }

    /// A field of the JSON body, which must be absent, `null` or of the documented type
    /// (`InvalidParameter` otherwise).
    enum Field {
        String,
        StringArray,
        /// A non-negative JSON integer (the `Integer` of the API pages).
        Integer,
    }

    /// `Err` holds the message and the reason of the `InvalidParameter` answer.
    fn typed<'a>(
        body: &'a serde_json::Map<String, Value>,
        name: &str,
        kind: Field,
    ) -> Result<Option<&'a Value>, (String, String)> {
        let value = match body.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => value,
        };
        let (ok, expected) = match kind {
            Field::String => (value.is_string(), "String"),
            Field::StringArray => {
                (value.as_array().is_some_and(|items| items.iter().all(Value::is_string)), "Array of String")
            }
            Field::Integer => (value.as_u64().is_some(), "Integer"),
        };
        if ok {
            Ok(Some(value))
        } else {
            Err((
                format!("The type of parameter `{name}` is incorrect, expect type `{expected}`."),
                format!("{name} is {value}, not {expected}"),
            ))
        }
    }

    fn missing(name: &str) -> Reply {
        error(
            "MissingParameter",
            &format!("The request is missing a required parameter `{name}`."),
            format!("{name} missing"),
        )
    }

    /// The API 3.0 actions this fake serves (`X-TC-Action`).
    #[derive(Clone, Copy, PartialEq)]
    enum Action {
        SendSms,
        PullSmsSendStatusByPhoneNumber,
        SendTtsVoice,
    }

    /// One Tencent Cloud product's API 3.0: its service name (the first label of its host, part
    /// of the credential scope), its version and its actions.
    struct Api {
        service: &'static str,
        version: &'static str,
        actions: &'static [(&'static str, Action)],
    }

    /// SMS, 2021-01-11.
    const SMS: Api = Api {
        service: SERVICE,
        version: VERSION,
        actions: &[
            ("SendSms", Action::SendSms),
            ("PullSmsSendStatusByPhoneNumber", Action::PullSmsSendStatusByPhoneNumber),
        ],
    };

    /// VMS (语音消息), 2020-09-02 (cloud.tencent.com/document/api/1128/51558).
    const VMS: Api = Api { service: "vms", version: "2020-09-02", actions: &[("SendTtsVoice", Action::SendTtsVoice)] };

    /// Tencent Cloud SMS: `SendSms` and `PullSmsSendStatusByPhoneNumber`.
    pub(super) fn process(
        state: &FakeState,
        secret_id: &str,
        secret_key: &str,
        sdk_app_id: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        match verify(&SMS, secret_id, secret_key, req) {
            Ok((Action::PullSmsSendStatusByPhoneNumber, body)) => pull_by_phone_number(state, sdk_app_id, &body, req),
            Ok((_, body)) => send_sms(state, sdk_app_id, &body, req, fail),
            Err(reply) => *reply,
        }
    }

    /// Tencent Cloud VMS: `SendTtsVoice`, with the same API 3.0 checks as SMS.
    pub(super) fn process_voice(
        secret_id: &str,
        secret_key: &str,
        voice_sdk_app_id: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        match verify(&VMS, secret_id, secret_key, req) {
            Ok((_, body)) => send_tts_voice(voice_sdk_app_id, &body, req, fail),
            Err(reply) => *reply,
        }
    }

    /// The checks every API 3.0 call passes: method, headers, TC3-HMAC-SHA256 with `api`'s
    /// service, clock skew, and a JSON object body. `Ok` holds the action and the body, `Err`
    /// the answer (boxed: a [`Reply`] is large).
    fn verify(
        api: &Api,
        secret_id: &str,
        secret_key: &str,
        req: &Incoming,
    ) -> Result<(Action, serde_json::Map<String, Value>), Box<Reply>> {
        // The Chillcloud client POSTs JSON, the method the docs recommend; this fake does not
        // implement GET with form parameters.
        if req.method != Method::POST || req.path != "/" {
            return Err(error(
                "InvalidParameter",
                "This fake accepts POST / with a JSON body only.",
                format!("{} {}", req.method, req.path),
            )
            .into());
        }
        // Content-Type: POST supports application/json (and multipart for a few APIs), and
        // "content-type must match the actually sent content" (Signature v3).
        if !req.content_type_is("application/json") {
            return Err(error(
                "InvalidParameter",
                "Content-Type must be application/json.",
                format!("Content-Type {:?}", req.header("content-type")),
            )
            .into());
        }
        // Common parameters as headers: X-TC-Action, X-TC-Version, X-TC-Timestamp, X-TC-Region
        // (Region is required for SendSms and PullSmsSendStatusByPhoneNumber: "Region Yes").
        let known = |name: &str| api.actions.iter().find(|(known, _)| *known == name).map(|(_, action)| *action);
        let action = match req.header("x-tc-action").map(|name| (name, known(name))) {
            None => return Err(missing("X-TC-Action").into()),
            Some((_, Some(action))) => action,
            Some((other, None)) => {
                return Err(error(
                    "InvalidAction",
                    "The requested action does not exist.",
                    format!("X-TC-Action {other:?}"),
                )
                .into());
            }
        };
        let Some(version) = req.header("x-tc-version") else { return Err(missing("X-TC-Version").into()) };
        if version != api.version {
            return Err(
                error("NoSuchVersion", "The API version does not exist.", format!("X-TC-Version {version:?}")).into()
            );
        }
        if req.header("x-tc-region").is_none_or(str::is_empty) {
            return Err(missing("X-TC-Region").into());
        }
        let Some(timestamp) = req.header("x-tc-timestamp").and_then(|t| t.parse::<i64>().ok()) else {
            return Err(error(
                "InvalidParameter",
                "X-TC-Timestamp must be a Unix timestamp in seconds.",
                format!("X-TC-Timestamp {:?}", req.header("x-tc-timestamp")),
            )
            .into());
        };
        // `AuthFailure.InvalidAuthorization`: "Authorization in the request header is invalid."
        let Some(auth) = req.header("authorization").and_then(parse_authorization) else {
            return Err(error(
                "AuthFailure.InvalidAuthorization",
                "Authorization in the request header is invalid.",
                format!("Authorization {:?}", req.header("authorization")),
            )
            .into());
        };
        // `AuthFailure.SecretIdNotFound`.
        if auth.secret_id != secret_id {
            return Err(error(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
                format!("unknown SecretId {:?}", auth.secret_id),
            )
            .into());
        }
        // `AuthFailure.SignatureExpire`: more than five minutes from the server's clock.
        let skew = timestamp - req.unix_s();
        if skew.abs() > MAX_SKEW_S {
            return Err(error(
                "AuthFailure.SignatureExpire",
                "Signature expired. Timestamp and server time cannot differ by more than five minutes.",
                format!("X-TC-Timestamp {timestamp} is {skew} s from now (limit {MAX_SKEW_S} s)"),
            )
            .into());
        }
        // CredentialScope = Date/service/tc3_request: "Date is a date in UTC time, whose value
        // should match the UTC date converted by the common parameter X-TC-Timestamp; service …
        // should match the domain name of the product called."
        let expected_date =
            DateTime::from_timestamp(timestamp, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default();
        let service = api.service;
        if auth.date != expected_date || auth.service != service || auth.terminator != "tc3_request" {
            return Err(signature_failure(format!(
                "credential scope {}/{}/{}, expected {expected_date}/{service}/tc3_request",
                auth.date, auth.service, auth.terminator
            ))
            .into());
        }
        // SignedHeaders: lower case, sorted in ASCII order, `;`-separated, and "content-type and
        // host are required headers"; CanonicalHeaders: each signed header as `key:value\n`
        // with key and value lower-cased and trimmed.
        let names: Vec<&str> = auth.signed_headers.split(';').collect();
        let well_formed = names.iter().all(|n| !n.is_empty() && *n == n.to_ascii_lowercase())
            && names.windows(2).all(|w| w[0] < w[1]);
        if !well_formed || !names.contains(&"content-type") || !names.contains(&"host") {
            return Err(signature_failure(format!(
                "SignedHeaders {:?} must be lower case, sorted, and include content-type and host",
                auth.signed_headers
            ))
            .into());
        }
        let mut canonical_headers = String::new();
        for name in &names {
            let Some(value) = req.header(name) else {
                return Err(signature_failure(format!("signed header {name} is not in the request")).into());
            };
            canonical_headers.push_str(&format!("{name}:{}\n", value.trim().to_lowercase()));
        }
        let canonical = canonical_request("POST", "", &canonical_headers, &auth.signed_headers, &req.body);
        let scope = format!("{}/{service}/tc3_request", auth.date);
        let to_sign = string_to_sign(timestamp, &scope, &canonical);
        let verified = signature(secret_key, &auth.date, service, &to_sign) == auth.signature;
        if !verified {
            return Err(signature_failure(format!(
                "Signature {} does not match; server CanonicalRequest {canonical:?}",
                auth.signature
            ))
            .into());
        }

        // The body: the action's input parameters.
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
            return Err(error(
                "FailedOperation.FailResolvePacket",
                "Failed to parse the request packet.",
                format!("body is not a JSON object: {}", String::from_utf8_lossy(&req.body)),
            )
            .into());
        };
        Ok((action, body))
    }

    /// `SendTtsVoice` 2020-09-02 (cloud.tencent.com/document/api/1128/51558): one template
    /// voice notification call. Codes from the VMS error list (cloud.tencent.com/document/api/
    /// 1128/51567; tencentcloud-sdk `vms/v20200902` errorcodes):
    ///
    /// - `TemplateId` (String), `CalledNumber` (String), `VoiceSdkAppid` (String) required;
    ///   `TemplateParamSet` (Array of String, "若模板没有参数，请提供为空数组"), `PlayTimes`
    ///   (Integer, "最多3次，默认2次"), `SessionContext` (String) optional. A wrong type is
    ///   `InvalidParameter`, a missing one `MissingParameter`.
    /// - `VoiceSdkAppid` other than the configured one: `InvalidParameterValue.SdkAppidNotExist`.
    /// - `CalledNumber` "采用 e.164 标准，格式为+[国家或地区码][用户号码]", and VMS calls mainland
    ///   China numbers only: `+86` and an 11-digit mobile, else
    ///   `InvalidParameterValue.CalledNumberVerifyFail`.
    /// - `PlayTimes` 1–3, else `InvalidParameterValue`; "语音消息的内容长度不超过350字": the
    ///   variables alone over 350 characters are `InvalidParameterValue.ContentLengthLimit`.
    /// - [`Mode::Fail`]: `InternalError.UpstreamError` (语音上游错误).
    /// - Success `{"Response":{"SendStatus":{"CallId","SessionContext"},"RequestId"}}`.
    fn send_tts_voice(
        voice_sdk_app_id: &str,
        body: &serde_json::Map<String, Value>,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        /// "注：语音消息的内容长度不超过350字。"
        const MAX_CONTENT_CHARS: usize = 350;
        let mut values = Vec::new();
        for (name, kind) in [
            ("TemplateId", Field::String),
            ("CalledNumber", Field::String),
            ("VoiceSdkAppid", Field::String),
            ("TemplateParamSet", Field::StringArray),
            ("PlayTimes", Field::Integer),
            ("SessionContext", Field::String),
        ] {
            match typed(body, name, kind) {
                Ok(value) => values.push(value),
                Err((message, reason)) => return error("InvalidParameter", &message, reason),
            }
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let Some(template_id) = text(values[0]) else { return missing("TemplateId") };
        let Some(called) = text(values[1]) else { return missing("CalledNumber") };
        let Some(app_id) = text(values[2]) else { return missing("VoiceSdkAppid") };
        let template_params: Option<Vec<String>> = values[3]
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        let play_times = values[4].and_then(Value::as_u64);
        let session_context = text(values[5]);
        if app_id != voice_sdk_app_id {
            return error(
                "InvalidParameterValue.SdkAppidNotExist",
                "SDK AppID 不存在。",
                format!("VoiceSdkAppid {app_id:?}, the fake knows {voice_sdk_app_id:?}"),
            );
        }
        let mainland_e164 = called.strip_prefix("+86").is_some_and(|n| mainland_mobile(n) == Some(n));
        if !mainland_e164 {
            return error(
                "InvalidParameterValue.CalledNumberVerifyFail",
                "被叫手机号码格式校验失败。",
                format!("CalledNumber {called:?} is not +86 and an 11-digit mainland mobile number"),
            );
        }
        if let Some(times) = play_times
            && !(1..=3).contains(&times)
        {
            return error(
                "InvalidParameterValue",
                "PlayTimes 最多3次。",
                format!("PlayTimes {times}, expected 1 to 3"),
            );
        }
        let chars: usize = template_params.iter().flatten().map(|p| p.chars().count()).sum();
        if chars > MAX_CONTENT_CHARS {
            return error(
                "InvalidParameterValue.ContentLengthLimit",
                "语音模板中单个变量长度超过限制。",
                format!("TemplateParamSet has {chars} characters, the whole message is limited to {MAX_CONTENT_CHARS}"),
            );
        }
        let request_id = request_id().to_lowercase();
        if fail {
            let body = json!({
                "Response": {
                    "Error": { "Code": "InternalError.UpstreamError", "Message": "语音上游错误。" },
                    "RequestId": request_id,
                }
            });
            return Reply { verdict: Verdict::Failed, response: json_response(StatusCode::OK, &body) };
        }
        // A CallId in the documented form, `12582bce-403c-11eb-96b8-525400476c37`.
        let call_id = super::request_id().to_lowercase();
        let delivered = Delivered {
            recipient: called,
            text: None,
            template: Some(template_id),
            params: template_params.map(Value::from),
            sender: None,
            idempotency_key: session_context.clone(),
            provider_id: call_id.clone(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        let body = json!({
            "Response": {
                "SendStatus": { "CallId": call_id, "SessionContext": session_context.unwrap_or_default() },
                "RequestId": request_id,
            }
        });
        Reply { verdict: Verdict::Delivered(vec![delivered]), response: json_response(StatusCode::OK, &body) }
    }

    /// `SendSms` 2021-01-11: its input parameters, and the sending.
    fn send_sms(
        state: &FakeState,
        sdk_app_id: &str,
        body: &serde_json::Map<String, Value>,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        let mut values = Vec::new();
        for (name, kind) in [
            ("PhoneNumberSet", Field::StringArray),
            ("SmsSdkAppId", Field::String),
            ("TemplateId", Field::String),
            ("SignName", Field::String),
            ("TemplateParamSet", Field::StringArray),
            ("SessionContext", Field::String),
        ] {
            match typed(body, name, kind) {
                Ok(value) => values.push(value),
                Err((message, reason)) => return error("InvalidParameter", &message, reason),
            }
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let strings = |v: Option<&Value>| {
            v.and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
        };
        let (numbers, app_id, template_id, sign_name, template_params, session_context) = (
            strings(values[0]),
            text(values[1]),
            text(values[2]),
            text(values[3]),
            strings(values[4]),
            text(values[5]),
        );
        // Required: PhoneNumberSet, SmsSdkAppId, TemplateId.
        let Some(numbers) = numbers.filter(|n| !n.is_empty()) else { return missing("PhoneNumberSet") };
        let Some(app_id) = app_id else { return missing("SmsSdkAppId") };
        let Some(template_id) = template_id else { return missing("TemplateId") };
        if numbers.len() > MAX_NUMBERS {
            return error(
                "LimitExceeded.PhoneNumberCountLimit",
                "The number of phone numbers in one request exceeds 200.",
                format!("{} numbers", numbers.len()),
            );
        }
        // `InvalidParameterValue.SdkAppIdNotExist`.
        if app_id != sdk_app_id {
            return error(
                "InvalidParameterValue.SdkAppIdNotExist",
                "The SdkAppId does not exist.",
                format!("SmsSdkAppId {app_id:?}, the fake knows {sdk_app_id:?}"),
            );
        }
        // PhoneNumberSet: "E.164 标准,格式为+[国家或地区码][手机号] …
        // 发送国内短信格式还支持0086、86或无任何国家或地区码的11位手机号码";
        // `InvalidParameterValue.IncorrectPhoneNumber` 手机号格式错误.
        if let Some(number) = numbers.iter().find(|n| !is_phone_number(n)) {
            return error(
                "InvalidParameterValue.IncorrectPhoneNumber",
                "The mobile number format is incorrect.",
                format!("phone number {number:?}"),
            );
        }
        if session_context.as_ref().is_some_and(|s| s.len() >= MAX_SESSION_CONTEXT) {
            return error(
                "InvalidParameterValue",
                "SessionContext must be shorter than 512 bytes.",
                "SessionContext of 512 bytes or more",
            );
        }
        // Template variables (review standards, tencentcloud.com/zh/document/product/382/40659 of
        // 2024-05-24): "个人认证用户创建的短信正文模板每个变量取值最多支持12个字。企业认证用户没有
        // 变量取值长度限制", "变量不允许透传链接（包含短链接）"; the current page
        // (cloud.tencent.com/document/product/382/39023) keeps "变量内不支持传入链接（包含短链接）"
        // and sends non-verification lengths to the console, so 12 is the strictest documented
        // limit ("汉字、字母、数字、标点符号…以及空格等，都按1个字符计算"). The codes are SendSms's
        // `InvalidParameterValue.TemplateParameterLengthLimit` ("单个模板变量字符数超过12个…", legacy
        // 1036) and `InvalidParameterValue.ProhibitedUseUrlInTemplateParameter` ("禁止在模板变量中
        // 使用 URL。", legacy 1048), answered here as the request's `Error` like the other codes of
        // SendSms's error list.
        if state.options.template_variable_rules
            && let Some(variables) = &template_params
        {
            for (i, value) in variables.iter().enumerate() {
                if looks_like_link(value) {
                    return error(
                        "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
                        "禁止在模板变量中使用 URL。",
                        format!("TemplateParamSet[{i}] {value:?} carries a link"),
                    );
                }
                let chars = value.chars().count();
                if let Some(max) = state.options.tencent_variable_max_chars
                    && chars > max
                {
                    return error(
                        "InvalidParameterValue.TemplateParameterLengthLimit",
                        &format!(
                            "单个模板变量字符数超过{max}个，企业认证用户不限制单个变量值字数，您可以变更实名认证模式，\
                             变更为企业认证用户后，该限制变更约1小时左右生效。"
                        ),
                        format!("TemplateParamSet[{i}] has {chars} characters, limit {max}"),
                    );
                }
            }
        }

        let request_id = request_id().to_lowercase();
        let status = |number: &str, serial: &str, code: &str, message: &str, fee: u32| {
            json!({
                "SerialNo": serial,
                "PhoneNumber": number,
                "Fee": fee,
                "SessionContext": session_context.clone().unwrap_or_default(),
                "Code": code,
                "Message": message,
                "IsoCode": iso_code(number),
            })
        };
        if fail {
            // A frequency limit reported per number inside an otherwise successful answer
            // (SendSms error codes: `LimitExceeded.PhoneNumberThirtySecondLimit`).
            let set: Vec<Value> = numbers
                .iter()
                .map(|n| {
                    status(
                        n,
                        "",
                        "LimitExceeded.PhoneNumberThirtySecondLimit",
                        "the number of SMS messages sent from a single mobile number within 30 seconds \
                         exceeds the upper limit",
                        0,
                    )
                })
                .collect();
            let body = json!({ "Response": { "SendStatusSet": set, "RequestId": request_id } });
            return Reply { verdict: Verdict::Failed, response: json_response(StatusCode::OK, &body) };
        }
        // Success (SendSms output example): one `SendStatus` per number, `Code` "Ok".
        let mut set = Vec::new();
        let mut delivered = Vec::new();
        for number in numbers {
            let serial = format!("2028:{:028}", rand::random::<u64>());
            set.push(status(&number, &serial, "Ok", "send success", 1));
            delivered.push(Delivered {
                recipient: number,
                text: None,
                template: Some(template_id.clone()),
                params: template_params.clone().map(Value::from),
                sender: sign_name.clone(),
                idempotency_key: session_context.clone(),
                provider_id: serial,
                received_at: req.at,
                received_unix_ms: req.unix_ms,
            });
        }
        let body = json!({ "Response": { "SendStatusSet": set, "RequestId": request_id } });
        Reply { verdict: Verdict::Delivered(delivered), response: json_response(StatusCode::OK, &body) }
    }

    /// A number as E.164 (`+8618501234444`), the form `PullSmsSendStatusByPhoneNumber` takes and
    /// answers, whatever form the send used (SendSms also takes `0086`, `86` or a bare 11-digit
    /// mainland number).
    fn e164(number: &str) -> String {
        match mainland_mobile(number) {
            Some(mobile) => format!("+86{mobile}"),
            None => format!("+{}", international_digits(number)),
        }
    }

    /// `PullSmsSendStatusByPhoneNumber` 2021-01-11 (tencentcloud.com/document/api/382/40518):
    /// the delivery receipts of one number in a time window.
    ///
    /// - Input: `BeginTime` (Integer, Unix seconds, "注：最大可拉取当前时期前7天的数据"),
    ///   `EndTime` (Integer, optional), `Offset` (Integer, "注：目前固定设置为0"), `Limit`
    ///   (Integer, "拉取最大条数，最多 100"), `PhoneNumber` (E.164), `SmsSdkAppId`; all but
    ///   `EndTime` required.
    /// - Output: `PullSmsSendStatusSet` of `{UserReceiveTime, CountryCode, SubscriberNumber,
    ///   PhoneNumber, SerialNo, ReportStatus, Description, SessionContext}` and `RequestId`.
    ///   `ReportStatus` "SUCCESS（下发成功）、FAIL（下发失败）。注：仅当运营商有返回短信接收状态时回包中
    ///   才会有状态数据": a message is listed once its receipt came in, not before.
    ///   `SessionContext` is empty unless [`Options::tencent_pull_session_context`].
    /// - Unlike `PullSmsSendStatus`, whose pulled statuses "不会再重复返回，可以理解为消息队列机制"
    ///   (v5 page 382/5810), this is a window query: the same call answers the same receipts
    ///   again (the v5 `pullstatus4mobile` it replaced took `begin_time`/`end_time` the same way).
    /// - `Offset` other than 0 is `InvalidParameterValue.OffsetVerifyFail` ("参数 Offset 校验
    ///   失败。"), `Limit` 0 or over 100 `InvalidParameterValue.LimitVerifyFail`, a number not in
    ///   E.164 `InvalidParameterValue.IncorrectPhoneNumber` (codes of the SDK's error list).
    ///
    /// Not documented, the fake's reading: the window applies to the time the message was
    /// accepted (choose `BeginTime` a little before the first attempt and `EndTime` now or
    /// absent, which finds it under any reading); receipts come oldest first and only the first
    /// `Limit` are answered; receipts older than 7 days are gone.
    fn pull_by_phone_number(
        state: &FakeState,
        sdk_app_id: &str,
        body: &serde_json::Map<String, Value>,
        req: &Incoming,
    ) -> Reply {
        let mut values = Vec::new();
        for (name, kind) in [
            ("BeginTime", Field::Integer),
            ("Offset", Field::Integer),
            ("Limit", Field::Integer),
            ("PhoneNumber", Field::String),
            ("SmsSdkAppId", Field::String),
            ("EndTime", Field::Integer),
        ] {
            match typed(body, name, kind) {
                Ok(value) => values.push(value),
                Err((message, reason)) => return error("InvalidParameter", &message, reason),
            }
        }
        let number = |v: Option<&Value>| v.and_then(Value::as_u64);
        let Some(begin) = number(values[0]) else { return missing("BeginTime") };
        let Some(offset) = number(values[1]) else { return missing("Offset") };
        let Some(limit) = number(values[2]) else { return missing("Limit") };
        let Some(phone) = values[3].and_then(Value::as_str) else { return missing("PhoneNumber") };
        let Some(app_id) = values[4].and_then(Value::as_str) else { return missing("SmsSdkAppId") };
        let end = number(values[5]).unwrap_or_else(|| u64::try_from(req.unix_s()).unwrap_or_default());
        if app_id != sdk_app_id {
            return error(
                "InvalidParameterValue.SdkAppIdNotExist",
                "The SdkAppId does not exist.",
                format!("SmsSdkAppId {app_id:?}, the fake knows {sdk_app_id:?}"),
            );
        }
        if offset != 0 {
            return error(
                "InvalidParameterValue.OffsetVerifyFail",
                "参数 Offset 校验失败。",
                format!("Offset {offset}"),
            );
        }
        if !(1..=100).contains(&limit) {
            return error("InvalidParameterValue.LimitVerifyFail", "参数 Limit 校验失败。", format!("Limit {limit}"));
        }
        let e164_form = phone.strip_prefix('+').is_some_and(|d| is_phone_number(d) && !d.starts_with('0'));
        if !e164_form {
            return error(
                "InvalidParameterValue.IncorrectPhoneNumber",
                "The mobile number format is incorrect.",
                format!("PhoneNumber {phone:?} is not E.164 (+[country code][number])"),
            );
        }

        let receipt_ms = i64::try_from(state.options.receipt_delay.as_millis()).unwrap_or(i64::MAX);
        let seven_days_ms = 7 * 24 * 3600 * 1000;
        let set: Vec<Value> = state
            .delivered
            .iter()
            .filter(|d| e164(&d.recipient) == phone)
            .filter(|d| {
                let sent_s = u64::try_from(d.received_unix_ms.div_euclid(1000)).unwrap_or_default();
                (begin..=end).contains(&sent_s)
            })
            .filter(|d| req.unix_ms - d.received_unix_ms <= seven_days_ms)
            .filter(|d| req.unix_ms >= d.received_unix_ms.saturating_add(receipt_ms))
            .take(usize::try_from(limit).unwrap_or(100))
            .map(|d| {
                let phone_number = e164(&d.recipient);
                let digits = &phone_number[1..];
                let country = COUNTRY_CODES.iter().map(|(code, _)| *code).find(|code| digits.starts_with(code));
                let country = country.unwrap_or_default();
                let session_context = if state.options.tencent_pull_session_context {
                    d.idempotency_key.clone().unwrap_or_default()
                } else {
                    String::new()
                };
                json!({
                    "UserReceiveTime": (d.received_unix_ms + receipt_ms).div_euclid(1000),
                    "CountryCode": country,
                    "SubscriberNumber": &digits[country.len()..],
                    "PhoneNumber": phone_number,
                    "SerialNo": d.provider_id,
                    "ReportStatus": "SUCCESS",
                    "Description": "DELIVRD",
                    "SessionContext": session_context,
                })
            })
            .collect();
        let body = json!({ "Response": { "PullSmsSendStatusSet": set, "RequestId": request_id().to_lowercase() } });
        Reply { verdict: Verdict::Answered, response: json_response(StatusCode::OK, &body) }
    }

    fn is_phone_number(n: &str) -> bool {
        let digits = n.strip_prefix('+').unwrap_or(n);
        (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    }

    /// `IsoCode` of a `SendStatus`: the country of the number (numbers without a country code
    /// are Chinese mainland ones).
    fn iso_code(number: &str) -> &'static str {
        let Some(international) = number.strip_prefix('+').or_else(|| number.strip_prefix("00")) else { return "CN" };
        COUNTRY_CODES.iter().find(|(prefix, _)| international.starts_with(prefix)).map_or("", |(_, iso)| iso)
    }
}

// ---------------------------------------------------------------------------------------------
// Twilio: messages and calls
// ---------------------------------------------------------------------------------------------

mod twilio {
    use super::*;

    /// "The concatenated message body exceeds the 1600 character limit" (error 21617).
    const BODY_LIMIT: usize = 1600;

    /// Twilio's JSON error: `{"code", "message", "more_info", "status"}` with the HTTP status
    /// (Twilio API responses; twilio.com/docs/errors).
    fn error_response(status: StatusCode, code: u32, message: &str) -> Response {
        let body = json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        });
        json_response(status, &body)
    }

    fn error(status: StatusCode, code: u32, message: &str, reason: impl Into<String>) -> Reply {
        Reply::rejected(&code.to_string(), reason, error_response(status, code, message))
    }

    fn basic_auth(req: &Incoming) -> Option<(String, String)> {
        let encoded = req.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }

    /// E.164: `+` and up to 15 digits, the first not 0 ("To: The recipient's phone number in
    /// E.164 format", Messages resource).
    fn is_e164(n: &str) -> bool {
        n.strip_prefix('+').is_some_and(|d| {
            (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
        })
    }

    pub(super) fn process(
        state: &mut FakeState,
        account_sid: &str,
        auth_token: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        // The resources: /2010-04-01/Accounts/{AccountSid}/Messages.json and …/Calls.json;
        // 20404 otherwise.
        let resource = req.path.strip_prefix("/2010-04-01/Accounts/").and_then(|rest| {
            let (sid, resource) = rest.split_once('/')?;
            let calls = match resource {
                "Messages.json" => false,
                "Calls.json" => true,
                _ => return None,
            };
            (!sid.is_empty()).then_some((sid, calls))
        });
        let Some((path_sid, calls)) = resource else {
            return error(
                StatusCode::NOT_FOUND,
                20404,
                &format!("The requested resource {} was not found", req.path),
                format!("unknown resource {}", req.path),
            );
        };
        if req.method != Method::POST && req.method != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                20004,
                "Method not allowed",
                format!("{} on {} (the fake creates and lists them)", req.method, req.path),
            );
        }
        // HTTP basic auth, Account SID as user and Auth Token as password; error 20003 with
        // HTTP 401 otherwise.
        match basic_auth(req) {
            Some((user, password)) if user == account_sid && password == auth_token => {}
            other => {
                let reason = match other {
                    None => "no basic auth".to_owned(),
                    Some((user, _)) if user != account_sid => format!("basic auth user {user:?}"),
                    Some(_) => "wrong Auth Token".to_owned(),
                };
                let mut reply = error(StatusCode::UNAUTHORIZED, 20003, "Authenticate", reason);
                reply
                    .response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Twilio API\""));
                return reply;
            }
        }
        if path_sid != account_sid {
            return error(
                StatusCode::NOT_FOUND,
                20404,
                &format!("The requested resource {} was not found", req.path),
                format!("account {path_sid:?} in the path is not the authenticated {account_sid:?}"),
            );
        }
        match (calls, req.method == Method::GET) {
            (false, true) => return list(state, account_sid, req),
            (true, true) => return calls::list(state, account_sid, req),
            (true, false) => return calls::create(state, account_sid, req, fail),
            (false, false) => {}
        }
        // Idempotency: Twilio puts `I-Twilio-Idempotency-Token` on the webhooks it sends, the
        // same token on a retry. Its REST API documents no idempotency header for creating a
        // message: honouring the token here is this fake's contract with Chillcloud's client
        // (a repeated token answers the first message and sends nothing), not Twilio behaviour.
        let token = req.header(TWILIO_IDEMPOTENCY_HEADER).map(str::to_owned);
        if let Some(first) = token.as_ref().and_then(|t| state.twilio_tokens.get(t)) {
            return Reply { verdict: Verdict::Replayed, response: json_response(StatusCode::CREATED, first) };
        }
        // Parameters are form fields: 21604 lists "Your request is not formatted as
        // application/x-www-form-urlencoded" among the causes of a missing To, so a JSON body
        // reads as no fields at all.
        let fields =
            if req.content_type_is("application/x-www-form-urlencoded") { parse_form(&req.body) } else { Vec::new() };
        let field =
            |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
        // 21604 "'To' phone number is required to send a Message"; 21211 "Invalid 'To' Phone
        // Number"; 21603 "A 'From' or 'MessagingServiceSid' parameter is required to send a
        // message"; 21602 "Message body is required" (Body or MediaUrl); 21617 "The concatenated
        // message body exceeds the 1600 character limit".
        let Some(to) = field("To") else {
            return error(StatusCode::BAD_REQUEST, 21604, "A 'To' phone number is required.", "To missing");
        };
        if !is_e164(&to) {
            return error(
                StatusCode::BAD_REQUEST,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
                format!("To {to:?} is not E.164"),
            );
        }
        let from = field("From");
        let service = field("MessagingServiceSid");
        if from.is_none() && service.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                21603,
                "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
                "From and MessagingServiceSid missing",
            );
        }
        let body = field("Body");
        if body.is_none() && field("MediaUrl").is_none() {
            return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.", "Body missing");
        }
        let text = body.unwrap_or_default();
        if text.chars().count() > BODY_LIMIT {
            return error(
                StatusCode::BAD_REQUEST,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
                format!("Body of {} characters", text.chars().count()),
            );
        }

        if fail {
            // 20500 "Internal Server Error", HTTP 500.
            return Reply {
                verdict: Verdict::Failed,
                response: error_response(StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error"),
            };
        }

        // 201 Created with the Message resource; "queued", or "accepted" when a Messaging
        // Service picks the sender (then num_segments is 0 until a sender is assigned).
        let sid = format!("SM{}", hex::encode(rand::random::<[u8; 16]>()));
        let now = DateTime::from_timestamp_millis(req.unix_ms).unwrap_or_default().to_rfc2822();
        let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json");
        let message = json!({
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "body": text,
            "date_created": now,
            "date_sent": null,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": from,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": if service.is_some() { "0" } else { "1" },
            "price": null,
            "price_unit": "USD",
            "sid": sid,
            "status": if service.is_some() { "accepted" } else { "queued" },
            "subresource_uris": { "media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json") },
            "to": to,
            "uri": uri,
        });
        if let Some(token) = &token {
            state.twilio_tokens.insert(token.clone(), message.clone());
        }
        state.twilio_messages.push(TwilioMessage { resource: message.clone(), created_unix_ms: req.unix_ms });
        let delivered = Delivered {
            recipient: to,
            text: Some(text),
            template: None,
            params: None,
            sender: from.or(service),
            idempotency_key: token,
            provider_id: sid,
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        Reply { verdict: Verdict::Delivered(vec![delivered]), response: json_response(StatusCode::CREATED, &message) }
    }

    /// Which sent dates a `DateSent` filter keeps.
    #[derive(Clone, Copy)]
    enum DateFilter {
        On,
        OnOrBefore,
        OnOrAfter,
    }

    /// `GET /2010-04-01/Accounts/{AccountSid}/Messages.json`, "Read multiple Message resources"
    /// (Messages resource page):
    ///
    /// - Filters: `To` and `From` (exact), and `DateSent`: "Filter by Message sent_date. Accepts
    ///   GMT dates in the following formats: YYYY-MM-DD (to find Messages with a specific
    ///   sent_date), <=YYYY-MM-DD (to find Messages with sent_dates on and before a specific
    ///   date), and >=YYYY-MM-DD (to find Messages with sent_dates on and after a specific date)."
    ///   On the wire the inequalities are the parameters `DateSent<` and `DateSent>`
    ///   (`DateSent%3C=2024-05-01`, `DateSent>=2024-05-01` unencoded), as the helper libraries
    ///   send `date_sent_before`/`date_sent_after`. The filters are date-granular and inclusive.
    ///   A message without a `date_sent` yet (still queued) matches no `DateSent` filter.
    /// - "Results are sorted by the DateSent field, with the most recent messages appearing
    ///   first."; `PageSize` "The default is 50, and the maximum is 1000."; `Page` and
    ///   `PageToken`; the answer is `{messages, page, page_size, start, end, uri, first_page_uri,
    ///   next_page_uri, previous_page_uri}`, `next_page_uri` null on the last page; following it
    ///   "ensures that your next request picks up where it left off".
    ///
    /// The fake's reading where the page is silent: a full timestamp (`2024-05-01T10:00:00Z`,
    /// what the helper libraries send for a datetime) is accepted and only its GMT date used; any
    /// other value is HTTP 400 with the dictionary's generic code 400 ("Bad Request"); a
    /// `PageSize` out of range is clamped; the page token is `PA` + the last sid of the page
    /// before.
    fn list(state: &FakeState, account_sid: &str, req: &Incoming) -> Reply {
        let query = parse_form(req.query.as_bytes());
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let mut date_filters = Vec::new();
        for (name, filter) in
            [("DateSent", DateFilter::On), ("DateSent<", DateFilter::OnOrBefore), ("DateSent>", DateFilter::OnOrAfter)]
        {
            let Some(raw) = get(name) else { continue };
            let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .or_else(|| DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc).date_naive()));
            let Some(date) = date else {
                return error(
                    StatusCode::BAD_REQUEST,
                    400,
                    &format!("Invalid {name}: {raw}"),
                    format!("{name}={raw:?}, expected YYYY-MM-DD"),
                );
            };
            date_filters.push((filter, date));
        }
        let page_size = get("PageSize").and_then(|v| v.parse::<usize>().ok()).unwrap_or(50).clamp(1, 1000);
        let page = get("Page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        let (to, from) = (get("To"), get("From"));
        let receipt_ms = i64::try_from(state.options.receipt_delay.as_millis()).unwrap_or(i64::MAX);

        let matches: Vec<Value> = state
            .twilio_messages
            .iter()
            .rev()
            .filter_map(|message| {
                let sent_ms = message.created_unix_ms.saturating_add(receipt_ms);
                let sent =
                    (req.unix_ms >= sent_ms).then(|| DateTime::from_timestamp_millis(sent_ms).unwrap_or_default());
                let mut resource = message.resource.clone();
                if let Some(sent) = sent {
                    resource["status"] = Value::from("delivered");
                    resource["date_sent"] = Value::from(sent.to_rfc2822());
                    resource["date_updated"] = Value::from(sent.to_rfc2822());
                }
                let keep = to.is_none_or(|to| resource["to"] == to)
                    && from.is_none_or(|from| resource["from"] == from)
                    && date_filters.iter().all(|(filter, date)| {
                        sent.is_some_and(|sent| match filter {
                            DateFilter::On => sent.date_naive() == *date,
                            DateFilter::OnOrBefore => sent.date_naive() <= *date,
                            DateFilter::OnOrAfter => sent.date_naive() >= *date,
                        })
                    });
                keep.then_some(resource)
            })
            .collect();

        let start = match get("PageToken").and_then(|token| token.strip_prefix("PA")) {
            Some(after) => matches.iter().position(|m| m["sid"] == after).map_or(page * page_size, |i| i + 1),
            None => page * page_size,
        };
        let items: Vec<Value> = matches.iter().skip(start).take(page_size).cloned().collect();
        let more = start + items.len() < matches.len();
        let next_token = items.last().and_then(|m| m["sid"].as_str()).map(|sid| format!("PA{sid}"));
        let filters: Vec<(String, String)> = ["To", "From", "DateSent", "DateSent<", "DateSent>"]
            .iter()
            .filter_map(|name| get(name).map(|value| ((*name).to_owned(), value.to_owned())))
            .collect();
        let uri = |page: usize, token: Option<String>| {
            let mut pairs = filters.clone();
            pairs.push(("PageSize".to_owned(), page_size.to_string()));
            pairs.push(("Page".to_owned(), page.to_string()));
            pairs.extend(token.map(|token| ("PageToken".to_owned(), token)));
            format!("/2010-04-01/Accounts/{account_sid}/Messages.json?{}", form_encode(&pairs))
        };
        let body = json!({
            "end": (start + items.len()).saturating_sub(1),
            "first_page_uri": uri(0, None),
            "next_page_uri": if more { Value::from(uri(page + 1, next_token)) } else { Value::Null },
            "page": page,
            "page_size": page_size,
            "previous_page_uri": if page > 0 { Value::from(uri(page - 1, None)) } else { Value::Null },
            "start": start,
            "uri": uri(page, get("PageToken").map(str::to_owned)),
            "messages": items,
        });
        Reply { verdict: Verdict::Answered, response: json_response(StatusCode::OK, &body) }
    }

    /// Programmable Voice: the Call resource (twilio.com/docs/voice/api/call-resource), with the
    /// same account, basic auth and error shape as messages.
    pub(super) mod calls {
        use super::*;

        /// "The default is `60` seconds and the maximum is `600` seconds" (Timeout); 21208
        /// "Invalid Timeout" ("any positive, whole integer").
        const MAX_TIMEOUT_S: u64 = 600;
        /// 32018 "Twiml size exceeded maximum allowed value of 4000 characters".
        const MAX_TWIML_CHARS: usize = 4000;
        /// `StatusCallbackEvent`: "Can be: `initiated`, `ringing`, `answered`, and `completed`".
        const EVENTS: &[&str] = &["initiated", "ringing", "answered", "completed"];

        fn calls_error(code: u32, message: &str, reason: impl Into<String>) -> Reply {
            error(StatusCode::BAD_REQUEST, code, message, reason)
        }

        /// `To`: "The phone number, SIP address, or client identifier to call."
        fn is_callee(to: &str) -> bool {
            is_e164(to) || to.strip_prefix("client:").or_else(|| to.strip_prefix("sip:")).is_some_and(|r| !r.is_empty())
        }

        /// XML's predefined entities, for an attribute value.
        fn unescape(value: &str) -> String {
            value
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        }

        /// A start tag's name and attributes, from the text between `<` and `>` (a trailing `/`
        /// already removed).
        fn parse_start_tag(tag: &str) -> Result<(String, Vec<(String, String)>), String> {
            let tag = tag.trim();
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = &tag[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || "_-:.".contains(c)) {
                return Err(format!("malformed tag <{tag}>"));
            }
            let mut attributes = Vec::new();
            let mut rest = tag[name_end..].trim_start();
            while !rest.is_empty() {
                let (attribute, after) =
                    rest.split_once('=').ok_or_else(|| format!("attribute without a value in <{tag}>"))?;
                let after = after.trim_start();
                let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
                let quote = quote.ok_or_else(|| format!("unquoted attribute value in <{tag}>"))?;
                let value_end =
                    after[1..].find(quote).ok_or_else(|| format!("unterminated attribute value in <{tag}>"))?;
                attributes.push((attribute.trim().to_owned(), unescape(&after[1..1 + value_end])));
                rest = after[value_end + 2..].trim_start();
            }
            Ok((name.to_owned(), attributes))
        }

        /// Checks inline TwiML the way the fake reads the Gather and TwiML pages: a well-formed
        /// XML document whose root is `<Response>`, and whose every `<Gather>` has an `action`
        /// that is an absolute `http`/`https` URL. Gather's `action` defaults to "the current
        /// document's URL", and a `Twiml` parameter has none, so the digits would go nowhere.
        pub(crate) fn check_twiml(document: &str) -> Result<(), String> {
            let mut rest = document.trim();
            if let Some(after) = rest.strip_prefix("<?xml") {
                let end = after.find("?>").ok_or("unterminated XML declaration")?;
                rest = after[end + 2..].trim_start();
            }
            let mut open: Vec<String> = Vec::new();
            let mut root_seen = false;
            while !rest.is_empty() {
                let Some(lt) = rest.find('<') else {
                    if open.is_empty() && !rest.trim().is_empty() {
                        return Err(format!("text {:?} outside <Response>", rest.trim()));
                    }
                    break;
                };
                if open.is_empty() && !rest[..lt].trim().is_empty() {
                    return Err(format!("text {:?} outside <Response>", rest[..lt].trim()));
                }
                rest = &rest[lt..];
                if let Some(after) = rest.strip_prefix("<!--") {
                    let end = after.find("-->").ok_or("unterminated comment")?;
                    rest = &after[end + 3..];
                    continue;
                }
                if let Some(after) = rest.strip_prefix("<![CDATA[") {
                    if open.is_empty() {
                        return Err("CDATA outside <Response>".to_owned());
                    }
                    let end = after.find("]]>").ok_or("unterminated CDATA section")?;
                    rest = &after[end + 3..];
                    continue;
                }
                // The tag ends at the first `>` outside a quoted attribute value.
                let mut quote = None;
                let end = rest.char_indices().skip(1).find_map(|(i, c)| {
                    match (quote, c) {
                        (None, '"' | '\'') => quote = Some(c),
                        (Some(q), c) if c == q => quote = None,
                        (None, '>') => return Some(i),
                        _ => {}
                    }
                    None
                });
                let end = end.ok_or("unterminated tag")?;
                let tag = &rest[1..end];
                rest = &rest[end + 1..];
                if let Some(name) = tag.strip_prefix('/') {
                    match open.pop() {
                        Some(opened) if opened == name.trim() => continue,
                        Some(opened) => return Err(format!("</{}> closes <{opened}>", name.trim())),
                        None => return Err(format!("</{}> without a start tag", name.trim())),
                    }
                }
                let (tag, self_closing) = match tag.strip_suffix('/') {
                    Some(tag) => (tag, true),
                    None => (tag, false),
                };
                let (name, attributes) = parse_start_tag(tag)?;
                if open.is_empty() {
                    if root_seen {
                        return Err(format!("<{name}> after the root element"));
                    }
                    if name != "Response" {
                        return Err(format!("the root element is <{name}>, not <Response>"));
                    }
                    root_seen = true;
                }
                if name == "Gather" {
                    let action = attributes.iter().find(|(a, _)| a == "action").map(|(_, v)| v.as_str());
                    match action {
                        Some(url) if is_absolute_http_url(url) => {}
                        Some(url) => return Err(format!("<Gather action={url:?}> is not an absolute http(s) URL")),
                        None => return Err("<Gather> has no action (inline TwiML has no URL to default to)".to_owned()),
                    }
                }
                if !self_closing {
                    open.push(name);
                }
            }
            match (root_seen, open.last()) {
                (false, _) => Err("no <Response> element".to_owned()),
                (true, Some(unclosed)) => Err(format!("<{unclosed}> is never closed")),
                (true, None) => Ok(()),
            }
        }

        /// `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`, "Create a Call resource":
        ///
        /// - Required `To` (21201 "No 'To' number specified"; 21211 for one that is neither E.164
        ///   nor `client:`/`sip:`), `From` (21213 "Caller phone number is required"; 21212 when it
        ///   is not E.164 for a phone `To`: "If the `to` parameter is a phone number, `From` must
        ///   also be a phone number"), and exactly one of `Url`, `Twiml`, `ApplicationSid` (21200
        ///   "Calls Resource": "provide `url`, `twiml`, or `applicationSid`").
        /// - `Url` absolute http(s) (21205 "Invalid URL"); `ApplicationSid` `AP` + 32 hex (21218
        ///   "Invalid ApplicationSid"); `Twiml` at most 4000 characters (32018) and a
        ///   `<Response>` document whose `<Gather>` posts to an absolute URL (12100 "Document parse
        ///   failure", see [`check_twiml`]).
        /// - `Method`, `StatusCallbackMethod` `GET` or `POST`, `StatusCallback` an absolute URL,
        ///   each `StatusCallbackEvent` one of initiated/ringing/answered/completed, `TimeLimit` a
        ///   positive integer, `MachineDetection` `Enable` or `DetectMessageEnd`: 21200 otherwise
        ///   (its possible causes list the method values and the callback URLs). `Timeout` 1–600,
        ///   21208 "Invalid Timeout" otherwise.
        /// - Reply 201 with the Call resource, `status` "queued", `direction` "outbound-api",
        ///   dates in RFC 2822 (`Tue, 31 Aug 2010 20:36:28 +0000`). The idempotency token is
        ///   honoured as for messages (this fake's contract, not Twilio's).
        pub(crate) fn create(state: &mut FakeState, account_sid: &str, req: &Incoming, fail: bool) -> Reply {
            let token = req.header(TWILIO_IDEMPOTENCY_HEADER).map(str::to_owned);
            let token_key = token.as_ref().map(|t| format!("Calls.json {t}"));
            if let Some(first) = token_key.as_ref().and_then(|t| state.twilio_tokens.get(t)) {
                return Reply { verdict: Verdict::Replayed, response: json_response(StatusCode::CREATED, first) };
            }
            let fields = if req.content_type_is("application/x-www-form-urlencoded") {
                parse_form(&req.body)
            } else {
                Vec::new()
            };
            let field =
                |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());

            let Some(to) = field("To") else {
                return calls_error(21201, "No 'To' number is specified", "To missing");
            };
            if !is_callee(&to) {
                return calls_error(
                    21211,
                    &format!("Invalid 'To' Phone Number: {to}"),
                    format!("To {to:?} is neither E.164 nor client:/sip:"),
                );
            }
            let Some(from) = field("From") else {
                return calls_error(21213, "Caller phone number is required", "From missing");
            };
            if !is_callee(&from) || (is_e164(&to) && !is_e164(&from)) {
                return calls_error(
                    21212,
                    &format!("Invalid 'From' Phone Number: {from}"),
                    format!("From {from:?} for To {to:?}"),
                );
            }
            let (url, twiml, application) = (field("Url"), field("Twiml"), field("ApplicationSid"));
            let instructions = [url.is_some(), twiml.is_some(), application.is_some()].iter().filter(|x| **x).count();
            if instructions != 1 {
                return calls_error(
                    21200,
                    "Either a 'Url', 'Twiml' or 'ApplicationSid' parameter is required to create a call",
                    format!("{instructions} of Url, Twiml and ApplicationSid given, exactly one is needed"),
                );
            }
            if let Some(url) = &url
                && !is_absolute_http_url(url)
            {
                return calls_error(21205, &format!("Url is not a valid URL: {url}"), format!("Url {url:?}"));
            }
            if let Some(sid) = &application {
                let valid =
                    sid.strip_prefix("AP").is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
                if !valid {
                    return calls_error(21218, "Invalid ApplicationSid", format!("ApplicationSid {sid:?}"));
                }
            }
            if let Some(twiml) = &twiml {
                let chars = twiml.chars().count();
                if chars > MAX_TWIML_CHARS {
                    return calls_error(
                        32018,
                        "Twiml size exceeded maximum allowed value of 4000 characters",
                        format!("Twiml of {chars} characters"),
                    );
                }
                if let Err(problem) = check_twiml(twiml) {
                    return calls_error(
                        12100,
                        &format!("Document parse failure: {problem}"),
                        format!("Twiml: {problem}"),
                    );
                }
            }
            for name in ["Method", "StatusCallbackMethod"] {
                if let Some(method) = field(name)
                    && method != "GET"
                    && method != "POST"
                {
                    return calls_error(21200, &format!("{name} must be GET or POST"), format!("{name} {method:?}"));
                }
            }
            if let Some(callback) = field("StatusCallback")
                && !is_absolute_http_url(&callback)
            {
                return calls_error(21200, "StatusCallback is not a valid URL", format!("StatusCallback {callback:?}"));
            }
            let events: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k == "StatusCallbackEvent")
                .flat_map(|(_, v)| v.split(' ').filter(|e| !e.is_empty()).map(str::to_owned).collect::<Vec<_>>())
                .collect();
            if let Some(event) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return calls_error(
                    21200,
                    &format!("Invalid StatusCallbackEvent: {event}"),
                    format!("StatusCallbackEvent {event:?}, expected one of {EVENTS:?}"),
                );
            }
            if let Some(timeout) = field("Timeout")
                && !timeout.parse::<u64>().is_ok_and(|t| (1..=MAX_TIMEOUT_S).contains(&t))
            {
                return calls_error(21208, "Invalid Timeout", format!("Timeout {timeout:?}, expected 1 to 600"));
            }
            if let Some(limit) = field("TimeLimit")
                && !limit.parse::<u64>().is_ok_and(|t| t >= 1)
            {
                return calls_error(21200, "Invalid TimeLimit", format!("TimeLimit {limit:?}"));
            }
            if let Some(detection) = field("MachineDetection")
                && detection != "Enable"
                && detection != "DetectMessageEnd"
            {
                return calls_error(21200, "Invalid MachineDetection", format!("MachineDetection {detection:?}"));
            }

            if fail {
                return Reply {
                    verdict: Verdict::Failed,
                    response: error_response(StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error"),
                };
            }

            let sid = format!("CA{}", hex::encode(rand::random::<[u8; 16]>()));
            let now = DateTime::from_timestamp_millis(req.unix_ms).unwrap_or_default().to_rfc2822();
            let base = format!("/2010-04-01/Accounts/{account_sid}/Calls/{sid}");
            let call = json!({
                "account_sid": account_sid,
                "annotation": null,
                "answered_by": null,
                "api_version": "2010-04-01",
                "caller_name": null,
                "date_created": now,
                "date_updated": now,
                "direction": "outbound-api",
                "duration": null,
                "end_time": null,
                "forwarded_from": null,
                "from": from,
                "from_formatted": from,
                "group_sid": null,
                "parent_call_sid": null,
                "phone_number_sid": null,
                "price": null,
                "price_unit": "USD",
                "queue_time": "0",
                "sid": sid,
                "start_time": null,
                "status": "queued",
                "subresource_uris": {
                    "notifications": format!("{base}/Notifications.json"),
                    "recordings": format!("{base}/Recordings.json"),
                    "events": format!("{base}/Events.json"),
                },
                "to": to,
                "to_formatted": to,
                "trunk_sid": null,
                "uri": format!("{base}.json"),
            });
            if let Some(key) = token_key {
                state.twilio_tokens.insert(key, call.clone());
            }
            state.twilio_calls.push(TwilioMessage { resource: call.clone(), created_unix_ms: req.unix_ms });
            let delivered = Delivered {
                recipient: to,
                text: twiml.or(url).or(application),
                template: None,
                params: None,
                sender: Some(from),
                idempotency_key: token,
                provider_id: sid,
                received_at: req.at,
                received_unix_ms: req.unix_ms,
            };
            Reply { verdict: Verdict::Delivered(vec![delivered]), response: json_response(StatusCode::CREATED, &call) }
        }

        /// `GET /2010-04-01/Accounts/{AccountSid}/Calls.json`, "Read multiple Call resources":
        ///
        /// - Filters `To`, `From`, `Status` (exact) and `StartTime`: "Only include calls that
        ///   started on this date. Specify a date as `YYYY-MM-DD` in UTC … You can also specify an
        ///   inequality, such as `StartTime<=YYYY-MM-DD`, to read calls that started on or before
        ///   midnight of this date, and `StartTime>=YYYY-MM-DD` to read calls that started on or
        ///   after midnight of this date." On the wire the inequalities are the parameters
        ///   `StartTime<` and `StartTime>`, as for `DateSent`. A call that has not started (no
        ///   `start_time`) matches no `StartTime` filter.
        /// - Newest first ("sorted by DateCreated with the most recent calls appearing first");
        ///   `PageSize` default 50, at most 1000; `{calls, page, page_size, start, end, uri,
        ///   first_page_uri, next_page_uri, previous_page_uri}`.
        ///
        /// The fake's reading: a call starts [`Options::receipt_delay`] after it was created (at
        /// once by default) and then stays `in-progress`; before that it is `queued` with no
        /// `start_time`.
        pub(crate) fn list(state: &FakeState, account_sid: &str, req: &Incoming) -> Reply {
            let query = parse_form(req.query.as_bytes());
            let get =
                |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
            let mut date_filters = Vec::new();
            for (name, filter) in [
                ("StartTime", DateFilter::On),
                ("StartTime<", DateFilter::OnOrBefore),
                ("StartTime>", DateFilter::OnOrAfter),
            ] {
                let Some(raw) = get(name) else { continue };
                let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                    .ok()
                    .or_else(|| DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc).date_naive()));
                let Some(date) = date else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        400,
                        &format!("Invalid {name}: {raw}"),
                        format!("{name}={raw:?}, expected YYYY-MM-DD"),
                    );
                };
                date_filters.push((filter, date));
            }
            let page_size = get("PageSize").and_then(|v| v.parse::<usize>().ok()).unwrap_or(50).clamp(1, 1000);
            let page = get("Page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            let (to, from, status) = (get("To"), get("From"), get("Status"));
            let start_ms = i64::try_from(state.options.receipt_delay.as_millis()).unwrap_or(i64::MAX);

            let matches: Vec<Value> = state
                .twilio_calls
                .iter()
                .rev()
                .filter_map(|call| {
                    let started_ms = call.created_unix_ms.saturating_add(start_ms);
                    let started = (req.unix_ms >= started_ms)
                        .then(|| DateTime::from_timestamp_millis(started_ms).unwrap_or_default());
                    let mut resource = call.resource.clone();
                    if let Some(started) = started {
                        resource["status"] = Value::from("in-progress");
                        resource["start_time"] = Value::from(started.to_rfc2822());
                        resource["date_updated"] = Value::from(started.to_rfc2822());
                    }
                    let keep = to.is_none_or(|to| resource["to"] == to)
                        && from.is_none_or(|from| resource["from"] == from)
                        && status.is_none_or(|status| resource["status"] == status)
                        && date_filters.iter().all(|(filter, date)| {
                            started.is_some_and(|started| match filter {
                                DateFilter::On => started.date_naive() == *date,
                                DateFilter::OnOrBefore => started.date_naive() <= *date,
                                DateFilter::OnOrAfter => started.date_naive() >= *date,
                            })
                        });
                    keep.then_some(resource)
                })
                .collect();

            let start = page * page_size;
            let items: Vec<Value> = matches.iter().skip(start).take(page_size).cloned().collect();
            let more = start + items.len() < matches.len();
            let filters: Vec<(String, String)> = ["To", "From", "Status", "StartTime", "StartTime<", "StartTime>"]
                .iter()
                .filter_map(|name| get(name).map(|value| ((*name).to_owned(), value.to_owned())))
                .collect();
            let uri = |page: usize| {
                let mut pairs = filters.clone();
                pairs.push(("PageSize".to_owned(), page_size.to_string()));
                pairs.push(("Page".to_owned(), page.to_string()));
                format!("/2010-04-01/Accounts/{account_sid}/Calls.json?{}", form_encode(&pairs))
            };
            let body = json!({
                "calls": items,
                "end": (start + items.len()).saturating_sub(1),
                "first_page_uri": uri(0),
                "next_page_uri": if more { Value::from(uri(page + 1)) } else { Value::Null },
                "page": page,
                "page_size": page_size,
                "previous_page_uri": if page > 0 { Value::from(uri(page - 1)) } else { Value::Null },
                "start": start,
                "uri": uri(page),
            });
            Reply { verdict: Verdict::Answered, response: json_response(StatusCode::OK, &body) }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chillcloud's signed webhooks

// ---------------------------------------------------------------------------------------------

mod webhook {
    use super::*;

    /// Chillcloud's own scheme (modelled on Stripe's `t=…,v1=…`): reject a timestamp more than
    /// five minutes from the receiver's clock.
    const MAX_SKEW_S: i64 = 5 * 60;

    fn error(status: StatusCode, reason: String) -> Reply {
        let code = status.as_u16().to_string();
        let response = json_response(status, &json!({ "error": reason }));
        Reply::rejected(&code, reason, response)
    }

    /// The expected `v1`: hex(HMAC-SHA256(secret, "<t>.<raw body>")).
    pub(super) fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
        let mut message = format!("{timestamp}.").into_bytes();
        message.extend_from_slice(body);
        hex::encode(hmac_sha256(secret.as_bytes(), &message))
    }

    pub(super) fn process(secret: &str, req: &Incoming, fail: bool) -> Reply {
        if req.method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, format!("{} instead of POST", req.method));
        }
        // `X-Chillcloud-Signature: t=<unix seconds>,v1=<hex>` (several v1 allowed, for rotation).
        let Some(value) = req.header(WEBHOOK_SIGNATURE_HEADER) else {
            return error(StatusCode::BAD_REQUEST, format!("no {WEBHOOK_SIGNATURE_HEADER} header"));
        };
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t.to_owned()),
                Some(("v1", v)) => candidates.push(v.to_owned()),
                _ => {}
            }
        }
        let Some(t) = timestamp.filter(|t| t.parse::<i64>().is_ok()) else {
            return error(StatusCode::BAD_REQUEST, format!("{WEBHOOK_SIGNATURE_HEADER} {value:?} has no numeric t="));
        };
        let skew = t.parse::<i64>().unwrap_or_default() - req.unix_s();
        if skew.abs() > MAX_SKEW_S {
            return error(StatusCode::UNAUTHORIZED, format!("t={t} is {skew} s from now (limit {MAX_SKEW_S} s)"));
        }
        let expected = signature(secret, &t, &req.body);
        let verified = candidates.contains(&expected);
        if !verified {
            return error(StatusCode::UNAUTHORIZED, format!("no v1 in {value:?} matches the body"));
        }
        let Ok(json) = serde_json::from_slice::<Value>(&req.body) else {
            return error(StatusCode::BAD_REQUEST, "body is not JSON".to_owned());
        };
        if fail {
            let response = json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": "internal error" }));
            return Reply { verdict: Verdict::Failed, response };
        }
        let id = match json.get("id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let delivered = Delivered {
            recipient: req.path.clone(),
            text: Some(String::from_utf8_lossy(&req.body).into_owned()),
            template: None,
            params: Some(json),
            sender: None,
            idempotency_key: id.clone(),
            provider_id: id.unwrap_or_default(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        Reply {
            verdict: Verdict::Delivered(vec![delivered]),
            response: json_response(StatusCode::OK, &json!({ "received": true })),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Team chat robots: WeCom, DingTalk, Feishu, Slack
// ---------------------------------------------------------------------------------------------

/// The JSON object body of a chat webhook, or `None`.
fn json_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

/// A string field of a JSON object, or `None` when absent or not a string.
fn str_field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object.get(name).and_then(Value::as_str)
}

/// WeCom (企业微信) group robots: "群机器人配置说明" (developer.work.weixin.qq.com/document/path/
/// 91770) and the global error codes (developer.work.weixin.qq.com/document/path/90313). Every
/// answer is HTTP 200 and `{"errcode","errmsg"}`; "开发者的程序应该根据errcode来判断出错的情况".
mod wecom {
    use super::*;

    /// text: "content … 最长不超过2048个字节，必须是utf8编码".
    const MAX_TEXT_BYTES: usize = 2048;
    /// markdown: "content … 最长不超过4096个字节，必须是utf8编码".
    const MAX_MARKDOWN_BYTES: usize = 4096;
    /// "每个机器人发送的消息不能超过20条/分钟".
    const PER_MINUTE: usize = 20;

    fn error(errcode: i64, errmsg: &str, reason: impl Into<String>) -> Reply {
        let body = json!({ "errcode": errcode, "errmsg": errmsg });
        Reply::rejected(&errcode.to_string(), reason, json_response(StatusCode::OK, &body))
    }

    /// `POST /cgi-bin/webhook/send?key=<key>` with `msgtype` text or markdown:
    ///
    /// - An unknown or missing key: 93000 "invalid webhook url" (seen answer of a removed robot).
    /// - A body that is not a JSON object: 40058 with "Warning: wrong json format." (the global
    ///   codes page: "如果请求的参数不符合json规范 … errmsg里会有“Warning: wrong json format.”").
    /// - `msgtype` other than text and markdown (the only types this fake implements; the robot
    ///   also takes image, news, file, voice and template_card): 40008 "invalid message type"
    ///   (不合法的msgtype参数).
    /// - An empty or missing `content`: 44004 (文本消息content参数为空); one over 2048 (text) or
    ///   4096 (markdown) bytes: 40058 (不合法的参数); `mentioned_list` and
    ///   `mentioned_mobile_list` (text only) arrays of strings, 40058 otherwise.
    /// - More than 20 messages a minute: 45009 "api freq out of limit" (接口调用超过限制).
    /// - [`Mode::Fail`]: -1 "system busy" (系统繁忙, "建议稍候重试").
    /// - Success `{"errcode":0,"errmsg":"ok"}`.
    pub(super) fn process(state: &mut FakeState, key: &str, req: &Incoming, fail: bool) -> Reply {
        if req.method != Method::POST || req.path != "/cgi-bin/webhook/send" {
            let response = (StatusCode::NOT_FOUND, "404 Not Found").into_response();
            return Reply::rejected("404", format!("{} {}", req.method, req.path), response);
        }
        let query = parse_form(req.query.as_bytes());
        let given = query.iter().find(|(k, _)| k == "key").map(|(_, v)| v.as_str());
        if given != Some(key) {
            return error(
                93000,
                "invalid webhook url, hint: [fake], from ip: 127.0.0.1, more info at \
                 https://open.work.weixin.qq.com/devtool/query?e=93000",
                format!("key {given:?}"),
            );
        }
        let Some(body) = json_object(&req.body) else {
            return error(
                40058,
                "invalid parameter, Warning: wrong json format.",
                format!("body is not a JSON object: {}", String::from_utf8_lossy(&req.body)),
            );
        };
        let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or_default();
        let (limit, message) = match msgtype {
            "text" => (MAX_TEXT_BYTES, body.get("text")),
            "markdown" => (MAX_MARKDOWN_BYTES, body.get("markdown")),
            other => {
                return error(
                    40008,
                    "invalid message type",
                    format!("msgtype {other:?} (the fake implements text and markdown)"),
                );
            }
        };
        let Some(content) = message.and_then(|m| str_field(m, "content")).filter(|c| !c.is_empty()) else {
            return error(44004, "empty content", format!("{msgtype}.content missing or empty"));
        };
        if content.len() > limit {
            return error(
                40058,
                &format!("{msgtype}.content exceed max length {limit}"),
                format!("{msgtype}.content of {} bytes, limit {limit}", content.len()),
            );
        }
        if msgtype == "text" {
            for list in ["mentioned_list", "mentioned_mobile_list"] {
                let value = message.and_then(|m| m.get(list));
                let ok = value.is_none_or(|v| v.as_array().is_some_and(|items| items.iter().all(Value::is_string)));
                if !ok {
                    return error(40058, &format!("invalid {list}"), format!("text.{list} is not an array of strings"));
                }
            }
        }
        let rate_key = format!("wecom:{key}");
        if let Some((most, per)) = rate_exceeded(state, &rate_key, req.at, &[(PER_MINUTE, Duration::from_secs(60))]) {
            return error(45009, "api freq out of limit", format!("more than {most} messages within {per:?}"));
        }
        if fail {
            let body = json!({ "errcode": -1, "errmsg": "system busy" });
            return Reply { verdict: Verdict::Failed, response: json_response(StatusCode::OK, &body) };
        }
        record_send(state, &rate_key, req.at);
        let delivered = Delivered {
            recipient: key.to_owned(),
            text: Some(content.to_owned()),
            template: None,
            params: Some(Value::Object(body.clone())),
            sender: None,
            idempotency_key: None,
            provider_id: local_id(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        let response = json_response(StatusCode::OK, &json!({ "errcode": 0, "errmsg": "ok" }));
        Reply { verdict: Verdict::Delivered(vec![delivered]), response }
    }
}

/// DingTalk custom robots: "自定义机器人安全设置" (加签, open.dingtalk.com/document/robots/
/// customize-robot-security-settings), "自定义机器人发送群消息" and the message types
/// (open.dingtalk.com/document/orgapp/custom-robots-send-group-messages), and the error codes
/// seen in answers (docs/research/paging-channels.md §1b). Every answer is HTTP 200 and
/// `{"errcode","errmsg"}`.
mod dingtalk {
    use super::*;

    /// "timestamp … 与请求调用时间误差不能超过1小时".
    const MAX_SKEW_MS: i64 = 3600 * 1000;
    /// "message too long, exceed 20000 bytes".
    const MAX_BODY_BYTES: usize = 20000;
    /// "每个机器人每分钟最多发送20条消息到群里".
    const PER_MINUTE: usize = 20;

    /// `sign` before URL-encoding: Base64(HmacSHA256(key = secret, message = timestamp + "\n" +
    /// secret)), all UTF-8 (加签).
    pub(super) fn sign(secret: &str, timestamp: &str) -> String {
        BASE64.encode(hmac_sha256(secret.as_bytes(), format!("{timestamp}\n{secret}").as_bytes()))
    }

    fn error(errcode: i64, errmsg: &str, reason: impl Into<String>) -> Reply {
        let body = json!({ "errcode": errcode, "errmsg": errmsg });
        Reply::rejected(&errcode.to_string(), reason, json_response(StatusCode::OK, &body))
    }

    /// The text a message shows: text `text.content`, markdown `markdown.text`, actionCard
    /// `actionCard.text`, link `link.text`; `Err` names the missing field. Required fields per
    /// type: text content; markdown title, text; actionCard title, text and either singleTitle
    /// with singleURL or `btns` of `{title, actionURL}`; link title, text, messageUrl.
    fn message_text(body: &serde_json::Map<String, Value>) -> Result<String, String> {
        let msgtype = body.get("msgtype").and_then(Value::as_str).ok_or("msgtype")?;
        let required: &[&str] = match msgtype {
            "text" => &["content"],
            "markdown" => &["title", "text"],
            "actionCard" => &["title", "text"],
            "link" => &["title", "text", "messageUrl"],
            other => return Err(format!("msgtype {other:?} (the fake implements text, markdown, actionCard, link)")),
        };
        let message = body.get(msgtype).filter(|m| m.is_object()).ok_or_else(|| msgtype.to_owned())?;
        if let Some(name) = required.iter().find(|name| str_field(message, name).is_none_or(str::is_empty)) {
            return Err(format!("{msgtype}.{name}"));
        }
        if msgtype == "actionCard" {
            let single = str_field(message, "singleTitle").is_some() && str_field(message, "singleURL").is_some();
            let buttons = message.get("btns").and_then(Value::as_array).is_some_and(|btns| {
                !btns.is_empty()
                    && btns.iter().all(|b| str_field(b, "title").is_some() && str_field(b, "actionURL").is_some())
            });
            if !single && !buttons {
                return Err("actionCard.singleTitle/singleURL or actionCard.btns".to_owned());
            }
        }
        let field = if msgtype == "text" { "content" } else { "text" };
        Ok(str_field(message, field).unwrap_or_default().to_owned())
    }

    /// `POST /robot/send?access_token=…&timestamp=<ms>&sign=<urlencoded base64>`:
    ///
    /// - An unknown `access_token`: 300005 "token is not exist".
    /// - `timestamp` missing, not milliseconds, or more than an hour from the server's clock:
    ///   310000 "invalid timestamp" (the errmsg DingTalk gives; its errcode is not confirmed,
    ///   310000 is the code of the other security failures).
    /// - `sign` missing or not the [`sign`] of that timestamp, compared in constant time after
    ///   the query's own URL-decoding (so an unencoded `+` reads as a space and fails, as at
    ///   DingTalk): 310000 "sign not match".
    /// - A body over 20000 bytes: 460101 "message too long, exceed 20000 bytes" (errmsg as
    ///   answered; the code is the fake's reading of third-party reports).
    /// - A body that is not a JSON object, or a message without its required fields (see
    ///   [`message_text`]): 40035 "缺少参数 …" (the fake's reading).
    /// - More than 20 messages a minute: 130101 "send too fast, exceed 20 times per minute". The
    ///   10-minute throttle an old doc text describes after that is not modelled.
    /// - [`Mode::Fail`]: -1 "system busy".
    /// - Success `{"errcode":0,"errmsg":"ok"}`.
    pub(super) fn process(
        state: &mut FakeState,
        access_token: &str,
        secret: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        if req.method != Method::POST || req.path != "/robot/send" {
            let response = (StatusCode::NOT_FOUND, "404 Not Found").into_response();
            return Reply::rejected("404", format!("{} {}", req.method, req.path), response);
        }
        let query = parse_form(req.query.as_bytes());
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        if get("access_token") != Some(access_token) {
            return error(300005, "token is not exist", format!("access_token {:?}", get("access_token")));
        }
        let Some(timestamp) = get("timestamp").filter(|t| t.parse::<i64>().is_ok()) else {
            return error(310000, "invalid timestamp", format!("timestamp {:?}", get("timestamp")));
        };
        let skew = timestamp.parse::<i64>().unwrap_or_default() - req.unix_ms;
        if skew.abs() > MAX_SKEW_MS {
            return error(
                310000,
                "invalid timestamp",
                format!("timestamp {timestamp} is {skew} ms from now (limit 1 h)"),
            );
        }
        let expected = sign(secret, timestamp);
        let given = get("sign").unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return error(310000, "sign not match", format!("sign {given:?} (after URL-decoding) is not {expected:?}"));
        }
        if req.body.len() > MAX_BODY_BYTES {
            return error(
                460101,
                "message too long, exceed 20000 bytes",
                format!("body of {} bytes, limit {MAX_BODY_BYTES}", req.body.len()),
            );
        }
        let Some(body) = json_object(&req.body) else {
            return error(
                40035,
                "缺少参数 json",
                format!("body is not a JSON object: {}", String::from_utf8_lossy(&req.body)),
            );
        };
        let text = match message_text(&body) {
            Ok(text) => text,
            Err(missing) => {
                return error(40035, &format!("缺少参数 {missing}"), format!("{missing} missing or invalid"));
            }
        };
        let rate_key = format!("dingtalk:{access_token}");
        if let Some((most, per)) = rate_exceeded(state, &rate_key, req.at, &[(PER_MINUTE, Duration::from_secs(60))]) {
            return error(
                130101,
                "send too fast, exceed 20 times per minute",
                format!("more than {most} messages within {per:?}"),
            );
        }
        if fail {
            let body = json!({ "errcode": -1, "errmsg": "system busy" });
            return Reply { verdict: Verdict::Failed, response: json_response(StatusCode::OK, &body) };
        }
        record_send(state, &rate_key, req.at);
        let delivered = Delivered {
            recipient: access_token.to_owned(),
            text: Some(text),
            template: None,
            params: Some(Value::Object(body)),
            sender: None,
            idempotency_key: None,
            provider_id: local_id(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        let response = json_response(StatusCode::OK, &json!({ "errcode": 0, "errmsg": "ok" }));
        Reply { verdict: Verdict::Delivered(vec![delivered]), response }
    }
}

/// Feishu / Lark custom bots: "自定义机器人使用指南" (open.feishu.cn/document/client-docs/bot-v3/
/// add-custom-bot), its 签名校验 section and official samples (the string to sign is the HMAC
/// KEY and the message is empty), and the error codes seen in answers
/// (docs/research/paging-channels.md §1c). Every answer is HTTP 200 and `{"code","msg",…}`.
mod feishu {
    use super::*;

    /// "timestamp … 距当前时间不得超过 1 小时（3600 秒）".
    const MAX_SKEW_S: i64 = 3600;
    /// "请求体大小不能超过 20 K".
    const MAX_BODY_BYTES: usize = 20 * 1024;
    /// "自定义机器人的频率控制和普通应用不同，为 100 次/分钟，5 次/秒".
    const LIMITS: [(usize, Duration); 2] = [(5, Duration::from_secs(1)), (100, Duration::from_secs(60))];

    /// `sign` = Base64(HmacSHA256(key = timestamp + "\n" + secret, message = empty)).
    pub(super) fn sign(secret: &str, timestamp: &str) -> String {
        BASE64.encode(hmac_sha256(format!("{timestamp}\n{secret}").as_bytes(), b""))
    }

    fn error(code: i64, msg: &str, reason: impl Into<String>) -> Reply {
        let body = json!({ "code": code, "msg": msg, "data": {} });
        Reply::rejected(&code.to_string(), reason, json_response(StatusCode::OK, &body))
    }

    /// The texts of a post paragraph line: `text` and `a` elements' `text`, `at` as `@` + its
    /// `user_name` or `user_id`.
    fn post_line(line: &Value) -> Option<String> {
        let elements = line.as_array()?;
        let mut out = String::new();
        for element in elements {
            match str_field(element, "tag")? {
                "at" => {
                    let who = str_field(element, "user_name").or_else(|| str_field(element, "user_id"))?;
                    out.push('@');
                    out.push_str(who);
                }
                _ => out.push_str(str_field(element, "text").unwrap_or_default()),
            }
        }
        Some(out)
    }

    /// The text a message shows, or `None` when it is malformed: text `content.text`; post the
    /// `title` and each line of `content.post.<zh_cn, or the first language>`, joined with
    /// newlines; interactive (`card` at the top level) the header title and each element's
    /// `text.content`, joined with newlines.
    fn message_text(body: &serde_json::Map<String, Value>) -> Option<String> {
        match body.get("msg_type")?.as_str()? {
            "text" => str_field(body.get("content")?, "text").map(str::to_owned),
            "post" => {
                let post = body.get("content")?.get("post")?.as_object()?;
                let language = post.get("zh_cn").or_else(|| post.values().next())?;
                let mut parts: Vec<String> = str_field(language, "title").into_iter().map(str::to_owned).collect();
                for line in language.get("content")?.as_array()? {
                    parts.push(post_line(line)?);
                }
                Some(parts.join("\n"))
            }
            "interactive" => {
                let card = body.get("card").filter(|c| c.is_object())?;
                let title = card.get("header").and_then(|h| h.get("title")).and_then(|t| str_field(t, "content"));
                let mut parts: Vec<String> = title.into_iter().map(str::to_owned).collect();
                let elements = card.get("elements").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                parts.extend(
                    elements
                        .iter()
                        .filter_map(|e| e.get("text").and_then(|t| str_field(t, "content")))
                        .map(str::to_owned),
                );
                Some(parts.join("\n"))
            }
            _ => None,
        }
    }

    /// `POST /open-apis/bot/v2/hook/<token>` with `timestamp`, `sign` and the message in the JSON
    /// body:
    ///
    /// - An unknown token: 19001 "param invalid: incoming webhook access token invalid".
    /// - A body over 20 KB, not a JSON object, or a message this fake cannot read (see
    ///   [`message_text`]; msg_type text, post, interactive): 9499 "Bad Request".
    /// - `timestamp` (seconds, a string) missing or more than an hour off, or `sign` not the
    ///   [`sign`] of it: 19021 "sign match fail or timestamp is not within one hour from current
    ///   time".
    /// - More than 5 a second or 100 a minute: 11232 "frequency limited".
    /// - [`Mode::Fail`]: 1500 "internal error" (内部错误，请稍后重试; the Open Platform's
    ///   generic server error code, open.feishu.cn/document/server-docs/api-call-guide/
    ///   generic-error-code).
    /// - Success `{"code":0,"msg":"success","data":{},"Extra":null,"StatusCode":0,
    ///   "StatusMessage":"success"}`.
    pub(super) fn process(state: &mut FakeState, token: &str, secret: &str, req: &Incoming, fail: bool) -> Reply {
        let Some(given) = req.path.strip_prefix("/open-apis/bot/v2/hook/").filter(|_| req.method == Method::POST)
        else {
            let response = (StatusCode::NOT_FOUND, "404 page not found").into_response();
            return Reply::rejected("404", format!("{} {}", req.method, req.path), response);
        };
        if given != token {
            return error(19001, "param invalid: incoming webhook access token invalid", format!("token {given:?}"));
        }
        if req.body.len() > MAX_BODY_BYTES {
            return error(9499, "Bad Request", format!("body of {} bytes, limit {MAX_BODY_BYTES}", req.body.len()));
        }
        let Some(body) = json_object(&req.body) else {
            return error(
                9499,
                "Bad Request",
                format!("body is not a JSON object: {}", String::from_utf8_lossy(&req.body)),
            );
        };
        const SIGN_FAILED: &str = "sign match fail or timestamp is not within one hour from current time";
        let timestamp = body.get("timestamp").and_then(Value::as_str).filter(|t| t.parse::<i64>().is_ok());
        let Some(timestamp) = timestamp else {
            return error(
                19021,
                SIGN_FAILED,
                format!("timestamp {:?} is not a string of seconds", body.get("timestamp")),
            );
        };
        let skew = timestamp.parse::<i64>().unwrap_or_default() - req.unix_s();
        if skew.abs() > MAX_SKEW_S {
            return error(19021, SIGN_FAILED, format!("timestamp {timestamp} is {skew} s from now (limit 1 h)"));
        }
        let expected = sign(secret, timestamp);
        let given_sign = body.get("sign").and_then(Value::as_str).unwrap_or_default();
        if !constant_time_eq(given_sign.as_bytes(), expected.as_bytes()) {
            return error(19021, SIGN_FAILED, format!("sign {given_sign:?} is not {expected:?}"));
        }
        let Some(text) = message_text(&body) else {
            return error(
                9499,
                "Bad Request",
                format!("msg_type {:?} with a content the fake cannot read", body.get("msg_type")),
            );
        };
        let rate_key = format!("feishu:{token}");
        if let Some((most, per)) = rate_exceeded(state, &rate_key, req.at, &LIMITS) {
            return error(11232, "frequency limited", format!("more than {most} messages within {per:?}"));
        }
        if fail {
            let body = json!({ "code": 1500, "msg": "internal error", "data": {} });
            return Reply { verdict: Verdict::Failed, response: json_response(StatusCode::OK, &body) };
        }
        record_send(state, &rate_key, req.at);
        let delivered = Delivered {
            recipient: token.to_owned(),
            text: Some(text),
            template: None,
            params: Some(Value::Object(body)),
            sender: None,
            idempotency_key: None,
            provider_id: local_id(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        let success = json!({
            "code": 0,
            "msg": "success",
            "data": {},
            "Extra": null,
            "StatusCode": 0,
            "StatusMessage": "success",
        });
        Reply { verdict: Verdict::Delivered(vec![delivered]), response: json_response(StatusCode::OK, &success) }
    }
}

/// Slack incoming webhooks: "Sending messages using incoming webhooks"
/// (api.slack.com/messaging/webhooks), "Changes to errors for incoming webhooks"
/// (api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks) and "Rate
/// limits" (api.slack.com/docs/rate-limits). Answers are plain text with the HTTP status.
mod slack {
    use super::*;

    /// "Incoming webhooks: 1 per second", "short bursts … are allowed": a bucket of 3 that
    /// refills one message a second.
    const BURST: f64 = 3.0;
    const PER_SECOND: f64 = 1.0;

    fn text(status: StatusCode, body: &'static str) -> Response {
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }

    fn error(status: StatusCode, body: &'static str, reason: impl Into<String>) -> Reply {
        Reply::rejected(body, reason, text(status, body))
    }

    /// `POST <path>` with a JSON body:
    ///
    /// - Any other path or method: 404 `no_service` (what Slack answers for a dead URL).
    /// - A body that is not a JSON object, `text` not a string, or `blocks` not an array of
    ///   objects with a `type`: 400 `invalid_payload`. Neither `text` nor `blocks`: 400
    ///   `no_text` ("`text` … required unless you're using `blocks`").
    /// - Past the rate limit: 429 `rate_limited` with `Retry-After: 1`.
    /// - [`Mode::Fail`]: 500 `rollup_error`.
    /// - Success: 200, `text/plain`, body `ok`.
    pub(super) fn process(state: &mut FakeState, path: &str, req: &Incoming, fail: bool) -> Reply {
        if req.method != Method::POST || req.path != path {
            return error(StatusCode::NOT_FOUND, "no_service", format!("{} {}", req.method, req.path));
        }
        let Some(body) = json_object(&req.body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                format!("body is not a JSON object: {}", String::from_utf8_lossy(&req.body)),
            );
        };
        let message = body.get("text");
        if message.is_some_and(|t| !t.is_string()) {
            return error(StatusCode::BAD_REQUEST, "invalid_payload", "text is not a string");
        }
        let blocks = body.get("blocks");
        let blocks_ok = blocks.is_none_or(|b| {
            b.as_array().is_some_and(|items| items.iter().all(|block| str_field(block, "type").is_some()))
        });
        if !blocks_ok {
            return error(StatusCode::BAD_REQUEST, "invalid_payload", "blocks is not an array of blocks with a type");
        }
        let message = message.and_then(Value::as_str).filter(|t| !t.is_empty());
        let has_blocks = blocks.and_then(Value::as_array).is_some_and(|b| !b.is_empty());
        if message.is_none() && !has_blocks {
            return error(StatusCode::BAD_REQUEST, "no_text", "neither text nor blocks");
        }
        let (tokens, counted) = state.buckets.get(path).copied().unwrap_or((BURST, req.at));
        let tokens = (tokens + req.at.saturating_duration_since(counted).as_secs_f64() * PER_SECOND).min(BURST);
        if tokens < 1.0 {
            state.buckets.insert(path.to_owned(), (tokens, req.at));
            let mut reply =
                error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "more than 1 a second past a burst of 3");
            reply.response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return reply;
        }
        if fail {
            return Reply {
                verdict: Verdict::Failed,
                response: text(StatusCode::INTERNAL_SERVER_ERROR, "rollup_error"),
            };
        }
        state.buckets.insert(path.to_owned(), (tokens - 1.0, req.at));
        let delivered = Delivered {
            recipient: path.to_owned(),
            text: message.map(str::to_owned),
            template: None,
            params: Some(Value::Object(body.clone())),
            sender: None,
            idempotency_key: None,
            provider_id: local_id(),
            received_at: req.at,
            received_unix_ms: req.unix_ms,
        };
        Reply { verdict: Verdict::Delivered(vec![delivered]), response: text(StatusCode::OK, "ok") }
    }
}

// ---------------------------------------------------------------------------------------------
// Twilio → customer webhooks
// ---------------------------------------------------------------------------------------------

/// `X-Twilio-Signature` = Base64(HMAC-SHA1(AuthToken, the full URL Twilio requested, query string
/// included, followed by every POST parameter sorted by name (case-sensitive, byte order), each
/// name immediately followed by its value)) ("Secure webhooks";
/// twilio.com/docs/usage/webhooks/webhooks-security).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A request as Twilio sends it to a customer's webhook URL: a form POST signed with
/// `X-Twilio-Signature`, carrying `I-Twilio-Idempotency-Token`.
#[derive(Clone, Debug)]
pub struct TwilioWebhook {
    /// The full URL, exactly as configured in Twilio (the signature covers it).
    pub url: String,
    /// The form parameters, in the order sent.
    pub params: Vec<(String, String)>,
    /// The `X-Twilio-Signature` value.
    pub signature: String,
    /// The `I-Twilio-Idempotency-Token` value (a retry of the same event carries the same one).
    pub idempotency_token: String,
}

impl TwilioWebhook {
    /// Signs `params` for `url` with the account's Auth Token.
    pub fn signed(url: &str, auth_token: &str, params: Vec<(String, String)>) -> Self {
        let signature = twilio_signature(auth_token, url, &params);
        Self { url: url.to_owned(), params, signature, idempotency_token: format!("{:032x}", rand::random::<u128>()) }
    }

    /// An inbound SMS from `from` to the Twilio number `to`, with the parameters Twilio's
    /// incoming-message webhook carries (MessageSid, SmsSid, SmsMessageSid, AccountSid, From,
    /// To, Body, NumMedia, NumSegments, SmsStatus, ApiVersion).
    pub fn inbound_sms(url: &str, account_sid: &str, auth_token: &str, from: &str, to: &str, body: &str) -> Self {
        let sid = format!("SM{}", hex::encode(rand::random::<[u8; 16]>()));
        let params = [
            ("ToCountry", "US"),
            ("SmsMessageSid", &sid),
            ("NumMedia", "0"),
            ("SmsSid", &sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", to),
            ("NumSegments", "1"),
            ("MessageSid", &sid),
            ("AccountSid", account_sid),
            ("From", from),
            ("ApiVersion", "2010-04-01"),
        ];
        Self::signed(url, auth_token, params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    /// The request Twilio makes to a `<Gather>`'s `action` when the callee pressed `digits` on
    /// an outbound call from `from` to `to` ("Gather": "Twilio will send … the `Digits`
    /// parameter … in addition to the standard TwiML Voice request parameters"; the request
    /// parameters of twilio.com/docs/usage/webhooks/voice-webhooks): AccountSid, ApiVersion,
    /// CallSid, CallStatus `in-progress`, Digits, Direction `outbound-api`, From, To,
    /// FinishedOnKey (empty: the input ended on `numDigits` or the timeout, not on a key) and
    /// `msg` "Gather End". Signed for `url` like every Twilio webhook.
    pub fn gather(
        url: &str,
        account_sid: &str,
        auth_token: &str,
        call_sid: &str,
        from: &str,
        to: &str,
        digits: &str,
    ) -> Self {
        let params = [
            ("AccountSid", account_sid),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid),
            ("CallStatus", "in-progress"),
            ("Digits", digits),
            ("Direction", "outbound-api"),
            ("FinishedOnKey", ""),
            ("From", from),
            ("To", to),
            ("msg", "Gather End"),
        ];
        Self::signed(url, auth_token, params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    /// The value of a parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The `application/x-www-form-urlencoded` body.
    pub fn body(&self) -> String {
        form_encode(&self.params)
    }

    /// The headers Twilio sends with it.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Content-Type", "application/x-www-form-urlencoded".to_owned()),
            ("User-Agent", "TwilioProxy/1.1".to_owned()),
            ("X-Twilio-Signature", self.signature.clone()),
            (TWILIO_IDEMPOTENCY_HEADER, self.idempotency_token.clone()),
        ]
    }

    /// The request, ready to send with `client`.
    pub fn request(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        self.headers()
            .into_iter()
            .fold(client.post(&self.url), |r, (name, value)| r.header(name, value))
            .body(self.body())
    }
}

#[cfg(test)]
mod tests {
    //! The `build_*` and `sign_*` helpers here are TEST-ONLY REFERENCE IMPLEMENTATIONS of each
    //! provider's client side, written from the same documents as the fakes (not from the
    //! fakes' code), to drive them with correctly signed requests.

    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client")
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    async fn json_of(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}")))
    }

    // ---- Aliyun: test-only reference client, from the "Signature mechanism" page ----

    /// percentEncode: unreserved `A-Z a-z 0-9 - _ . ~` kept, everything else `%XY` upper-case.
    fn ref_aliyun_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// Returns the signed parameter string `Signature=…&<canonicalized query>`, usable as a
    /// query string (GET) or form body (POST).
    fn build_aliyun(method: &str, secret: &str, params: &[(&str, &str)]) -> String {
        let mut encoded: Vec<(String, String)> =
            params.iter().map(|(k, v)| (ref_aliyun_encode(k), ref_aliyun_encode(v))).collect();
        encoded.sort();
        let canonical = encoded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let to_sign = format!("{method}&%2F&{}", ref_aliyun_encode(&canonical));
        let mut mac = HmacSha1::new_from_slice(format!("{secret}&").as_bytes()).expect("key");
        mac.update(to_sign.as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        format!("Signature={}&{canonical}", ref_aliyun_encode(&signature))
    }

    fn now_aliyun() -> String {
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn nonce() -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    /// The SMS worked example's business parameters, with Format=JSON.
    fn aliyun_params<'a>(key_id: &'a str, nonce: &'a str, timestamp: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("AccessKeyId", key_id),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", r#"{"customer":"test"}"#),
            ("Timestamp", timestamp),
            ("Version", "2017-05-25"),
        ]
    }

    /// The worked example of Aliyun's SMS "HTTP protocol and signature" page
    /// (help.aliyun.com/document_detail/56189.html): AccessKeyId testId, secret testSecret.
    #[test]
    fn aliyun_signature_matches_the_sms_worked_example() {
        let params = owned(&aliyun_params("testId", "45e25e9b-0a6f-4070-8c85-2956eda1b466", "2017-07-12T02:42:19Z"))
            .into_iter()
            .map(|(k, v)| if k == "Format" { (k, "XML".to_owned()) } else { (k, v) })
            .collect::<Vec<_>>();
        let to_sign = aliyun::string_to_sign("GET", &params);
        assert_eq!(
            to_sign,
            "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123%26PhoneNumbers%3D15300000001\
             %26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4\
             %25BF%25A1%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1\
             %26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0%26TemplateCode%3DSMS_71390007\
             %26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D%26Timestamp%3D2017-07-12T02%253A42%253A19Z\
             %26Version%3D2017-05-25"
        );
        assert_eq!(aliyun::sign("testSecret", &to_sign), "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
        // The reference client agrees with the documented request URL's Signature.
        let query = build_aliyun(
            "GET",
            "testSecret",
            &params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
        );
        assert!(query.starts_with("Signature=zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D&AccessKeyId=testId&"), "{query}");
    }

    /// The worked example of the general RPC "Signature mechanism" page (DescribeRegions,
    /// AccessKeyId testid, secret testsecret).
    #[test]
    fn aliyun_signature_matches_the_rpc_worked_example() {
        let params = owned(&[
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Version", "2014-05-26"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
        ]);
        let to_sign = aliyun::string_to_sign("GET", &params);
        assert_eq!(aliyun::sign("testsecret", &to_sign), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }

    #[test]
    fn aliyun_percent_encoding_follows_the_documented_rules() {
        assert_eq!(aliyun::percent_encode("a b*~-_.+/="), "a%20b%2A~-_.%2B%2F%3D");
        assert_eq!(aliyun::percent_encode("派"), "%E6%B4%BE");
    }

    #[tokio::test]
    async fn aliyun_accepts_a_signed_get_and_post_and_logs_the_delivery() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let (n1, n2, ts) = (nonce(), nonce(), now_aliyun());
        let query = build_aliyun("GET", "testSecret", &aliyun_params("testId", &n1, &ts));
        let response = client().get(format!("{}/?{query}", fake.url())).send().await.expect("GET");
        let (status, body) = json_of(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["Code"], "OK");
        assert_eq!(body["Message"], "OK");
        assert!(body["BizId"].as_str().is_some_and(|b| b.ends_with("^0")), "{body}");
        assert!(body["RequestId"].is_string());

        let form = build_aliyun("POST", "testSecret", &aliyun_params("testId", &n2, &ts));
        let response = client()
            .post(format!("{}/", fake.url()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("POST");
        let (status, body) = json_of(response).await;
        assert_eq!((status, body["Code"].as_str()), (200, Some("OK")), "{body}");

        let delivered = fake.wait_delivered(2, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "15300000001");
        assert_eq!(delivered[0].template.as_deref(), Some("SMS_71390007"));
        assert_eq!(delivered[0].params, Some(json!({ "customer": "test" })));
        assert_eq!(delivered[0].sender.as_deref(), Some("阿里云短信测试专用"));
        assert_eq!(delivered[0].idempotency_key.as_deref(), Some("123"));
        fake.assert_no_rejections();
        // SendSms is not idempotent ("不支持幂等"): the same OutId twice is two messages.
        assert_eq!(fake.duplicate_deliveries(), vec!["123".to_owned()]);
    }

    #[tokio::test]
    async fn aliyun_answers_xml_when_format_is_absent() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let (n, ts) = (nonce(), now_aliyun());
        let params: Vec<_> = aliyun_params("testId", &n, &ts).into_iter().filter(|(k, _)| *k != "Format").collect();
        let query = build_aliyun("GET", "testSecret", &params);
        let response = client().get(format!("{}/?{query}", fake.url())).send().await.expect("GET");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("body");
        assert!(text.contains("<SendSmsResponse>") && text.contains("<Code>OK</Code>"), "{text}");
    }

    #[tokio::test]
    async fn aliyun_rejects_tampering_replay_stale_time_unknown_key_and_bad_parameters() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let get = |query: String| {
            let url = format!("{}/?{query}", fake.url());
            async move { json_of(client().get(url).send().await.expect("GET")).await }
        };
        let ts = now_aliyun();

        // Tampered after signing.
        let n = nonce();
        let query = build_aliyun("GET", "testSecret", &aliyun_params("testId", &n, &ts))
            .replace("PhoneNumbers=15300000001", "PhoneNumbers=15300000002");
        let (status, body) = get(query).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureDoesNotMatch")), "{body}");

        // Replayed nonce: the first use succeeds, the second is refused.
        let n = nonce();
        let query = build_aliyun("GET", "testSecret", &aliyun_params("testId", &n, &ts));
        assert_eq!(get(query.clone()).await.1["Code"], "OK");
        let (status, body) = get(query).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureNonceUsed")), "{body}");

        // Stale timestamp (16 minutes ago).
        let n = nonce();
        let stale = (Utc::now() - chrono::Duration::minutes(16)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let (status, body) = get(build_aliyun("GET", "testSecret", &aliyun_params("testId", &n, &stale))).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("InvalidTimeStamp.Expired")), "{body}");

        // Unknown AccessKeyId (correctly signed with its own secret).
        let n = nonce();
        let (status, body) = get(build_aliyun("GET", "otherSecret", &aliyun_params("otherId", &n, &ts))).await;
        assert_eq!((status, body["Code"].as_str()), (404, Some("InvalidAccessKeyId.NotFound")), "{body}");

        // Missing SignName.
        let n = nonce();
        let params: Vec<_> = aliyun_params("testId", &n, &ts).into_iter().filter(|(k, _)| *k != "SignName").collect();
        let (status, body) = get(build_aliyun("GET", "testSecret", &params)).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("MissingSignName")), "{body}");

        // TemplateParam that is not a JSON object of strings.
        for bad in ["code", r#"["1234"]"#, r#"{"code":1234}"#] {
            let n = nonce();
            let params: Vec<_> = aliyun_params("testId", &n, &ts)
                .into_iter()
                .map(|(k, v)| if k == "TemplateParam" { (k, bad) } else { (k, v) })
                .collect();
            let (status, body) = get(build_aliyun("GET", "testSecret", &params)).await;
            assert_eq!((status, body["Code"].as_str()), (200, Some("isv.INVALID_JSON_PARAM")), "{bad}: {body}");
        }

        let codes: Vec<String> = fake.rejections().into_iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                "SignatureDoesNotMatch",
                "SignatureNonceUsed",
                "InvalidTimeStamp.Expired",
                "InvalidAccessKeyId.NotFound",
                "MissingSignName",
                "isv.INVALID_JSON_PARAM",
                "isv.INVALID_JSON_PARAM",
                "isv.INVALID_JSON_PARAM",
            ]
        );
        assert_eq!(fake.counters().delivered, 1);
    }

    // ---- Tencent: test-only reference client, from "Signature v3" ----

    fn ref_hmac256(key: &[u8], msg: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).expect("key");
        mac.update(msg.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn ref_sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// The Authorization header for a POST JSON request signing content-type and host.
    fn sign_tencent(
        secret_id: &str,
        secret_key: &str,
        host: &str,
        content_type: &str,
        ts: i64,
        payload: &str,
    ) -> String {
        sign_tencent_service("sms", secret_id, secret_key, host, content_type, ts, payload)
    }

    fn sign_tencent_service(
        service: &str,
        secret_id: &str,
        secret_key: &str,
        host: &str,
        content_type: &str,
        ts: i64,
        payload: &str,
    ) -> String {
        let date = DateTime::from_timestamp(ts, 0).expect("timestamp").format("%Y-%m-%d").to_string();
        let canonical = format!(
            "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\ncontent-type;host\n{}",
            ref_sha256_hex(payload.as_bytes())
        );
        let scope = format!("{date}/{service}/tc3_request");
        let to_sign = format!("TC3-HMAC-SHA256\n{ts}\n{scope}\n{}", ref_sha256_hex(canonical.as_bytes()));
        let key = ref_hmac256(
            &ref_hmac256(&ref_hmac256(format!("TC3{secret_key}").as_bytes(), &date), service),
            "tc3_request",
        );
        let signature = hex::encode(ref_hmac256(&key, &to_sign));
        format!(
            "TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
        )
    }

    fn build_tencent(
        fake: &FakeProvider,
        secret_id: &str,
        secret_key: &str,
        ts: i64,
        payload: &str,
    ) -> reqwest::RequestBuilder {
        build_tencent_action(fake, secret_id, secret_key, ts, "SendSms", payload)
    }

    fn build_tencent_action(
        fake: &FakeProvider,
        secret_id: &str,
        secret_key: &str,
        ts: i64,
        action: &str,
        payload: &str,
    ) -> reqwest::RequestBuilder {
        let host = fake.url().trim_start_matches("http://");
        let content_type = "application/json; charset=utf-8";
        client()
            .post(format!("{}/", fake.url()))
            .header("Authorization", sign_tencent(secret_id, secret_key, host, content_type, ts, payload))
            .header("Content-Type", content_type)
            .header("X-TC-Action", action)
            .header("X-TC-Version", "2021-01-11")
            .header("X-TC-Timestamp", ts.to_string())
            .header("X-TC-Region", "ap-guangzhou")
            .body(payload.to_owned())
    }

    const TENCENT_BODY: &str = r#"{"PhoneNumberSet":["+8618511122233","+8618511122266"],"SmsSdkAppId":"1400006666","SignName":"腾讯云","TemplateId":"1234","TemplateParamSet":["12345"],"SessionContext":"test"}"#;

    /// The worked example of "Signature v3" (CVM DescribeInstances, 2019-02-25, SecretKey
    /// Gu5t9xGARNpq86cd98joQYCN3EXAMPLE): the payload hash, the CanonicalRequest's hash and the
    /// signature the page prints.
    #[test]
    fn tencent_signature_matches_the_signature_v3_worked_example() {
        let payload = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        assert_eq!(
            hex::encode(Sha256::digest(payload.as_bytes())),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let canonical = tencent::canonical_request(
            "POST",
            "",
            "content-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n",
            "content-type;host",
            payload.as_bytes(),
        );
        assert_eq!(
            canonical,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\ncontent-type;host\n\
             35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let to_sign = tencent::string_to_sign(1551113065, "2019-02-25/cvm/tc3_request", &canonical);
        assert_eq!(
            to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            tencent::signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "2019-02-25", "cvm", &to_sign),
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        // The reference client reproduces the same Authorization for the same inputs.
        let auth = sign_tencent(
            "AKIDEXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            "cvm.tencentcloudapi.com",
            "application/json; charset=utf-8",
            1551113065,
            payload,
        );
        assert!(auth.contains("/2019-02-25/sms/tc3_request"), "{auth}");
    }

    #[tokio::test]
    async fn tencent_accepts_a_signed_send_sms_and_logs_each_number() {
        let fake = FakeProvider::tencent("AKIDtest", "tencent-secret", "1400006666").await;
        let response = build_tencent(&fake, "AKIDtest", "tencent-secret", Utc::now().timestamp(), TENCENT_BODY)
            .send()
            .await
            .expect("send");
        let (status, body) = json_of(response).await;
        assert_eq!(status, 200);
        let set = body["Response"]["SendStatusSet"].as_array().expect("SendStatusSet");
        assert_eq!(set.len(), 2, "{body}");
        assert!(set.iter().all(|s| s["Code"] == "Ok" && s["SessionContext"] == "test"), "{body}");
        assert!(body["Response"]["RequestId"].is_string());
        let delivered = fake.wait_delivered(2, Duration::from_secs(5)).await;
        assert_eq!(delivered[1].recipient, "+8618511122266");
        assert_eq!(delivered[0].params, Some(json!(["12345"])));
        assert_eq!(delivered[0].template.as_deref(), Some("1234"));
        assert_eq!(delivered[0].idempotency_key.as_deref(), Some("test"));
        assert_eq!(delivered[0].provider_id, set[0]["SerialNo"].as_str().expect("SerialNo"));
        fake.assert_no_rejections();
    }

    #[tokio::test]
    async fn tencent_rejects_a_tampered_body_a_stale_timestamp_and_an_unknown_key() {
        let fake = FakeProvider::tencent("AKIDtest", "tencent-secret", "1400006666").await;
        let now = Utc::now().timestamp();
        let error_code = |body: &Value| body["Response"]["Error"]["Code"].as_str().map(str::to_owned);

        let tampered_body = TENCENT_BODY.replace("+8618511122233", "+8618511122299");
        let request = build_tencent(&fake, "AKIDtest", "tencent-secret", now, TENCENT_BODY).body(tampered_body);
        let (status, body) = json_of(request.send().await.expect("send")).await;
        assert_eq!((status, error_code(&body).as_deref()), (200, Some("AuthFailure.SignatureFailure")), "{body}");

        let stale = build_tencent(&fake, "AKIDtest", "tencent-secret", now - 301, TENCENT_BODY);
        let (_, body) = json_of(stale.send().await.expect("send")).await;
        assert_eq!(error_code(&body).as_deref(), Some("AuthFailure.SignatureExpire"), "{body}");

        let unknown = build_tencent(&fake, "AKIDother", "tencent-secret", now, TENCENT_BODY);
        let (_, body) = json_of(unknown.send().await.expect("send")).await;
        assert_eq!(error_code(&body).as_deref(), Some("AuthFailure.SecretIdNotFound"), "{body}");

        let wrong_app = TENCENT_BODY.replace("1400006666", "1400000000");
        let (_, body) =
            json_of(build_tencent(&fake, "AKIDtest", "tencent-secret", now, &wrong_app).send().await.expect("send"))
                .await;
        assert_eq!(error_code(&body).as_deref(), Some("InvalidParameterValue.SdkAppIdNotExist"), "{body}");

        assert_eq!(fake.counters().rejected, 4);
        assert_eq!(fake.counters().delivered, 0);
    }

    // ---- Twilio ----

    fn twilio_form(pairs: &[(&str, &str)]) -> String {
        form_encode(&owned(pairs))
    }

    fn build_twilio(fake: &FakeProvider, sid: &str, token: &str, form: String) -> reqwest::RequestBuilder {
        client()
            .post(format!("{}/2010-04-01/Accounts/{sid}/Messages.json", fake.url()))
            .basic_auth(sid, Some(token))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
    }

    const SID: &str = "AC00000000000000000000000000000001";

    /// The worked example of Twilio's "Validating requests" guide: Auth Token 12345.
    #[test]
    fn twilio_signature_matches_the_documented_example() {
        let params = owned(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        let mut reversed = params.clone();
        reversed.reverse();
        assert_eq!(
            twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &reversed),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn twilio_inbound_sms_webhook_is_signed_over_url_and_form() {
        let hook = TwilioWebhook::inbound_sms(
            "https://chill.example/api/twilio/inbound?site=3",
            SID,
            "twilio-token",
            "+15551230001",
            "+15557770000",
            "ACK 42 & thanks",
        );
        let decoded = parse_form(hook.body().as_bytes());
        assert_eq!(decoded, hook.params);
        assert_eq!(hook.param("Body"), Some("ACK 42 & thanks"));
        assert!(hook.param("MessageSid").is_some_and(|s| s.starts_with("SM") && s.len() == 34));
        assert_eq!(hook.signature, twilio_signature("twilio-token", &hook.url, &decoded));
        assert!(hook.headers().iter().any(|(n, v)| *n == "X-Twilio-Signature" && *v == hook.signature));
    }

    #[tokio::test]
    async fn twilio_creates_a_message_and_rejects_bad_auth_and_missing_fields() {
        let fake = FakeProvider::twilio(SID, "twilio-token").await;
        let form = twilio_form(&[("To", "+15557770001"), ("From", "+15550001111"), ("Body", "Chiller 3: freeze risk")]);
        let (status, body) =
            json_of(build_twilio(&fake, SID, "twilio-token", form.clone()).send().await.expect("send")).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "queued");
        assert!(body["sid"].as_str().is_some_and(|s| s.starts_with("SM") && s.len() == 34), "{body}");
        assert_eq!(body["to"], "+15557770001");
        assert_eq!(body["body"], "Chiller 3: freeze risk");

        let (status, body) = json_of(build_twilio(&fake, SID, "wrong-token", form).send().await.expect("send")).await;
        assert_eq!((status, body["code"].as_u64()), (401, Some(20003)), "{body}");
        assert_eq!(body["status"], 401);

        let no_body = twilio_form(&[("To", "+15557770001"), ("From", "+15550001111")]);
        let (status, body) =
            json_of(build_twilio(&fake, SID, "twilio-token", no_body).send().await.expect("send")).await;
        assert_eq!((status, body["code"].as_u64()), (400, Some(21602)), "{body}");

        let no_from = twilio_form(&[("To", "+15557770001"), ("Body", "x")]);
        let (status, body) =
            json_of(build_twilio(&fake, SID, "twilio-token", no_from).send().await.expect("send")).await;
        assert_eq!((status, body["code"].as_u64()), (400, Some(21603)), "{body}");

        let as_json = client()
            .post(format!("{}/2010-04-01/Accounts/{SID}/Messages.json", fake.url()))
            .basic_auth(SID, Some("twilio-token"))
            .header("Content-Type", "application/json")
            .body(r#"{"To":"+15557770001","From":"+15550001111","Body":"x"}"#);
        let (status, body) = json_of(as_json.send().await.expect("send")).await;
        assert_eq!((status, body["code"].as_u64()), (400, Some(21604)), "{body}");

        assert_eq!(fake.counters().delivered, 1);
        assert_eq!(fake.counters().rejected, 4);
        assert_eq!(fake.delivered()[0].text.as_deref(), Some("Chiller 3: freeze risk"));
    }

    #[tokio::test]
    async fn twilio_idempotency_token_answers_the_first_message_and_sends_once() {
        let fake = FakeProvider::twilio(SID, "twilio-token").await;
        let form = twilio_form(&[("To", "+15557770001"), ("MessagingServiceSid", "MG0123"), ("Body", "page")]);
        let send = || {
            build_twilio(&fake, SID, "twilio-token", form.clone()).header(TWILIO_IDEMPOTENCY_HEADER, "page-7-attempt")
        };
        let (_, first) = json_of(send().send().await.expect("send")).await;
        let (status, second) = json_of(send().send().await.expect("send")).await;
        assert_eq!(status, 201);
        assert_eq!(first["status"], "accepted");
        assert_eq!(first["sid"], second["sid"]);
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.deduplicated), (1, 1));
        assert_eq!(fake.delivered()[0].idempotency_key.as_deref(), Some("page-7-attempt"));
        assert!(fake.duplicate_deliveries().is_empty());
    }

    // ---- Chillcloud webhook: test-only reference signer ----

    fn sign_webhook(secret: &str, t: i64, body: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.{body}").as_bytes());
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[tokio::test]
    async fn webhook_accepts_a_signed_body_and_rejects_tampered_and_stale_ones() {
        let fake = FakeProvider::webhook("whsec").await;
        let body = r#"{"id":"evt_1","alarm":"freeze_risk","site":3}"#;
        let post = |signature: String, body: &str| {
            client()
                .post(format!("{}/hooks/alarms", fake.url()))
                .header("Content-Type", "application/json")
                .header(WEBHOOK_SIGNATURE_HEADER, signature)
                .body(body.to_owned())
                .send()
        };
        let now = Utc::now().timestamp();
        assert_eq!(post(sign_webhook("whsec", now, body), body).await.expect("send").status(), 200);
        let tampered = body.replace("freeze_risk", "all_clear");
        assert_eq!(post(sign_webhook("whsec", now, body), &tampered).await.expect("send").status(), 401);
        assert_eq!(post(sign_webhook("whsec", now - 301, body), body).await.expect("send").status(), 401);
        assert_eq!(
            webhook::signature("whsec", &now.to_string(), body.as_bytes()),
            sign_webhook("whsec", now, body)[format!("t={now},v1=").len()..]
        );

        let delivered = fake.wait_delivered(1, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "/hooks/alarms");
        assert_eq!(delivered[0].idempotency_key.as_deref(), Some("evt_1"));
        assert_eq!(delivered[0].text.as_deref(), Some(body));
        assert_eq!(fake.counters().rejected, 2);
    }

    // ---- Modes ----

    #[tokio::test]
    async fn modes_fail_down_and_hang_then_recover() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let request = || {
            let (n, ts) = (nonce(), now_aliyun());
            format!("{}/?{}", fake.url(), build_aliyun("GET", "testSecret", &aliyun_params("testId", &n, &ts)))
        };

        fake.set_mode(Mode::Fail);
        let (status, body) = json_of(client().get(request()).send().await.expect("send")).await;
        assert_eq!((status, body["Code"].as_str()), (200, Some("isv.BUSINESS_LIMIT_CONTROL")), "{body}");

        fake.set_mode(Mode::Down);
        assert_eq!(client().get(request()).send().await.expect("send").status(), 503);

        fake.set_mode(Mode::Hang { count: 1 });
        let hung = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .expect("client")
            .get(request())
            .send()
            .await;
        assert!(hung.as_ref().is_err_and(reqwest::Error::is_timeout), "{hung:?}");
        assert_eq!(fake.mode(), Mode::Succeed);

        let (status, body) = json_of(client().get(request()).send().await.expect("send")).await;
        assert_eq!((status, body["Code"].as_str()), (200, Some("OK")), "{body}");
        assert_eq!(
            fake.counters(),
            Counters {
                delivered: 1,
                rejected: 0,
                failed: 1,
                refused: 1,
                timed_out: 1,
                deduplicated: 0,
                accepted_unanswered: 0,
                lookups: 0
            }
        );
    }

    #[tokio::test]
    async fn tencent_and_twilio_fail_modes_answer_their_provider_errors() {
        let tencent = FakeProvider::tencent("AKIDtest", "tencent-secret", "1400006666").await;
        tencent.set_mode(Mode::Fail);
        let response = build_tencent(&tencent, "AKIDtest", "tencent-secret", Utc::now().timestamp(), TENCENT_BODY)
            .send()
            .await
            .expect("send");
        let (_, body) = json_of(response).await;
        assert_eq!(
            body["Response"]["SendStatusSet"][0]["Code"], "LimitExceeded.PhoneNumberThirtySecondLimit",
            "{body}"
        );
        assert_eq!(tencent.counters().failed, 1);

        let twilio = FakeProvider::twilio(SID, "twilio-token").await;
        twilio.set_mode(Mode::Fail);
        let form = twilio_form(&[("To", "+15557770001"), ("From", "+15550001111"), ("Body", "x")]);
        let (status, body) =
            json_of(build_twilio(&twilio, SID, "twilio-token", form).send().await.expect("send")).await;
        assert_eq!((status, body["code"].as_u64()), (500, Some(20500)), "{body}");
        assert!(twilio.delivered().is_empty());
    }

    // ---- Template variable rules ----

    /// `base` with each of `overrides` replacing the parameter of that name, or added.
    fn with<'a>(mut base: Vec<(&'a str, &'a str)>, overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        for (name, value) in overrides {
            match base.iter_mut().find(|(k, _)| k == name) {
                Some(pair) => pair.1 = value,
                None => base.push((name, value)),
            }
        }
        base
    }

    /// A signed GET to the fake Aliyun (testId / testSecret).
    async fn aliyun_get(fake: &FakeProvider, params: &[(&str, &str)]) -> (u16, Value) {
        let query = build_aliyun("GET", "testSecret", params);
        json_of(client().get(format!("{}/?{query}", fake.url())).send().await.expect("GET")).await
    }

    /// The worked example's SendSms with some parameters replaced.
    async fn aliyun_send(fake: &FakeProvider, overrides: &[(&str, &str)]) -> (u16, Value) {
        let (n, ts) = (nonce(), now_aliyun());
        aliyun_get(fake, &with(aliyun_params("testId", &n, &ts), overrides)).await
    }

    /// A QuerySendDetails of `phone` on `date` (yyyyMMdd), page 1 of 10, JSON, plus `extra`.
    async fn aliyun_query(fake: &FakeProvider, phone: &str, date: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let (n, ts) = (nonce(), now_aliyun());
        let base = vec![
            ("AccessKeyId", "testId"),
            ("Action", "QuerySendDetails"),
            ("CurrentPage", "1"),
            ("Format", "JSON"),
            ("PageSize", "10"),
            ("PhoneNumber", phone),
            ("SendDate", date),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", &n),
            ("SignatureVersion", "1.0"),
            ("Timestamp", &ts),
            ("Version", "2017-05-25"),
        ];
        let params: Vec<(&str, &str)> = with(base, extra).into_iter().filter(|(_, v)| *v != "<absent>").collect();
        aliyun_get(fake, &params).await
    }

    /// Today in China Standard Time, `yyyyMMdd`.
    fn beijing_today() -> String {
        (Utc::now() + chrono::Duration::hours(8)).format("%Y%m%d").to_string()
    }

    #[test]
    fn links_are_told_from_numbers_and_names() {
        for link in [
            "https://chill.example/a/1",
            "see t.cn/AbCd",
            "www.example",
            "chill.example.com",
            "10.0.0.1",
            "ftp://x",
            "aliyun.com/x",
        ] {
            assert!(looks_like_link(link), "{link}");
        }
        for text in ["12.5", "v1.2.3", "3.5kW", "Chiller 3", "冷水机组3号", "end.", "p1.temp", "2024-05-01 10:00"]
        {
            assert!(!looks_like_link(text), "{text}");
        }
    }

    #[tokio::test]
    async fn aliyun_rejects_long_and_linked_template_variables() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let code = |body: &Value| body["Code"].as_str().map(str::to_owned);

        let at_limit = format!(r#"{{"customer":"{}"}}"#, "冷".repeat(35));
        let (status, body) = aliyun_send(&fake, &[("TemplateParam", &at_limit)]).await;
        assert_eq!((status, code(&body).as_deref()), (200, Some("OK")), "{body}");

        let over = format!(r#"{{"customer":"{}"}}"#, "冷".repeat(36));
        let (status, body) = aliyun_send(&fake, &[("TemplateParam", &over)]).await;
        assert_eq!((status, code(&body).as_deref()), (200, Some("isv.PARAM_LENGTH_LIMIT")), "{body}");
        assert_eq!(body["Message"], "参数超过长度限制:35");
        assert!(body.get("BizId").is_none(), "{body}");

        for linked in [r#"{"customer":"https://chill.example/t/1"}"#, r#"{"customer":"t.cn/AbCd"}"#] {
            let (status, body) = aliyun_send(&fake, &[("TemplateParam", linked)]).await;
            assert_eq!((status, code(&body).as_deref()), (200, Some("isv.PARAM_NOT_SUPPORT_URL")), "{body}");
        }
        let (_, body) = aliyun_send(&fake, &[("TemplateParam", r#"{"temp":"12.5","unit":"Chiller 3"}"#)]).await;
        assert_eq!(code(&body).as_deref(), Some("OK"), "{body}");

        // An account whose limit was lifted, or a test that wants the rules off.
        fake.set_options(Options { template_variable_rules: false, ..Options::default() });
        let (_, body) = aliyun_send(&fake, &[("TemplateParam", &over)]).await;
        assert_eq!(code(&body).as_deref(), Some("OK"), "{body}");
        fake.set_options(Options { aliyun_variable_max_chars: 40, ..Options::default() });
        let (_, body) = aliyun_send(&fake, &[("TemplateParam", &over)]).await;
        assert_eq!(code(&body).as_deref(), Some("OK"), "{body}");

        let rejections = fake.rejections();
        let codes: Vec<&str> = rejections.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["isv.PARAM_LENGTH_LIMIT", "isv.PARAM_NOT_SUPPORT_URL", "isv.PARAM_NOT_SUPPORT_URL"]);
        assert!(rejections[0].reason.contains("36 characters, limit 35"), "{rejections:?}");
        assert_eq!((fake.counters().delivered, fake.counters().rejected), (4, 3));
    }

    #[tokio::test]
    async fn tencent_rejects_long_and_linked_template_variables() {
        let fake = FakeProvider::tencent("AKIDtest", "tencent-secret", "1400006666").await;
        let send = |params: &str| {
            let body = TENCENT_BODY.replace(r#"["12345"]"#, params);
            let request = build_tencent(&fake, "AKIDtest", "tencent-secret", Utc::now().timestamp(), &body);
            async move { json_of(request.send().await.expect("send")).await.1 }
        };
        let error_code = |body: &Value| body["Response"]["Error"]["Code"].as_str().map(str::to_owned);

        let body = send(r#"["123456789012","冷水机组三号过热报警请处"]"#).await;
        assert_eq!(body["Response"]["SendStatusSet"][0]["Code"], "Ok", "{body}");

        let body = send(r#"["1234567890123"]"#).await;
        assert_eq!(error_code(&body).as_deref(), Some("InvalidParameterValue.TemplateParameterLengthLimit"), "{body}");
        assert!(body["Response"]["Error"]["Message"].as_str().is_some_and(|m| m.contains("超过12个")), "{body}");
        assert!(body["Response"].get("SendStatusSet").is_none(), "{body}");

        for linked in [r#"["www.example.com"]"#, r#"["192.168.1.20"]"#, r#"["t.cn/AbCd"]"#] {
            let body = send(linked).await;
            assert_eq!(
                error_code(&body).as_deref(),
                Some("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"),
                "{linked}: {body}"
            );
        }

        // An enterprise-verified account has no per-variable limit; links stay forbidden.
        fake.set_options(Options { tencent_variable_max_chars: None, ..Options::default() });
        let body = send(r#"["Chiller 3 supply water 12.5 C over limit"]"#).await;
        assert_eq!(body["Response"]["SendStatusSet"][0]["Code"], "Ok", "{body}");
        let body = send(r#"["https://chill.example/x"]"#).await;
        assert_eq!(error_code(&body).as_deref(), Some("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter"));

        let codes: Vec<String> = fake.rejections().into_iter().map(|r| r.code).collect();
        assert_eq!(codes.len(), 5, "{codes:?}");
        assert_eq!(fake.counters().delivered, 4);
    }

    // ---- Lookups ----

    #[tokio::test]
    async fn aliyun_query_send_details_finds_a_delivered_message_by_out_id() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let today = beijing_today();
        let (_, sent) = aliyun_send(&fake, &[("PhoneNumbers", "+8615300000001"), ("OutId", "page-42")]).await;
        assert_eq!(sent["Code"], "OK", "{sent}");
        let biz_id = sent["BizId"].as_str().expect("BizId").to_owned();
        // A send refused for its variable never went out.
        let long = format!(r#"{{"customer":"{}"}}"#, "x".repeat(36));
        let (_, refused) =
            aliyun_send(&fake, &[("PhoneNumbers", "15300000002"), ("OutId", "page-43"), ("TemplateParam", &long)])
                .await;
        assert_eq!(refused["Code"], "isv.PARAM_LENGTH_LIMIT", "{refused}");

        let (status, body) = aliyun_query(&fake, "15300000001", &today, &[]).await;
        assert_eq!((status, body["Code"].as_str()), (200, Some("OK")), "{body}");
        assert_eq!(body["TotalCount"], 1, "{body}");
        let record = &body["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0];
        assert_eq!(record["OutId"], "page-42", "{body}");
        assert_eq!(record["PhoneNum"], "15300000001");
        assert_eq!(record["SendStatus"], 3);
        assert_eq!(record["ErrCode"], "DELIVERED");
        assert_eq!(record["TemplateCode"], "SMS_71390007");
        assert!(record["Content"].as_str().is_some_and(|c| c.starts_with("【阿里云短信测试专用】")), "{body}");
        let date = record["SendDate"].as_str().expect("SendDate");
        assert!(date.len() == 19 && date.replace('-', "").starts_with(&today), "{date}");

        let (_, body) = aliyun_query(&fake, "15300000002", &today, &[]).await;
        assert_eq!(body["TotalCount"], 0, "{body}");
        assert_eq!(body["SmsSendDetailDTOs"]["SmsSendDetailDTO"], json!([]), "{body}");
        let (_, body) = aliyun_query(&fake, "15300000001", &today, &[("BizId", &biz_id)]).await;
        assert_eq!(body["TotalCount"], 1, "{body}");
        let (_, body) = aliyun_query(&fake, "15300000001", &today, &[("BizId", "1^0")]).await;
        assert_eq!(body["TotalCount"], 0, "{body}");
        let (_, body) = aliyun_query(&fake, "15300000001", "20200101", &[]).await;
        assert_eq!(body["TotalCount"], 0, "{body}");

        // XML when Format is absent; the array repeats its element.
        let (n, ts) = (nonce(), now_aliyun());
        let params = [
            ("AccessKeyId", "testId"),
            ("Action", "QuerySendDetails"),
            ("CurrentPage", "1"),
            ("PageSize", "10"),
            ("PhoneNumber", "15300000001"),
            ("SendDate", today.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", &n),
            ("SignatureVersion", "1.0"),
            ("Timestamp", &ts),
            ("Version", "2017-05-25"),
        ];
        let query = build_aliyun("GET", "testSecret", &params);
        let text = client().get(format!("{}/?{query}", fake.url())).send().await.expect("GET").text().await;
        let text = text.expect("body");
        assert!(text.contains("<QuerySendDetailsResponse><Code>OK</Code>"), "{text}");
        assert!(text.contains("<SmsSendDetailDTOs><SmsSendDetailDTO>"), "{text}");
        assert!(text.contains("<OutId>page-42</OutId>"), "{text}");

        // Until the carrier's receipt comes in: SendStatus 1 (等待回执), no ErrCode.
        fake.set_options(Options { receipt_delay: Duration::from_secs(3600), ..Options::default() });
        let (_, body) = aliyun_query(&fake, "15300000001", &today, &[]).await;
        let record = &body["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0];
        assert_eq!((record["SendStatus"].as_u64(), record["ErrCode"].as_str()), (Some(1), Some("")), "{body}");
        assert_eq!(record["OutId"], "page-42");

        // Bad parameters.
        let (status, body) = aliyun_query(&fake, "15300000001", &today, &[("PageSize", "51")]).await;
        assert_eq!((status, body["Code"].as_str()), (200, Some("isv.INVALID_PARAMETERS")), "{body}");
        let (_, body) = aliyun_query(&fake, "15300000001", "2024-01-01", &[]).await;
        assert_eq!(body["Code"], "isv.INVALID_PARAMETERS", "{body}");
        let (status, body) = aliyun_query(&fake, "15300000001", &today, &[("SendDate", "<absent>")]).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("MissingSendDate")), "{body}");
        let (status, body) = aliyun_query(&fake, "15300000001", &today, &[("Action", "QuerySendDetail")]).await;
        assert_eq!((status, body["Code"].as_str()), (404, Some("InvalidApi.NotFound")), "{body}");

        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.lookups, counters.rejected), (1, 7, 5), "{counters:?}");
    }

    fn tencent_pull_body(phone: &str, begin: i64, offset: u64, limit: u64) -> String {
        json!({
            "BeginTime": begin,
            "Offset": offset,
            "Limit": limit,
            "PhoneNumber": phone,
            "SmsSdkAppId": "1400006666",
        })
        .to_string()
    }

    #[tokio::test]
    async fn tencent_pull_finds_a_delivered_message_by_session_context() {
        let fake = FakeProvider::tencent("AKIDtest", "tencent-secret", "1400006666").await;
        let now = Utc::now().timestamp();
        let pull = |body: String| {
            let request = build_tencent_action(
                &fake,
                "AKIDtest",
                "tencent-secret",
                Utc::now().timestamp(),
                "PullSmsSendStatusByPhoneNumber",
                &body,
            );
            async move { json_of(request.send().await.expect("send")).await }
        };
        let error_code = |body: &Value| body["Response"]["Error"]["Code"].as_str().map(str::to_owned);

        let (_, sent) =
            json_of(build_tencent(&fake, "AKIDtest", "tencent-secret", now, TENCENT_BODY).send().await.expect("send"))
                .await;
        let serial = sent["Response"]["SendStatusSet"][0]["SerialNo"].as_str().expect("SerialNo").to_owned();
        let refused = TENCENT_BODY
            .replace(r#"["+8618511122233","+8618511122266"]"#, r#"["+8618511122244"]"#)
            .replace(r#"["12345"]"#, r#"["www.example.com"]"#);
        let (_, refused) =
            json_of(build_tencent(&fake, "AKIDtest", "tencent-secret", now, &refused).send().await.expect("send"))
                .await;
        assert!(error_code(&refused).is_some(), "{refused}");

        // Default account: the receipt is there, its SessionContext empty.
        let (status, body) = pull(tencent_pull_body("+8618511122233", now - 60, 0, 10)).await;
        assert_eq!(status, 200);
        let set = body["Response"]["PullSmsSendStatusSet"].as_array().expect("PullSmsSendStatusSet");
        assert_eq!(set.len(), 1, "{body}");
        assert_eq!(set[0]["SessionContext"], "", "{body}");

        // SessionContext switched on for the account by Tencent's SMS helper.
        fake.set_options(Options { tencent_pull_session_context: true, ..Options::default() });
        for _ in 0..2 {
            // A window query: the same receipt again, not a once-only pull.
            let (_, body) = pull(tencent_pull_body("+8618511122233", now - 60, 0, 10)).await;
            let record = &body["Response"]["PullSmsSendStatusSet"][0];
            assert_eq!(record["SessionContext"], "test", "{body}");
            assert_eq!(record["SerialNo"], serial.as_str());
            assert_eq!(record["PhoneNumber"], "+8618511122233");
            assert_eq!(record["CountryCode"], "86");
            assert_eq!(record["SubscriberNumber"], "18511122233");
            assert_eq!(record["ReportStatus"], "SUCCESS");
            assert!(record["UserReceiveTime"].as_i64().is_some_and(|t| (t - now).abs() <= 5), "{body}");
            assert!(body["Response"]["RequestId"].is_string());
        }

        // Not sent (refused), never sent, outside the window.
        for body in [
            tencent_pull_body("+8618511122244", now - 60, 0, 10),
            tencent_pull_body("+8618511122299", now - 60, 0, 10),
            tencent_pull_body("+8618511122233", now + 60, 0, 10),
        ] {
            let (_, answer) = pull(body).await;
            assert_eq!(answer["Response"]["PullSmsSendStatusSet"], json!([]), "{answer}");
        }
        // No receipt yet, nothing to pull.
        fake.set_options(Options {
            tencent_pull_session_context: true,
            receipt_delay: Duration::from_secs(3600),
            ..Options::default()
        });
        let (_, answer) = pull(tencent_pull_body("+8618511122233", now - 60, 0, 10)).await;
        assert_eq!(answer["Response"]["PullSmsSendStatusSet"], json!([]), "{answer}");

        for (body, code) in [
            (tencent_pull_body("+8618511122233", now - 60, 1, 10), "InvalidParameterValue.OffsetVerifyFail"),
            (tencent_pull_body("+8618511122233", now - 60, 0, 101), "InvalidParameterValue.LimitVerifyFail"),
            (tencent_pull_body("18511122233", now - 60, 0, 10), "InvalidParameterValue.IncorrectPhoneNumber"),
            (
                r#"{"Offset":0,"Limit":1,"PhoneNumber":"+8618511122233","SmsSdkAppId":"1400006666"}"#.to_owned(),
                "MissingParameter",
            ),
            (
                tencent_pull_body("+8618511122233", now - 60, 0, 10).replace("1400006666", "1400000000"),
                "InvalidParameterValue.SdkAppIdNotExist",
            ),
        ] {
            let (_, answer) = pull(body).await;
            assert_eq!(error_code(&answer).as_deref(), Some(code), "{answer}");
        }
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.lookups, counters.rejected), (2, 7, 6), "{counters:?}");
    }

    #[tokio::test]
    async fn twilio_lists_messages_by_to_and_date_sent() {
        let fake = FakeProvider::twilio(SID, "twilio-token").await;
        let create = |to: &str, body: &str| {
            let form = twilio_form(&[("To", to), ("From", "+15550001111"), ("Body", body)]);
            let request = build_twilio(&fake, SID, "twilio-token", form);
            async move { json_of(request.send().await.expect("send")).await }
        };
        let list = |query: String, token: &str| {
            let request = client()
                .get(format!("{}/2010-04-01/Accounts/{SID}/Messages.json?{query}", fake.url()))
                .basic_auth(SID, Some(token));
            async move { json_of(request.send().await.expect("send")).await }
        };
        let today = Utc::now().format("%Y-%m-%d").to_string();
        let yesterday = (Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();

        let (_, first) = create("+15557770001", "Chiller 3: freeze risk [p7]").await;
        let (_, second) = create("+15557770002", "Chiller 4: high pressure [p8]").await;
        let refused = twilio_form(&[("To", "+15557770003"), ("Body", "no sender")]);
        let (status, _) = json_of(build_twilio(&fake, SID, "twilio-token", refused).send().await.expect("send")).await;
        assert_eq!(status, 400);

        // Found by To and body, sent today (DateSent>=today as the helper libraries put it on the wire).
        let (status, page) = list(format!("To=%2B15557770001&DateSent>={today}"), "twilio-token").await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 1, "{page}");
        assert_eq!(messages[0]["sid"], first["sid"]);
        assert_eq!(messages[0]["body"], "Chiller 3: freeze risk [p7]");
        assert_eq!(messages[0]["to"], "+15557770001");
        assert_eq!(messages[0]["from"], "+15550001111");
        assert_eq!(messages[0]["status"], "delivered");
        assert!(messages[0]["date_sent"].is_string() && messages[0]["date_created"].is_string(), "{page}");
        assert_eq!((page["page"].as_u64(), page["page_size"].as_u64()), (Some(0), Some(50)));
        assert!(page["next_page_uri"].is_null() && page["uri"].as_str().is_some_and(|u| u.contains("Messages.json?")));

        // The refused one never went out; nothing sent before yesterday ended.
        let (_, page) = list("To=%2B15557770003".to_owned(), "twilio-token").await;
        assert_eq!(page["messages"], json!([]), "{page}");
        let (_, page) = list(format!("DateSent%3C={yesterday}"), "twilio-token").await;
        assert_eq!(page["messages"], json!([]), "{page}");
        let (_, page) = list(format!("DateSent={today}T08:00:00Z&From=%2B15550001111"), "twilio-token").await;
        assert_eq!(page["messages"].as_array().map(Vec::len), Some(2), "{page}");

        // Newest first, one per page, following next_page_uri.
        let (_, page) = list(format!("DateSent%3E={today}&PageSize=1"), "twilio-token").await;
        assert_eq!(page["messages"][0]["sid"], second["sid"], "{page}");
        let next = page["next_page_uri"].as_str().expect("next_page_uri").to_owned();
        let request = client().get(format!("{}{next}", fake.url())).basic_auth(SID, Some("twilio-token"));
        let (_, page) = json_of(request.send().await.expect("send")).await;
        assert_eq!(page["messages"][0]["sid"], first["sid"], "{page}");
        assert!(page["next_page_uri"].is_null(), "{page}");

        let (status, body) = list(String::new(), "wrong-token").await;
        assert_eq!((status, body["code"].as_u64()), (401, Some(20003)), "{body}");
        let (status, body) = list("DateSent=yesterday".to_owned(), "twilio-token").await;
        assert_eq!(status, 400, "{body}");

        // Queued, not sent yet: listed with no date_sent, and so outside every DateSent filter.
        fake.set_options(Options { receipt_delay: Duration::from_secs(3600), ..Options::default() });
        let (_, queued) = create("+15557770004", "Chiller 5: flow lost").await;
        let (_, page) = list("To=%2B15557770004".to_owned(), "twilio-token").await;
        assert_eq!(page["messages"][0]["sid"], queued["sid"], "{page}");
        assert_eq!(page["messages"][0]["status"], "queued");
        assert!(page["messages"][0]["date_sent"].is_null(), "{page}");
        let (_, page) = list(format!("To=%2B15557770004&DateSent={today}"), "twilio-token").await;
        assert_eq!(page["messages"], json!([]), "{page}");

        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.lookups, counters.rejected), (3, 8, 3), "{counters:?}");
    }

    // ---- Accepted, then no answer ----

    #[tokio::test]
    async fn accept_then_hang_delivers_without_answering_and_the_lookup_finds_it() {
        let fake = FakeProvider::aliyun("testId", "testSecret").await;
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
        fake.set_mode(Mode::AcceptThenHang { count: 1 });

        // A refused request is answered and does not count down.
        let (_, body) = aliyun_send(&fake, &[("TemplateParam", "[]")]).await;
        assert_eq!(body["Code"], "isv.INVALID_JSON_PARAM", "{body}");
        assert_eq!(fake.mode(), Mode::AcceptThenHang { count: 1 });

        let (n, ts) = (nonce(), now_aliyun());
        let params = with(aliyun_params("testId", &n, &ts), &[("OutId", "page-7")]);
        let query = build_aliyun("GET", "testSecret", &params);
        let hung = impatient.get(format!("{}/?{query}", fake.url())).send().await;
        assert!(hung.as_ref().is_err_and(reqwest::Error::is_timeout), "{hung:?}");
        assert_eq!(fake.mode(), Mode::Succeed);
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.accepted_unanswered, counters.timed_out), (1, 1, 0));
        assert_eq!(fake.delivered()[0].idempotency_key.as_deref(), Some("page-7"));

        // The client asks before sending again, and learns it went out.
        let (_, body) = aliyun_query(&fake, "15300000001", &beijing_today(), &[]).await;
        assert_eq!(body["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0]["OutId"], "page-7", "{body}");
        // Back to answering.
        let (_, body) = aliyun_send(&fake, &[]).await;
        assert_eq!(body["Code"], "OK", "{body}");

        // Twilio the same: created, never answered, then listed.
        let twilio = FakeProvider::twilio(SID, "twilio-token").await;
        twilio.set_mode(Mode::AcceptThenHang { count: 1 });
        let form = twilio_form(&[("To", "+15557770009"), ("From", "+15550001111"), ("Body", "page 9")]);
        let hung = impatient
            .post(format!("{}/2010-04-01/Accounts/{SID}/Messages.json", twilio.url()))
            .basic_auth(SID, Some("twilio-token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await;
        assert!(hung.as_ref().is_err_and(reqwest::Error::is_timeout), "{hung:?}");
        let request = client()
            .get(format!("{}/2010-04-01/Accounts/{SID}/Messages.json?To=%2B15557770009", twilio.url()))
            .basic_auth(SID, Some("twilio-token"));
        let (_, page) = json_of(request.send().await.expect("send")).await;
        assert_eq!(page["messages"][0]["body"], "page 9", "{page}");
        assert_eq!(twilio.counters().accepted_unanswered, 1);
    }

    // ---- Aliyun voice ----

    /// A SingleCallByTts on the fake (testId / testSecret) with some parameters replaced
    /// (`<absent>` removes one).
    async fn aliyun_call(fake: &FakeProvider, overrides: &[(&str, &str)]) -> (u16, Value) {
        let (n, ts) = (nonce(), now_aliyun());
        let base = vec![
            ("AccessKeyId", "testId"),
            ("Action", "SingleCallByTts"),
            ("CalledNumber", "15300000001"),
            ("CalledShowNumber", "057188773344"),
            ("Format", "JSON"),
            ("OutId", "page-42"),
            ("PlayTimes", "2"),
            ("RegionId", "cn-hangzhou"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", &n),
            ("SignatureVersion", "1.0"),
            ("Timestamp", &ts),
            ("TtsCode", "TTS_100001"),
            ("TtsParam", r#"{"unit":"Chiller 3","alarm":"冷冻水出水温度过低"}"#),
            ("Version", "2017-05-25"),
        ];
        let params: Vec<(&str, &str)> = with(base, overrides).into_iter().filter(|(_, v)| *v != "<absent>").collect();
        aliyun_get(fake, &params).await
    }

    #[tokio::test]
    async fn aliyun_voice_places_a_signed_call_and_limits_a_number_to_one_a_minute() {
        let fake = FakeProvider::aliyun_voice("testId", "testSecret").await;
        let (status, body) = aliyun_call(&fake, &[]).await;
        assert_eq!((status, body["Code"].as_str(), body["Message"].as_str()), (200, Some("OK"), Some("OK")), "{body}");
        let call_id = body["CallId"].as_str().expect("CallId").to_owned();
        assert!(call_id.contains('^') && body["RequestId"].is_string(), "{body}");
        let delivered = fake.wait_delivered(1, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "15300000001");
        assert_eq!(delivered[0].template.as_deref(), Some("TTS_100001"));
        assert_eq!(delivered[0].params, Some(json!({ "unit": "Chiller 3", "alarm": "冷冻水出水温度过低" })));
        assert_eq!(delivered[0].idempotency_key.as_deref(), Some("page-42"));
        assert_eq!(delivered[0].sender.as_deref(), Some("057188773344"));
        assert_eq!(delivered[0].provider_id, call_id);

        // The same number again within the minute (also as +86…), then another number.
        for number in ["15300000001", "+8615300000001"] {
            let (status, body) = aliyun_call(&fake, &[("CalledNumber", number)]).await;
            assert_eq!((status, body["Code"].as_str()), (200, Some("isv.BUSINESS_LIMIT_CONTROL")), "{body}");
            assert!(body.get("CallId").is_none(), "{body}");
        }
        let (_, body) = aliyun_call(&fake, &[("CalledNumber", "15300000002"), ("CalledShowNumber", "<absent>")]).await;
        assert_eq!(body["Code"], "OK", "{body}");
        assert_eq!(fake.delivered()[1].sender, None);
        fake.set_options(Options { aliyun_voice_frequency_limit: false, ..Options::default() });
        let (_, body) = aliyun_call(&fake, &[]).await;
        assert_eq!(body["Code"], "OK", "{body}");
        fake.set_options(Options::default());

        let long = format!(r#"{{"a":"{}","b":"{}"}}"#, "x".repeat(200), "y".repeat(50));
        for (overrides, code) in [
            (vec![("CalledNumber", "15300000009"), ("PlayTimes", "4")], "isv.INVALID_PARAMETERS"),
            (vec![("CalledNumber", "15300000009"), ("Volume", "101")], "isv.INVALID_PARAMETERS"),
            (vec![("CalledNumber", "15300000009"), ("Speed", "-501")], "isv.INVALID_PARAMETERS"),
            (vec![("CalledNumber", "15300000009"), ("OutId", "0123456789abcdef")], "isv.INVALID_PARAMETERS"),
            (vec![("CalledNumber", "15300000009"), ("TtsParam", r#"{"n":1}"#)], "isv.INVALID_PARAMETERS"),
            (vec![("CalledNumber", "15300000009"), ("TtsParam", &long)], "isv.PARAM_LENGTH_LIMIT"),
            (vec![("CalledNumber", "15300000009"), ("TtsParam", r#"{"u":"t.cn/x"}"#)], "isv.PARAM_NOT_SUPPORT_URL"),
            (vec![("CalledNumber", "153,154")], "isv.MOBILE_NUMBER_ILLEGAL"),
            (vec![("CalledNumber", "15300000009"), ("CalledShowNumber", "abc")], "isv.DISPLAY_NUMBER_ILLEGAL"),
        ] {
            let (status, body) = aliyun_call(&fake, &overrides).await;
            assert_eq!((status, body["Code"].as_str()), (200, Some(code)), "{overrides:?}: {body}");
        }
        // The RPC checks of the SMS fake: missing parameter, another product's action, a bad
        // signature, a replayed nonce.
        let (status, body) = aliyun_call(&fake, &[("TtsCode", "<absent>")]).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("MissingTtsCode")), "{body}");
        let (status, body) = aliyun_call(&fake, &[("Action", "SendSms")]).await;
        assert_eq!((status, body["Code"].as_str()), (404, Some("InvalidApi.NotFound")), "{body}");
        assert_eq!(body["HostId"], "dyvmsapi.aliyuncs.com");
        let (n, ts) = (nonce(), now_aliyun());
        let params = [
            ("AccessKeyId", "testId"),
            ("Action", "SingleCallByTts"),
            ("CalledNumber", "15300000005"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", &n),
            ("SignatureVersion", "1.0"),
            ("Timestamp", &ts),
            ("TtsCode", "TTS_100001"),
            ("Version", "2017-05-25"),
        ];
        let query = build_aliyun("GET", "testSecret", &params);
        let get = |query: String| {
            let url = format!("{}/?{query}", fake.url());
            async move { json_of(client().get(url).send().await.expect("GET")).await }
        };
        assert_eq!(get(query.clone()).await.1["Code"], "OK");
        let (status, body) = get(query.clone()).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureNonceUsed")), "{body}");
        let (status, body) = get(query.replace("15300000005", "15300000006")).await;
        assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureDoesNotMatch")), "{body}");

        fake.set_mode(Mode::Fail);
        let (status, body) = aliyun_call(&fake, &[("CalledNumber", "15300000007")]).await;
        assert_eq!((status, body["Code"].as_str()), (200, Some("isp.SYSTEM_ERROR")), "{body}");
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.failed, counters.rejected), (4, 1, 15), "{counters:?}");
    }

    // ---- Tencent voice ----

    const VMS_BODY: &str = r#"{"TemplateId":"4356","TemplateParamSet":["3号冷机","冻结风险"],"PlayTimes":2,"CalledNumber":"+8613788888888","SessionContext":"page-42","VoiceSdkAppid":"1400006666"}"#;

    fn build_vms(fake: &FakeProvider, service: &str, version: &str, payload: &str) -> reqwest::RequestBuilder {
        let host = fake.url().trim_start_matches("http://");
        let content_type = "application/json; charset=utf-8";
        let ts = Utc::now().timestamp();
        client()
            .post(format!("{}/", fake.url()))
            .header(
                "Authorization",
                sign_tencent_service(service, "AKIDtest", "tencent-secret", host, content_type, ts, payload),
            )
            .header("Content-Type", content_type)
            .header("X-TC-Action", "SendTtsVoice")
            .header("X-TC-Version", version)
            .header("X-TC-Timestamp", ts.to_string())
            .header("X-TC-Region", "ap-guangzhou")
            .body(payload.to_owned())
    }

    #[tokio::test]
    async fn tencent_voice_sends_a_signed_tts_call_and_checks_its_parameters() {
        let fake = FakeProvider::tencent_voice("AKIDtest", "tencent-secret", "1400006666").await;
        let (status, body) = json_of(build_vms(&fake, "vms", "2020-09-02", VMS_BODY).send().await.expect("send")).await;
        assert_eq!(status, 200);
        let call_id = body["Response"]["SendStatus"]["CallId"].as_str().expect("CallId").to_owned();
        assert_eq!(body["Response"]["SendStatus"]["SessionContext"], "page-42", "{body}");
        assert!(body["Response"]["RequestId"].is_string());
        let delivered = fake.wait_delivered(1, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "+8613788888888");
        assert_eq!(delivered[0].template.as_deref(), Some("4356"));
        assert_eq!(delivered[0].params, Some(json!(["3号冷机", "冻结风险"])));
        assert_eq!(delivered[0].idempotency_key.as_deref(), Some("page-42"));
        assert_eq!(delivered[0].provider_id, call_id);

        let error_code = |body: &Value| body["Response"]["Error"]["Code"].as_str().map(str::to_owned);
        for (service, version, payload, code) in [
            ("sms", "2020-09-02", VMS_BODY.to_owned(), "AuthFailure.SignatureFailure"),
            ("vms", "2021-01-11", VMS_BODY.to_owned(), "NoSuchVersion"),
            (
                "vms",
                "2020-09-02",
                VMS_BODY.replace("1400006666", "1400000000"),
                "InvalidParameterValue.SdkAppidNotExist",
            ),
            (
                "vms",
                "2020-09-02",
                VMS_BODY.replace("+8613788888888", "13788888888"),
                "InvalidParameterValue.CalledNumberVerifyFail",
            ),
            (
                "vms",
                "2020-09-02",
                VMS_BODY.replace("+8613788888888", "+15551234567"),
                "InvalidParameterValue.CalledNumberVerifyFail",
            ),
            ("vms", "2020-09-02", VMS_BODY.replace(r#""PlayTimes":2"#, r#""PlayTimes":4"#), "InvalidParameterValue"),
            ("vms", "2020-09-02", VMS_BODY.replace(r#""PlayTimes":2"#, r#""PlayTimes":"2""#), "InvalidParameter"),
            ("vms", "2020-09-02", VMS_BODY.replace(r#""TemplateId":"4356","#, ""), "MissingParameter"),
            (
                "vms",
                "2020-09-02",
                VMS_BODY.replace("冻结风险", &"冷".repeat(350)),
                "InvalidParameterValue.ContentLengthLimit",
            ),
        ] {
            let (status, body) =
                json_of(build_vms(&fake, service, version, &payload).send().await.expect("send")).await;
            assert_eq!((status, error_code(&body).as_deref()), (200, Some(code)), "{payload}: {body}");
        }
        fake.set_mode(Mode::Fail);
        let (_, body) = json_of(build_vms(&fake, "vms", "2020-09-02", VMS_BODY).send().await.expect("send")).await;
        assert_eq!(error_code(&body).as_deref(), Some("InternalError.UpstreamError"), "{body}");
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.rejected, counters.failed), (1, 9, 1), "{counters:?}");
    }

    // ---- Twilio calls ----

    const GATHER_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="dtmf" numDigits="1" action="https://chill.example/api/twilio/gather?page=42&amp;site=3" method="POST" timeout="10"><Say language="cmn-CN" voice="Polly.Zhiyu">3号冷机 冻结风险 按1确认</Say></Gather><Say>No key pressed.</Say></Response>"#;

    fn build_call(fake: &FakeProvider, form: String) -> reqwest::RequestBuilder {
        client()
            .post(format!("{}/2010-04-01/Accounts/{SID}/Calls.json", fake.url()))
            .basic_auth(SID, Some("twilio-token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
    }

    #[test]
    fn twiml_checks_the_document_and_the_gather_action() {
        assert_eq!(twilio::calls::check_twiml(GATHER_TWIML), Ok(()));
        assert_eq!(twilio::calls::check_twiml("<Response><Say>Hi</Say><Pause length=\"1\"/></Response>"), Ok(()));
        assert_eq!(twilio::calls::check_twiml("<!-- page --><Response/>"), Ok(()));
        for bad in [
            "",
            "Hello",
            "<Say>Hi</Say>",
            "<Response><Say>Hi</Response>",
            "<Response></Response><Response></Response>",
            "<Response><Gather numDigits=\"1\"><Say>x</Say></Gather></Response>",
            "<Response><Gather action=\"/ack\"></Gather></Response>",
            "<Response><Gather action='ftp://x/ack'/></Response>",
            "<Response><Say>unclosed",
        ] {
            assert!(twilio::calls::check_twiml(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn twilio_creates_calls_checks_twiml_and_lists_them_by_start_time() {
        let fake = FakeProvider::twilio(SID, "twilio-token").await;
        let form = twilio_form(&[
            ("To", "+8613800000001"),
            ("From", "+15550001111"),
            ("Twiml", GATHER_TWIML),
            ("StatusCallback", "https://chill.example/api/twilio/status"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "completed"),
            ("Timeout", "30"),
            ("MachineDetection", "Enable"),
        ]);
        let (status, call) = json_of(build_call(&fake, form).send().await.expect("send")).await;
        assert_eq!(status, 201, "{call}");
        let sid = call["sid"].as_str().expect("sid").to_owned();
        assert!(sid.starts_with("CA") && sid.len() == 34 && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{call}");
        assert_eq!((call["status"].as_str(), call["direction"].as_str()), (Some("queued"), Some("outbound-api")));
        assert_eq!((call["to"].as_str(), call["from"].as_str()), (Some("+8613800000001"), Some("+15550001111")));
        let created = call["date_created"].as_str().expect("date_created");
        assert!(DateTime::parse_from_rfc2822(created).is_ok() && created.ends_with("+0000"), "{created}");
        let delivered = fake.wait_delivered(1, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "+8613800000001");
        assert_eq!(delivered[0].text.as_deref(), Some(GATHER_TWIML));
        assert_eq!(delivered[0].sender.as_deref(), Some("+15550001111"));
        assert_eq!(delivered[0].provider_id, sid);

        let url_form = twilio_form(&[
            ("To", "+8613800000002"),
            ("From", "+15550001111"),
            ("Url", "https://chill.example/twiml/42"),
        ]);
        let (status, _) = json_of(build_call(&fake, url_form).send().await.expect("send")).await;
        assert_eq!(status, 201);
        assert_eq!(fake.delivered()[1].text.as_deref(), Some("https://chill.example/twiml/42"));

        let base = [("To", "+8613800000003"), ("From", "+15550001111")];
        let with_base = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            twilio_form(&pairs)
        };
        for (form, code) in [
            (twilio_form(&[("From", "+15550001111"), ("Url", "https://x.example/t")]), 21201),
            (twilio_form(&[("To", "13800000003"), ("From", "+15550001111"), ("Url", "https://x.example/t")]), 21211),
            (twilio_form(&[("To", "+8613800000003"), ("Url", "https://x.example/t")]), 21213),
            (twilio_form(&[("To", "+8613800000003"), ("From", "chill"), ("Url", "https://x.example/t")]), 21212),
            (with_base(&[]), 21200),
            (with_base(&[("Url", "https://x.example/t"), ("Twiml", "<Response/>")]), 21200),
            (with_base(&[("Url", "/twiml/42")]), 21205),
            (with_base(&[("ApplicationSid", "AP123")]), 21218),
            (with_base(&[("Twiml", "<Say>hi</Say>")]), 12100),
            (with_base(&[("Twiml", "<Response><Gather action=\"/ack\"><Say>x</Say></Gather></Response>")]), 12100),
            (with_base(&[("Url", "https://x.example/t"), ("Method", "PUT")]), 21200),
            (with_base(&[("Url", "https://x.example/t"), ("StatusCallbackEvent", "hungup")]), 21200),
            (with_base(&[("Url", "https://x.example/t"), ("Timeout", "0")]), 21208),
            (with_base(&[("Url", "https://x.example/t"), ("Timeout", "601")]), 21208),
            (with_base(&[("Url", "https://x.example/t"), ("MachineDetection", "Yes")]), 21200),
        ] {
            let (status, body) = json_of(build_call(&fake, form.clone()).send().await.expect("send")).await;
            assert_eq!((status, body["code"].as_u64()), (400, Some(code)), "{form}: {body}");
        }
        let too_long = format!("<Response><Say>{}</Say></Response>", "x".repeat(4000));
        let (_, body) = json_of(
            build_call(&fake, twilio_form(&[base[0], base[1], ("Twiml", &too_long)])).send().await.expect("send"),
        )
        .await;
        assert_eq!(body["code"], 32018, "{body}");

        // Listed newest first, found by To and the UTC start date; not before it started.
        let list = |query: String| {
            let request = client()
                .get(format!("{}/2010-04-01/Accounts/{SID}/Calls.json?{query}", fake.url()))
                .basic_auth(SID, Some("twilio-token"));
            async move { json_of(request.send().await.expect("send")).await }
        };
        let today = Utc::now().format("%Y-%m-%d").to_string();
        let yesterday = (Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
        let (status, page) = list(format!("To=%2B8613800000001&StartTime>={today}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["calls"].as_array().map(Vec::len), Some(1), "{page}");
        assert_eq!(page["calls"][0]["sid"], sid.as_str());
        assert_eq!(page["calls"][0]["status"], "in-progress");
        assert!(page["calls"][0]["start_time"].is_string(), "{page}");
        assert_eq!((page["page"].as_u64(), page["page_size"].as_u64()), (Some(0), Some(50)));
        assert!(page["next_page_uri"].is_null(), "{page}");
        let (_, page) = list(format!("StartTime={today}&From=%2B15550001111")).await;
        assert_eq!(page["calls"].as_array().map(Vec::len), Some(2), "{page}");
        assert_eq!(page["calls"][0]["to"], "+8613800000002", "{page}");
        let (_, page) = list(format!("StartTime%3C={yesterday}")).await;
        assert_eq!(page["calls"], json!([]), "{page}");
        fake.set_options(Options { receipt_delay: Duration::from_secs(3600), ..Options::default() });
        let (_, page) = list("To=%2B8613800000001".to_owned()).await;
        assert_eq!(
            (page["calls"][0]["status"].as_str(), page["calls"][0]["start_time"].is_null()),
            (Some("queued"), true)
        );
        let (_, page) = list(format!("To=%2B8613800000001&StartTime={today}")).await;
        assert_eq!(page["calls"], json!([]), "{page}");
        let (status, _) = list("StartTime=today".to_owned()).await;
        assert_eq!(status, 400);
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.lookups, counters.rejected), (2, 5, 17), "{counters:?}");
    }

    #[tokio::test]
    async fn twilio_call_creation_hangs_like_messages() {
        let fake = FakeProvider::twilio(SID, "twilio-token").await;
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
        let post = |to: &str| {
            impatient
                .post(format!("{}/2010-04-01/Accounts/{SID}/Calls.json", fake.url()))
                .basic_auth(SID, Some("twilio-token"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(twilio_form(&[("To", to), ("From", "+15550001111"), ("Url", "https://chill.example/t")]))
                .send()
        };
        fake.set_mode(Mode::Hang { count: 1 });
        assert!(post("+8613800000001").await.is_err_and(|e| e.is_timeout()));
        fake.set_mode(Mode::AcceptThenHang { count: 1 });
        assert!(post("+8613800000002").await.is_err_and(|e| e.is_timeout()));
        assert_eq!(fake.mode(), Mode::Succeed);
        let request = client()
            .get(format!("{}/2010-04-01/Accounts/{SID}/Calls.json?To=%2B8613800000002", fake.url()))
            .basic_auth(SID, Some("twilio-token"));
        let (_, page) = json_of(request.send().await.expect("send")).await;
        assert_eq!(page["calls"].as_array().map(Vec::len), Some(1), "{page}");
        let counters = fake.counters();
        assert_eq!((counters.timed_out, counters.accepted_unanswered, counters.delivered), (1, 1, 1));
    }

    #[test]
    fn twilio_gather_webhook_is_signed_over_url_and_form() {
        let hook = TwilioWebhook::gather(
            "https://chill.example/api/twilio/gather?page=42&site=3",
            SID,
            "twilio-token",
            "CA0123456789abcdef0123456789abcdef",
            "+15550001111",
            "+8613800000001",
            "1",
        );
        let decoded = parse_form(hook.body().as_bytes());
        assert_eq!(decoded, hook.params);
        for (name, value) in [
            ("Digits", "1"),
            ("CallStatus", "in-progress"),
            ("Direction", "outbound-api"),
            ("msg", "Gather End"),
            ("FinishedOnKey", ""),
            ("CallSid", "CA0123456789abcdef0123456789abcdef"),
            ("AccountSid", SID),
            ("ApiVersion", "2010-04-01"),
            ("From", "+15550001111"),
            ("To", "+8613800000001"),
        ] {
            assert_eq!(hook.param(name), Some(value), "{name}");
        }
        assert_eq!(hook.signature, twilio_signature("twilio-token", &hook.url, &decoded));
    }

    // ---- Team chat robots: test-only reference signers, from the providers' pages ----

    /// DingTalk 加签: Base64(HmacSHA256(secret, timestamp + "\n" + secret)).
    fn ref_dingtalk_sign(secret: &str, timestamp: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{timestamp}\n{secret}").as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    /// Feishu 签名校验: Base64(HmacSHA256(key = timestamp + "\n" + secret, message = empty)).
    fn ref_feishu_sign(secret: &str, timestamp: &str) -> String {
        let mac = HmacSha256::new_from_slice(format!("{timestamp}\n{secret}").as_bytes()).expect("key");
        BASE64.encode(mac.finalize().into_bytes())
    }

    /// `URLEncoder.encode`-style: alphanumerics and `*-._` kept, the rest `%XY`.
    fn ref_urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// The verified vectors of docs/research/paging-channels.md (ts 1599360473, secret SECxxx);
    /// each recipe gives its own value, so mixing them up is caught.
    #[test]
    fn dingtalk_and_feishu_signatures_match_the_verified_vectors() {
        assert_eq!(dingtalk::sign("SECxxx", "1599360473"), "ICZBczHOSiUT7rfTALaFxWUy6Nv9LueTZWTtB3teRcg=");
        assert_eq!(feishu::sign("SECxxx", "1599360473"), "LwreZZxjbsFzPj2ewRYSLSOrW7Tb5faNB4UZoY/PPtg=");
        assert_eq!(ref_dingtalk_sign("SECxxx", "1599360473"), "ICZBczHOSiUT7rfTALaFxWUy6Nv9LueTZWTtB3teRcg=");
        assert_eq!(ref_feishu_sign("SECxxx", "1599360473"), "LwreZZxjbsFzPj2ewRYSLSOrW7Tb5faNB4UZoY/PPtg=");
    }

    #[tokio::test]
    async fn wecom_accepts_text_and_markdown_and_answers_its_errors() {
        let fake = FakeProvider::wecom("693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa").await;
        let post = |key: &str, body: String| {
            client()
                .post(format!("{}/cgi-bin/webhook/send?key={key}", fake.url()))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
        };
        let key = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa";
        let text = json!({ "msgtype": "text", "text": { "content": "3号冷机 冻结风险", "mentioned_mobile_list": ["13800001111"] } });
        let (status, body) = json_of(post(key, text.to_string()).await.expect("send")).await;
        assert_eq!((status, body), (200, json!({ "errcode": 0, "errmsg": "ok" })));
        let markdown = json!({ "msgtype": "markdown", "markdown": { "content": "**3号冷机** <font color=\"warning\">冻结风险</font>" } });
        let (_, body) = json_of(post(key, markdown.to_string()).await.expect("send")).await;
        assert_eq!(body["errcode"], 0, "{body}");
        let delivered = fake.wait_delivered(2, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, key);
        assert_eq!(delivered[0].text.as_deref(), Some("3号冷机 冻结风险"));
        assert_eq!(delivered[0].params, Some(text));
        assert!(delivered[1].text.as_deref().is_some_and(|t| t.starts_with("**3号冷机**")));

        for (key, body, errcode) in [
            ("wrong-key", json!({ "msgtype": "text", "text": { "content": "x" } }).to_string(), 93000),
            (key, "{not json".to_owned(), 40058),
            (key, json!({ "msgtype": "news", "news": {} }).to_string(), 40008),
            (key, json!({ "msgtype": "text", "text": { "content": "" } }).to_string(), 44004),
            (key, json!({ "msgtype": "text", "text": { "content": "冷".repeat(683) } }).to_string(), 40058),
            (key, json!({ "msgtype": "markdown", "markdown": { "content": "x".repeat(4097) } }).to_string(), 40058),
        ] {
            let (status, answer) = json_of(post(key, body).await.expect("send")).await;
            assert_eq!((status, answer["errcode"].as_i64()), (200, Some(errcode)), "{answer}");
        }
        // 2048 bytes exactly is fine (682 three-byte characters and 2 bytes).
        let at_limit = format!("{}ab", "冷".repeat(682));
        let (_, answer) = json_of(
            post(key, json!({ "msgtype": "text", "text": { "content": at_limit } }).to_string()).await.expect("send"),
        )
        .await;
        assert_eq!(answer["errcode"], 0, "{answer}");

        fake.set_mode(Mode::Fail);
        let (_, answer) = json_of(post(key, markdown.to_string()).await.expect("send")).await;
        assert_eq!((answer["errcode"].as_i64(), answer["errmsg"].as_str()), (Some(-1), Some("system busy")));
        fake.set_mode(Mode::Succeed);
        // 20 a minute: 3 sent so far, 17 more, then the limit.
        for _ in 0..17 {
            let (_, answer) = json_of(post(key, markdown.to_string()).await.expect("send")).await;
            assert_eq!(answer["errcode"], 0, "{answer}");
        }
        let (status, answer) = json_of(post(key, markdown.to_string()).await.expect("send")).await;
        assert_eq!((status, answer["errcode"].as_i64()), (200, Some(45009)), "{answer}");
        let counters = fake.counters();
        assert_eq!((counters.delivered, counters.rejected, counters.failed), (20, 7, 1), "{counters:?}");
    }

    /// A signed DingTalk webhook URL for `timestamp_ms`.
    fn dingtalk_url(fake: &FakeProvider, token: &str, secret: &str, timestamp_ms: i64) -> String {
        let ts = timestamp_ms.to_string();
        format!(
            "{}/robot/send?access_token={token}&timestamp={ts}&sign={}",
            fake.url(),
            ref_urlencode(&ref_dingtalk_sign(secret, &ts))
        )
    }

    #[tokio::test]
    async fn dingtalk_checks_the_signature_and_answers_its_errors() {
        let fake = FakeProvider::dingtalk("ding-token", "SECxxx").await;
        let post =
            |url: String, body: String| client().post(url).header("Content-Type", "application/json").body(body).send();
        let now = Utc::now().timestamp_millis();
        let markdown = json!({
            "msgtype": "markdown",
            "markdown": { "title": "3号冷机告警", "text": "### 3号冷机\n冻结风险" },
            "at": { "atMobiles": ["13800001111"], "isAtAll": false },
        });
        let (status, body) =
            json_of(post(dingtalk_url(&fake, "ding-token", "SECxxx", now), markdown.to_string()).await.expect("send"))
                .await;
        assert_eq!((status, body), (200, json!({ "errcode": 0, "errmsg": "ok" })));
        let card = json!({
            "msgtype": "actionCard",
            "actionCard": { "title": "告警", "text": "### 确认?", "btnOrientation": "0", "btns": [{ "title": "确认", "actionURL": "https://chill.example/ack/42" }] },
        });
        let (_, body) =
            json_of(post(dingtalk_url(&fake, "ding-token", "SECxxx", now), card.to_string()).await.expect("send"))
                .await;
        assert_eq!(body["errcode"], 0, "{body}");
        let delivered = fake.wait_delivered(2, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "ding-token");
        assert_eq!(delivered[0].text.as_deref(), Some("### 3号冷机\n冻结风险"));
        assert_eq!(delivered[0].params, Some(markdown.clone()));
        assert_eq!(delivered[1].text.as_deref(), Some("### 确认?"));

        let text = json!({ "msgtype": "text", "text": { "content": "3号冷机 冻结风险" } }).to_string();
        let unencoded = format!(
            "{}/robot/send?access_token=ding-token&timestamp={now}&sign={}",
            fake.url(),
            ref_dingtalk_sign("SECxxx", &now.to_string())
        );
        let signed_with_feishu_recipe = format!(
            "{}/robot/send?access_token=ding-token&timestamp={now}&sign={}",
            fake.url(),
            ref_urlencode(&ref_feishu_sign("SECxxx", &now.to_string()))
        );
        let cases = [
            (dingtalk_url(&fake, "other-token", "SECxxx", now), text.clone(), 300005, "token is not exist"),
            (dingtalk_url(&fake, "ding-token", "SECyyy", now), text.clone(), 310000, "sign not match"),
            (signed_with_feishu_recipe, text.clone(), 310000, "sign not match"),
            (dingtalk_url(&fake, "ding-token", "SECxxx", now - 3_700_000), text.clone(), 310000, "invalid timestamp"),
            (format!("{}/robot/send?access_token=ding-token", fake.url()), text.clone(), 310000, "invalid timestamp"),
            (dingtalk_url(&fake, "ding-token", "SECxxx", now), "{".to_owned(), 40035, "缺少参数 json"),
            (
                dingtalk_url(&fake, "ding-token", "SECxxx", now),
                json!({ "msgtype": "markdown", "markdown": { "title": "t" } }).to_string(),
                40035,
                "缺少参数 markdown.text",
            ),
            (
                dingtalk_url(&fake, "ding-token", "SECxxx", now),
                json!({ "msgtype": "text", "text": { "content": "x".repeat(20001) } }).to_string(),
                460101,
                "message too long, exceed 20000 bytes",
            ),
        ];
        for (url, body, errcode, errmsg) in cases {
            let (status, answer) = json_of(post(url, body).await.expect("send")).await;
            assert_eq!(
                (status, answer["errcode"].as_i64(), answer["errmsg"].as_str()),
                (200, Some(errcode), Some(errmsg))
            );
        }
        // An unencoded sign works only when its base64 has no `+` (the query reads `+` as a space).
        let (_, answer) = json_of(post(unencoded.clone(), text.clone()).await.expect("send")).await;
        let has_plus = unencoded.rsplit("sign=").next().is_some_and(|s| s.contains('+'));
        assert_eq!(answer["errcode"].as_i64(), Some(if has_plus { 310000 } else { 0 }), "{unencoded}: {answer}");

        fake.set_mode(Mode::Fail);
        let (_, answer) =
            json_of(post(dingtalk_url(&fake, "ding-token", "SECxxx", now), text.clone()).await.expect("send")).await;
        assert_eq!((answer["errcode"].as_i64(), answer["errmsg"].as_str()), (Some(-1), Some("system busy")));
        fake.set_mode(Mode::Succeed);
        let sent = fake.counters().delivered;
        for _ in sent..20 {
            let (_, answer) =
                json_of(post(dingtalk_url(&fake, "ding-token", "SECxxx", now), text.clone()).await.expect("send"))
                    .await;
            assert_eq!(answer["errcode"], 0, "{answer}");
        }
        let (_, answer) =
            json_of(post(dingtalk_url(&fake, "ding-token", "SECxxx", now), text.clone()).await.expect("send")).await;
        assert_eq!(
            (answer["errcode"].as_i64(), answer["errmsg"].as_str()),
            (Some(130101), Some("send too fast, exceed 20 times per minute"))
        );
        assert_eq!(fake.counters().delivered, 20);
    }

    #[tokio::test]
    async fn feishu_checks_the_body_signature_and_answers_its_errors() {
        let fake = FakeProvider::feishu("hook-token", "feishu-secret").await;
        let post = |token: &str, body: &Value| {
            client()
                .post(format!("{}/open-apis/bot/v2/hook/{token}", fake.url()))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
        };
        let signed = |mut body: Value, secret: &str, ts: i64| {
            let ts = ts.to_string();
            body["timestamp"] = Value::from(ts.as_str());
            body["sign"] = Value::from(ref_feishu_sign(secret, &ts));
            body
        };
        let now = Utc::now().timestamp();
        let text =
            json!({ "msg_type": "text", "content": { "text": "3号冷机 冻结风险 <at user_id=\"all\">所有人</at>" } });
        let (status, body) =
            json_of(post("hook-token", &signed(text.clone(), "feishu-secret", now)).await.expect("send")).await;
        assert_eq!(status, 200);
        assert_eq!((body["code"].as_i64(), body["msg"].as_str()), (Some(0), Some("success")), "{body}");
        assert_eq!((body["StatusCode"].as_i64(), body["data"].clone()), (Some(0), json!({})), "{body}");
        let post_message = json!({
            "msg_type": "post",
            "content": { "post": { "zh_cn": {
                "title": "3号冷机告警",
                "content": [
                    [{ "tag": "text", "text": "冻结风险 " }, { "tag": "a", "text": "详情", "href": "https://chill.example/a/42" }],
                    [{ "tag": "at", "user_id": "all", "user_name": "所有人" }],
                ],
            } } },
        });
        let (_, body) =
            json_of(post("hook-token", &signed(post_message, "feishu-secret", now)).await.expect("send")).await;
        assert_eq!(body["code"], 0, "{body}");
        let card = json!({
            "msg_type": "interactive",
            "card": {
                "header": { "title": { "tag": "plain_text", "content": "3号冷机" }, "template": "red" },
                "elements": [{ "tag": "div", "text": { "tag": "lark_md", "content": "**冻结风险**" } }],
            },
        });
        let (_, body) = json_of(post("hook-token", &signed(card, "feishu-secret", now)).await.expect("send")).await;
        assert_eq!(body["code"], 0, "{body}");
        let delivered = fake.wait_delivered(3, Duration::from_secs(5)).await;
        assert_eq!(delivered[0].recipient, "hook-token");
        assert_eq!(delivered[0].text.as_deref(), Some("3号冷机 冻结风险 <at user_id=\"all\">所有人</at>"));
        assert_eq!(delivered[1].text.as_deref(), Some("3号冷机告警\n冻结风险 详情\n@所有人"));
        assert_eq!(delivered[2].text.as_deref(), Some("3号冷机\n**冻结风险**"));
        assert!(delivered[0].params.as_ref().is_some_and(|p| p["sign"].is_string()));

        let mut dingtalk_recipe = text.clone();
        dingtalk_recipe["timestamp"] = Value::from(now.to_string());
        dingtalk_recipe["sign"] = Value::from(ref_dingtalk_sign("feishu-secret", &now.to_string()));
        let mut numeric_timestamp = signed(text.clone(), "feishu-secret", now);
        numeric_timestamp["timestamp"] = Value::from(now);
        let huge = json!({ "msg_type": "text", "content": { "text": "x".repeat(21 * 1024) } });
        for (token, body, code) in [
            ("other-token", signed(text.clone(), "feishu-secret", now), 19001),
            ("hook-token", dingtalk_recipe, 19021),
            ("hook-token", signed(text.clone(), "other-secret", now), 19021),
            ("hook-token", signed(text.clone(), "feishu-secret", now - 3601), 19021),
            ("hook-token", numeric_timestamp, 19021),
            ("hook-token", text.clone(), 19021),
            ("hook-token", signed(json!({ "msg_type": "image", "content": {} }), "feishu-secret", now), 9499),
            ("hook-token", signed(huge, "feishu-secret", now), 9499),
        ] {
            let (status, answer) = json_of(post(token, &body).await.expect("send")).await;
            assert_eq!((status, answer["code"].as_i64()), (200, Some(code)), "{answer}");
        }
        fake.set_mode(Mode::Fail);
        let (_, answer) =
            json_of(post("hook-token", &signed(text.clone(), "feishu-secret", now)).await.expect("send")).await;
        assert_eq!(answer["code"], 1500, "{answer}");
        fake.set_mode(Mode::Succeed);
        // 5 a second: three sent already within it (the test runs well under a second), so
        // send until one is refused; at most 5 go through in any second.
        let mut accepted = 0;
        let started = Instant::now();
        let code = loop {
            let (_, answer) =
                json_of(post("hook-token", &signed(text.clone(), "feishu-secret", now)).await.expect("send")).await;
            if answer["code"] != 0 {
                break answer["code"].as_i64();
            }
            accepted += 1;
            assert!(accepted <= 100, "no frequency limit");
        };
        assert_eq!(code, Some(11232));
        if started.elapsed() < Duration::from_millis(500) {
            assert!(accepted <= 5, "{accepted} accepted in one second");
        }
    }

    #[tokio::test]
    async fn slack_answers_ok_in_plain_text_and_limits_bursts() {
        let path = "/services/T000/B000/XXXXXXXX";
        let fake = FakeProvider::slack(path).await;
        let post = |path: &str, body: String| {
            client().post(format!("{}{path}", fake.url())).header("Content-Type", "application/json").body(body).send()
        };
        let message = json!({
            "text": "Chiller 3: freeze risk",
            "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": "*Chiller 3*: freeze risk" } }],
        });
        for (target, body, status, answer) in [
            ("/services/T000/B000/other", message.to_string(), 404, "no_service"),
            (path, "{".to_owned(), 400, "invalid_payload"),
            (path, json!({ "text": 5 }).to_string(), 400, "invalid_payload"),
            (path, json!({ "blocks": [{ "text": "x" }] }).to_string(), 400, "invalid_payload"),
            (path, json!({ "username": "x" }).to_string(), 400, "no_text"),
        ] {
            let response = post(target, body).await.expect("send");
            assert_eq!(response.status(), status);
            assert_eq!(response.text().await.expect("body"), answer);
        }
        let started = Instant::now();
        let response = post(path, message.to_string()).await.expect("send");
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("text/plain")));
        assert_eq!(response.text().await.expect("body"), "ok");
        let blocks_only = json!({ "blocks": [{ "type": "divider" }] });
        assert_eq!(post(path, blocks_only.to_string()).await.expect("send").status(), 200);
        // The burst of 3 is spent; the next within a second is refused (a slow machine may
        // earn a token back in between, so keep sending until one is).
        let response = loop {
            let response = post(path, message.to_string()).await.expect("send");
            if response.status() != 200 {
                break response;
            }
            assert!(fake.delivered().len() < 20, "no rate limit");
        };
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let delivered = fake.delivered();
        assert!(delivered.len() >= 3, "{delivered:?}");
        if started.elapsed() < Duration::from_millis(500) {
            assert_eq!(delivered.len(), 3);
        }
        assert_eq!(delivered[0].recipient, path);
        assert_eq!(delivered[0].text.as_deref(), Some("Chiller 3: freeze risk"));
        assert_eq!(delivered[0].params, Some(message.clone()));
        assert_eq!(delivered[1].text, None);

        let failing = FakeProvider::slack(path).await;
        failing.set_mode(Mode::Fail);
        let response = client()
            .post(format!("{}{path}", failing.url()))
            .header("Content-Type", "application/json")
            .body(message.to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 500);
        assert_eq!(response.text().await.expect("body"), "rollup_error");
    }
}
