//! The sockets the agent listens on: AF_VSOCK inside a guest, Unix sockets anywhere.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

use crate::options::ListenAddress;

/// A byte stream to one client.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// A connection of any transport.
pub type BoxedConnection = Box<dyn Connection>;

/// A bound listener.
pub enum Listener {
    /// A Unix socket (mode 0600: only the agent's user may connect).
    Unix(UnixListener),
    /// AF_VSOCK.
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `address`. A stale Unix socket at the path is replaced; any other file is not.
    pub fn bind(address: &ListenAddress) -> io::Result<Listener> {
        match address {
            ListenAddress::Vsock(port) => {
                Ok(Listener::Vsock(VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, *port))?))
            }
            ListenAddress::Unix(path) => bind_unix(path),
        }
    }

    /// The next client.
    pub async fn accept(&self) -> io::Result<BoxedConnection> {
        Ok(match self {
            Listener::Unix(listener) => Box::new(listener.accept().await?.0),
            Listener::Vsock(listener) => Box::new(listener.accept().await?.0),
        })
    }
}

fn bind_unix(path: &PathBuf) -> io::Result<Listener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is no socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Listener::Unix(listener))
}
