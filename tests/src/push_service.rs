//! A fake Web Push service (RFC 8030), standing in for FCM or Mozilla autopush, for testing the
//! server's Web Push client against an independent reading of the standards: it decrypts each
//! message itself (RFC 8291, `aes128gcm` of RFC 8188) with the user agent's keys, and verifies
//! the VAPID authorisation (RFC 8292), on its own implementation over the RustCrypto crates.
//! Nothing here comes from the server's code.
//!
//! [`FakePushService::subscribe`] plays the browser: it makes a subscription with a fresh P-256
//! key pair and auth secret, as `PushManager.subscribe()` would, and gives the test its
//! [`TestSubscription`] (whose [`TestSubscription::json`] is `PushSubscription.toJSON()`). The
//! server then pushes to the subscription's endpoint; the fake checks the request, decrypts the
//! body and logs a [`PushMessage`], or turns the request away and logs the reason.
//!
//! ```ignore
//! let push = FakePushService::start().await;
//! let subscription = push.subscribe(&vapid_public_key_base64url);
//! // … register `subscription.json()` with the server and raise an alarm …
//! let messages = push.wait_messages(1, Duration::from_secs(10)).await;
//! assert!(String::from_utf8_lossy(&messages[0].plaintext).contains("freeze risk"));
//! assert!(push.rejections().is_empty());
//! ```
//!
//! Sources, cited again beside each check:
//! - RFC 8030 "Generic Event Delivery Using HTTP Push": §5 (requesting push message delivery,
//!   201 and `Location`), §5.2 (`TTL`), §5.3 (`Urgency`), §5.4 (`Topic`), §6.2 (404/410 for a
//!   subscription that is gone), §7.2 (413 only above 4096 bytes). The requirement to answer a
//!   missing `TTL` with 400 is from draft-ietf-webpush-protocol-10 §6.2 ("push service MUST
//!   return a 400 (Bad Request)"); the RFC keeps "An application server MUST include the TTL
//!   header field".
//! - RFC 8188 "Encrypted Content-Encoding for HTTP" §2 (the `aes128gcm` header: salt, rs, idlen,
//!   keyid; records; padding delimiter 0x02 for the last record).
//! - RFC 8291 "Message Encryption for Web Push" §3.3–§3.4 (the key derivation, `keyid` is the
//!   application server's public key, one record), §4 (4096-byte limit), Appendix A (the
//!   worked example, used in this module's tests).
//! - RFC 8292 "Voluntary Application Server Identification (VAPID)" §2 (the JWT: `aud` the origin
//!   of the push resource, `exp` no more than 24 hours ahead, `sub` a `mailto:` or `https:`
//!   URI; ES256), §3 (`Authorization: vapid t=…, k=…`), §4 (restricted subscriptions: 401 for no
//!   authentication, 403 for a key that does not match).
//! - RFC 7515/7518 (JWS compact serialisation; ES256 signatures are the raw 64-byte `r || s`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use aes_gcm::{
    Aes128Gcm, KeyInit,
    aead::{Aead, Nonce},
};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use p256::{
    PublicKey, SecretKey,
    ecdsa::{Signature, VerifyingKey, signature::Verifier},
    elliptic_curve::sec1::ToSec1Point,
};
use serde_json::{Value, json};
use sha2::Sha256;

/// The largest body a push service must accept (RFC 8030 §7.2: "A push service MUST NOT return
/// a 413 … if the payload is less than or equal to 4096 bytes"); this fake answers 413 above it.
pub const MAX_BODY_BYTES: usize = 4096;
/// The furthest ahead a VAPID `exp` may be (RFC 8292 §2: "MUST NOT be more than 24 hours from the
/// time of the request").
pub const MAX_EXP_AHEAD_S: i64 = 24 * 3600;

/// How the fake answers; switchable at any time with [`FakePushService::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Check every request and accept the good ones.
    Succeed,
    /// Refuse everything unchecked with `503 Service Unavailable`.
    Down,
    /// The next `count` requests are neither checked, logged nor answered: the connection is
    /// held open until the client gives up. Then back to [`Mode::Succeed`].
    Hang {
        /// How many more requests to swallow.
        count: u32,
    },
    /// The next `count` good messages are checked, decrypted and logged but never answered:
    /// "the push service took it but the client timed out". Rejected requests in between are
    /// answered and do not count down. Then back to [`Mode::Succeed`].
    AcceptThenHang {
        /// How many more accepted messages to leave unanswered.
        count: u32,
    },
}

