//! The verbs that work inside a guest: `exec`, `shell`, `cp`, `port-forward`, `ping`. Each names a VM
//! held by the host agent (reached through its `/v1/vms/{id}/guest` upgrade), or with
//! `--guest-socket unix:PATH` a `smartvm-guest` listening on a Unix socket (no VM, no agent).

mod copy;
mod exec;
mod forward;
mod ping;
mod terminal;

pub use copy::{cp, CpArgs};
pub use exec::{exec, shell, ExecArgs, ShellArgs};
pub use forward::{port_forward, PortForwardArgs};
pub use ping::{ping, PingArgs};

use smartvm::guest::{GuestAddress, GuestClient};

use crate::exit::{CliError, Exit};

/// Where a guest verb goes, besides the VM id.
#[derive(Debug, clap::Args)]
pub struct GuestTarget {
    /// Talk to a `smartvm-guest` listening at `unix:PATH` instead of a VM.
    #[arg(long, value_name = "unix:PATH")]
    guest_socket: Option<GuestAddress>,
    /// The guest agent's vsock port (default 10700, smartvm-guest's).
    #[arg(long, value_name = "PORT")]
    vsock_port: Option<u32>,
}

impl GuestTarget {
    /// The client for VM `id` (through the host agent), or for `--guest-socket`.
    pub fn client(&self, id: Option<&str>) -> Result<GuestClient, CliError> {
        match (&self.guest_socket, id) {
            (Some(address), None) => Ok(GuestClient::new(address.clone())),
            (None, Some(id)) => Ok(crate::vms::client().guest(id, self.vsock_port)),
            (Some(_), Some(id)) => Err(usage(format!("give a VM id ({id}) or --guest-socket, not both"))),
            (None, None) => Err(usage("give a VM id or --guest-socket unix:PATH".into())),
        }
    }
}

fn usage(message: String) -> CliError {
    CliError::new(Exit::Usage, message)
}
