//! Fake SMS providers and a fake customer webhook for tests: local HTTP servers that check each
//! request the way the real service does, so the server's provider clients (written separately
//! from the providers' public documentation) are tested against an independent reading of the
//! same documents.
//!
//! - [`FakeProvider::aliyun`]: Aliyun SMS `SendSms`, RPC API 2017-05-25; checks signature v1
//!   (HMAC-SHA1), nonce replay, 15 min clock skew and the parameters.
//! - [`FakeProvider::tencent`]: Tencent Cloud SMS `SendSms`, API 3.0, 2021-01-11; checks
//!   TC3-HMAC-SHA256, 5 min clock skew, the headers and the JSON body.
//! - [`FakeProvider::twilio`]: Twilio `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`;
//!   checks HTTP basic auth and the form fields, honours the idempotency token.
//! - [`FakeProvider::webhook`]: a customer's endpoint for Chillcloud's signed webhooks; checks
//!   `X-Chillcloud-Signature` and 5 min clock skew.
//!
//! Every fake binds `127.0.0.1:0`, serves from a tokio task and stops when dropped. Its [`Mode`]
//! can be switched at any time. It keeps a log of [`Delivered`] messages (only requests that
//! passed every check and were accepted), the [`Rejection`]s with their reasons, and
//! [`Counters`]. Tests wait with [`FakeProvider::wait_delivered`], which polls against a
//! deadline.
//!
//! ```ignore
//! let sms = FakeProvider::aliyun("LTAI5tTestKeyId", "test-secret").await;
//! // … configure the server's Aliyun endpoint as `sms.url()` and raise an alarm …
//! let sent = sms.wait_delivered(1, Duration::from_secs(10)).await;
//! assert_eq!(sent[0].recipient, "13800000000");
//! sms.assert_no_rejections();
//! ```
//!
//! [`TwilioWebhook`] builds the request Twilio sends to a customer's URL for an inbound SMS,
//! signed with `X-Twilio-Signature`, so server tests can post a realistic reply.
//!
//! Sources, cited again beside each check:
//! - Aliyun "Signature mechanism" for RPC APIs (help.aliyun.com/document_detail/28839.html;
//!   English: alibabacloud.com/help/doc-detail/127287.htm), the SMS "HTTP protocol and signature"
//!   worked example (help.aliyun.com/document_detail/56189.html), "Request syntax and signature
//!   method V2 for RPC APIs" (alibabacloud.com/help/en/sdk/product-overview/rpc-mechanism),
//!   `SendSms` (help.aliyun.com/document_detail/55284.html), the client error codes of the
//!   management OpenAPI (developer.aliyun.com/ask/278265, help.aliyun.com/document_detail/51132.html)
//!   and the SMS API error codes (help.aliyun.com/document_detail/101346.html).
//! - Tencent Cloud API 3.0 "Signature v3" (the same page under each product, e.g.
//!   tencentcloud.com/document/api/1150/49447), `SendSms` 2021-01-11
//!   (cloud.tencent.com/document/api/382/55981), SMS error codes
//!   (cloud.tencent.com/document/api/382/38780 and /59177).
//! - Twilio Messages resource (twilio.com/docs/messaging/api/message-resource), the error
//!   dictionary (twilio.com/docs/errors/NNNNN) and "Secure webhooks"
//!   (twilio.com/docs/usage/webhooks/webhooks-security, formerly docs/usage/security).

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
use chrono::{DateTime, NaiveDateTime, Utc};
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
}

/// How a fake answers; switchable at any time with [`FakeProvider::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Check every request and accept the good ones.
    Succeed,
    /// Check every request, and answer the good ones with the provider's error instead of
    /// sending: Aliyun `isv.BUSINESS_LIMIT_CONTROL` (HTTP 200), Tencent a per-number
    /// `LimitExceeded.PhoneNumberThirtySecondLimit` in `SendStatusSet` (HTTP 200), Twilio
    /// error 20500 (HTTP 500), the webhook HTTP 500. Counted as `failed`.
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
}