/// A subscription as the browser hands it to the web page, with the private parts the test
/// keeps (a real browser never reveals them).
#[derive(Clone, Debug)]
pub struct TestSubscription {
    /// The push resource: `http://127.0.0.1:<port>/push/<random id>`.
    pub endpoint: String,
    /// The user agent's ECDH public key, the 65-byte uncompressed P-256 point, base64url
    /// without padding (`keys.p256dh`).
    pub p256dh: String,
    /// The 16-byte auth secret, base64url without padding (`keys.auth`).
    pub auth: String,
    /// The user agent's ECDH private key (the P-256 scalar, big-endian).
    pub ua_private: [u8; 32],
}

impl TestSubscription {
    /// `PushSubscription.toJSON()`: `{"endpoint":…,"expirationTime":null,"keys":{"p256dh":…,
    /// "auth":…}}` (Push API, `PushSubscriptionJSON`).
    pub fn json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh, "auth": self.auth },
        })
    }

    /// The auth secret's 16 bytes.
    pub fn auth_secret(&self) -> [u8; 16] {
        let bytes = URL_SAFE_NO_PAD.decode(&self.auth).expect("auth is base64url made by subscribe");
        bytes.try_into().expect("auth is 16 bytes")
    }
}

/// A message the fake accepted and decrypted.
#[derive(Clone, Debug)]
pub struct PushMessage {
    /// The subscription's endpoint it was pushed to.
    pub endpoint: String,
    /// The decrypted payload, without the padding delimiter and padding.
    pub plaintext: Vec<u8>,
    /// The `TTL` header, seconds.
    pub ttl: u32,
    /// The `Urgency` header, if any.
    pub urgency: Option<String>,
    /// The `Topic` header, if any.
    pub topic: Option<String>,
    /// When the request arrived.
    pub received_at: Instant,
}

/// A running fake push service: see the module documentation.
pub struct FakePushService {
    origin: String,
    shared: Arc<Mutex<PushState>>,
    server: tokio::task::JoinHandle<()>,
}

/// A subscription the fake made.
struct Subscription {
    endpoint: String,
    /// The `applicationServerKey` it was made with: a 65-byte uncompressed P-256 point.
    application_server_key: Vec<u8>,
    ua_private: [u8; 32],
    auth: [u8; 16],
    expired: bool,
}

struct PushState {
    origin: String,
    mode: Mode,
    subscriptions: HashMap<String, Subscription>,
    messages: Vec<PushMessage>,
    rejections: Vec<String>,
}

impl FakePushService {
    /// Starts the fake on `127.0.0.1:0`, in [`Mode::Succeed`]. It accepts connections as soon
    /// as this returns.
    pub async fn start() -> Self {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake push service on 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake push service address");
        let origin = format!("http://{addr}");
        let shared = Arc::new(Mutex::new(PushState {
            origin: origin.clone(),
            mode: Mode::Succeed,
            subscriptions: HashMap::new(),
            messages: Vec::new(),
            rejections: Vec::new(),
        }));
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            // Only ends when aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        Self { origin, shared, server }
    }

    /// The origin of every endpoint, `http://127.0.0.1:PORT` (the VAPID `aud`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Makes a subscription as a browser does for `PushManager.subscribe({applicationServerKey})`:
    /// a fresh P-256 key pair and 16-byte auth secret, and a new endpoint. The key is the
    /// server's VAPID public key, base64url (65-byte uncompressed point; padding tolerated);
    /// messages to this subscription must carry it as VAPID `k`.
    pub fn subscribe(&self, application_server_key: &str) -> TestSubscription {
        let application_server_key = URL_SAFE_NO_PAD
            .decode(application_server_key.trim_end_matches('='))
            .expect("applicationServerKey is base64url");
        PublicKey::from_sec1_bytes(&application_server_key)
            .ok()
            .filter(|_| application_server_key.len() == 65)
            .expect("applicationServerKey is an uncompressed P-256 point");
        let ua_secret = loop {
            // A uniformly random scalar: retry the (vanishingly rare) values outside 1..n.
            if let Ok(secret) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break secret;
            }
        };
        let ua_private: [u8; 32] = ua_secret.to_bytes().into();
        let ua_public = ua_secret.public_key().to_sec1_point(false);
        let auth: [u8; 16] = rand::random();
        let id = hex::encode(rand::random::<[u8; 16]>());
        let endpoint = format!("{}/push/{id}", self.origin);
        self.state().subscriptions.insert(
            id,
            Subscription { endpoint: endpoint.clone(), application_server_key, ua_private, auth, expired: false },
        );
        TestSubscription {
            endpoint,
            p256dh: URL_SAFE_NO_PAD.encode(ua_public.as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
            ua_private,
        }
    }

