//! The server's routes, and the OpenAPI document built from the same list: each feature's
//! `routes()` (for viewers, behind [`authenticate`]) and `system_routes()` (acting for the
//! system) are merged here, and what they annotate with `#[utoipa::path]` is what the document
//! at `GET /api/v1/openapi.json` lists.
//!
//! One handler per `routes!(...)`: utoipa-axum routes every handler of one call on every path
//! they declare, so grouping two paths in one call would serve each handler on both.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, RefOr,
        response::{Response as ApiResponse, ResponseBuilder},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::{ApiError, AppState, ErrorBody, System, SystemState, authenticate};

/// Every route of the server, on `state`.
pub fn router(state: SystemState) -> Router {
    let (routes, built) = split(Some(state.clone()));
    // Built with the routes: the document served is the one they were built from.
    DOCUMENT.get_or_init(|| built);
    routes
        .merge(crate::ui::routes())
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.app.clone(), security_headers))
        .with_state(state)
}

/// The OpenAPI document of the routes.
pub fn document() -> openapi::OpenApi {
    split(None).1
}

/// The routes (their authentication wired to `state`'s; none to only read the document) and
/// their document.
fn split(state: Option<SystemState>) -> (Router<SystemState>, openapi::OpenApi) {
    let for_viewers = OpenApiRouter::<AppState>::new()
        .merge(crate::units::api::routes())
        .merge(crate::alarms::api::routes())
        .merge(crate::paging::api::routes())
        .merge(crate::tickets::api::routes())
        .merge(crate::accounts::api::routes())
        .merge(crate::share::api::routes())
        .merge(crate::commands::api::routes())
        .merge(crate::doctor::api::routes())
        .merge(crate::gateway_config::api::routes());
    let for_viewers = match &state {
        Some(state) => for_viewers.route_layer(middleware::from_fn_with_state(state.clone(), authenticate)),
        None => for_viewers,
    };
    let for_viewers: OpenApiRouter<SystemState> = match state {
        Some(state) => for_viewers.with_state(state.app),
        // Only the document is wanted: a router with no routes stands in for the handlers.
        None => OpenApiRouter::with_openapi(for_viewers.into_openapi()),
    };
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(for_viewers)
        .merge(crate::paging::api::system_routes())
        .merge(crate::tickets::api::system_routes())
        .merge(crate::accounts::api::system_routes())
        .merge(crate::share::api::system_routes())
        .split_for_parts();
    CommonResponses.modify(&mut document);
    (router, document)
}

/// The JSON API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chillcloud",
        version = env!("CARGO_PKG_VERSION"),
        description = "Chiller telemetry: units, latest values and history, alarms and rules, paging, service \
                       tickets, accounts. Every operation but signing in needs a bearer token (the operator's or \
                       an API token) or a session cookie; a session's changes carry its `X-CSRF-Token`."
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "units", description = "Units, their latest values, live readings and history"),
        (name = "alarms", description = "Alarms, their event stream, rules and maintenance windows"),
        (name = "paging", description = "People, site contacts, rotations, paging policies and the outbox"),
        (name = "tickets", description = "Service tickets"),
        (name = "accounts", description = "Sign-in, organisations, users, API tokens and the audit log"),
    )
)]
pub struct ApiDoc;

/// The document as served.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "units",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Json<&'static openapi::OpenApi> {
    Json(DOCUMENT.get_or_init(document))
}

/// The document [`router`] built, served by [`openapi_json`].
static DOCUMENT: std::sync::OnceLock<openapi::OpenApi> = std::sync::OnceLock::new();

/// The two ways to present credentials.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The operator's token (`--api-token`) or an API token (`POST /api/v1/tokens`)"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::http::SESSION_COOKIE,
                "The cookie `POST /api/v1/session` sets; every change also needs the session's `X-CSRF-Token` header",
            ))),
        );
    }
}

