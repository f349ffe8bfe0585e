//! `smartvm serve`: the host agent. It owns VMs on behalf of its clients (`run -d`, `ps`,
//! `logs`, `attach`, `stop`, `rm`, …), serving the API described by `smartvm::agent::wire` on a
//! Unix socket (`0600`; peers checked with `SO_PEERCRED`: root, the agent's own user, or members
//! of a `smartvm` group). Its VMs are detached: they outlive the agent, and an agent started
//! later adopts the live ones and reclaims the dead. SIGINT/SIGTERM stop accepting requests and
//! leave the VMs running; with `--stop-vms-on-exit` they are stopped and cleaned up instead.
//! Under systemd (`Type=notify`, see `contrib/smartvm.service`) it reports readiness.

mod routes;
mod snapshots;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use routes::{Agent, Shared};
use smartvm::agent::wire::{ErrorBody, ExitSummary, VmSummary};
use smartvm::agent::AgentClient;
use smartvm::{SmartVm, SmartVmError, SmartVmOptions, VmState};
use tokio::net::UnixListener;

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

/// The peer's credentials, taken when the connection is accepted.
#[derive(Clone, Debug)]
struct Peer(Option<tokio::net::unix::UCred>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        Peer(stream.io().peer_cred().ok())
    }
}

/// Root, the agent's own user, or a member of the `smartvm` group.
fn permitted(peer: &tokio::net::unix::UCred) -> bool {
    if peer.uid() == 0 || peer.uid() == nix::unistd::geteuid().as_raw() {
        return true;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_name("smartvm") else { return false };
    let gid = group.gid.as_raw();
    if peer.gid() == gid {
        return true;
    }
    // Supplementary groups of the peer process.
    let status = peer.pid().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
    status.is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x == gid.to_string()))
    })
}

async fn check_peer(
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &peer.0 {
        Some(cred) if permitted(cred) => next.run(request).await,
        _ => (
            StatusCode::FORBIDDEN,
            Json(ErrorBody {
                code: smartvm::error::ErrorCode::PermissionDenied.as_str().into(),
                message: "this user may not use the smartvm agent (root, its owner or the smartvm group only)".into(),
                problems: Vec::new(),
            }),
        )
            .into_response(),
    }
}

fn router(agent: Shared) -> Router {
    use routes::*;
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/events", get(events))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{id}", get(inspect).delete(remove))
        .route("/v1/vms/{id}/pause", post(pause))
        .route("/v1/vms/{id}/resume", post(resume))
        .route("/v1/vms/{id}/stop", post(stop))
        .route("/v1/vms/{id}/logs", get(logs))
        .route("/v1/vms/{id}/console", post(console_input))
        .route("/v1/vms/{id}/snapshot", post(snapshots::snapshot))
        .route("/v1/snapshots/restore", post(snapshots::restore))
        .layer(axum::middleware::from_fn(check_peer))
        .with_state(agent)
}

pub async fn serve(args: ServeArgs) -> Result<Exit, CliError> {
    let options = SmartVmOptions::from_env();
    let socket = args.socket.clone().unwrap_or_else(|| AgentClient::default_socket(&options));
    smartvm::trust::ensure_private_dir(&options.runtime_dir).map_err(SmartVmError::from)?;
    let listener = bind(&socket).await?;
    let options = SmartVmOptions { detached_vms: true, ..options };
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let agent = Arc::new(Agent {
        smartvm: SmartVm::new(options),
        started: Mutex::new(HashMap::new()),
        ended: Mutex::new(HashMap::new()),
        events: tokio::sync::broadcast::channel(1024).0,
        closing: closing_rx,
    });
    adopt(&agent).await?;
    eprintln!("smartvm agent listening on {}", socket.display());
    // Under systemd `Type=notify`: ready once the socket answers (a no-op elsewhere).
    if let Err(e) = sd_notify::notify(true, &[sd_notify::NotifyState::Ready]) {
        eprintln!("warning: cannot notify systemd: {e}");
    }
    let app = router(agent.clone()).into_make_service_with_connect_info::<Peer>();
    let shutdown = async move {
        shutdown_signal().await;
        // Streams (logs -f, attach, events) end, so the graceful shutdown does not wait on them.
        let _ = closing.send(true);
    };
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let _ = std::fs::remove_file(&socket);
    if args.stop_vms_on_exit {
        agent.smartvm.cleanup().await?;
    }
    served.map_err(|e| CliError::new(Exit::Failure, e))?;
    Ok(Exit::Success)
}

/// Takes over the VMs a previous agent left running, then reclaims what dead ones left.
async fn adopt(agent: &Arc<Agent>) -> Result<(), CliError> {
    let (adopted, failed) = agent.smartvm.adopt_detached().await?;
    for id in &adopted {
        if let Some(vm) = agent.smartvm.vm(id) {
            agent.watch(vm);
        }
        eprintln!("adopted {id}");
    }
    for (dir, e) in &failed {
        eprintln!("warning: cannot adopt {}: {e}", dir.display());
    }
    // Those that died meanwhile are reported as failed (with their exit, when Firecracker logged
    // one) until removed; what they left is reclaimed now.
    let ended: Vec<VmSummary> = agent.smartvm.ended_detached().into_iter().filter_map(ended_summary).collect();
    for vm in &ended {
        eprintln!("{} ended while no agent ran (exit code {:?})", vm.id, vm.exit.and_then(|e| e.code));
    }
    agent.ended.lock().unwrap_or_else(|p| p.into_inner()).extend(ended.into_iter().map(|vm| (vm.id.clone(), vm)));
    let report = agent.smartvm.reclaim().await?;
    for id in &report.reclaimed {
        eprintln!("reclaimed {id}");
    }
    Ok(())
}

/// How a VM that ended while no agent ran is reported: failed, with its exit code if logged.
fn ended_summary((journal, code): (smartvm::vm::VmJournal, Option<i32>)) -> Option<VmSummary> {
    let config = journal.config.clone()?;
    Some(VmSummary {
        id: journal.vm_id.clone(),
        state: VmState::Error.to_string(),
        pid: None,
        socket: journal.socket.clone(),
        vcpus: config.machine_config.vcpu_count,
        mem_mib: config.machine_config.mem_size_mib,
        taps: journal.taps().iter().map(|t| t.to_string()).collect(),
        guest_ip: None,
        uptime_s: None,
        exit: Some(ExitSummary { code, signal: None }),
        console_file: None,
        config,
    })
}

/// Binds `socket` (`0600`), replacing a stale socket no agent answers on.
async fn bind(socket: &std::path::Path) -> Result<UnixListener, CliError> {
    if socket.exists() {
        if AgentClient::new(socket).info().await.is_ok() {
            let msg = format!("an agent already listens on {}", socket.display());
            return Err(CliError::new(Exit::Failure, msg));
        }
        let _ = std::fs::remove_file(socket);
    }
    let listener = UnixListener::bind(socket).map_err(|e| CliError::new(Exit::Failure, e))?;
    // 0600, or 0660 for a `smartvm` group whose members may use the agent.
    let group = nix::unistd::Group::from_name("smartvm").ok().flatten();
    if let Some(g) = &group {
        nix::unistd::chown(socket, None, Some(g.gid)).map_err(|e| CliError::new(Exit::Failure, e))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| CliError::new(Exit::Failure, e))?;
    Ok(listener)
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