    /// Makes the subscription at `endpoint` answer `410 Gone` from now on, as when the user
    /// unsubscribed (RFC 8030 §6.2). Panics for an endpoint this fake did not make.
    pub fn expire(&self, endpoint: &str) {
        let mut state = self.state();
        let subscription = state.subscriptions.values_mut().find(|s| s.endpoint == endpoint);
        subscription.expect("an endpoint made by subscribe").expired = true;
    }

    /// Switches the mode; requests already being answered are not affected.
    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    /// The current mode ([`Mode::Hang`] and [`Mode::AcceptThenHang`] count down).
    pub fn mode(&self) -> Mode {
        self.state().mode
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<PushMessage> {
        self.state().messages.clone()
    }

    /// Why each rejected request was turned away, oldest first (the status code, then the
    /// reason).
    pub fn rejections(&self) -> Vec<String> {
        self.state().rejections.clone()
    }

    /// Polls every 10 ms until at least `n` messages were accepted and returns them, or panics
    /// after `timeout` with the rejections.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<PushMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let state = self.state();
                if state.messages.len() >= n {
                    return state.messages.clone();
                }
                if Instant::now() >= deadline {
                    panic!(
                        "{} accepted {} of {n} push message(s) within {timeout:?}; rejections {:#?}",
                        self.origin,
                        state.messages.len(),
                        state.rejections
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn state(&self) -> MutexGuard<'_, PushState> {
        self.shared.lock().expect("fake push service state")
    }
}

impl Drop for FakePushService {
    /// Stops accepting connections.
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A refusal: its status and why.
struct Refusal(StatusCode, String);

fn refuse<T>(status: StatusCode, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(status, reason.into()))
}

async fn handle(
    State(shared): State<Arc<Mutex<PushState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let now_s = chrono::Utc::now().timestamp();
    {
        let mut state = shared.lock().expect("fake push service state");
        match state.mode {
            Mode::Down => {
                return (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable").into_response();
            }
            Mode::Hang { count } if count > 0 => {
                state.mode = if count > 1 { Mode::Hang { count: count - 1 } } else { Mode::Succeed };
            }
            mode => match accept(&state, &method, uri.path(), &headers, &body, now_s, at) {
                Err(Refusal(status, reason)) => {
                    state.rejections.push(format!("{} {reason}", status.as_u16()));
                    return (status, reason).into_response();
                }
                Ok(message) => {
                    let ttl = message.ttl;
                    state.messages.push(message);
                    if let Mode::AcceptThenHang { count } = mode
                        && count > 0
                    {
                        state.mode = if count > 1 { Mode::AcceptThenHang { count: count - 1 } } else { Mode::Succeed };
                    } else {
                        // RFC 8030 §5: "201 (Created) … with a Location header field that
                        // identifies the push message resource"; §5.2: the push service "MUST
                        // return" the TTL it keeps the message for.
                        let location = format!("/message/{}", hex::encode(rand::random::<[u8; 16]>()));
                        let mut response = (StatusCode::CREATED, "").into_response();
                        let headers = response.headers_mut();
                        headers.insert(header::LOCATION, HeaderValue::from_str(&location).expect("hex is a header"));
                        headers.insert("ttl", HeaderValue::from(ttl));
                        return response;
                    }
                }
            },
        }
    }
    // Mode::Hang, Mode::AcceptThenHang: never answer.
    std::future::pending::<Response>().await
}

/// Every check of one push request, and the decryption.
fn accept(
    state: &PushState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
    at: Instant,
) -> Result<PushMessage, Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    // The push resource: POST /push/<id>; a subscription this fake never made is 404, an
    // expired one 410 (RFC 8030 §6.2).
    let Some(subscription) = path.strip_prefix("/push/").and_then(|id| state.subscriptions.get(id)) else {
        return refuse(StatusCode::NOT_FOUND, format!("no subscription at {path}"));
    };
    if method != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, format!("{method} on a push resource, not POST"));
    }
    if subscription.expired {
        return refuse(StatusCode::GONE, format!("subscription {} expired", subscription.endpoint));
    }
    // §5.2: "An application server MUST include the TTL header field"; a non-negative integer
    // of seconds.
    let Some(raw_ttl) = header("ttl") else {
        return refuse(StatusCode::BAD_REQUEST, "no TTL header");
    };
    let Ok(ttl) = raw_ttl.parse::<u32>() else {
        return refuse(StatusCode::BAD_REQUEST, format!("TTL {raw_ttl:?} is not a number of seconds"));
    };
    // §5.3: "Urgency … very-low / low / normal / high".
    let urgency = header("urgency").map(str::to_owned);
    if let Some(urgency) = &urgency
        && !["very-low", "low", "normal", "high"].contains(&urgency.as_str())
    {
        return refuse(StatusCode::BAD_REQUEST, format!("Urgency {urgency:?}"));
    }
    // §5.4: "A topic is a string carried in a Topic header field. A topic is used to correlate
    // push messages … no more than 32 characters from the URL and filename safe Base64
    // alphabet".
    let topic = header("topic").map(str::to_owned);
    if let Some(topic) = &topic
        && (topic.is_empty()
            || topic.len() > 32
            || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return refuse(StatusCode::BAD_REQUEST, format!("Topic {topic:?} is not 1 to 32 base64url characters"));
    }
    // RFC 8291 §4: "the `aes128gcm` content coding".
    if header("content-encoding") != Some("aes128gcm") {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("Content-Encoding {:?}, expected aes128gcm", header("content-encoding")),
        );
    }
    verify_vapid(header("authorization"), subscription, &state.origin, now_s)?;
    if body.len() > MAX_BODY_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("body of {} bytes, limit {MAX_BODY_BYTES}", body.len()));
    }
    let plaintext = decrypt(body, &subscription.ua_private, &subscription.auth)
        .or_else(|reason| refuse(StatusCode::BAD_REQUEST, reason))?;
    Ok(PushMessage { endpoint: subscription.endpoint.clone(), plaintext, ttl, urgency, topic, received_at: at })
}

