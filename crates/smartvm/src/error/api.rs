//! [`ApiError`]: what can go wrong on the wire to a Firecracker API socket.

use std::path::PathBuf;

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The socket could not be connected.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// HTTP handshake, send or receive failed.
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    /// The request could not be built (bad path).
    #[error("invalid request")]
    Request(#[source] hyper::http::Error),
    /// The answer was not UTF-8.
    #[error("answer body is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    /// The body could not be encoded as JSON.
    #[error("cannot encode the request body")]
    Encode(#[source] serde_json::Error),
    /// The answer could not be decoded into the endpoint's type.
    #[error("cannot decode the answer {body:?}")]
    Decode {
        /// The body received.
        body: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// No connection could be kept.
    #[error("no connection")]
    NotConnected,
}

impl ApiError {
    pub(crate) fn is_closed_connection(&self) -> bool {
        matches!(self, ApiError::Http(e) if e.is_closed() || e.is_canceled() || e.is_incomplete_message())
    }
}
