//! The HTTP kit every feature's routes are built from: the error type, the state handlers
//! share, the extractors that say who a request runs as ([`Allowed`]) or that it acts for the
//! system ([`System`]), lanes for costly requests, and the listener.
//!
//! Isolation is held by the types: API routes are a `Router<AppState>`, and [`AppState`] holds
//! no pool at all. A handler reaches the database through its viewer ([`Allowed::begin`]: the
//! `chillcloud_api` role under row security, scoped to the viewer's sites). Only routes built on
//! [`SystemState`] (health, webhooks, signed links, signing in) can take [`System`], the owner's
//! pool; a handler that names it does not compile on the API router.

mod auth;
mod error;
mod lane;
mod listener;

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;

pub use self::{
    auth::{
        Acknowledge, Allowed, CSRF_HEADER, ConfigureGateways, DraftReports, ManageAccounts, ManagePaging, ManageRules,
        Need, Operate, ProvisionGateways, Read, ReadPaging, ReadTickets, SESSION_COOKIE, Share, System, WorkTickets,
        authenticate, cookie,
    },
    error::{ApiError, ErrorBody},
    lane::{InLane, Lane, body_in_lane},
    listener::serve,
};
use crate::{live::Live, metrics::Metrics};

/// What API handlers share. It holds no database pool: see [`Allowed::begin`].
#[derive(Clone)]
pub struct AppState {
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The database as API requests see it: the `chillcloud_api` role under row security,
    /// reached only through a viewer.
    api_pool: PgPool,
    /// Failed sign-ins, for the rate limit.
    pub sign_ins: Arc<crate::accounts::sign_in::SignInLimiter>,
    /// Readings as they are committed, for live pages.
    pub live: Live,
    /// The alarm engine, told when rules change.
    pub alarms: crate::alarms::Alarms,
    /// Paging: providers, link secret, public URL.
    pub paging: crate::paging::Paging,
    /// The link to gateways: commands and poll boosts, published by ingest's MQTT client.
    pub gateways: crate::gateway_link::GatewayLink,
    /// History queries and exports: 2 at once, 1 per customer, waiting up to 10 s. Each can keep
    /// a runtime worker and a database connection busy for a second or two: the API pool has 8
    /// connections and the runtime a worker per core, so most stay for everything else.
    pub history_lane: Arc<Lane>,
    /// Live streams: 1,000 at once, 100 per customer.
    pub live_lane: Arc<Lane>,
    /// SMS replies quoting codes nobody was sent, per number.
    pub wrong_codes: Arc<crate::paging::WrongCodes>,
    /// Where history's buckets come from.
    pub storage: crate::timescale::StorageMode,
    /// This replica and the partitions it owns.
    pub ownership: crate::partitions::Ownership,
    /// The brokers provisioned gateways are given, and the ids they may not have.
    pub provisioning: crate::gateway_config::provision::Provisioning,
}

/// The state of routes that act for the system: the API's state and the owner's pool.
#[derive(Clone)]
pub struct SystemState {
    /// What API handlers share.
    pub app: AppState,
    /// The database as its owner: no row security.
    owner: PgPool,
    /// The operator's bearer token.
    api_token: Arc<str>,
}

/// The API pool, as [`Allowed`] takes it from either state: only the pool is cloned per
/// request, not the whole state, and nothing outside this module can open it.
#[derive(Clone)]
pub struct ApiPool(PgPool);

impl FromRef<AppState> for ApiPool {
    fn from_ref(state: &AppState) -> Self {
        Self(state.api_pool.clone())
    }
}

impl FromRef<SystemState> for ApiPool {
    fn from_ref(state: &SystemState) -> Self {
        Self(state.app.api_pool.clone())
    }
}

impl FromRef<SystemState> for AppState {
    fn from_ref(state: &SystemState) -> Self {
        state.app.clone()
    }
}

impl SystemState {
    /// The state of a server: `owner` is the database as its owner, `api_pool` as the
    /// `chillcloud_api` role.
    #[allow(clippy::too_many_arguments, reason = "each is one of the services handlers share")]
    pub fn new(
        owner: PgPool,
        api_pool: PgPool,
        api_token: Arc<str>,
        metrics: Arc<Metrics>,
        live: Live,
        alarms: crate::alarms::Alarms,
        paging: crate::paging::Paging,
        gateways: crate::gateway_link::GatewayLink,
        storage: crate::timescale::StorageMode,
        ownership: crate::partitions::Ownership,
        provisioning: crate::gateway_config::provision::Provisioning,
    ) -> Self {
        let (history_lane, live_lane) = lanes();
        let app = AppState {
            metrics,
            api_pool,
            sign_ins: Arc::default(),
            live,
            alarms,
            paging,
            gateways,
            history_lane,
            live_lane,
            wrong_codes: Arc::default(),
            storage,
            ownership,
            provisioning,
        };
        Self { app, owner, api_token }
    }
}

/// The lanes of a server: see [`AppState::history_lane`] and [`AppState::live_lane`].
fn lanes() -> (Arc<Lane>, Arc<Lane>) {
    (
        Arc::new(Lane::new("history requests", 2, 1, std::time::Duration::from_secs(10))),
        Arc::new(Lane::new("live streams", 1_000, 100, std::time::Duration::ZERO)),
    )
}

/// A list's `limit` parameter: `default` when absent, else 1 to `max`.
pub fn limit(given: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = given.unwrap_or(default);
    if (1..=max).contains(&limit) { Ok(limit) } else { Err(ApiError::BadRequest(format!("limit must be 1 to {max}"))) }
}

/// `Ok` when the transaction sees the site (gateway), else 404 (also for an id no gateway can
/// have, which never reaches the database).
pub async fn require_site(db: &mut sqlx::PgConnection, gateway: &str) -> Result<(), ApiError> {
    chillcloud_proto::GatewayId::new(gateway).map_err(|_| ApiError::NotFound)?;
    let seen: bool =
        sqlx::query_scalar("select exists (select 1 from gateways where id = $1)").bind(gateway).fetch_one(db).await?;
    if seen { Ok(()) } else { Err(ApiError::NotFound) }
}

/// `Ok` when the transaction sees the unit, else 404.
pub async fn require_unit(db: &mut sqlx::PgConnection, unit_id: i64) -> Result<(), ApiError> {
    let seen: bool =
        sqlx::query_scalar("select exists (select 1 from units where id = $1)").bind(unit_id).fetch_one(db).await?;
    if seen { Ok(()) } else { Err(ApiError::NotFound) }
}