/// RFC 8292: `Authorization: vapid t=<JWT>, k=<base64url public key>`.
///
/// - No `vapid` authorisation: 401 (§4.2, "A 401 (Unauthorized) status code might be used if the
///   authentication is absent").
/// - `k` not the subscription's `applicationServerKey`: 403 (§4.2, "a 403 (Forbidden) status code
///   might be used if the authentication contains an invalid or incorrect key").
/// - The JWT: header `{"typ":"JWT","alg":"ES256"}` (§2), an ES256 signature, the raw 64-byte
///   `r || s` of JWS (RFC 7518 §3.4), that verifies with `k`; claims `aud` exactly the origin of
///   the push resource ("The "aud" claim … MUST include the Unicode serialization of the origin
///   … of the push resource URL"), `exp` in the future and no more than 24 hours ahead, `sub` a
///   `mailto:` or `https:` URI ("SHOULD include a "sub" … This SHOULD be a URL or a "mailto:"
///   URI"; this fake requires it, as Chillcloud always sends one). Each failure is 403.
fn verify_vapid(
    authorization: Option<&str>,
    subscription: &Subscription,
    origin: &str,
    now_s: i64,
) -> Result<(), Refusal> {
    let forbidden = |reason: String| refuse::<()>(StatusCode::FORBIDDEN, reason);
    let Some(authorization) = authorization else {
        return refuse(StatusCode::UNAUTHORIZED, "no Authorization header");
    };
    let Some((scheme, parameters)) = authorization.split_once(' ') else {
        return refuse(StatusCode::UNAUTHORIZED, format!("Authorization {authorization:?} is not vapid"));
    };
    if !scheme.eq_ignore_ascii_case("vapid") {
        return refuse(StatusCode::UNAUTHORIZED, format!("Authorization scheme {scheme:?}, expected vapid"));
    }
    let mut token = None;
    let mut key = None;
    for parameter in parameters.split(',') {
        match parameter.trim().split_once('=') {
            Some(("t", value)) => token = Some(value.trim()),
            Some(("k", value)) => key = Some(value.trim()),
            _ => {}
        }
    }
    let (Some(token), Some(key)) = (token, key) else {
        return forbidden(format!("vapid authorization {parameters:?} lacks t= or k="));
    };
    let Ok(key) = URL_SAFE_NO_PAD.decode(key.trim_end_matches('=')) else {
        return forbidden(format!("k {key:?} is not base64url"));
    };
    if key != subscription.application_server_key {
        return forbidden("k is not the subscription's applicationServerKey".to_owned());
    }
    let Ok(verifying_key) = VerifyingKey::from_sec1_bytes(&key) else {
        return forbidden("k is not a P-256 public key".to_owned());
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return forbidden(format!("t has {} parts, a JWS has 3", parts.len()));
    };
    let decode_json =
        |part: &str| URL_SAFE_NO_PAD.decode(part).ok().and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(jwt_header) = decode_json(header_b64) else {
        return forbidden("the JWT header is not base64url JSON".to_owned());
    };
    if jwt_header.get("typ").and_then(Value::as_str) != Some("JWT")
        || jwt_header.get("alg").and_then(Value::as_str) != Some("ES256")
    {
        return forbidden(format!("JWT header {jwt_header}, expected {{\"typ\":\"JWT\",\"alg\":\"ES256\"}}"));
    }
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok().and_then(|raw| Signature::from_slice(&raw).ok());
    let Some(signature) = signature else {
        return forbidden("the JWT signature is not a raw 64-byte ES256 r||s".to_owned());
    };
    let signed = format!("{header_b64}.{claims_b64}");
    if verifying_key.verify(signed.as_bytes(), &signature).is_err() {
        return forbidden("the JWT signature does not verify with k".to_owned());
    }
    let Some(claims) = decode_json(claims_b64) else {
        return forbidden("the JWT claims are not base64url JSON".to_owned());
    };
    let aud = claims.get("aud").and_then(Value::as_str);
    if aud != Some(origin) {
        return forbidden(format!(
            "aud claim {aud:?}: the aud claim in the token MUST include the origin of the push resource URL ({origin})"
        ));
    }
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return forbidden(format!("exp claim {:?} is not a number of seconds", claims.get("exp")));
    };
    if exp <= now_s {
        return forbidden(format!("exp claim {exp} is not in the future (now {now_s})"));
    }
    if exp - now_s > MAX_EXP_AHEAD_S {
        return forbidden(format!(
            "exp claim MUST NOT be more than 24 hours from the time of the request ({} s ahead)",
            exp - now_s
        ));
    }
    let sub = claims.get("sub").and_then(Value::as_str);
    if !sub.is_some_and(|s| s.starts_with("mailto:") || s.starts_with("https:")) {
        return forbidden(format!("sub claim {sub:?} is not a mailto: or https: URI"));
    }
    Ok(())
}

