//! Accounts: organisations, users and their roles; sign-in with argon2id passwords, cookie
//! sessions with CSRF protection and a rate limit on failures; API tokens; invitations; the
//! audit log. Every API request runs as a [`Viewer`], whose scope the database itself enforces:
//! [`Viewer::begin`] opens a transaction of the `chillcloud_api` role with `chillcloud.scope`
//! set, under the row security of migration 0011, so a query can only return the viewer's sites.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use axum::{
    Extension, Form, Json, Router,
    extract::{ConnectInfo, Path, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post, put},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::{
    api::{ApiError, AppState, constant_time_eq, escape_html},
    openapi::ErrorBody,
};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "chillcloud_session";
/// The header that must carry the session's CSRF token on every request that changes something.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
const SESSION_DAYS: i64 = 30;
/// How long an invitation may be taken up.
const INVITATION_DAYS: i64 = 7;
/// The shortest password accepted.
const MIN_PASSWORD: usize = 10;
/// The longest login, in bytes.
const MAX_LOGIN: usize = 200;

/// What someone does for their organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The service organisation's administrator: everything, including accounts.
    Admin,
    /// A service manager: the fleet, paging, rules, tickets.
    Manager,
    /// A service engineer: the fleet, alarms, tickets, rules.
    Engineer,
    /// Sales: the fleet's operating records, read-only.
    Sales,
    /// A customer's owner: their sites, acknowledging their alarms.
    Owner,
    /// A customer's duty staff: as the owner.
    Duty,
}

impl Role {
    /// Parses the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Engineer => "engineer",
            Role::Sales => "sales",
            Role::Owner => "owner",
            Role::Duty => "duty",
        }
    }

    /// Whether the role belongs to the service organisation (else to a customer).
    pub fn is_service(self) -> bool {
        matches!(self, Role::Admin | Role::Manager | Role::Engineer | Role::Sales)
    }

    /// Whether someone in this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        use Permission::*;
        use Role::*;
        match what {
            Read => true,
            Acknowledge => !matches!(self, Sales),
            ReadTickets => !matches!(self, Sales),
            WorkTickets | ManageRules | ReadPaging => matches!(self, Admin | Manager | Engineer),
            ManagePaging => matches!(self, Admin | Manager),
            ManageAccounts => matches!(self, Admin),
            Share => !matches!(self, Duty),
            // The people who answer for the plant: the owner and the service's engineers. Duty
            // staff acknowledge and call; a remote start is the owner's decision.
            Operate => matches!(self, Admin | Manager | Engineer | Owner),
        }
    }
}

/// What a request asks to do, beyond reading its sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Units, values, history and alarms of the viewer's sites.
    Read,
    /// Acknowledge or shelve an alarm.
    Acknowledge,
    /// Read service tickets.
    ReadTickets,
    /// Open, assign, triage, note and close tickets.
    WorkTickets,
    /// Change rules and maintenance windows.
    ManageRules,
    /// Read the outbox, people and the event stream.
    ReadPaging,
    /// Change people, contacts, rotations and paging policies.
    ManagePaging,
    /// Organisations, users, and which customer owns a site.
    ManageAccounts,
    /// Make and revoke read-only share links of a unit's operating record.
    Share,
    /// Start, stop and change setpoints of a unit remotely.
    Operate,
}

/// A permission as a type: a handler names what it needs in its signature (`Allowed<ManageRules>`),
/// and the check runs before its body is read.
pub trait Need {
    /// The permission.
    const WHAT: Permission;
}

macro_rules! needs {
    ($($name:ident),*) => {$(
        #[doc = concat!("[`Permission::", stringify!($name), "`] as a type.")]
        #[derive(Debug)]
        pub struct $name;
        impl Need for $name {
            const WHAT: Permission = Permission::$name;
        }
    )*};
}
needs!(Acknowledge, ReadTickets, WorkTickets, ManageRules, ReadPaging, ManagePaging, ManageAccounts, Share, Operate);

/// The viewer of a request whose role allows `P`; otherwise the request is refused with 403.
#[derive(Debug)]
pub struct Allowed<P> {
    viewer: Viewer,
    need: std::marker::PhantomData<P>,
}

impl<P> std::ops::Deref for Allowed<P> {
    type Target = Viewer;
    fn deref(&self) -> &Viewer {
        &self.viewer
    }
}

impl<S: Send + Sync, P: Need> axum::extract::FromRequestParts<S> for Allowed<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let viewer = parts.extensions.get::<Viewer>().cloned().ok_or(ApiError::Unauthorized)?;
        viewer.require(P::WHAT)?;
        Ok(Self { viewer, need: std::marker::PhantomData })
    }
}

/// Which sites a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The service organisation: every site.
    All,
    /// A customer: its own sites.
    Organisation(i64),
}

/// Who a request runs as.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The user; none for the operator's token.
    pub user_id: Option<i64>,
    /// Their login, recorded as the actor of what they do.
    pub login: String,
    /// Their display name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their organisation's name.
    pub organisation: String,
    /// `en` or `zh`.
    pub language: String,
    scope: Scope,
    /// The session's CSRF token (cookie sessions only).
    csrf: Option<String>,
}

impl Viewer {
    /// The operator, through the token in `<data-dir>/api-token`: the service organisation's
    /// administrator, for first set-up and integrations.
    fn operator() -> Self {
        Self {
            user_id: None,
            login: "operator".into(),
            name: "operator".into(),
            role: Role::Admin,
            organisation: "service".into(),
            language: "en".into(),
            scope: Scope::All,
            csrf: None,
        }
    }

    /// How actions are attributed: the login, and the name when they differ.
    pub fn actor(&self) -> String {
        if self.name.is_empty() || self.name == self.login {
            self.login.clone()
        } else {
            format!("{} ({})", self.name, self.login)
        }
    }

    /// `Forbidden` unless the viewer's role allows `what`.
    pub fn require(&self, what: Permission) -> Result<(), ApiError> {
        if self.role.may(what) { Ok(()) } else { Err(ApiError::Forbidden) }
    }

    /// What the viewer sees: `all` (the service organisation) or a customer's id. Shared
    /// limits are kept per scope, so one customer cannot use up another's.
    pub fn scope(&self) -> String {
        match self.scope {
            Scope::All => "all".to_owned(),
            Scope::Organisation(id) => id.to_string(),
        }
    }

