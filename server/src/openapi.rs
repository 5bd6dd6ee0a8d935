//! The OpenAPI document of the JSON API, generated from the handlers' `#[utoipa::path]` annotations
//! and served without authentication at `GET /api/v1/openapi.json`.

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        self, RefOr,
        response::{Response, ResponseBuilder},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
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
    paths(
        openapi_json,
        crate::api::list_units,
        crate::api::unit_detail,
        crate::api::rename_unit,
        crate::api::unit_history,
        crate::api::unit_live,
        crate::api::point_history,
        crate::alarms::api::list,
        crate::alarms::api::events,
        crate::alarms::api::detail,
        crate::alarms::api::acknowledge,
        crate::alarms::api::shelve,
        crate::alarms::api::unit_rules,
        crate::alarms::api::put_unit_rule,
        crate::alarms::api::delete_unit_rule,
        crate::alarms::api::site_rules,
        crate::alarms::api::put_site_rule,
        crate::alarms::api::delete_site_rule,
        crate::alarms::api::list_maintenance,
        crate::alarms::api::add_maintenance,
        crate::paging::api::list_people,
        crate::paging::api::add_person,
        crate::paging::api::list_contacts,
        crate::paging::api::add_contact,
        crate::paging::api::set_site_paging,
        crate::paging::api::add_rotation,
        crate::paging::api::add_override,
        crate::paging::api::list_outbox,
        crate::tickets::list,
        crate::tickets::open_by_hand,
        crate::tickets::metrics,
        crate::tickets::detail,
        crate::tickets::act,
        crate::accounts::sign_in,
        crate::accounts::current,
        crate::accounts::sign_out,
        crate::accounts::list_organisations,
        crate::accounts::add_organisation,
        crate::accounts::list_users,
        crate::accounts::invite_user,
        crate::accounts::disable_user,
        crate::accounts::set_site_owner,
        crate::accounts::list_tokens,
        crate::accounts::add_token,
        crate::accounts::revoke_token,
        crate::accounts::list_audit,
        crate::share::list,
        crate::share::create,
        crate::share::revoke,
        crate::commands::send,
        crate::commands::detail,
        crate::commands::list,
    ),
    modifiers(&Security, &CommonResponses),
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
pub async fn openapi_json() -> Json<openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

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
                crate::accounts::SESSION_COOKIE,
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
        let error = |description: &str| -> RefOr<Response> {
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
        RefOr::Ref(openapi::Ref::from_schema_name(<Self as ToSchema>::name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, path)` of every route the sources register under `/api/v1`: paths inside a
    /// `routes()` function (nested under `/api/v1`) or inside `api::router`'s `let api` block,
    /// and absolute paths starting with `/api/v1`.
    fn registered_routes() -> Vec<(String, String)> {
        let sources = [
            include_str!("api.rs"),
            include_str!("alarms/api.rs"),
            include_str!("paging/api.rs"),
            include_str!("tickets.rs"),
            include_str!("accounts.rs"),
            include_str!("share.rs"),
            include_str!("commands.rs"),
        ];
        let mut routes = Vec::new();
        for source in sources {
            let mut function = "";
            let mut in_api_block = false;
            for line in source.lines() {
                let trimmed = line.trim();
                if let Some(rest) = trimmed.strip_prefix("pub fn ").or_else(|| trimmed.strip_prefix("fn ")) {
                    function = rest.split('(').next().unwrap_or_default();
                }
                if trimmed.starts_with("let api = Router::new()") {
                    in_api_block = true;
                }
                // One `.route("<path>", <method>(handler)...)` or more on a line.
                for route in trimmed.split(".route(\"").skip(1) {
                    let (path, calls) = route.split_once('"').expect("a path literal");
                    let path = if path.starts_with("/api/v1") {
                        path.to_owned()
                    } else if function == "routes" || in_api_block {
                        format!("/api/v1{path}")
                    } else {
                        continue;
                    };
                    for method in ["get", "post", "put", "delete", "patch"] {
                        if calls.contains(&format!("{method}(")) {
                            routes.push((method.to_owned(), path.clone()));
                        }
                    }
                }
                if in_api_block && trimmed.ends_with(';') {
                    in_api_block = false;
                }
            }
        }
        routes.sort();
        routes
    }

    #[test]
    fn the_document_lists_every_api_route_and_nothing_else() {
        let document = serde_json::to_value(ApiDoc::openapi()).expect("serialises");
        let mut documented = Vec::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let registered = registered_routes();
        assert!(registered.len() > 40, "the route scan found only {registered:?}");
        assert_eq!(documented, registered, "documented (left) and registered (right) routes differ");
    }

    #[test]
    fn the_document_parses_and_declares_both_credentials() {
        let text = ApiDoc::openapi().to_pretty_json().expect("serialises");
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
