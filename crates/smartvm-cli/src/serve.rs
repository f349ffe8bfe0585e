//! `smartvm serve`: the host agent ([`smartvm::agent::server`]) on a Unix socket (`0600`, or
//! `0660` for a `smartvm` group; peers checked with `SO_PEERCRED`). Its VMs are detached: they
//! outlive the agent, and an agent started later adopts the live ones and reclaims the dead.
//! SIGINT/SIGTERM stop accepting requests and leave the VMs running; with `--stop-vms-on-exit`
//! they are stopped and cleaned up instead. Under systemd (`Type=notify`, see
//! `contrib/smartvm.service`) it reports readiness.

use std::path::PathBuf;

use smartvm::agent::server::{bind, AdoptReport, AgentPolicy, AgentServer};
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
    /// A directory under which members of the `smartvm` group may name host paths (kernels,
    /// drives, logs); repeatable. Without it they may name none (base images only).
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_paths: Vec<PathBuf>,
    /// Most VMs the agent holds; starts past it are refused with BUSY.
    #[arg(long, default_value_t = AgentPolicy::default().max_vms)]
    max_vms: usize,
    /// Starts (creates, restores) that run at once; more wait, up to --max-queued-starts.
    #[arg(long, default_value_t = AgentPolicy::default().max_starts)]
    max_starts: usize,
    /// Starts that may wait; past them a request is refused with BUSY (HTTP 429).
    #[arg(long, default_value_t = AgentPolicy::default().max_queued_starts)]
    max_queued_starts: usize,
}

pub async fn serve(args: ServeArgs) -> Result<Exit, CliError> {
    let options = SmartVmOptions::from_env();
    let socket = args.socket.clone().unwrap_or_else(|| AgentClient::default_socket(&options));
    smartvm::trust::ensure_private_dir(&options.runtime_dir).map_err(SmartVmError::from)?;
    let listener = bind(&socket).await?;
    let policy = AgentPolicy {
        allowed_paths: args.allow_paths.clone(),
        max_vms: args.max_vms,
        max_starts: args.max_starts,
        max_queued_starts: args.max_queued_starts,
        ..AgentPolicy::default()
    };
    let server = AgentServer::with_policy(options, policy);
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
    for (name, waiting) in &found.pools {
        eprintln!("pool {name} made again with {} waiting VMs taken over", waiting.len());
    }
    for (record, e) in &found.pools_failed {
        eprintln!("warning: cannot make the pool of {} again: {e}", record.display());
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
