//! How a handler fails: a smartvm error (HTTP status and [`ErrorBody`] from its code) or a
//! refusal, always with a JSON body carrying the code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::agent::wire::ErrorBody;
use crate::config::ConfigErrors;
use crate::error::ErrorCode;
use crate::SmartVmError;

/// An error answer.
pub(super) enum Failure {
    Error(SmartVmError),
    /// 403 `PERMISSION_DENIED`.
    Forbidden(&'static str),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Failure::Error(e) => ErrorBody::of(e),
            Failure::Forbidden(message) => {
                (403, ErrorBody { code: ErrorCode::PermissionDenied, message: (*message).into(), problems: Vec::new() })
            }
        };
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response()
    }
}

impl From<SmartVmError> for Failure {
    fn from(e: SmartVmError) -> Self {
        Failure::Error(e)
    }
}

/// A handler's result.
pub(super) type Answer<T> = Result<T, Failure>;

/// A JSON request body whose refusal is an answer like any other (422 `INVALID_CONFIG` naming
/// the body, with the JSON error), never axum's plain-text rejection. The content type is not
/// required: the socket speaks JSON only.
pub(super) struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Failure> {
        let refused = |message: String| Failure::from(SmartVmError::from(ConfigErrors::single("<body>", message)));
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|e| refused(e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| refused(e.to_string()))
    }
}
