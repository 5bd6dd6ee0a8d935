//! The accounts API: signing in and out, organisations, users and invitations, API tokens, the
//! audit log.

use std::net::SocketAddr;

use axum::{
    Form, Json,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AccountError, CredentialRow, MAX_LOGIN, MIN_PASSWORD, NewUser, Role, UserRow, Viewer, audit, create_user,
    sign_in::{PasswordsBusy, SignInLimiter},
};
use crate::{
    http::{Allowed, ApiError, AppState, ErrorBody, ManageAccounts, Read, SESSION_COOKIE, System, SystemState, cookie},
    secrets::{constant_time_eq, digest, escape_html, hmac_sha256, random_hex, random_secret},
};

/// How long a session lasts.
const SESSION_DAYS: i64 = 30;

impl From<PasswordsBusy> for ApiError {
    fn from(_: PasswordsBusy) -> Self {
        ApiError::Busy("password checks")
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Invalid(message) => ApiError::BadRequest(message),
            AccountError::Conflict(message) => ApiError::Conflict(message),
            AccountError::Hash(message) => ApiError::Internal(message),
            AccountError::Busy(busy) => busy.into(),
            AccountError::Database(error) => ApiError::Database(error),
        }
    }
}

/// Routes that act for the system: signing in, and taking up an invitation.
pub fn system_routes() -> OpenApiRouter<SystemState> {
    OpenApiRouter::new()
        .routes(routes!(sign_in))
        .route("/invite/{token}", axum::routing::get(invitation_page).post(accept_invitation))
}

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current))
        .routes(routes!(sign_out))
        .routes(routes!(list_organisations))
        .routes(routes!(add_organisation))
        .routes(routes!(list_users))
        .routes(routes!(invite_user))
        .routes(routes!(disable_user))
        .routes(routes!(set_site_owner))
        .routes(routes!(list_tokens))
        .routes(routes!(add_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_audit))
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

fn session(viewer: &Viewer) -> Session {
    Session {
        user: SessionUser {
            id: viewer.user_id,
            login: viewer.login.clone(),
            name: viewer.name.clone(),
            role: viewer.role,
            organisation: viewer.organisation.clone(),
            language: viewer.language.clone(),
        },
        csrf_token: viewer.csrf.clone(),
    }
}

/// The cookie naming a device that signed in before, per login, for [`SignInLimiter`].
const DEVICE_COOKIE: &str = "chillcloud_device";

/// `<random id>.<mac>`: the MAC binds the id to the login, so a cookie works only for the login
/// that signed in with it.
fn device_cookie_value(secret: &[u8], login: &str, id: &str) -> String {
    let mac = hmac_sha256(secret, &[format!("device\n{}\n{id}", login.to_lowercase()).as_bytes()]);
    format!("{id}.{}", hex::encode(&mac[..16]))
}

/// The device id of a valid device cookie for `login`.
fn known_device(headers: &HeaderMap, secret: &[u8], login: &str) -> Option<String> {
    let value = cookie(headers, DEVICE_COOKIE)?;
    let (id, _) = value.split_once('.')?;
    let expected = device_cookie_value(secret, login, id);
    (id.len() == 32 && constant_time_eq(value.as_bytes(), expected.as_bytes())).then(|| id.to_owned())
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
    system: System,
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
            audit(&system.db, None, &body.login, "sign-in", "", "rate-limited", &address).await;
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
    .fetch_optional(&system.db)
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
            return Err(busy.into());
        }
    };
    let viewer = match (user, matches) {
        (Some(user), true) => user.viewer(Some(random_secret())),
        _ => None,
    };
    let Some(viewer) = viewer else {
        audit(&system.db, None, &body.login, "sign-in", "", "refused", &address).await;
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
    .execute(&system.db)
    .await?;
    // A user keeps at most their 20 newest sessions (and no expired ones): signing in again and
    // again cannot grow the table.
    sqlx::query(
        "delete from sessions where user_id = $1 and (expires_at <= now() or token_hash not in
             (select token_hash from sessions where user_id = $1 order by expires_at desc limit 20))",
    )
    .bind(viewer.user_id)
    .execute(&system.db)
    .await?;
    audit(&system.db, Some(&viewer), &viewer.actor(), "sign-in", "", "ok", &address).await;
    info!(login = viewer.login, "signed in");
    let secure = if state.paging.public_url.starts_with("https://") { "; Secure" } else { "" };
    let session_cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_DAYS * 86_400
    );
    let device_id = device.unwrap_or_else(random_hex::<16>);
    let device_cookie = format!(
        "{DEVICE_COOKIE}={}; Path=/api/v1/session; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        device_cookie_value(&state.paging.link_secret, &body.login, &device_id),
        365 * 86_400
    );
    let mut response = Json(session(&viewer)).into_response();
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
pub(crate) async fn current(viewer: Allowed<Read>) -> Json<Session> {
    Json(session(&viewer))
}