/// Answers that operations give for reasons of their own kind, added to each: 401 without valid
/// credentials and 403 for a change a session makes without its CSRF token (operations behind
/// authentication), 415 for a body that is not JSON, and 503 when the database fails.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let error = |description: &str| -> RefOr<ApiResponse> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    openapi::ContentBuilder::new().schema(Some(ErrorBody::schema_ref())).build(),
                )
                .build()
                .into()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (operation, change) in operations {
                let Some(operation) = operation else { continue };
                // Operations with their own security list (signing in, this document) need none.
                let authenticated = operation.security.is_none();
                let responses = &mut operation.responses.responses;
                if authenticated {
                    responses.entry("401".into()).or_insert_with(|| error("No or an invalid bearer token or session"));
                    if change {
                        responses.entry("403".into()).or_insert_with(|| {
                            error("Not allowed: the viewer's role may not, or a session's change lacked X-CSRF-Token")
                        });
                    }
                }
                if operation.request_body.is_some() {
                    responses
                        .entry("415".into())
                        .or_insert_with(|| error("The body is not sent as Content-Type: application/json"));
                }
                responses.entry("503".into()).or_insert_with(|| error("The database is unavailable; try again"));
            }
        }
    }
}

impl ErrorBody {
    /// A reference to this schema in the document's components.
    fn schema_ref() -> RefOr<openapi::schema::Schema> {
        RefOr::Ref(openapi::Ref::from_schema_name(<Self as utoipa::ToSchema>::name()))
    }
}

/// 200 while the database answers (503 otherwise), with whether ingest is subscribed at the
/// broker: `"broker": "subscribed"` or `"waiting"` (connecting, or the broker is down). A
/// broker outage does not fail the check: the server rides it out by itself. Storage trouble
/// (a failing TimescaleDB job, compression behind, a filling disk) makes the status `degraded`
/// and is listed under `storage`: the server still works, and the service team is paged.
async fn health(State(state): State<AppState>, system: System) -> Result<Response, ApiError> {
    sqlx::query("select 1").execute(&system.db).await?;
    let broker = if state.metrics.broker_subscribed.get() == 1.0 { "subscribed" } else { "waiting" };
    let storage = state.metrics.storage.troubles();
    // A broker restart or a database hiccup is ridden out; ingest stuck for longer is not.
    let stall = state.metrics.ingest.longest(Utc::now().timestamp_millis());
    let (code, status, ingest) = match stall {
        Some((stall, lasted_ms)) if lasted_ms >= INGEST_STALLED_AFTER_MS => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            format!("stalled for {} s: {}", lasted_ms / 1000, stall.name()),
        ),
        _ if !storage.is_empty() => (StatusCode::OK, "degraded", "ok".to_owned()),
        _ => (StatusCode::OK, "ok", "ok".to_owned()),
    };
    let storage = if storage.is_empty() { serde_json::json!("ok") } else { serde_json::json!(storage) };
    Ok((
        code,
        Json(serde_json::json!({
            "status": status,
            "broker": broker,
            "ingest": ingest,
            "storage": storage,
            "mode": state.storage.to_string(),
            "replica": state.ownership.replica(),
            "partitions": state.ownership.owned(),
        })),
    )
        .into_response())
}