    /// A transaction on `api` (the `chillcloud_api` pool) that sees only the viewer's sites.
    pub async fn begin(&self, api: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = api.begin().await?;
        sqlx::query("select set_config('chillcloud.scope', $1, true)").bind(self.scope()).execute(&mut *tx).await?;
        Ok(tx)
    }

    fn session(&self) -> Session {
        Session {
            user: SessionUser {
                id: self.user_id,
                login: self.login.clone(),
                name: self.name.clone(),
                role: self.role,
                organisation: self.organisation.clone(),
                language: self.language.clone(),
            },
            csrf_token: self.csrf.clone(),
        }
    }
}

/// Who a request runs as, as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionUser {
    /// The user; null for the operator's token.
    pub id: Option<i64>,
    /// Their login.
    pub login: String,
    /// Their display name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their organisation's name.
    pub organisation: String,
    /// `en` or `zh`.
    pub language: String,
}

/// A session, or the bearer of a token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Who.
    pub user: SessionUser,
    /// What a session's changes must carry in `X-CSRF-Token`; null for bearer tokens.
    pub csrf_token: Option<String>,
}

/// SHA-256 of a secret, as sessions, tokens, invitations and share links are stored.
pub(crate) fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// 256 random bits, in hex.
pub(crate) fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// An argon2id hash (PHC string) of a password.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| ApiError::BadRequest(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::BadRequest(format!("password: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// What one attempt is counted against. Attempts from a device that signed in to the login
/// before (it shows that login's device cookie) are counted against that device only; all others
/// against their address (IPv6 by its /64) and against the login. So nobody can lock a user out
/// of the browsers they already use, however many addresses they guess from, and a flood from
/// many addresses stays within each login's limit (OWASP's device cookies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counted {
    Address(String),
    Login(String),
    Device(String),
    /// Sign-ins with the right password: not failures, but not free either (each costs a
    /// password check and a session).
    SignedIn(String),
}

impl Counted {
    fn limit(&self) -> usize {
        match self {
            Counted::Address(_) => SignInLimiter::PER_ADDRESS,
            Counted::Login(_) | Counted::Device(_) => SignInLimiter::PER_LOGIN,
            Counted::SignedIn(_) => SignInLimiter::SIGN_INS_PER_LOGIN,
        }
    }
}

#[derive(Debug, Default)]
struct Attempts {
    /// Times of counted attempts within the window, oldest first.
    times: std::collections::VecDeque<Instant>,
    /// A login nobody has: the first entry forgotten when the table is full.
    unknown_login: bool,
    /// When a refusal for this entry was last written to the audit log.
    refusal_audited: Option<Instant>,
}

/// Sign-in attempts in a sliding window, counted before the password is checked (so a burst of
/// parallel guesses counts in full) and forgiven when the password was right; and bounds on the
/// work sign-ins cause, so a flood of them cannot take memory or the other requests' time.
#[derive(Debug)]
pub struct SignInLimiter {
    attempts: Mutex<HashMap<Counted, Attempts>>,
    /// Sign-ins handled at once from unknown devices; beyond, refused at once (503).
    strangers: Arc<tokio::sync::Semaphore>,
    /// Sign-ins handled at once from devices that signed in before: a lane of their own.
    known_devices: Arc<tokio::sync::Semaphore>,
    /// Where passwords are checked (and hashed).
    pub passwords: PasswordThreads,
    /// How long a password check took lately (µs, a moving average): an unknown login waits as
    /// long instead of computing one, so it costs nothing and still looks the same.
    typical_check_micros: std::sync::atomic::AtomicU64,
}

impl Default for SignInLimiter {
    fn default() -> Self {
        Self {
            attempts: Mutex::default(),
            strangers: Arc::new(tokio::sync::Semaphore::new(32)),
            known_devices: Arc::new(tokio::sync::Semaphore::new(8)),
            passwords: PasswordThreads::default(),
            typical_check_micros: std::sync::atomic::AtomicU64::new(50_000),
        }
    }
}

impl SignInLimiter {
    const WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Attempts per login from unknown devices, and per known device.
    const PER_LOGIN: usize = 10;
    /// Attempts per address (or IPv6 /64) from unknown devices.
    const PER_ADDRESS: usize = 20;
    /// Sign-ins with the right password per login, from anywhere.
    const SIGN_INS_PER_LOGIN: usize = 60;
    /// Entries kept at most (about 100 bytes each). When full, room is made as
    /// [`SignInLimiter::make_room`] says; an attempt is never refused because the table is full.
    const MAX_KEYS: usize = 100_000;

