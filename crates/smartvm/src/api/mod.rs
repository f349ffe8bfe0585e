//! The Firecracker API client: HTTP/1.1 over the VM's Unix socket (hyper), with keep-alive,
//! per-request timeouts and typed endpoints.
//!
//! Two levels: raw [`ApiClient::get`]/[`put`](ApiClient::put)/[`patch`](ApiClient::patch) return
//! an [`ApiResponse`] whatever the status (as the seed's `SocketClient` does), and
//! [`ApiClient::send`] takes any typed [`Endpoint`], turns a non-2xx answer into
//! `SmartVmError::Api` carrying the status and Firecracker's `fault_message`, and decodes the
//! answer into the endpoint's response type.

mod endpoints;
mod transport;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use crate::error::ApiError;
pub use endpoints::*;

use crate::backoff::Backoff;
use crate::error::{Result, SmartVmError};
use transport::Connection;

/// HTTP method of an endpoint (the `http` crate's).
pub use http::Method;

/// One typed API endpoint: its method, path, body and response type.
pub trait Endpoint {
    /// What a success answer decodes to (`()` for 204 No Content).
    type Response: DeserializeOwned;
    /// HTTP method.
    const METHOD: Method;
    /// Request path, e.g. `/drives/rootfs`.
    fn path(&self) -> String;
    /// JSON body, if the endpoint takes one.
    fn body(&self) -> std::result::Result<Option<Vec<u8>>, serde_json::Error>;
}

/// A raw answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// `status_code` is 2xx.
    pub ok: bool,
    /// HTTP status.
    pub status_code: u16,
    /// Body text (empty for 204).
    pub body: String,
}

#[derive(Deserialize)]
struct FaultBody {
    fault_message: Option<String>,
    error: Option<String>,
}

impl ApiResponse {
    /// Firecracker's `{"fault_message": …}` or micro-http's `{"error": …}`, else the raw body.
    pub fn fault_message(&self) -> Option<String> {
        if self.body.trim().is_empty() {
            return None;
        }
        match serde_json::from_str::<FaultBody>(&self.body) {
            Ok(f) => f.fault_message.or(f.error),
            Err(_) => Some(self.body.trim().to_string()),
        }
    }
}

/// Client of one Firecracker API socket. Requests are serialized over one kept-alive connection
/// (Firecracker's API thread handles one request at a time anyway).
#[derive(Debug)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl ApiClient {
    /// A client for the socket at `socket` (nothing is connected until the first request).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into(), timeout: DEFAULT_REQUEST_TIMEOUT, conn: tokio::sync::Mutex::new(None) }
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the answer whatever its status.
    pub async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<ApiResponse> {
        let attempt = async {
            let mut guard = self.conn.lock().await;
            let reused = guard.as_ref().is_some_and(Connection::is_open);
            if !reused {
                *guard = Some(Connection::open(&self.socket).await?);
            }
            let conn = guard.as_mut().ok_or(ApiError::NotConnected)?;
            match conn.send(method.clone(), path, body.clone()).await {
                // A kept-alive connection the server closed meanwhile: retry once on a new one.
                Err(e) if reused && e.is_closed_connection() => {
                    *guard = Some(Connection::open(&self.socket).await?);
                    guard.as_mut().ok_or(ApiError::NotConnected)?.send(method.clone(), path, body).await
                }
                other => other,
            }
        };
        let wire_error =
            |source| SmartVmError::SocketRequestFailed { method: method.as_str().into(), path: path.into(), source };
        match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => {
                // The connection is in an unknown state after a timeout: drop it.
                *self.conn.lock().await = None;
                Err(SmartVmError::ApiTimeout { method: method.as_str().into(), path: path.into() })
            }
            Ok(Err(e)) => Err(wire_error(e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<ApiResponse> {
        self.request(Method::GET, path, None).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put<T: serde::Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<ApiResponse> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.encode_error(Method::PUT, path, e))?;
        self.request(Method::PUT, path, Some(bytes)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<T: serde::Serialize + ?Sized>(&self, path: &str, body: &T) -> Result<ApiResponse> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.encode_error(Method::PATCH, path, e))?;
        self.request(Method::PATCH, path, Some(bytes)).await
    }

    fn encode_error(&self, method: Method, path: &str, e: serde_json::Error) -> SmartVmError {
        SmartVmError::SocketRequestFailed {
            method: method.as_str().into(),
            path: path.into(),
            source: ApiError::Encode(e),
        }
    }

    /// Sends a typed request; non-2xx → `API_ERROR`, body decoded into `E::Response`.
    pub async fn send<E: Endpoint>(&self, endpoint: &E) -> Result<E::Response> {
        let path = endpoint.path();
        let body = endpoint.body().map_err(|e| self.encode_error(E::METHOD, &path, e))?;
        let response = self.request(E::METHOD.clone(), &path, body).await?;
        if !response.ok {
            return Err(SmartVmError::Api {
                method: E::METHOD.as_str().into(),
                path,
                status: response.status_code,
                fault_message: response.fault_message(),
            });
        }
        let text = if response.body.trim().is_empty() { "null" } else { response.body.as_str() };
        serde_json::from_str(text).map_err(|source| SmartVmError::SocketRequestFailed {
            method: E::METHOD.as_str().into(),
            path,
            source: ApiError::Decode { body: response.body.clone(), source },
        })
    }

    /// Connects as soon as the server accepts (retrying while the socket is missing or not yet
    /// listening; 50 µs doubling to 500 µs between attempts), without sending a
    /// request: the first real request then goes out on this connection, saving a round trip.
    pub async fn connect(&self, timeout: Duration) -> Result<()> {
        let mut backoff = Backoff::new(timeout);
        loop {
            match Connection::open(&self.socket).await {
                Ok(conn) => {
                    *self.conn.lock().await = Some(conn);
                    return Ok(());
                }
                Err(ApiError::Connect { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => {
                    return Err(SmartVmError::SocketRequestFailed {
                        method: "CONNECT".into(),
                        path: "/".into(),
                        source: e,
                    })
                }
            }
            if !backoff.wait().await {
                return Err(not_ready(&self.socket, timeout));
            }
        }
    }

    /// True when the API answers `GET /` within `timeout`, polling with backoff until then.
    pub async fn is_ready(&self, timeout: Duration) -> bool {
        self.wait_ready(timeout).await.is_ok()
    }

    /// Waits until the API answers `GET /`, retrying (50 µs doubling to 500 µs) until the deadline.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut backoff = Backoff::new(timeout);
        loop {
            if self.socket.exists() {
                let remaining = backoff.remaining();
                let probe = tokio::time::timeout(remaining, self.get("/"));
                if let Ok(Ok(r)) = probe.await {
                    if r.ok {
                        return Ok(());
                    }
                }
            }
            if !backoff.wait().await {
                return Err(not_ready(&self.socket, timeout));
            }
        }
    }
}

/// A readiness wait on `socket` ran out: `SOCKET_TIMEOUT` when the socket never appeared,
/// `API_TIMEOUT` when it exists but the API behind it did not answer (the seed's two codes).
pub(crate) fn not_ready(socket: &std::path::Path, timeout: Duration) -> SmartVmError {
    let (path, timeout_ms) = (socket.to_path_buf(), timeout.as_millis() as u64);
    if std::fs::symlink_metadata(&path).is_ok() {
        SmartVmError::ApiNotReady { path, timeout_ms }
    } else {
        SmartVmError::SocketTimeout { path, timeout_ms }
    }
}

#[cfg(test)]
mod tests;
