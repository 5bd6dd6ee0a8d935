//! The API's one error type and the body of every error answer.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

/// The one error type of the API. Each variant documents its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no or a wrong token or session, or a failed sign-in.
    #[error("sign in, or present a valid bearer token")]
    Unauthorized,
    /// 403: the viewer's role may not do this, or a session's change lacked its CSRF token.
    #[error("not allowed")]
    Forbidden,
    /// 429: too many failed sign-ins; try again later.
    #[error("too many failed sign-ins; try again in 15 minutes")]
    TooManyRequests,
    /// 404: no such unit or point.
    #[error("not found")]
    NotFound,
    /// 400: the request's parameters are invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// 422: the request asks for more than one answer may hold (rows, bytes); it says how to ask
    /// for less.
    #[error("{0}")]
    TooMuch(String),
    /// 503 with `Retry-After`: as many such requests as the server takes at once are under way.
    #[error("too many {0} under way; try again shortly")]
    Busy(&'static str),
    /// 500: a bug; logged, never shown to the client.
    #[error("internal error")]
    Internal(String),
    /// 503: the database failed; logged, never shown to the client.
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMuch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(error) => {
                tracing::error!(%error, "internal error while serving a request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Busy(_) => {
                let body = Json(serde_json::json!({ "error": self.to_string() }));
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "2")], body).into_response();
            }
            ApiError::Database(error) => {
                if let Some((status, message)) = refused_input(error) {
                    tracing::info!(%error, "the database refused a request's input");
                    return (status, Json(serde_json::json!({ "error": message }))).into_response();
                }
                tracing::error!(%error, "database error while serving a request");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// What the database refused about a request's own input (a value it cannot store, a reference
/// to nothing, a duplicate), as the status and message to answer with: bad input, not a failed
/// database. Other errors are not the request's fault.
fn refused_input(error: &sqlx::Error) -> Option<(StatusCode, &'static str)> {
    let code = error.as_database_error()?.code()?;
    Some(match code.as_ref() {
        // invalid_byte_sequence (a NUL character), untranslatable_character (\u0000 in JSON)
        "22021" | "22P05" => (StatusCode::BAD_REQUEST, "text must not contain NUL characters"),
        "22003" => (StatusCode::BAD_REQUEST, "a number is out of range"),
        "22008" => (StatusCode::BAD_REQUEST, "a time is out of range"),
        "22001" => (StatusCode::BAD_REQUEST, "a text is too long"),
        "23514" => (StatusCode::BAD_REQUEST, "a value is not one of those allowed"),
        "23503" => (StatusCode::CONFLICT, "it refers to something that does not exist, or something refers to it"),
        "23505" => (StatusCode::CONFLICT, "it exists already"),
        _ => return None,
    })
}