    fn counted(login: &str, address: std::net::IpAddr, device: Option<&str>) -> Vec<Counted> {
        match device {
            Some(device) => vec![Counted::Device(device.to_owned())],
            None => {
                let address = match address {
                    std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                        let s = v6.segments();
                        format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                    }
                    other => other.to_canonical().to_string(),
                };
                vec![Counted::Address(address), Counted::Login(login.to_lowercase())]
            }
        }
    }

    /// Counts an attempt at `login`; `false` (refuse it unchecked) when one of its limits is
    /// reached, or the login signed in too often lately.
    fn attempt(&self, login: &str, counted: &[Counted]) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let signed_in = Counted::SignedIn(login.to_lowercase());
        for key in counted.iter().chain([&signed_in]) {
            if let Some(entry) = attempts.get_mut(key) {
                while entry.times.front().is_some_and(|t| now.duration_since(*t) >= Self::WINDOW) {
                    entry.times.pop_front();
                }
                if entry.times.len() >= key.limit() {
                    return false;
                }
            }
        }
        if attempts.len() + counted.len() > Self::MAX_KEYS {
            Self::make_room(&mut attempts, now);
        }
        for key in counted {
            attempts.entry(key.clone()).or_default().times.push_back(now);
        }
        true
    }

    /// Whether a refused attempt should go to the audit log: the first refusal of a lockout is,
    /// the rest of the window's are only counted, so hammering a locked login cannot grow the
    /// audit log at the rate of requests.
    fn audit_refusal(&self, counted: &[Counted]) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = counted
            .iter()
            .find(|key| attempts.get(*key).is_some_and(|entry| entry.times.len() >= key.limit()))
            .cloned();
        let Some(entry) = key.and_then(|key| attempts.get_mut(&key)) else { return true };
        let audit = entry.refusal_audited.is_none_or(|at| now.duration_since(at) >= Self::WINDOW);
        if audit {
            entry.refusal_audited = Some(now);
        }
        audit
    }

    /// Frees a tenth of the table: expired entries, then unknown logins, then addresses, then
    /// the longest quiet. Known logins' counts go last: they are what stands between a guesser
    /// and a password, whatever the addresses.
    fn make_room(attempts: &mut HashMap<Counted, Attempts>, now: Instant) {
        attempts.retain(|_, entry| entry.times.back().is_some_and(|t| now.duration_since(*t) < Self::WINDOW));
        let target = Self::MAX_KEYS - Self::MAX_KEYS / 10;
        if attempts.len() <= target {
            return;
        }
        let rank = |key: &Counted, entry: &Attempts| match key {
            Counted::Login(_) if entry.unknown_login => 0,
            Counted::Address(_) => 1,
            Counted::SignedIn(_) => 2,
            Counted::Device(_) => 3,
            Counted::Login(_) => 4,
        };
        let mut order: Vec<(u8, Instant, Counted)> = attempts
            .iter()
            .map(|(key, entry)| (rank(key, entry), entry.times.back().copied().unwrap_or(now), key.clone()))
            .collect();
        order.sort_unstable_by_key(|(rank, last, _)| (*rank, *last));
        for (_, _, key) in order.into_iter().take(attempts.len() - target) {
            attempts.remove(&key);
        }
    }

    /// The login has no user: its entry may go first when the table is full.
    fn unknown_login(&self, counted: &[Counted]) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        for key in counted.iter().filter(|k| matches!(k, Counted::Login(_))) {
            if let Some(entry) = attempts.get_mut(key) {
                entry.unknown_login = true;
            }
        }
    }

    /// This attempt is not a failure (the right password, or refused only because the server
    /// was busy): it is taken back from every count.
    fn forgive(&self, counted: &[Counted]) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        for key in counted {
            if let Some(entry) = attempts.get_mut(key) {
                entry.times.pop_back();
            }
        }
    }

    /// The right password: forgiven as a failure, counted as a sign-in of `login`.
    fn succeeded(&self, login: &str, counted: &[Counted]) {
        self.forgive(counted);
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.entry(Counted::SignedIn(login.to_lowercase())).or_default().times.push_back(Instant::now());
    }

    /// Checks `password` against `hash` on the password threads; without a hash (no such
    /// login), waits as long as a check takes instead.
    async fn check_password(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(hash) = hash else {
            // Busy exactly when a real check would be, so busy answers do not tell which
            // logins exist.
            if self.passwords.is_full() {
                return Err(ApiError::Busy("password checks"));
            }
            let typical = self.typical_check_micros.load(Relaxed);
            tokio::time::sleep(Duration::from_micros(typical)).await;
            return Ok(false);
        };
        let started = Instant::now();
        let matches = self.passwords.verify(password, hash).await?;
        let took = started.elapsed().as_micros().min(10_000_000) as u64;
        let typical = self.typical_check_micros.load(Relaxed);
        self.typical_check_micros.store((typical * 7 + took) / 8, Relaxed);
        Ok(matches)
    }
}

/// Work for the password threads.
enum PasswordJob {
    Verify { password: String, hash: String, answer: tokio::sync::oneshot::Sender<bool> },
    Hash { password: String, answer: tokio::sync::oneshot::Sender<Result<String, ApiError>> },
}

/// Two threads that compute argon2id, fed through a queue of 16. A hash takes 19 MiB and a core
/// for tens of milliseconds: on two long-lived threads the allocator reuses the memory (fresh
/// blocking threads each kept a copy), and a job stays counted until it is done even when its
/// client has gone, so a flood cannot pile up work. A full queue answers 503.
#[derive(Debug)]
pub struct PasswordThreads {
    jobs: std::sync::mpsc::SyncSender<PasswordJob>,
    /// Jobs submitted and not yet done.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for PasswordThreads {
    fn default() -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<PasswordJob>(Self::QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..2 {
            let (queue, pending) = (queue.clone(), pending.clone());
            let spawned = std::thread::Builder::new().name(format!("password-{n}")).spawn(move || {
                loop {
                    let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        // Every sender is gone: the server is stopping.
                        Err(_) => return,
                    };
                    match job {
                        PasswordJob::Verify { password, hash, answer } => {
                            let _ = answer.send(verify_password(&password, &hash));
                        }
                        PasswordJob::Hash { password, answer } => {
                            let _ = answer.send(hash_password(&password));
                        }
                    }
                    pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            if let Err(error) = spawned {
                warn!(%error, "could not start a password thread");
            }
        }
        Self { jobs, pending }
    }
}

impl PasswordThreads {
    /// Jobs that may wait.
    const QUEUE: usize = 16;

    fn submit(&self, job: PasswordJob) -> Result<(), ApiError> {
        self.jobs.try_send(job).map_err(|_| ApiError::Busy("password checks"))?;
        self.pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether a job submitted now would be refused (or very nearly).
    fn is_full(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Relaxed) >= Self::QUEUE
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, ApiError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(PasswordJob::Verify { password, hash, answer })?;
        answered.await.map_err(|_| ApiError::Busy("password checks"))
    }

    /// An argon2id hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(PasswordJob::Hash { password, answer })?;
        answered.await.map_err(|_| ApiError::Busy("password checks"))?
    }
}

/// The cookie naming a device that signed in before, per login, for [`SignInLimiter`].
const DEVICE_COOKIE: &str = "chillcloud_device";

/// `<random id>.<mac>`: the MAC binds the id to the login, so a cookie works only for the login
/// that signed in with it.
fn device_cookie_value(secret: &[u8], login: &str, id: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("device\n{}\n{id}", login.to_lowercase()).as_bytes());
    format!("{id}.{}", hex::encode(&mac.finalize().into_bytes()[..16]))
}

/// The device id of a valid device cookie for `login`.
fn known_device(headers: &HeaderMap, secret: &[u8], login: &str) -> Option<String> {
    let value = cookie(headers, DEVICE_COOKIE)?;
    let (id, _) = value.split_once('.')?;
    let expected = device_cookie_value(secret, login, id);
    (id.len() == 32 && constant_time_eq(value.as_bytes(), expected.as_bytes())).then(|| id.to_owned())
}