/// Signs out: ends the cookie's session (a bearer token stays valid) and clears the cookie.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "accounts",
    responses((status = 204, description = "Signed out"))
)]
pub(crate) async fn sign_out(viewer: Allowed<Read>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        let mut tx = viewer.begin().await?;
        sqlx::query("delete from sessions where token_hash = $1").bind(digest(session)).execute(&mut *tx).await?;
        tx.commit().await?;
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
pub(crate) async fn list_organisations(viewer: Allowed<ManageAccounts>) -> Result<Json<Vec<Organisation>>, ApiError> {
    let mut tx = viewer.begin().await?;
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
    viewer: Allowed<ManageAccounts>,
    Json(body): Json<Organisation>,
) -> Result<Json<Organisation>, ApiError> {
    if body.name.trim().is_empty() || !matches!(body.kind.as_str(), "service" | "customer") {
        return Err(ApiError::BadRequest("an organisation needs a name and kind service or customer".into()));
    }
    let mut tx = viewer.begin().await?;
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
    /// Whether they were disabled (they cannot sign in).
    pub disabled: bool,
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
pub(crate) async fn list_users(viewer: Allowed<ManageAccounts>) -> Result<Json<Vec<UserSummary>>, ApiError> {
    let mut tx = viewer.begin().await?;
    Ok(Json(
        sqlx::query_as(
            "select id, login, name, role, organisation_id, language, password_hash is not null as active,
                    disabled_at is not null as disabled
             from users order by id",
        )
        .fetch_all(&mut *tx)
        .await?,
    ))
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
    let mut tx = viewer.begin().await?;
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
    viewer: Allowed<ManageAccounts>,
    Path(user_id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin().await?;
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
    viewer: Allowed<ManageAccounts>,
    Path(gateway_id): Path<String>,
    Json(body): Json<SiteOwner>,
) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin().await?;
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
pub(crate) async fn list_tokens(viewer: Allowed<Read>) -> Result<Json<Vec<TokenSummary>>, ApiError> {
    let user = own_user(&viewer)?;
    Ok(Json(
        sqlx::query_as(
            "select id, name, created_at, last_used_at from api_tokens where user_id = $1 and revoked_at is null
             order by id",
        )
        .bind(user)
        .fetch_all(&mut *viewer.begin().await?)
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
    viewer: Allowed<Read>,
    Json(body): Json<NewToken>,
) -> Result<Json<TokenSecret>, ApiError> {
    let user = own_user(&viewer)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest("a token needs a name of at most 100 characters".into()));
    }
    let secret = random_secret();
    let mut tx = viewer.begin().await?;
    let id: i64 =
        sqlx::query_scalar("insert into api_tokens (user_id, name, token_hash) values ($1, $2, $3) returning id")
            .bind(user)
            .bind(name)
            .bind(digest(&secret))
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
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
pub(crate) async fn revoke_token(viewer: Allowed<Read>, Path(token_id): Path<i64>) -> Result<StatusCode, ApiError> {
    let user = own_user(&viewer)?;
    let mut tx = viewer.begin().await?;
    let revoked =
        sqlx::query("update api_tokens set revoked_at = now() where id = $1 and user_id = $2 and revoked_at is null")
            .bind(token_id)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
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
pub(crate) async fn list_audit(viewer: Allowed<ManageAccounts>) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let mut tx = viewer.begin().await?;
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

async fn invitation_user(system: &System, secret: &str) -> Result<Option<(i64, String)>, ApiError> {
    Ok(sqlx::query_as(
        "select u.id, u.name from invitations i join users u on u.id = i.user_id
         where i.token_hash = $1 and i.used_at is null and i.expires_at > now()",
    )
    .bind(digest(secret))
    .fetch_optional(&system.db)
    .await?)
}

async fn invitation_page(system: System, Path(secret): Path<String>) -> Result<Response, ApiError> {
    Ok(match invitation_user(&system, &secret).await? {
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
    system: System,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(secret): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, ApiError> {
    let Some((user, _)) = invitation_user(&system, &secret).await? else {
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
    let mut tx = system.db.begin().await?;
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
    audit(&system.db, None, &format!("user {user}"), "invitation", "", "ok", &peer.ip().to_string()).await;
    Ok(invitation_html(StatusCode::OK, "Your password is set. Sign in with it.", false))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, header};

    use super::*;

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