/// A message the fake accepted: one per recipient (Aliyun and Tencent send one request to
/// several numbers), one per webhook request.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The phone number as sent (Aliyun `PhoneNumbers` item, Tencent `PhoneNumberSet` item,
    /// Twilio `To`), or the request path for the webhook.
    pub recipient: String,
    /// Twilio `Body`; the webhook's raw JSON body; `None` for the template providers.
    pub text: Option<String>,
    /// Aliyun `TemplateCode`, Tencent `TemplateId`.
    pub template: Option<String>,
    /// Template parameters: Aliyun `TemplateParam` (a JSON object), Tencent `TemplateParamSet`
    /// (a JSON array); the parsed JSON body for the webhook.
    pub params: Option<Value>,
    /// Aliyun `SignName`, Tencent `SignName`, Twilio `From` (or `MessagingServiceSid`).
    pub sender: Option<String>,
    /// The caller's idempotency key: Aliyun `OutId`, Tencent `SessionContext`, Twilio
    /// `I-Twilio-Idempotency-Token`, the webhook body's `id`.
    pub idempotency_key: Option<String>,
    /// The provider's id for the message: Aliyun `BizId`, Tencent `SerialNo`, Twilio `sid`.
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
    /// message, not sent again.
    pub deduplicated: usize,
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

    /// The current mode ([`Mode::Hang`] counts down as requests arrive).
    pub fn mode(&self) -> Mode {
        self.state().mode
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
                        tencent::process(secret_id, secret_key, sdk_app_id, &req, fail)
                    }
                    Provider::Twilio { account_sid, auth_token } => {
                        twilio::process(&mut state, account_sid, auth_token, &req, fail)
                    }
                    Provider::Webhook { secret } => webhook::process(secret, &req, fail),
                };
                match reply.verdict {
                    Verdict::Delivered(messages) => {
                        state.counters.delivered += messages.len();
                        state.delivered.extend(messages);
                    }
                    Verdict::Rejected { code, reason } => {
                        state.counters.rejected += 1;
                        state.rejections.push(Rejection { code, reason, received_at: req.at });
                    }
                    Verdict::Failed => state.counters.failed += 1,
                    Verdict::Replayed => state.counters.deduplicated += 1,
                }
                return reply.response;
            }
        }
    }
    // Mode::Hang: never answer. Hyper drops this future when the client closes the connection.
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

// ---------------------------------------------------------------------------------------------
// Aliyun SMS
// ---------------------------------------------------------------------------------------------

mod aliyun {
    use super::*;

    const VERSION: &str = "2017-05-25";
    const HOST_ID: &str = "dysmsapi.aliyuncs.com";
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
    fn gateway_error(format: Format, status: StatusCode, code: &str, message: &str, reason: &str) -> Reply {
        let request_id = request_id();
        let response = respond(
            format,
            status,
            "Error",
            &[("RequestId", &request_id), ("HostId", HOST_ID), ("Code", code), ("Message", message)],
        );
        Reply::rejected(code, reason, response)
    }

    /// A `SendSms` business error (the `isv.*` codes): HTTP 200, `{Code, Message, RequestId}`,
    /// no `BizId` (help.aliyun.com/document_detail/101346.html).
    fn business_error(format: Format, code: &str, message: &str) -> Response {
        let request_id = request_id();
        respond(
            format,
            StatusCode::OK,
            "SendSmsResponse",
            &[("Code", code), ("Message", message), ("RequestId", &request_id)],
        )
    }

    pub(super) fn process(
        state: &mut FakeState,
        access_key_id: &str,
        access_key_secret: &str,
        req: &Incoming,
        fail: bool,
    ) -> Reply {
        // Parameters come in the query (GET) or the query and the form body (POST); both are
        // signed alike, only the method in StringToSign differs.
        let mut params = parse_form(req.query.as_bytes());
        if req.method == Method::POST && req.content_type_is("application/x-www-form-urlencoded") {
            params.extend(parse_form(&req.body));
        }
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());