/// Records an audit entry; a failure to record is logged, never fatal to the request.
pub async fn audit(
    pool: &PgPool,
    viewer: Option<&Viewer>,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    address: &str,
) {
    let written = sqlx::query(
        "insert into audit_log (user_id, actor, action, target, outcome, address) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(viewer.and_then(|v| v.user_id))
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(outcome)
    .bind(address)
    .execute(pool)
    .await;
    if let Err(error) = written {
        warn!(%error, action, "could not write the audit log");
    }
}

fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A session's user, with the session's CSRF token.
#[derive(sqlx::FromRow)]
struct SessionRow {
    csrf_token: String,
    #[sqlx(flatten)]
    user: UserRow,
}

/// A user signing in, with their password's hash (none before they took up their invitation).
#[derive(sqlx::FromRow)]
struct CredentialRow {
    password_hash: Option<String>,
    #[sqlx(flatten)]
    user: UserRow,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    login: String,
    name: String,
    role: String,
    language: String,
    organisation_id: i64,
    organisation: String,
    kind: String,
}

impl UserRow {
    /// Selects the row's columns; callers join and filter.
    const SELECT: &'static str = "select u.id, u.login, u.name, u.role, u.language, u.organisation_id,
            o.name as organisation, o.kind
        from users u join organisations o on o.id = u.organisation_id";

    fn viewer(self, csrf: Option<String>) -> Option<Viewer> {
        let role = Role::parse(&self.role)?;
        // A role that does not match its organisation's kind gets nothing.
        let scope = match (self.kind.as_str(), role.is_service()) {
            ("service", true) => Scope::All,
            ("customer", false) => Scope::Organisation(self.organisation_id),
            _ => return None,
        };
        Some(Viewer {
            user_id: Some(self.id),
            login: self.login,
            name: self.name,
            role,
            organisation: self.organisation,
            language: self.language,
            scope,
            csrf,
        })
    }
}

/// Who presents this request: the operator's or an API token, or a session cookie.
async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Option<Viewer>, ApiError> {
    // The scheme is case-insensitive (RFC 9110): `bearer` is as good as `Bearer`.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()));
    if let Some(token) = bearer {
        if constant_time_eq(token.as_bytes(), state.api_token.as_bytes()) {
            return Ok(Some(Viewer::operator()));
        }
        // One round trip: the token's use is recorded as its user is read.
        let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "with used as (update api_tokens set last_used_at = now()
                           where token_hash = $1 and revoked_at is null returning user_id)
             {} join used on used.user_id = u.id where u.disabled_at is null",
            UserRow::SELECT
        )))
        .bind(digest(token))
        .fetch_optional(&state.pool)
        .await?;
        return Ok(row.and_then(|row| row.viewer(None)));
    }
    let Some(session) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let row: Option<SessionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} join sessions s on s.user_id = u.id
         where s.token_hash = $1 and s.expires_at > now() and u.disabled_at is null",
        UserRow::SELECT.replacen("select ", "select s.csrf_token, ", 1)
    )))
    .bind(digest(session))
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.and_then(|row| row.user.viewer(Some(row.csrf_token))))
}

/// The middleware of `/api/v1`: 401 without credentials; 403 for a cookie session's change
/// without its CSRF token; every change is written to the audit log with its outcome.
pub async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let viewer = identify(&state, request.headers()).await?.ok_or(ApiError::Unauthorized)?;
    let change = is_change(request.method());
    // Inside `/api/v1`, the URI has lost its prefix: the original is what was asked.
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |original| original.path().to_owned());
    let action = format!("{} {path}", request.method());
    let address = peer.ip().to_string();
    if change && let Some(expected) = &viewer.csrf {
        let presented = request.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            audit(&state.pool, Some(&viewer), &viewer.actor(), &action, "", "403 without its CSRF token", &address)
                .await;
            return Err(ApiError::Forbidden);
        }
    }
    request.extensions_mut().insert(viewer.clone());
    let mut response = next.run(request).await;
    if change {
        let outcome = response.status().as_u16().to_string();
        audit(&state.pool, Some(&viewer), &viewer.actor(), &action, "", &outcome, &address).await;
    }
    // What one person may see is not for a shared cache.
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Routes that need no session: signing in, and taking up an invitation.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/session", post(sign_in))
        .route("/invite/{token}", get(invitation_page).post(accept_invitation))
}

/// Routes behind [`authenticate`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/session", get(current).delete(sign_out))
        .route("/organisations", get(list_organisations).post(add_organisation))
        .route("/users", get(list_users).post(invite_user))
        .route("/users/{user_id}/disable", post(disable_user))
        .route("/gateways/{gateway_id}/organisation", put(set_site_owner))
        .route("/tokens", get(list_tokens).post(add_token))
        .route("/tokens/{token_id}", delete(revoke_token))
        .route("/audit", get(list_audit))
}

/// A sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"login": "wang.wei@example.com", "password": "correct horse battery"}))]
pub struct SignIn {
    /// The user's login.
    pub login: String,
    /// Their password.
    pub password: String,
}