/// How long ingest may be unable to progress before `/health` says the server is unhealthy and a
/// service alarm is raised.
pub const INGEST_STALLED_AFTER_MS: i64 = 30_000;

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// The policy of the server-rendered pages (acknowledgement, feedback, invitation, share) that
/// do not set their own: no script, nothing loaded from elsewhere, forms only to this server,
/// never inside another site's frame.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Headers every answer carries: no content sniffing, no referrer (links carry tokens), a page
/// policy for HTML without one (and no framing for any), and HSTS when people reach the server
/// over HTTPS.
async fn security_headers(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    use axum::http::HeaderValue;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    headers.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("no-referrer"));
    let html = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if html {
        let policy = match headers.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()) {
            None => Some(PAGE_POLICY.to_owned()),
            Some(own) if !own.contains("frame-ancestors") => Some(format!("{own}; frame-ancestors 'none'")),
            Some(_) => None,
        };
        if let Some(policy) = policy.and_then(|p| HeaderValue::from_str(&p).ok()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
    }
    if state.paging.public_url.starts_with("https://") {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// Answers axum's own refusals under `/api/v1` (a malformed path or query parameter or JSON
/// body: 400, 415 or 422 in plain text) as the API's other errors are: `{"error": "..."}`.
async fn json_errors(request: axum::extract::Request, next: middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/v1/");
    let response = next.run(request).await;
    let plain = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(api && plain && response.status().is_client_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    (parts.status, Json(serde_json::json!({ "error": String::from_utf8_lossy(&text) }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the document but signing in and the document itself needs a viewer: a
    /// request without credentials is refused with 401 before any handler or database is
    /// reached. A route that acts for the system but was documented as an API operation, or a
    /// viewer's route left outside `authenticate`, would answer otherwise.
    #[tokio::test]
    async fn every_documented_operation_but_signing_in_needs_credentials() {
        use tower_service::Service as _;
        let nowhere =
            sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("pool");
        let paging = crate::paging::Paging::load(None, b"secret".to_vec(), "http://127.0.0.1".into()).expect("paging");
        let (alarms, _inputs) = crate::alarms::channel();
        let (gateways, _messages) = crate::gateway_link::GatewayLink::new();
        let nowhere_owner = nowhere.clone();
        let state = SystemState::new(
            nowhere.clone(),
            nowhere,
            "operator-token".into(),
            Default::default(),
            Default::default(),
            alarms,
            paging,
            gateways,
            crate::timescale::StorageMode::Plain,
            crate::partitions::Leases::new(nowhere_owner, "test".into()).1,
            crate::gateway_config::provision::Provisioning {
                brokers: ["127.0.0.1:1883".to_owned()].into(),
                reserved: [].into(),
            },
        );
        let mut router = router(state);
        let document = serde_json::to_value(document()).expect("serialises");
        let mut public = Vec::new();
        let mut checked = 0;
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                if operation["security"] == serde_json::json!([{}]) {
                    public.push(format!("{method} {path}"));
                    continue;
                }
                let concrete: String = path
                    .split('/')
                    .map(|part| if part.starts_with('{') { "1" } else { part })
                    .collect::<Vec<_>>()
                    .join("/");
                let mut request = axum::http::Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .body(axum::body::Body::empty())
                    .expect("request");
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
                let answer = router.call(request).await.expect("infallible");
                assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{method} {concrete}");
                checked += 1;
            }
        }
        assert!(checked > 45, "only {checked} operations checked");
        public.sort();
        assert_eq!(public, ["get /api/v1/openapi.json", "post /api/v1/session"]);
    }

    #[test]
    fn the_document_parses_and_declares_both_credentials() {
        let text = document().to_pretty_json().expect("serialises");
        let document: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["title"], "Chillcloud");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(document["security"], serde_json::json!([{"bearer": []}, {"session": []}]));
        assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(document["components"]["securitySchemes"]["session"]["in"], "cookie");
        assert_eq!(document["components"]["securitySchemes"]["session"]["name"], "chillcloud_session");
        // Every reference resolves.
        for reference in text.lines().filter_map(|line| line.trim().strip_prefix("\"$ref\": \"#/components/schemas/")) {
            let name = reference.trim_end_matches([',', '"']);
            assert!(document["components"]["schemas"][name].is_object(), "{name} is referenced but not defined");
        }
        let sign_in = &document["paths"]["/api/v1/session"]["post"];
        assert_eq!(sign_in["security"], serde_json::json!([{}]), "signing in needs no credentials");
        assert!(sign_in["responses"]["429"].is_object());
        let live = &document["paths"]["/api/v1/units/{unit_id}/live"]["get"]["responses"]["200"]["content"];
        assert!(live["text/event-stream"].is_object(), "{live}");
        assert!(document["paths"]["/api/v1/units"]["get"]["responses"]["401"].is_object());
    }
}