/// HKDF-Expand of `prk`-keyed `Hkdf` into `N` bytes.
fn expand<const N: usize>(hkdf: &Hkdf<Sha256>, info: &[u8]) -> [u8; N] {
    let mut okm = [0u8; N];
    hkdf.expand(info, &mut okm).expect("HKDF-SHA256 expands to 255 * 32 bytes");
    okm
}

/// Decrypts a Web Push message body (RFC 8291 with RFC 8188 `aes128gcm`) for the user agent
/// whose private key is `ua_private` and auth secret `auth`, returning the plaintext without
/// its padding delimiter and padding, or why it cannot be read.
///
/// The body is `salt (16) || rs (4, big-endian) || idlen (1) || keyid (idlen) || ciphertext`
/// (RFC 8188 §2.1), `keyid` being the application server's ephemeral public key, 65 bytes
/// (RFC 8291 §4), and the ciphertext one record (RFC 8291 §4: "An application server MUST
/// encrypt a push message with a single record"), so no longer than `rs`. Then (RFC 8291 §3.3,
/// §3.4; RFC 8188 §2.2, §2.3):
///
/// ```text
/// ecdh_secret = ECDH(ua_private, as_public)
/// PRK_key     = HKDF-Extract(salt = auth, IKM = ecdh_secret)
/// key_info    = "WebPush: info" || 0x00 || ua_public || as_public
/// IKM         = HKDF-Expand(PRK_key, key_info, 32)
/// PRK         = HKDF-Extract(salt, IKM)
/// CEK         = HKDF-Expand(PRK, "Content-Encoding: aes128gcm" || 0x00, 16)
/// NONCE       = HKDF-Expand(PRK, "Content-Encoding: nonce" || 0x00, 12)   (record 0: XOR 0)
/// ```
///
/// AES-128-GCM opens the record; trailing 0x00 bytes are padding, and the byte before them
/// must be 0x02, the delimiter of the last record (0x01 would announce another record).
pub fn decrypt(body: &[u8], ua_private: &[u8; 32], auth: &[u8; 16]) -> Result<Vec<u8>, String> {
    const HEADER: usize = 16 + 4 + 1;
    if body.len() < HEADER {
        return Err(format!("body of {} bytes is shorter than the aes128gcm header", body.len()));
    }
    let (salt, rest) = body.split_at(16);
    let rs = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let idlen = usize::from(rest[4]);
    let rest = &rest[5..];
    // RFC 8188 §2: "The "rs" or record size parameter … MUST NOT be less than 18".
    if rs < 18 {
        return Err(format!("record size {rs} is under 18"));
    }
    if idlen != 65 || rest.len() < idlen {
        return Err(format!("keyid of {idlen} bytes, expected the 65-byte application server key"));
    }
    let (keyid, ciphertext) = rest.split_at(idlen);
    let Ok(as_public) = PublicKey::from_sec1_bytes(keyid) else {
        return Err("keyid is not an uncompressed P-256 point".to_owned());
    };
    // One record: at least the delimiter and the 16-byte tag, at most rs bytes.
    if ciphertext.len() < 17 {
        return Err(format!("ciphertext of {} bytes cannot hold a delimiter and a tag", ciphertext.len()));
    }
    if ciphertext.len() > usize::try_from(rs).unwrap_or(usize::MAX) {
        return Err(format!("ciphertext of {} bytes is more than one record of {rs}", ciphertext.len()));
    }
    let Ok(ua_secret) = SecretKey::from_slice(ua_private) else {
        return Err("ua_private is not a P-256 scalar".to_owned());
    };
    let ua_public = ua_secret.public_key().to_sec1_point(false);
    let shared = ua_secret.diffie_hellman(&as_public);

    let key_hkdf = Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes());
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public.as_bytes());
    key_info.extend_from_slice(keyid);
    let ikm: [u8; 32] = expand(&key_hkdf, &key_info);
    let content_hkdf = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let cek: [u8; 16] = expand(&content_hkdf, b"Content-Encoding: aes128gcm\0");
    let nonce: [u8; 12] = expand(&content_hkdf, b"Content-Encoding: nonce\0");

    let cipher = Aes128Gcm::new_from_slice(&cek).expect("a 16-byte AES-128 key");
    let Ok(mut padded) = cipher.decrypt(&Nonce::<Aes128Gcm>::from(nonce), ciphertext) else {
        return Err("AES-128-GCM authentication failed (wrong keys, salt or ciphertext)".to_owned());
    };
    while padded.last() == Some(&0) {
        padded.pop();
    }
    match padded.pop() {
        Some(2) => Ok(padded),
        Some(1) => Err("padding delimiter 0x01 announces another record; Web Push uses one (0x02)".to_owned()),
        other => Err(format!("no padding delimiter 0x02 after the plaintext (found {other:?})")),
    }
}

