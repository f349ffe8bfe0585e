//! Reaching a guest agent: a Unix socket, or Firecracker's vsock device (its host socket, then
//! `CONNECT <port>\n` answered by `OK <host port>\n`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{GuestError, Result};

/// A byte stream to a guest agent.
pub trait GuestIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> GuestIo for T {}

/// One connection to a guest agent, over any transport.
pub type GuestConnection = Box<dyn GuestIo>;

/// The future a [`GuestConnector`] returns.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = Result<GuestConnection>> + Send + 'a>>;

/// How a [`GuestClient`](super::GuestClient) reaches its agent: each call opens one new
/// connection, ready for the request frame. [`GuestAddress`] is one (a Unix socket, a
/// Firecracker vsock device); the host agent's client is another (an HTTP upgrade through
/// `smartvm serve`, see `AgentClient::guest`).
pub trait GuestConnector: Send + Sync + std::fmt::Debug {
    /// Opens a connection.
    fn connect(&self) -> Connecting<'_>;
    /// Where it leads, for messages.
    fn describe(&self) -> String;
}

impl GuestConnector for GuestAddress {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move { Ok(Box::new(open(self).await?) as GuestConnection) })
    }

    fn describe(&self) -> String {
        self.to_string()
    }
}

/// Where a guest agent listens, as seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestAddress {
    /// A `smartvm-guest --listen unix:PATH` (no VM: tests, scripts, containers).
    Unix(PathBuf),
    /// A port behind a Firecracker vsock device, reached through the device's host socket.
    Vsock {
        /// The device's `uds_path` as the host sees it.
        socket: PathBuf,
        /// The guest port.
        port: u32,
    },
}

impl std::fmt::Display for GuestAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            GuestAddress::Vsock { socket, port } => write!(f, "vsock:{}:{port}", socket.display()),
        }
    }
}

/// Why a guest address does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not unix:PATH or vsock:SOCKET:PORT")]
pub struct BadGuestAddress(String);

impl FromStr for GuestAddress {
    type Err = BadGuestAddress;

    /// `unix:PATH` or `vsock:SOCKET:PORT`.
    fn from_str(text: &str) -> Result<GuestAddress, BadGuestAddress> {
        let bad = || BadGuestAddress(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(GuestAddress::Unix(PathBuf::from(path)));
        }
        let (socket, port) = text.strip_prefix("vsock:").and_then(|rest| rest.rsplit_once(':')).ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if socket.is_empty() {
            return Err(bad());
        }
        Ok(GuestAddress::Vsock { socket: PathBuf::from(socket), port })
    }
}

/// The longest `OK <port>\n` line a vsock device sends.
const MAX_HANDSHAKE_LINE: usize = 32;

/// Opens a connection through `connector` within `timeout`.
pub(crate) async fn connect(connector: &dyn GuestConnector, timeout: Duration) -> Result<GuestConnection> {
    match tokio::time::timeout(timeout, connector.connect()).await {
        Ok(result) => result,
        Err(_) => Err(GuestError::Timeout { operation: "connect", after: timeout }.into()),
    }
}

async fn open(address: &GuestAddress) -> Result<UnixStream, GuestError> {
    let unavailable = |source| GuestError::Unavailable { address: address.to_string(), source };
    match address {
        GuestAddress::Unix(path) => UnixStream::connect(path).await.map_err(unavailable),
        GuestAddress::Vsock { socket, port } => {
            let mut stream = UnixStream::connect(socket).await.map_err(unavailable)?;
            stream.write_all(format!("CONNECT {port}\n").as_bytes()).await.map_err(unavailable)?;
            let answer = read_line(&mut stream).await.map_err(unavailable)?;
            if answer.starts_with("OK ") {
                Ok(stream)
            } else {
                Err(GuestError::NotListening { address: socket.display().to_string(), port: *port, answer })
            }
        }
    }
}

/// Reads one line byte by byte: nothing after it may be consumed (the agent's frames follow).
async fn read_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::with_capacity(MAX_HANDSHAKE_LINE);
    while line.len() < MAX_HANDSHAKE_LINE {
        let mut byte = [0u8];
        if stream.read(&mut byte).await? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
