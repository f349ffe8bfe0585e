//! `smartvm serve`: the host agent ([`smartvm::agent::server`]) on a Unix socket (`0600`, or
//! `0660` for a `smartvm` group; peers checked with `SO_PEERCRED`). Its VMs are detached: they
//! outlive the agent, and an agent started later adopts the live ones and reclaims the dead.
//! SIGINT/SIGTERM stop accepting requests and leave the VMs running; with `--stop-vms-on-exit`
//! they are stopped and cleaned up instead. Under systemd (`Type=notify`, see
//! `contrib/smartvm.service`) it reports readiness.

use std::path::PathBuf;

use smartvm::agent::server::{bind, AdoptReport, AgentServer};
use smartvm::agent::AgentClient;
use smartvm::{SmartVmError, SmartVmOptions};

use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The API socket (default `<runtime dir>/smartvm.sock`).
    #[arg(long, env = "SMARTVM_AGENT_SOCKET")]
    socket: Option<PathBuf>,
    /// On SIGINT/SIGTERM, stop and clean up every VM (default: leave them running).
    #[arg(long)]
    stop_vms_on_exit: bool,
}

pub async fn serve(args: ServeArgs) -> Result<Exit, CliError> {
    let options = SmartVmOptions::from_env();
    let socket = args.socket.clone().unwrap_or_else(|| AgentClient::default_socket(&options));
    smartvm::trust::ensure_private_dir(&options.runtime_dir).map_err(SmartVmError::from)?;
    let listener = bind(&socket).await?;
    let server = AgentServer::new(options);
    report(&server.adopt().await?);
    eprintln!("smartvm agent listening on {}", socket.display());
    // Under systemd `Type=notify`: ready once the socket answers (a no-op elsewhere).
    if let Err(e) = sd_notify::notify(true, &[sd_notify::NotifyState::Ready]) {
        eprintln!("warning: cannot notify systemd: {e}");
    }
    let served = server.serve(listener, shutdown_signal()).await;
    let _ = std::fs::remove_file(&socket);
    if args.stop_vms_on_exit {
        server.smartvm().cleanup().await?;
    }
    served?;
    Ok(Exit::Success)
}

/// What the agent found from a previous one, on stderr.
fn report(found: &AdoptReport) {
    for id in &found.adopted {
        eprintln!("adopted {id}");
    }
    for (dir, e) in &found.failed {
        eprintln!("warning: cannot adopt {}: {e}", dir.display());
    }
    for vm in &found.ended {
        eprintln!("{} ended while no agent ran (exit code {:?})", vm.id, vm.exit.and_then(|e| e.code));
    }
    for id in &found.reclaimed {
        eprintln!("reclaimed {id}");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