/// Signs in: sets the session cookie (HttpOnly, SameSite=Strict, 30 days) and a device cookie,
/// and answers the session's CSRF token. Ten failed sign-ins of a login from browsers that never
/// signed in to it, or twenty from an address, within 15 minutes lock those out for the rest of
/// the window; a browser that signed in to the login before has its own ten.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "accounts",
    security(()),
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; the cookie is set", body = Session,
         headers(("set-cookie" = String, description = "The session cookie `chillcloud_session`"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "Wrong login or password", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins; try again later", body = ErrorBody),
        (status = 503, description = "Too many sign-ins at once; try again shortly", body = ErrorBody),
    )
)]
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, ApiError> {
    let address = peer.ip().to_string();
    if body.login.len() > MAX_LOGIN || body.password.len() > 1024 {
        return Err(ApiError::BadRequest(format!("a login is at most {MAX_LOGIN} bytes, a password 1024")));
    }
    let limiter = &state.sign_ins;
    let device = known_device(&headers, &state.paging.link_secret, &body.login);
    let counted = SignInLimiter::counted(&body.login, peer.ip(), device.as_deref());
    if !limiter.attempt(&body.login, &counted) {
        state.metrics.sign_ins_limited.inc();
        if limiter.audit_refusal(&counted) {
            audit(&state.pool, None, &body.login, "sign-in", "", "rate-limited", &address).await;
        }
        return Err(ApiError::TooManyRequests);
    }
    let lane = if device.is_some() { &limiter.known_devices } else { &limiter.strangers };
    let Ok(_handling) = lane.clone().try_acquire_owned() else {
        limiter.forgive(&counted);
        state.metrics.requests_refused_by_bounds.inc();
        return Err(ApiError::Busy("sign-ins"));
    };
    let row: Option<CredentialRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} where u.login = $1 and u.disabled_at is null",
        UserRow::SELECT.replacen("select ", "select u.password_hash, ", 1)
    )))
    .bind(&body.login)
    .fetch_optional(&state.pool)
    .await?;
    let (user, hash) = row.map_or((None, None), |row| (Some(row.user), row.password_hash));
    if user.is_none() {
        limiter.unknown_login(&counted);
    }
    let matches = match limiter.check_password(body.password.clone(), hash).await {
        Ok(matches) => matches,
        Err(busy) => {
            limiter.forgive(&counted);
            state.metrics.requests_refused_by_bounds.inc();
            return Err(busy);
        }
    };
    let viewer = match (user, matches) {
        (Some(user), true) => user.viewer(Some(random_secret())),
        _ => None,
    };
    let Some(viewer) = viewer else {
        audit(&state.pool, None, &body.login, "sign-in", "", "refused", &address).await;
        return Err(ApiError::Unauthorized);
    };
    limiter.succeeded(&body.login, &counted);
    let token = random_secret();
    sqlx::query(
        "insert into sessions (token_hash, user_id, csrf_token, expires_at)
         values ($1, $2, $3, now() + make_interval(days => $4))",
    )
    .bind(digest(&token))
    .bind(viewer.user_id)
    .bind(viewer.csrf.as_deref())
    .bind(SESSION_DAYS as i32)
    .execute(&state.pool)
    .await?;
    // A user keeps at most their 20 newest sessions (and no expired ones): signing in again and
    // again cannot grow the table.
    sqlx::query(
        "delete from sessions where user_id = $1 and (expires_at <= now() or token_hash not in
             (select token_hash from sessions where user_id = $1 order by expires_at desc limit 20))",
    )
    .bind(viewer.user_id)
    .execute(&state.pool)
    .await?;
    audit(&state.pool, Some(&viewer), &viewer.actor(), "sign-in", "", "ok", &address).await;
    info!(login = viewer.login, "signed in");
    let secure = if state.paging.public_url.starts_with("https://") { "; Secure" } else { "" };
    let session_cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_DAYS * 86_400
    );
    let device_id = device.unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
    let device_cookie = format!(
        "{DEVICE_COOKIE}={}; Path=/api/v1/session; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        device_cookie_value(&state.paging.link_secret, &body.login, &device_id),
        365 * 86_400
    );
    let mut response = Json(viewer.session()).into_response();
    for cookie in [session_cookie, device_cookie] {
        if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Who you are: the session's or the token's user, and the session's CSRF token.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "accounts",
    responses((status = 200, description = "The viewer", body = Session))
)]
pub(crate) async fn current(Extension(viewer): Extension<Viewer>) -> Json<Session> {
    Json(viewer.session())
}

/// Signs out: ends the cookie's session (a bearer token stays valid) and clears the cookie.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "accounts",
    responses((status = 204, description = "Signed out"))
)]
pub(crate) async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        sqlx::query("delete from sessions where token_hash = $1").bind(digest(session)).execute(&state.pool).await?;
    }
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, expired)], StatusCode::NO_CONTENT).into_response())
}

/// An organisation.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[schema(example = json!({"name": "Acme Foods", "kind": "customer"}))]
pub struct Organisation {
    /// Its id.
    #[serde(default)]
    pub id: i64,
    /// Its name.
    pub name: String,
    /// `service` (the maker or installer) or `customer`.
    #[schema(pattern = "^(service|customer)$")]
    pub kind: String,
}

/// Every organisation.
#[utoipa::path(
    get,
    path = "/api/v1/organisations",
    tag = "accounts",
    responses(
        (status = 200, description = "Organisations, by id", body = Vec<Organisation>),
        (status = 403, description = "Only administrators manage accounts", body = ErrorBody),
    )
)]
pub(crate) async fn list_organisations(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
) -> Result<Json<Vec<Organisation>>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    Ok(Json(sqlx::query_as("select id, name, kind from organisations order by id").fetch_all(&mut *tx).await?))
}

/// Adds an organisation.
#[utoipa::path(
    post,
    path = "/api/v1/organisations",
    tag = "accounts",
    request_body = Organisation,
    responses(
        (status = 200, description = "The organisation, with its id", body = Organisation),
        (status = 400, description = "No name, or a kind other than service or customer", body = ErrorBody),
        (status = 403, description = "Only administrators manage accounts", body = ErrorBody),
        (status = 409, description = "An organisation of that name exists", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_organisation(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
    Json(body): Json<Organisation>,
) -> Result<Json<Organisation>, ApiError> {
    if body.name.trim().is_empty() || !matches!(body.kind.as_str(), "service" | "customer") {
        return Err(ApiError::BadRequest("an organisation needs a name and kind service or customer".into()));
    }
    let mut tx = viewer.begin(&state.api_pool).await?;
    let created = sqlx::query_as(
        "insert into organisations (name, kind) values ($1, $2) on conflict (name) do nothing returning id, name, kind",
    )
    .bind(body.name.trim())
    .bind(&body.kind)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("an organisation named {:?} exists", body.name)))?;
    tx.commit().await?;
    Ok(Json(created))
}

/// A user as listed.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct UserSummary {
    /// Their id.
    pub id: i64,
    /// Their login.
    pub login: String,
    /// Their name.
    pub name: String,
    /// Their role.
    pub role: String,
    /// Their organisation.
    pub organisation_id: i64,
    /// `en` or `zh`.
    pub language: String,
    /// Whether they have set a password.
    pub active: bool,
}