        // "Format … Valid values: JSON, XML. Default: XML." (rpc-mechanism, common parameters);
        // `InvalidParameter.Format` "仅支持 XML/JSON" (developer.aliyun.com/ask/278265).
        let format = match get("Format") {
            None => Format::Xml,
            Some(f) if f.eq_ignore_ascii_case("XML") => Format::Xml,
            Some(f) if f.eq_ignore_ascii_case("JSON") => Format::Json,
            Some(other) => {
                return gateway_error(
                    Format::Xml,
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter.Format",
                    "Specified parameter format is not valid.",
                    &format!("Format={other:?}, only JSON or XML"),
                );
            }
        };
        let bad = |status: StatusCode, code: &str, message: &str, reason: String| {
            gateway_error(format, status, code, message, &reason)
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
        // "UnsupportedHTTPMethod" (developer.aliyun.com/ask/278265); SendSms is GET or POST.
        if req.method != Method::GET && req.method != Method::POST {
            return bad(
                StatusCode::BAD_REQUEST,
                "UnsupportedHTTPMethod",
                "This http method not supported.",
                format!("method {}", req.method),
            );
        }
        // Required common parameters (rpc-mechanism: Action, Version, AccessKeyId,
        // SignatureNonce, Timestamp, Signature, SignatureMethod, SignatureVersion) and the
        // required SendSms ones (PhoneNumbers, SignName, TemplateCode; 55284.html). Missing one
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
            "PhoneNumbers",
            "SignName",
            "TemplateCode",
        ] {
            if get(name).is_none_or(str::is_empty) {
                return bad(
                    StatusCode::BAD_REQUEST,
                    &format!("Missing{name}"),
                    &format!("{name} is mandatory for this action."),
                    format!("parameter {name} is missing or empty"),
                );
            }
        }
        let param = |name: &str| get(name).unwrap_or_default();
        // "InvalidApi.NotFound … 404" for an unknown Action/Version pair.
        if param("Action") != "SendSms" || param("Version") != VERSION {
            return bad(
                StatusCode::NOT_FOUND,
                "InvalidApi.NotFound",
                "Specified api is not found, please check your url and method.",
                format!("Action={:?} Version={:?}, expected SendSms {VERSION}", param("Action"), param("Version")),
            );
        }
        // "SignatureMethod: … Only HMAC-SHA1 is supported." / "SignatureVersion: … 1.0"
        // (signature mechanism overview); `InvalidSignatureMethod` 400, `IncompleteSignature`
        // 400 (ask/278265, document_detail/51132).
        if param("SignatureMethod") != "HMAC-SHA1" {
            return bad(
                StatusCode::BAD_REQUEST,
                "InvalidSignatureMethod",
                "Specified signature method is not valid.",
                format!("SignatureMethod={:?}, expected HMAC-SHA1", param("SignatureMethod")),
            );
        }
        if param("SignatureVersion") != "1.0" {
            return bad(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
                format!("SignatureVersion={:?}, expected 1.0", param("SignatureVersion")),
            );
        }
        // "InvalidAccessKeyId.NotFound  Specified access key is not found. 404".
        if param("AccessKeyId") != access_key_id {
            return bad(
                StatusCode::NOT_FOUND,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
                format!("unknown AccessKeyId {:?}", param("AccessKeyId")),
            );
        }
        // "Timestamp … ISO 8601 … yyyy-MM-ddTHH:mm:ssZ format. The time must be in UTC."
        // (common parameters); `InvalidTimeStamp.Format` / `InvalidTimeStamp.Expired` (more than
        // 15 minutes from the server's clock) 400 (ask/278265).
        let Ok(timestamp) = NaiveDateTime::parse_from_str(param("Timestamp"), "%Y-%m-%dT%H:%M:%SZ") else {
            return bad(
                StatusCode::BAD_REQUEST,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
                format!("Timestamp={:?}, expected yyyy-MM-ddTHH:mm:ssZ (UTC)", param("Timestamp")),
            );
        };
        let skew = timestamp.and_utc().timestamp() - req.unix_s();
        if skew.abs() > MAX_SKEW_S {
            return bad(
                StatusCode::BAD_REQUEST,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
                format!("Timestamp {} is {skew} s from now (limit {MAX_SKEW_S} s)", param("Timestamp")),
            );
        }
        // The signature (signature mechanism); `SignatureDoesNotMatch` 400. Aliyun's message
        // quotes its own StringToSign, which is what one needs to debug a client.
        let string_to_sign = string_to_sign(req.method.as_str(), &params);
        if sign(access_key_secret, &string_to_sign) != param("Signature") {
            return bad(
                StatusCode::BAD_REQUEST,
                "SignatureDoesNotMatch",
                &format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
                ),
                format!("Signature {:?} does not match; server StringToSign {string_to_sign}", param("Signature")),
            );
        }
        // "SignatureNonce: A unique random number used to prevent replay attacks. You must use a
        // different random number for each request." `SignatureNonceUsed` 400 (ask/278265).
        // Only authenticated requests consume a nonce.
        let nonce = param("SignatureNonce").to_owned();
        if !state.nonces.insert(nonce.clone()) {
            return bad(
                StatusCode::BAD_REQUEST,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
                format!("SignatureNonce {nonce:?} replayed"),
            );
        }

        // SendSms business checks: HTTP 200 with an `isv.*` code (101346.html).
        let numbers: Vec<String> = param("PhoneNumbers").split(',').map(|n| n.trim().to_owned()).collect();
        if numbers.len() > MAX_NUMBERS {
            let response = business_error(format, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制");
            return Reply::rejected(
                "isv.MOBILE_COUNT_OVER_LIMIT",
                format!("{} numbers, limit {MAX_NUMBERS}", numbers.len()),
                response,
            );
        }
        // PhoneNumbers: "国内短信:+/+86/0086/86 或无任何前缀的手机号码 …
        // 国际/港澳台消息:国际区号+号码" (55284.html).
        if let Some(number) = numbers.iter().find(|n| !is_phone_number(n)) {
            let response = business_error(format, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
            return Reply::rejected("isv.MOBILE_NUMBER_ILLEGAL", format!("phone number {number:?}"), response);
        }
        // "TemplateParam … 请传入JSON 字符串" (55284.html); `isv.INVALID_JSON_PARAM` "JSON参数不合法，
        // 只接受字符串值" (101346.html): a JSON object whose values are strings.
        let template_param = match get("TemplateParam") {
            None => None,
            Some(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(object)) if object.values().all(Value::is_string) => Some(Value::Object(object)),
                _ => {
                    let message = "JSON参数不合法，只接受字符串值";
                    let response = business_error(format, "isv.INVALID_JSON_PARAM", message);
                    return Reply::rejected(
                        "isv.INVALID_JSON_PARAM",
                        format!("TemplateParam {raw:?} is not a JSON object of strings"),
                        response,
                    );
                }
            },
        };

        if fail {
            // "isv.BUSINESS_LIMIT_CONTROL 触发业务流控" (101346.html), HTTP 200.
            return Reply {
                verdict: Verdict::Failed,
                response: business_error(format, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1"),
            };
        }

        // Success: `{"Code":"OK","Message":"OK","BizId":"…","RequestId":"…"}` (55284.html).
        let biz_id = format!("{}^0", 100_000_000_000_000 + rand::random::<u64>() % 900_000_000_000_000);
        let request_id = request_id();
        let out_id = get("OutId").map(str::to_owned);
        let delivered = numbers
            .into_iter()
            .map(|recipient| Delivered {
                recipient,
                text: None,
                template: Some(param("TemplateCode").to_owned()),
                params: template_param.clone(),
                sender: Some(param("SignName").to_owned()),
                idempotency_key: out_id.clone(),
                provider_id: biz_id.clone(),
                received_at: req.at,
                received_unix_ms: req.unix_ms,
            })
            .collect();
        let response = respond(
            format,
            StatusCode::OK,
            "SendSmsResponse",
            &[("Code", "OK"), ("Message", "OK"), ("BizId", &biz_id), ("RequestId", &request_id)],
        );
        Reply { verdict: Verdict::Delivered(delivered), response }
    }

    fn is_phone_number(n: &str) -> bool {
        let digits = n.strip_prefix('+').unwrap_or(n);
        (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    }
}

// ---------------------------------------------------------------------------------------------
// Tencent Cloud SMS
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

    pub(super) fn process(secret_id: &str, secret_key: &str, sdk_app_id: &str, req: &Incoming, fail: bool) -> Reply {
        // The Chillcloud client POSTs JSON, the method the docs recommend; this fake does not
        // implement GET with form parameters.
        if req.method != Method::POST || req.path != "/" {
            return error(
                "InvalidParameter",
                "This fake accepts POST / with a JSON body only.",
                format!("{} {}", req.method, req.path),
            );
        }
        // Content-Type: POST supports application/json (and multipart for a few APIs), and
        // "content-type must match the actually sent content" (Signature v3).
        if !req.content_type_is("application/json") {
            return error(
                "InvalidParameter",
                "Content-Type must be application/json.",
                format!("Content-Type {:?}", req.header("content-type")),
            );
        }
        // Common parameters as headers: X-TC-Action, X-TC-Version, X-TC-Timestamp, X-TC-Region
        // (Region is required for SendSms).
        let Some(action) = req.header("x-tc-action") else { return missing("X-TC-Action") };
        if action != "SendSms" {
            return error("InvalidAction", "The requested action does not exist.", format!("X-TC-Action {action:?}"));
        }
        let Some(version) = req.header("x-tc-version") else { return missing("X-TC-Version") };
        if version != VERSION {
            return error("NoSuchVersion", "The API version does not exist.", format!("X-TC-Version {version:?}"));
        }
        if req.header("x-tc-region").is_none_or(str::is_empty) {
            return missing("X-TC-Region");
        }
        let Some(timestamp) = req.header("x-tc-timestamp").and_then(|t| t.parse::<i64>().ok()) else {
            return error(
                "InvalidParameter",
                "X-TC-Timestamp must be a Unix timestamp in seconds.",
                format!("X-TC-Timestamp {:?}", req.header("x-tc-timestamp")),
            );
        };
        // `AuthFailure.InvalidAuthorization`: "Authorization in the request header is invalid."
        let Some(auth) = req.header("authorization").and_then(parse_authorization) else {
            return error(
                "AuthFailure.InvalidAuthorization",
                "Authorization in the request header is invalid.",
                format!("Authorization {:?}", req.header("authorization")),
            );
        };
        // `AuthFailure.SecretIdNotFound`.
        if auth.secret_id != secret_id {
            return error(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
                format!("unknown SecretId {:?}", auth.secret_id),
            );
        }
        // `AuthFailure.SignatureExpire`: more than five minutes from the server's clock.
        let skew = timestamp - req.unix_s();
        if skew.abs() > MAX_SKEW_S {
            return error(
                "AuthFailure.SignatureExpire",
                "Signature expired. Timestamp and server time cannot differ by more than five minutes.",
                format!("X-TC-Timestamp {timestamp} is {skew} s from now (limit {MAX_SKEW_S} s)"),
            );
        }
        // CredentialScope = Date/service/tc3_request: "Date is a date in UTC time, whose value
        // should match the UTC date converted by the common parameter X-TC-Timestamp; service …
        // should match the domain name of the product called."
        let expected_date =
            DateTime::from_timestamp(timestamp, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default();
        if auth.date != expected_date || auth.service != SERVICE || auth.terminator != "tc3_request" {
            return signature_failure(format!(
                "credential scope {}/{}/{}, expected {expected_date}/{SERVICE}/tc3_request",
                auth.date, auth.service, auth.terminator
            ));
        }
        // SignedHeaders: lower case, sorted in ASCII order, `;`-separated, and "content-type and
        // host are required headers"; CanonicalHeaders: each signed header as `key:value\n`
        // with key and value lower-cased and trimmed.
        let names: Vec<&str> = auth.signed_headers.split(';').collect();
        let well_formed = names.iter().all(|n| !n.is_empty() && *n == n.to_ascii_lowercase())
            && names.windows(2).all(|w| w[0] < w[1]);
        if !well_formed || !names.contains(&"content-type") || !names.contains(&"host") {
            return signature_failure(format!(
                "SignedHeaders {:?} must be lower case, sorted, and include content-type and host",
                auth.signed_headers
            ));
        }
        let mut canonical_headers = String::new();
        for name in &names {
            let Some(value) = req.header(name) else {
                return signature_failure(format!("signed header {name} is not in the request"));
            };
            canonical_headers.push_str(&format!("{name}:{}\n", value.trim().to_lowercase()));
        }
        let canonical = canonical_request("POST", "", &canonical_headers, &auth.signed_headers, &req.body);
        let scope = format!("{}/{SERVICE}/tc3_request", auth.date);
        let to_sign = string_to_sign(timestamp, &scope, &canonical);
        let verified = signature(secret_key, &auth.date, SERVICE, &to_sign) == auth.signature;
        if !verified {
            return signature_failure(format!(
                "Signature {} does not match; server CanonicalRequest {canonical:?}",
                auth.signature
            ));
        }

        // The body (SendSms 2021-01-11 input parameters).
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
            return error(
                "FailedOperation.FailResolvePacket",
                "Failed to parse the request packet.",
                format!("body is not a JSON object: {}", String::from_utf8_lossy(&req.body)),
            );
        };
        let mut values = Vec::new();
        for (name, kind) in [
            ("PhoneNumberSet", Field::StringArray),
            ("SmsSdkAppId", Field::String),
            ("TemplateId", Field::String),
            ("SignName", Field::String),
            ("TemplateParamSet", Field::StringArray),
            ("SessionContext", Field::String),
        ] {
            match typed(&body, name, kind) {
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

    fn is_phone_number(n: &str) -> bool {
        let digits = n.strip_prefix('+').unwrap_or(n);
        (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    }

    /// `IsoCode` of a `SendStatus`: the country of the number (numbers without a country code
    /// are Chinese mainland ones).
    fn iso_code(number: &str) -> &'static str {
        let Some(international) = number.strip_prefix('+').or_else(|| number.strip_prefix("00")) else { return "CN" };
        [
            ("86", "CN"),
            ("852", "HK"),
            ("853", "MO"),
            ("886", "TW"),
            ("1", "US"),
            ("44", "GB"),
            ("65", "SG"),
            ("60", "MY"),
        ]
        .iter()
        .find(|(prefix, _)| international.starts_with(prefix))
        .map_or("", |(_, iso)| iso)
    }
}

// ---------------------------------------------------------------------------------------------
// Twilio
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
        // The resource: /2010-04-01/Accounts/{AccountSid}/Messages.json; 20404 otherwise.
        let path_sid = req
            .path
            .strip_prefix("/2010-04-01/Accounts/")
            .and_then(|rest| rest.strip_suffix("/Messages.json"))
            .filter(|sid| !sid.is_empty() && !sid.contains('/'));
        let Some(path_sid) = path_sid else {
            return error(
                StatusCode::NOT_FOUND,
                20404,
                &format!("The requested resource {} was not found", req.path),
                format!("unknown resource {}", req.path),
            );
        };
        if req.method != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                20004,
                "Method not allowed",
                format!("{} on Messages.json (the fake only creates messages)", req.method),
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
        let date = DateTime::from_timestamp(ts, 0).expect("timestamp").format("%Y-%m-%d").to_string();
        let canonical = format!(
            "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\ncontent-type;host\n{}",
            ref_sha256_hex(payload.as_bytes())
        );
        let scope = format!("{date}/sms/tc3_request");
        let to_sign = format!("TC3-HMAC-SHA256\n{ts}\n{scope}\n{}", ref_sha256_hex(canonical.as_bytes()));
        let key =
            ref_hmac256(&ref_hmac256(&ref_hmac256(format!("TC3{secret_key}").as_bytes(), &date), "sms"), "tc3_request");
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
        let host = fake.url().trim_start_matches("http://");
        let content_type = "application/json; charset=utf-8";
        client()
            .post(format!("{}/", fake.url()))
            .header("Authorization", sign_tencent(secret_id, secret_key, host, content_type, ts, payload))
            .header("Content-Type", content_type)
            .header("X-TC-Action", "SendSms")
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
            Counters { delivered: 1, rejected: 0, failed: 1, refused: 1, timed_out: 1, deduplicated: 0 }
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
}
