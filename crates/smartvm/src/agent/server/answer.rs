//! How a handler fails: a smartvm error (HTTP status and [`ErrorBody`] from its code) or a
//! refusal, always with a JSON body carrying the code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::agent::wire::ErrorBody;
use crate::config::ConfigErrors;
use crate::error::SmartVmError;

/// An error answer: the status follows the error's code, unless the HTTP layer itself refused
/// (413, 415, 405), which keeps its own status and still answers with a coded body.
pub(super) enum Failure {
    Error(SmartVmError),
    Status(StatusCode, SmartVmError),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Failure::Error(e) => {
                let (status, body) = ErrorBody::of(e);
                (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
            }
            Failure::Status(status, e) => (*status, ErrorBody::of(e).1),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// A body refused by the HTTP layer (too large, unreadable), as an answer.
fn body_refused(rejection: axum::extract::rejection::BytesRejection) -> Failure {
    let e = SmartVmError::from(ConfigErrors::single("<body>", rejection.body_text()));
    Failure::Status(rejection.status(), e)
}

/// The raw request body, its refusal an answer like any other.
pub(super) struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = Failure;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Failure> {
        axum::body::Bytes::from_request(request, state).await.map(RawBody).map_err(body_refused)
    }
}

/// A VM id from the path; one that is not text is no VM's (404).
pub(super) struct VmId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for VmId {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Failure> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| VmId(id))
            .map_err(|_| Failure::Error(SmartVmError::VmNotFound { id: "(not text)".into() }))
    }
}

/// A pool name from the path; one that is not text is no pool's (404).
pub(super) struct PoolName(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PoolName {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Failure> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(name)| PoolName(name))
            .map_err(|_| Failure::Error(SmartVmError::PoolNotFound { name: "(not text)".into() }))
    }
}

/// Query parameters; unreadable ones are 422 naming the query.
pub(super) struct QueryOf<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryOf<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Failure> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryOf(q))
            .map_err(|e| Failure::Error(ConfigErrors::single("<query>", e.body_text()).into()))
    }
}

/// Requests with a body must say it is JSON (415 otherwise).
pub(super) fn require_json(headers: &axum::http::HeaderMap) -> Result<(), Failure> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if json {
        return Ok(());
    }
    let e = SmartVmError::from(ConfigErrors::single("<body>", "must be application/json"));
    Err(Failure::Status(StatusCode::UNSUPPORTED_MEDIA_TYPE, e))
}

impl From<SmartVmError> for Failure {
    fn from(e: SmartVmError) -> Self {
        Failure::Error(e)
    }
}

/// A handler's result.
pub(super) type Answer<T> = Result<T, Failure>;

/// A JSON request body (`application/json`, else 415) whose refusal is an answer like any
/// other (422 `INVALID_CONFIG` naming the body), never axum's plain-text rejection.
pub(super) struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Failure> {
        require_json(request.headers())?;
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(body_refused)?;
        let refused = |message: String| Failure::from(SmartVmError::from(ConfigErrors::single("<body>", message)));
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| refused(e.to_string()))
    }
}

/// The answer for a path no route serves (404) or a method the path does not take (405).
pub(super) async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Failure {
    let known = super::super::Route::ALL.iter().any(|r| {
        let template: Vec<&str> = r.template().split('/').collect();
        let path: Vec<&str> = uri.path().split('/').collect();
        template.len() == path.len() && template.iter().zip(&path).all(|(t, p)| t == p || t.starts_with('{'))
    });
    let (status, what) = match known {
        true => (StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not served on {}", uri.path())),
        false => (StatusCode::NOT_FOUND, format!("no route {}", uri.path())),
    };
    Failure::Status(status, SmartVmError::NoSuchRoute(what))
}