#[cfg(test)]
mod tests {
    //! `encrypt` and `vapid` here are TEST-ONLY REFERENCE IMPLEMENTATIONS of the application
    //! server's side, written from RFC 8291/8292, to drive the fake with good and bad requests.

    use aes_gcm::aead::Aead;
    use p256::ecdsa::{SigningKey, signature::Signer};

    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("base64url test vector")
    }

    /// RFC 8291 Appendix A: the body decrypts with the user agent's private key and auth secret.
    #[test]
    fn decrypts_the_rfc_8291_appendix_a_message() {
        let body =
            b64("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8w\
             EqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN");
        assert_eq!(body.len(), 144);
        let ua_private: [u8; 32] =
            b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94").try_into().expect("32-byte private key");
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().expect("16-byte auth secret");
        let plaintext = decrypt(&body, &ua_private, &auth).expect("the Appendix A message decrypts");
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
        // The user agent's public key of the example is the one derived here.
        let ua_public = SecretKey::from_slice(&ua_private).expect("scalar").public_key().to_sec1_point(false);
        assert_eq!(
            URL_SAFE_NO_PAD.encode(ua_public.as_bytes()),
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
        );

        // A flipped ciphertext bit, the wrong auth secret: no plaintext.
        let mut tampered = body.clone();
        tampered[100] ^= 1;
        assert!(decrypt(&tampered, &ua_private, &auth).is_err());
        assert!(decrypt(&body, &ua_private, &[0; 16]).is_err());
    }

    fn random_secret() -> SecretKey {
        loop {
            if let Ok(secret) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                return secret;
            }
        }
    }

    /// RFC 8291 §3.4 sender side with the given padding delimiter: a fresh key pair and salt.
    fn encrypt(subscription: &TestSubscription, plaintext: &[u8], delimiter: u8) -> Vec<u8> {
        let ua_public = PublicKey::from_sec1_bytes(&b64(&subscription.p256dh)).expect("p256dh");
        let as_secret = random_secret();
        let as_public = as_secret.public_key().to_sec1_point(false);
        let salt: [u8; 16] = rand::random();
        let shared = as_secret.diffie_hellman(&ua_public);
        let prk_key = Hkdf::<Sha256>::new(Some(&subscription.auth_secret()), shared.raw_secret_bytes());
        let info = [b"WebPush: info\0".as_slice(), &b64(&subscription.p256dh), as_public.as_bytes()].concat();
        let mut ikm = [0u8; 32];
        prk_key.expand(&info, &mut ikm).expect("expand");
        let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).expect("expand");
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).expect("expand");
        let record = [plaintext, &[delimiter]].concat();
        let ciphertext = Aes128Gcm::new_from_slice(&cek)
            .expect("key")
            .encrypt(&Nonce::<Aes128Gcm>::from(nonce), record.as_slice())
            .expect("encrypt");
        [salt.as_slice(), &4096u32.to_be_bytes(), &[65], as_public.as_bytes(), &ciphertext].concat()
    }

    /// An RFC 8292 `Authorization` value with these claims.
    fn vapid(key: &SigningKey, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signature: Signature = key.sign(format!("{header}.{claims}").as_bytes());
        let k = URL_SAFE_NO_PAD.encode(key.verifying_key().to_sec1_point(false).as_bytes());
        format!("vapid t={header}.{claims}.{}, k={k}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn signing_key() -> SigningKey {
        SigningKey::from_slice(&random_secret().to_bytes()).expect("signing key")
    }

    fn public_b64(key: &SigningKey) -> String {
        URL_SAFE_NO_PAD.encode(key.verifying_key().to_sec1_point(false).as_bytes())
    }

    #[tokio::test]
    async fn accepts_an_encrypted_vapid_message_and_rejects_bad_ones() {
        let push = FakePushService::start().await;
        let vapid_key = signing_key();
        let subscription = push.subscribe(&public_b64(&vapid_key));
        assert!(subscription.endpoint.starts_with(&format!("{}/push/", push.origin())));
        assert_eq!(b64(&subscription.p256dh).len(), 65);
        assert_eq!(subscription.json()["keys"]["auth"], subscription.auth.as_str());
        assert!(subscription.json()["expirationTime"].is_null());

        let now = chrono::Utc::now().timestamp();
        let good_claims = json!({ "aud": push.origin(), "exp": now + 12 * 3600, "sub": "mailto:ops@chill.example" });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        let send = |endpoint: &str, body: Vec<u8>, authorization: String, ttl: Option<&str>| {
            let mut request = client
                .post(endpoint)
                .header("Content-Encoding", "aes128gcm")
                .header("Content-Type", "application/octet-stream")
                .header("Authorization", authorization)
                .header("Urgency", "high")
                .header("Topic", "alarm-42")
                .body(body);
            if let Some(ttl) = ttl {
                request = request.header("TTL", ttl);
            }
            async move { request.send().await.expect("send") }
        };
        let message = br#"{"title":"Chiller 3","body":"freeze risk"}"#;

        let response = send(
            &subscription.endpoint,
            encrypt(&subscription, message, 2),
            vapid(&vapid_key, &good_claims),
            Some("60"),
        )
        .await;
        assert_eq!(response.status(), 201);
        assert!(response.headers()["location"].to_str().is_ok_and(|l| l.starts_with("/message/")));
        assert_eq!(response.headers()["ttl"], "60");
        let messages = push.wait_messages(1, Duration::from_secs(5)).await;
        assert_eq!(messages[0].plaintext, message);
        assert_eq!(
            (messages[0].ttl, messages[0].urgency.as_deref(), messages[0].topic.as_deref()),
            (60, Some("high"), Some("alarm-42"))
        );
        assert_eq!(messages[0].endpoint, subscription.endpoint);

        let other_key = signing_key();
        let cases: Vec<(u16, Vec<u8>, String, Option<&str>)> = vec![
            (400, encrypt(&subscription, message, 2), vapid(&vapid_key, &good_claims), None),
            (403, encrypt(&subscription, message, 2), vapid(&other_key, &good_claims), Some("60")),
            (
                403,
                encrypt(&subscription, message, 2),
                vapid(&vapid_key, &json!({ "aud": "https://push.example", "exp": now + 3600, "sub": "mailto:a@b" })),
                Some("60"),
            ),
            (
                403,
                encrypt(&subscription, message, 2),
                vapid(&vapid_key, &json!({ "aud": push.origin(), "exp": now + 25 * 3600, "sub": "mailto:a@b" })),
                Some("60"),
            ),
            (
                403,
                encrypt(&subscription, message, 2),
                vapid(&vapid_key, &json!({ "aud": push.origin(), "exp": now - 1, "sub": "mailto:a@b" })),
                Some("60"),
            ),
            (
                403,
                encrypt(&subscription, message, 2),
                vapid(&vapid_key, &json!({ "aud": push.origin(), "exp": now + 3600, "sub": "ops" })),
                Some("60"),
            ),
            (401, encrypt(&subscription, message, 2), "WebPush abc".to_owned(), Some("60")),
            (400, encrypt(&subscription, message, 1), vapid(&vapid_key, &good_claims), Some("60")),
            (413, encrypt(&subscription, &[b'x'; 4000], 2), vapid(&vapid_key, &good_claims), Some("60")),
            (404, Vec::new(), vapid(&vapid_key, &good_claims), Some("60")),
        ];
        let unknown = format!("{}/push/0000", push.origin());
        for (i, (status, body, authorization, ttl)) in cases.into_iter().enumerate() {
            let endpoint = if status == 404 { unknown.as_str() } else { subscription.endpoint.as_str() };
            let response = send(endpoint, body, authorization, ttl).await;
            assert_eq!(response.status(), status, "case {i}: {:?}", push.rejections().last());
        }
        // A tampered signature.
        let mut forged = vapid(&vapid_key, &good_claims);
        let at = forged.find(", k=").expect("k") - 2;
        forged.replace_range(at..at + 1, if &forged[at..at + 1] == "A" { "B" } else { "A" });
        let response = send(&subscription.endpoint, encrypt(&subscription, message, 2), forged, Some("60")).await;
        assert_eq!(response.status(), 403);

        push.expire(&subscription.endpoint);
        let response = send(
            &subscription.endpoint,
            encrypt(&subscription, message, 2),
            vapid(&vapid_key, &good_claims),
            Some("60"),
        )
        .await;
        assert_eq!(response.status(), 410);
        let rejections = push.rejections();
        assert_eq!(rejections.len(), 12, "{rejections:#?}");
        assert!(rejections[2].contains("aud claim"), "{rejections:#?}");
        assert!(rejections[3].contains("24 hours"), "{rejections:#?}");
        assert_eq!(push.messages().len(), 1);
    }

    #[tokio::test]
    async fn modes_down_hang_and_accept_then_hang() {
        let push = FakePushService::start().await;
        let vapid_key = signing_key();
        let subscription = push.subscribe(&public_b64(&vapid_key));
        let now = chrono::Utc::now().timestamp();
        let claims = json!({ "aud": push.origin(), "exp": now + 3600, "sub": "https://chill.example" });
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
        let send = || {
            impatient
                .post(&subscription.endpoint)
                .header("TTL", "0")
                .header("Content-Encoding", "aes128gcm")
                .header("Authorization", vapid(&vapid_key, &claims))
                .body(encrypt(&subscription, b"page", 2))
                .send()
        };

        push.set_mode(Mode::Down);
        assert_eq!(send().await.expect("send").status(), 503);
        push.set_mode(Mode::Hang { count: 1 });
        assert!(send().await.is_err_and(|e| e.is_timeout()));
        assert_eq!(push.mode(), Mode::Succeed);
        assert!(push.messages().is_empty());
        push.set_mode(Mode::AcceptThenHang { count: 1 });
        assert!(send().await.is_err_and(|e| e.is_timeout()));
        assert_eq!((push.mode(), push.messages().len()), (Mode::Succeed, 1));
        assert_eq!(send().await.expect("send").status(), 201);
        assert_eq!(push.messages()[1].ttl, 0);
        assert!(push.rejections().is_empty());
    }
}