/// Every user.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "accounts",
    responses(
        (status = 200, description = "Users, by id", body = Vec<UserSummary>),
        (status = 403, description = "Only administrators manage accounts", body = ErrorBody),
    )
)]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
) -> Result<Json<Vec<UserSummary>>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    Ok(Json(
        sqlx::query_as(
            "select id, login, name, role, organisation_id, language, password_hash is not null as active
             from users order by id",
        )
        .fetch_all(&mut *tx)
        .await?,
    ))
}

/// A new user, invited to set their password.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"login": "li.na@acme.example", "name": "Li Na", "role": "owner", "organisation_id": 2,
    "language": "zh"}))]
pub struct NewUser {
    /// Their login (an e-mail address, say).
    pub login: String,
    /// Their name.
    pub name: String,
    /// Their role; it must suit their organisation's kind.
    pub role: Role,
    /// Their organisation.
    pub organisation_id: i64,
    /// `en` (default) or `zh`.
    #[schema(pattern = "^(en|zh)$")]
    pub language: Option<String>,
}

/// Creates a user with an invitation; returns the invitation's secret (shown once).
pub async fn create_user(db: &mut sqlx::PgConnection, user: &NewUser) -> Result<(i64, String), ApiError> {
    let login = user.login.trim();
    if login.is_empty() || login.len() > MAX_LOGIN || user.name.trim().is_empty() {
        return Err(ApiError::BadRequest("a user needs a login (at most 200 characters) and a name".into()));
    }
    let language = user.language.clone().unwrap_or_else(|| "en".into());
    if !matches!(language.as_str(), "en" | "zh") {
        return Err(ApiError::BadRequest("language is en or zh".into()));
    }
    let kind: Option<String> = sqlx::query_scalar("select kind from organisations where id = $1")
        .bind(user.organisation_id)
        .fetch_optional(&mut *db)
        .await?;
    match kind.as_deref() {
        None => return Err(ApiError::BadRequest("no such organisation".into())),
        Some(kind) if (kind == "service") != user.role.is_service() => {
            return Err(ApiError::BadRequest(format!("a {kind} organisation has no {} role", user.role.name())));
        }
        Some(_) => {}
    }
    let id: Option<i64> = sqlx::query_scalar(
        "insert into users (organisation_id, login, name, role, language) values ($1, $2, $3, $4, $5)
         on conflict (login) do nothing returning id",
    )
    .bind(user.organisation_id)
    .bind(login)
    .bind(user.name.trim())
    .bind(user.role.name())
    .bind(&language)
    .fetch_optional(&mut *db)
    .await?;
    let id = id.ok_or_else(|| ApiError::Conflict(format!("the login {login:?} is taken")))?;
    let secret = random_secret();
    sqlx::query(
        "insert into invitations (token_hash, user_id, expires_at) values ($1, $2, now() + make_interval(days => $3))",
    )
    .bind(digest(&secret))
    .bind(id)
    .bind(INVITATION_DAYS as i32)
    .execute(&mut *db)
    .await?;
    Ok((id, secret))
}

/// A user just invited.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Invited {
    /// Their id.
    pub id: i64,
    /// Their login.
    pub login: String,
    /// Where they choose their password (7 days, once).
    pub invitation_url: String,
}

