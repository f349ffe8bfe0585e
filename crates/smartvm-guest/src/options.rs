//! Command-line options.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;
use smartvm_guest_protocol::DEFAULT_VSOCK_PORT;

/// The smartvm guest agent.
#[derive(Debug, Parser)]
#[command(name = "smartvm-guest", version, about)]
pub struct Options {
    /// Where to listen: `vsock:PORT`, `vsock` (port 10700) or `unix:PATH`; repeatable. Default:
    /// `vsock`.
    #[arg(long = "listen", value_name = "ADDRESS")]
    pub listen: Vec<ListenAddress>,

    /// As PID 1: configure the network from this `ip=` value instead of the kernel command
    /// line's (`<address>::<gateway>:<netmask>:<hostname>:<device>:off`).
    #[arg(long, value_name = "SPEC")]
    pub ip: Option<String>,

    /// Connections served at once; more are answered `busy`.
    #[arg(long, default_value_t = 256)]
    pub max_sessions: u32,

    /// The workload: run it, and (as PID 1) power off with its exit status when it ends.
    #[arg(last = true, value_name = "COMMAND")]
    pub workload: Vec<String>,
}

impl Options {
    /// The addresses to listen on (`vsock` when none are given).
    pub fn addresses(&self) -> Vec<ListenAddress> {
        if self.listen.is_empty() {
            vec![ListenAddress::Vsock(DEFAULT_VSOCK_PORT)]
        } else {
            self.listen.clone()
        }
    }
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// AF_VSOCK, any CID, this port.
    Vsock(u32),
    /// A Unix socket at this path.
    Unix(PathBuf),
}

/// Why an address does not parse.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// `vsock:` followed by no number.
    #[error("bad vsock port {0:?}")]
    BadPort(String, #[source] std::num::ParseIntError),
    /// `unix:` with nothing after it.
    #[error("unix: needs a path")]
    NoPath,
    /// Neither form.
    #[error("{0:?} is neither vsock[:PORT] nor unix:PATH")]
    Unknown(String),
}

impl FromStr for ListenAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<ListenAddress, AddressError> {
        if text == "vsock" {
            return Ok(ListenAddress::Vsock(DEFAULT_VSOCK_PORT));
        }
        if let Some(port) = text.strip_prefix("vsock:") {
            return port.parse().map(ListenAddress::Vsock).map_err(|e| AddressError::BadPort(port.into(), e));
        }
        match text.strip_prefix("unix:") {
            Some("") => Err(AddressError::NoPath),
            Some(path) => Ok(ListenAddress::Unix(PathBuf::from(path))),
            None => Err(AddressError::Unknown(text.into())),
        }
    }
}
