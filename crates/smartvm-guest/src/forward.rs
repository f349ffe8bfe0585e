//! `forward`: connect to a TCP port in the guest, then relay raw bytes both ways.

use std::time::Duration;

use smartvm_guest_protocol::{GuestErrorCode, Reply};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::op::{send, OpError, Reader, Writer};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `127.0.0.1:port` and relays until both directions have ended.
pub async fn forward(port: u16, reader: Reader, writer: &mut Writer) -> Result<(), OpError> {
    // An address, not a name: no resolver (a static guest binary has no NSS).
    let connect = TcpStream::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let target = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(OpError::new(GuestErrorCode::ConnectFailed, format!("127.0.0.1:{port}: {e}"))),
        Err(_) => return Err(OpError::new(GuestErrorCode::ConnectFailed, format!("127.0.0.1:{port}: no answer"))),
    };
    send(writer, &Reply::Ready).await?;
    let (mut target_read, mut target_write) = target.into_split();
    // The reader may hold bytes the client sent right after the request: they come first.
    let mut client_read = reader.into_inner();
    tokio::join!(relay(&mut client_read, &mut target_write), relay(&mut target_read, writer.get_mut()));
    Ok(())
}

/// Copies one direction to its end, then passes the end on (half-close).
async fn relay(from: &mut (impl AsyncRead + Unpin), to: &mut (impl AsyncWrite + Unpin)) {
    let _ = tokio::io::copy(from, to).await;
    let _ = to.shutdown().await;
}