/// Adds a user and answers the invitation link where they choose their password.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "accounts",
    request_body = NewUser,
    responses(
        (status = 200, description = "The user and their invitation link", body = Invited),
        (status = 400, description = "No login or name, an unknown language or organisation, or a role that does \
                                      not suit the organisation", body = ErrorBody),
        (status = 403, description = "Only administrators manage accounts", body = ErrorBody),
        (status = 409, description = "The login is taken", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn invite_user(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
    Json(body): Json<NewUser>,
) -> Result<Json<Invited>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    let (id, secret) = create_user(&mut tx, &body).await?;
    tx.commit().await?;
    let invitation_url = format!("{}/invite/{secret}", state.paging.public_url);
    Ok(Json(Invited { id, login: body.login.trim().to_owned(), invitation_url }))
}

/// Cuts a user off at once: they can no longer sign in, their sessions end and their API
/// tokens are revoked.
#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/disable",
    tag = "accounts",
    params(("user_id" = i64, Path, description = "The user")),
    responses(
        (status = 204, description = "Disabled"),
        (status = 403, description = "Only administrators manage accounts", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
    Path(user_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    let disabled = sqlx::query("update users set disabled_at = coalesce(disabled_at, now()) where id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if disabled == 0 {
        return Err(ApiError::NotFound);
    }
    sqlx::query("delete from sessions where user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("update api_tokens set revoked_at = now() where user_id = $1 and revoked_at is null")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which customer owns a site.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"organisation_id": 2}))]
pub struct SiteOwner {
    /// A customer organisation, or none.
    pub organisation_id: Option<i64>,
}

/// Gives a site to a customer organisation, or (null) takes it back.
#[utoipa::path(
    put,
    path = "/api/v1/gateways/{gateway_id}/organisation",
    tag = "accounts",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    request_body = SiteOwner,
    responses(
        (status = 204, description = "The site's owner is set"),
        (status = 400, description = "Not a customer organisation", body = ErrorBody),
        (status = 403, description = "Only administrators manage accounts", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn set_site_owner(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
    Path(gateway_id): Path<String>,
    Json(body): Json<SiteOwner>,
) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    if let Some(organisation) = body.organisation_id {
        let kind: Option<String> = sqlx::query_scalar("select kind from organisations where id = $1")
            .bind(organisation)
            .fetch_optional(&mut *tx)
            .await?;
        if kind.as_deref() != Some("customer") {
            return Err(ApiError::BadRequest("a site belongs to a customer organisation".into()));
        }
    }
    let updated = sqlx::query("update gateways set organisation_id = $2 where id = $1")
        .bind(&gateway_id)
        .bind(body.organisation_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An API token as listed (never its secret).
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct TokenSummary {
    /// Its id.
    pub id: i64,
    /// What it is for.
    pub name: String,
    /// When it was made.
    pub created_at: chrono::DateTime<Utc>,
    /// When it was last used.
    pub last_used_at: Option<chrono::DateTime<Utc>>,
}

/// A new API token.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "BMS integration"}))]
pub struct NewToken {
    /// What it is for.
    pub name: String,
}

fn own_user(viewer: &Viewer) -> Result<i64, ApiError> {
    viewer
        .user_id
        .ok_or_else(|| ApiError::BadRequest("the operator's token cannot own tokens: sign in as a user".into()))
}

/// The viewer's API tokens.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "accounts",
    responses(
        (status = 200, description = "Tokens not revoked, by id", body = Vec<TokenSummary>),
        (status = 400, description = "The operator's token owns no tokens", body = ErrorBody),
    )
)]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Json<Vec<TokenSummary>>, ApiError> {
    let user = own_user(&viewer)?;
    Ok(Json(
        sqlx::query_as(
            "select id, name, created_at, last_used_at from api_tokens where user_id = $1 and revoked_at is null
             order by id",
        )
        .bind(user)
        .fetch_all(&state.pool)
        .await?,
    ))
}

/// An API token just made, with its secret (shown once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenSecret {
    /// Its id.
    pub id: i64,
    /// What it is for.
    pub name: String,
    /// The bearer token.
    pub token: String,
}

/// Makes an API token that acts as the viewer.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "accounts",
    request_body = NewToken,
    responses(
        (status = 200, description = "The token, with its secret", body = TokenSecret),
        (status = 400, description = "No name or one over 100 characters, or the operator's token", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_token(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Json(body): Json<NewToken>,
) -> Result<Json<TokenSecret>, ApiError> {
    let user = own_user(&viewer)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest("a token needs a name of at most 100 characters".into()));
    }
    let secret = random_secret();
    let id: i64 =
        sqlx::query_scalar("insert into api_tokens (user_id, name, token_hash) values ($1, $2, $3) returning id")
            .bind(user)
            .bind(name)
            .bind(digest(&secret))
            .fetch_one(&state.pool)
            .await?;
    Ok(Json(TokenSecret { id, name: name.to_owned(), token: secret }))
}

/// Revokes one of the viewer's API tokens.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{token_id}",
    tag = "accounts",
    params(("token_id" = i64, Path, description = "Token id", example = 1)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The token id is not a number, or the operator's token", body = ErrorBody),
        (status = 404, description = "No such token of the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(token_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let user = own_user(&viewer)?;
    let revoked =
        sqlx::query("update api_tokens set revoked_at = now() where id = $1 and user_id = $2 and revoked_at is null")
            .bind(token_id)
            .bind(user)
            .execute(&state.pool)
            .await?
            .rows_affected();
    if revoked == 0 { Err(ApiError::NotFound) } else { Ok(StatusCode::NO_CONTENT) }
}

/// An audit entry.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct AuditEntry {
    /// When.
    pub at: chrono::DateTime<Utc>,
    /// Who (a login, or the login tried).
    pub actor: String,
    /// What: `sign-in`, or the request's method and path.
    pub action: String,
    /// `ok`, `refused`, `rate-limited`, or the response's status.
    pub outcome: String,
    /// From which address.
    pub address: Option<String>,
}

/// The last 500 sign-ins and changes, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "accounts",
    responses(
        (status = 200, description = "Audit entries", body = Vec<AuditEntry>),
        (status = 403, description = "Only administrators read the audit log", body = ErrorBody),
    )
)]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    viewer: Allowed<ManageAccounts>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    Ok(Json(
        sqlx::query_as("select at, actor, action, outcome, address from audit_log order by id desc limit 500")
            .fetch_all(&mut *tx)
            .await?,
    ))
}

fn invitation_html(status: StatusCode, text: &str, form: bool) -> Response {
    let form = if form {
        format!(
            r#"<form method="post"><label>Password / 密码 (≥ {MIN_PASSWORD})<br><input type="password" name="password" minlength="{MIN_PASSWORD}" required autocomplete="new-password"></label><p><button type="submit">Set / 设置</button></p></form>"#
        )
    } else {
        r#"<p><a href="/">Sign in / 登录</a></p>"#.to_owned()
    };
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>Chillcloud</title><style>body{{font:18px system-ui;margin:1.5em}}input,button{{font-size:1.1em;padding:.6em}}</style></head><body><h1>Chillcloud</h1><p>{}</p>{form}</body></html>"#,
        escape_html(text)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn invitation_user(state: &AppState, secret: &str) -> Result<Option<(i64, String)>, ApiError> {
    Ok(sqlx::query_as(
        "select u.id, u.name from invitations i join users u on u.id = i.user_id
         where i.token_hash = $1 and i.used_at is null and i.expires_at > now()",
    )
    .bind(digest(secret))
    .fetch_optional(&state.pool)
    .await?)
}

async fn invitation_page(State(state): State<AppState>, Path(secret): Path<String>) -> Result<Response, ApiError> {
    Ok(match invitation_user(&state, &secret).await? {
        Some((_, name)) => invitation_html(StatusCode::OK, &format!("Welcome, {name}. Choose a password."), true),
        None => invitation_html(StatusCode::NOT_FOUND, "This invitation is used, expired or unknown.", false),
    })
}

/// The invitation form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    /// The new password.
    pub password: String,
}

async fn accept_invitation(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(secret): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, ApiError> {
    let Some((user, _)) = invitation_user(&state, &secret).await? else {
        return Ok(invitation_html(StatusCode::NOT_FOUND, "This invitation is used, expired or unknown.", false));
    };
    if form.password.chars().count() < MIN_PASSWORD {
        return Ok(invitation_html(
            StatusCode::BAD_REQUEST,
            &format!("A password needs at least {MIN_PASSWORD} characters."),
            true,
        ));
    }
    let password = form.password;
    let hash = state.sign_ins.passwords.hash(password).await?;
    let mut tx = state.pool.begin().await?;
    let used = sqlx::query("update invitations set used_at = now() where token_hash = $1 and used_at is null")
        .bind(digest(&secret))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if used == 0 {
        return Ok(invitation_html(StatusCode::NOT_FOUND, "This invitation is used, expired or unknown.", false));
    }
    sqlx::query("update users set password_hash = $2 where id = $1").bind(user).bind(hash).execute(&mut *tx).await?;
    tx.commit().await?;
    audit(&state.pool, None, &format!("user {user}"), "invitation", "", "ok", &peer.ip().to_string()).await;
    Ok(invitation_html(StatusCode::OK, "Your password is set. Sign in with it.", false))
}

/// `create-admin`: the service organisation (made if missing) and an administrator with a
/// generated password, returned once.
pub async fn create_admin(pool: &PgPool, login: &str, name: &str, organisation: &str) -> Result<String, ApiError> {
    let mut tx = pool.begin().await?;
    let (id, _) = add_user(&mut tx, login, name, Role::Admin, organisation, None).await?;
    let password = random_secret()[..20].to_owned();
    let hash = hash_password(&password)?;
    sqlx::query("update users set password_hash = $2 where id = $1").bind(id).bind(hash).execute(&mut *tx).await?;
    sqlx::query("update invitations set used_at = now() where user_id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(password)
}

/// `invite`: a user of `organisation` (made if missing, of the kind the role needs); returns
/// the invitation's secret.
pub async fn invite(
    pool: &PgPool,
    login: &str,
    name: &str,
    role: Role,
    organisation: &str,
    language: Option<String>,
) -> Result<String, ApiError> {
    let mut tx = pool.begin().await?;
    let (_, secret) = add_user(&mut tx, login, name, role, organisation, language).await?;
    tx.commit().await?;
    Ok(secret)
}

/// A user of the organisation named `organisation`, made if missing, of the kind `role` needs.
async fn add_user(
    db: &mut sqlx::PgConnection,
    login: &str,
    name: &str,
    role: Role,
    organisation: &str,
    language: Option<String>,
) -> Result<(i64, String), ApiError> {
    let kind = if role.is_service() { "service" } else { "customer" };
    let organisation_id: i64 = sqlx::query_scalar(
        "insert into organisations (name, kind) values ($1, $2)
         on conflict (name) do update set name = excluded.name returning id",
    )
    .bind(organisation)
    .bind(kind)
    .fetch_one(&mut *db)
    .await?;
    let user = NewUser { login: login.into(), name: name.into(), role, organisation_id, language };
    create_user(db, &user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_may_what_their_job_needs_and_no_more() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true, true, true, true, true, true, true]),
            (Role::Manager, [true, true, true, true, true, true, true, false, true, true]),
            (Role::Engineer, [true, true, true, true, true, true, false, false, true, true]),
            (Role::Sales, [true, false, false, false, false, false, false, false, true, false]),
            (Role::Owner, [true, true, true, false, false, false, false, false, true, true]),
            (Role::Duty, [true, true, true, false, false, false, false, false, false, false]),
        ];
        let permissions = [
            Read,
            Acknowledge,
            ReadTickets,
            WorkTickets,
            ManageRules,
            ReadPaging,
            ManagePaging,
            ManageAccounts,
            Share,
            Operate,
        ];
        for (role, allowed) in table {
            for (permission, expected) in permissions.iter().zip(allowed) {
                assert_eq!(role.may(*permission), expected, "{role:?} {permission:?}");
            }
        }
    }

    #[test]
    fn a_password_verifies_against_its_argon2id_hash_only() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn strangers_are_limited_per_login_and_address_and_known_devices_apart() {
        let limiter = SignInLimiter::default();
        let from = |n: u8| std::net::IpAddr::from([10, 0, 0, n]);
        let stranger = |n| SignInLimiter::counted("Owner@Example.com", from(n), None);
        // Guesses at one login from ten addresses: the login's limit, not each address's.
        let allowed = (0..50).filter(|n| limiter.attempt("Owner@Example.com", &stranger(n % 10))).count();
        assert_eq!(allowed, SignInLimiter::PER_LOGIN);
        assert!(!limiter.attempt("OWNER@example.com", &SignInLimiter::counted("OWNER@example.com", from(99), None)));
        // The owner's own browser is not locked out by them.
        let device = SignInLimiter::counted("owner@example.com", from(1), Some("phone"));
        assert!(limiter.attempt("owner@example.com", &device));
        limiter.forgive(&device);
        // A right password is not counted as a failure: signing in often locks nobody out of
        // their guesses, but sign-ins themselves have a generous limit of their own.
        for _ in 0..SignInLimiter::SIGN_INS_PER_LOGIN {
            assert!(limiter.attempt("owner@example.com", &device));
            limiter.succeeded("owner@example.com", &device);
        }
        assert!(!limiter.attempt("owner@example.com", &device), "a sign-in past the limit");
        // One address spraying logins is stopped too.
        let allowed = (0..100)
            .filter(|n| {
                let login = format!("login-{n}");
                limiter.attempt(&login, &SignInLimiter::counted(&login, from(200), None))
            })
            .count();
        assert_eq!(allowed, SignInLimiter::PER_ADDRESS);
        // An IPv6 network counts as one address.
        let v6 = |last: u16| std::net::IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        assert_eq!(SignInLimiter::counted("x", v6(1), None), SignInLimiter::counted("x", v6(2), None));
    }

    #[test]
    fn a_full_table_forgets_unknown_logins_first_and_never_refuses_for_being_full() {
        let limiter = SignInLimiter::default();
        let owner = SignInLimiter::counted("owner", std::net::IpAddr::from([10, 0, 0, 1]), None);
        for _ in 0..SignInLimiter::PER_LOGIN {
            assert!(limiter.attempt("owner", &owner));
        }
        for n in 0..SignInLimiter::MAX_KEYS as u32 {
            let login = format!("nobody-{n}");
            let counted = SignInLimiter::counted(&login, std::net::IpAddr::from(n.to_be_bytes()), None);
            assert!(limiter.attempt(&login, &counted), "attempt {n} refused");
            limiter.unknown_login(&counted);
        }
        assert!(limiter.attempts.lock().expect("lock").len() <= SignInLimiter::MAX_KEYS);
        assert!(!limiter.attempt("owner", &owner), "the known login's count survived the flood");
    }

    #[test]
    fn a_device_cookie_works_for_its_own_login_only() {
        let secret = b"secret";
        let value = device_cookie_value(secret, "Owner", &"a".repeat(32));
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("{DEVICE_COOKIE}={value}").parse().expect("header"));
        assert_eq!(known_device(&headers, secret, "owner"), Some("a".repeat(32)));
        assert_eq!(known_device(&headers, secret, "someone-else"), None);
        assert_eq!(known_device(&headers, b"other secret", "owner"), None);
    }
}
