//! `smartvm port-forward ID HOSTPORT:GUESTPORT…`: host listeners relayed to guest ports until
//! Ctrl-C.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use tokio::net::TcpListener;

use super::{usage, GuestTarget};
use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct PortForwardArgs {
    #[command(flatten)]
    target: GuestTarget,
    /// The host address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    address: IpAddr,
    /// The VM's id (none with --guest-socket), then HOSTPORT:GUESTPORT pairs (HOSTPORT 0 picks
    /// a free port; each listening address is printed).
    #[arg(required = true, value_name = "ID] [HOSTPORT:GUESTPORT")]
    operands: Vec<String>,
}

impl PortForwardArgs {
    /// The VM id, if the first operand is no port pair, and the pairs.
    fn split(&self) -> Result<(Option<&str>, Vec<PortPair>), CliError> {
        let (id, pairs) = match self.operands.split_first() {
            Some((first, rest)) if first.parse::<PortPair>().is_err() => (Some(first.as_str()), rest),
            _ => (None, &self.operands[..]),
        };
        let pairs = pairs
            .iter()
            .map(|p| p.parse().map_err(|e: BadPortPair| usage(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if pairs.is_empty() {
            return Err(usage("give at least one HOSTPORT:GUESTPORT".into()));
        }
        Ok((id, pairs))
    }
}

/// `HOSTPORT:GUESTPORT`.
#[derive(Debug, Clone, Copy)]
pub struct PortPair {
    host: u16,
    guest: u16,
}

/// Why a port pair does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not HOSTPORT:GUESTPORT")]
pub struct BadPortPair(String);

impl FromStr for PortPair {
    type Err = BadPortPair;

    fn from_str(text: &str) -> Result<PortPair, BadPortPair> {
        let bad = || BadPortPair(text.to_owned());
        let (host, guest) = text.split_once(':').ok_or_else(bad)?;
        Ok(PortPair { host: host.parse().map_err(|_| bad())?, guest: guest.parse().map_err(|_| bad())? })
    }
}

/// Listens on every pair, prints `LOCAL -> guest:PORT` lines on stdout, relays until Ctrl-C
/// (the caller's interrupt handling ends it).
pub async fn port_forward(args: PortForwardArgs) -> Result<Exit, CliError> {
    let (id, pairs) = args.split()?;
    let client = args.target.client(id)?;
    // Fail early and clearly when the guest agent cannot be reached at all.
    client.hello().await?;
    let mut forwards = Vec::new();
    for pair in &pairs {
        if pair.guest == 0 {
            return Err(usage("guest port 0 is no port".into()));
        }
        let listener = TcpListener::bind(SocketAddr::new(args.address, pair.host)).await.map_err(|e| {
            CliError::new(Exit::Failure, format!("cannot listen on {}:{}: {e}", args.address, pair.host))
        })?;
        let forward = client.forward(listener, pair.guest)?;
        println!("{} -> guest:{}", forward.local_addr(), pair.guest);
        forwards.push(forward);
    }
    std::future::pending::<()>().await;
    Ok(Exit::Success)
}
