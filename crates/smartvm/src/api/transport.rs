//! One HTTP/1.1 connection over a Unix socket (hyper), and the wire-level error type.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{ApiError, ApiResponse, Method};

#[derive(Debug)]
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub(crate) async fn open(path: &Path) -> Result<Self, ApiError> {
        let stream =
            UnixStream::connect(path).await.map_err(|source| ApiError::Connect { path: path.into(), source })?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(ApiError::Http)?;
        tokio::spawn(async move {
            // Ends when the socket closes; errors surface on the next request through `sender`.
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse, ApiError> {
        self.sender.ready().await.map_err(ApiError::Http)?;
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "localhost")
            .header("Accept", "application/json");
        if body.is_some() {
            builder = builder.header("Content-Type", "application/json");
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(ApiError::Request)?;
        let response = self.sender.send_request(request).await.map_err(ApiError::Http)?;
        let status = response.status();
        if let Some(dep) = response.headers().get("deprecation") {
            tracing::warn!(path, deprecation = ?dep, "Firecracker marked this request as deprecated");
        }
        let bytes = response.into_body().collect().await.map_err(ApiError::Http)?.to_bytes();
        let body = String::from_utf8(bytes.to_vec()).map_err(ApiError::NotUtf8)?;
        Ok(ApiResponse { ok: status.is_success(), status_code: status.as_u16(), body })
    }
}
