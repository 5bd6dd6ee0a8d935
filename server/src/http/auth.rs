//! Who a request runs as: [`authenticate`] finds the viewer of an API request, [`Allowed`] checks
//! their role and opens their scoped transaction, [`System`] is the owner's pool for the routes
//! that act for the system.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts, Request, State},
    http::{HeaderMap, Method, header, request::Parts},
    middleware::Next,
    response::Response,
};
use sqlx::{PgPool, Postgres, Transaction};

use super::{ApiError, ApiPool, SystemState};
use crate::{
    accounts::{Permission, SessionRow, UserRow, Viewer, audit},
    secrets::{constant_time_eq, digest},
};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "chillcloud_session";
/// The header that must carry the session's CSRF token on every request that changes something.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
needs!(
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
    DraftReports,
    ConfigureGateways,
    ProvisionGateways
);

/// The viewer of a request whose role allows `P` (otherwise the request is refused with 403),
/// and the database as they may see it.
#[derive(Debug)]
pub struct Allowed<P> {
    viewer: Viewer,
    api_pool: PgPool,
    need: std::marker::PhantomData<P>,
}

impl<P> Allowed<P> {
    /// A transaction that sees only the viewer's sites (see [`Viewer::begin`]). Taken when the
    /// handler needs it, so a request waiting for its turn in a lane holds no connection.
    pub async fn begin(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.viewer.begin(&self.api_pool).await
    }
}

impl<P> std::ops::Deref for Allowed<P> {
    type Target = Viewer;
    fn deref(&self) -> &Viewer {
        &self.viewer
    }
}

impl<S: Send + Sync, P: Need> FromRequestParts<S> for Allowed<P>
where
    ApiPool: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let viewer = parts.extensions.get::<Viewer>().cloned().ok_or(ApiError::Unauthorized)?;
        if !viewer.role.may(P::WHAT) {
            return Err(ApiError::Forbidden);
        }
        Ok(Self { viewer, api_pool: ApiPool::from_ref(state).0, need: std::marker::PhantomData })
    }
}

/// The owner's pool, for a route that acts for the system rather than for a viewer: health,
/// webhooks, signed links, signing in and taking up an invitation. Only routes on
/// [`SystemState`] can take it: a handler of the API router that names it does not compile.
///
/// ```compile_fail,E0277
/// use chillcloud_server::http::{AppState, System};
/// async fn handler(_: System) {}
/// let _: axum::Router<AppState> = axum::Router::new().route("/", axum::routing::get(handler));
/// ```
///
/// while the same handler with a viewer does:
///
/// ```
/// use chillcloud_server::http::{AppState, Allowed, Read};
/// async fn handler(_: Allowed<Read>) {}
/// let _: axum::Router<AppState> = axum::Router::new().route("/", axum::routing::get(handler));
/// ```
#[derive(Debug)]
pub struct System {
    /// The database as its owner: no row security.
    pub db: PgPool,
}

impl FromRequestParts<SystemState> for System {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, state: &SystemState) -> Result<Self, Self::Rejection> {
        Ok(Self { db: state.owner.clone() })
    }
}

/// Who presents this request: the operator's or an API token, or a session cookie.
async fn identify(state: &SystemState, headers: &HeaderMap) -> Result<Option<Viewer>, ApiError> {
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
        .fetch_optional(&state.owner)
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
    .fetch_optional(&state.owner)
    .await?;
    Ok(row.and_then(|row| row.user.viewer(Some(row.csrf_token))))
}

/// The middleware of `/api/v1`: 401 without credentials; 403 for a cookie session's change
/// without its CSRF token; every change is written to the audit log with its outcome.
pub async fn authenticate(
    State(state): State<SystemState>,
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
            audit(&state.owner, Some(&viewer), &viewer.actor(), &action, "", "403 without its CSRF token", &address)
                .await;
            return Err(ApiError::Forbidden);
        }
    }
    request.extensions_mut().insert(viewer.clone());
    let mut response = next.run(request).await;
    if change {
        let outcome = response.status().as_u16().to_string();
        audit(&state.owner, Some(&viewer), &viewer.actor(), &action, "", &outcome, &address).await;
    }
    // What one person may see is not for a shared cache.
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The value of the cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}
