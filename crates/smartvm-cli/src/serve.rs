//! `smartvm serve`: the host agent. It owns VMs on behalf of its clients (`run -d`, `ps`,
//! `logs`, `attach`, `stop`, `rm`, …), serving the API described by `smartvm::agent::wire` on a
//! Unix socket (`0600`; peers checked with `SO_PEERCRED`: root, the agent's own user, or members
//! of a `smartvm` group). Its VMs are detached: they outlive the agent, and an agent started
//! later adopts the live ones and reclaims the dead. SIGINT/SIGTERM stop accepting requests and
//! leave the VMs running; with `--stop-vms-on-exit` they are stopped and cleaned up instead.
//! Under systemd (`Type=notify`, see `contrib/smartvm.service`) it reports readiness.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use smartvm::agent::wire::{AgentInfo, ErrorBody, ExitSummary, StopSummary, VmSummary};
use smartvm::agent::AgentClient;
use smartvm::process::StopPlan;
use smartvm::{MicroVm, SmartVm, SmartVmError, SmartVmOptions, VmConfig, VmState};
use std::os::unix::fs::OpenOptionsExt;
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

/// The agent's state: the orchestrator and when each VM started.
struct Agent {
    smartvm: SmartVm,
    started: Mutex<HashMap<String, Instant>>,
}

type Shared = Arc<Agent>;

/// An error answer: status and [`ErrorBody`].
struct Failure(SmartVmError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = ErrorBody::of(&self.0);
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response()
    }
}

impl From<SmartVmError> for Failure {
    fn from(e: SmartVmError) -> Self {
        Failure(e)
    }
}

type Answer<T> = Result<T, Failure>;

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
                code: "PERMISSION_DENIED".into(),
                message: "this user may not use the smartvm agent (root, its owner or the smartvm group only)".into(),
                problems: Vec::new(),
            }),
        )
            .into_response(),
    }
}

fn router(agent: Shared) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{id}", get(inspect).delete(remove))
        .route("/v1/vms/{id}/pause", post(pause))
        .route("/v1/vms/{id}/resume", post(resume))
        .route("/v1/vms/{id}/stop", post(stop))
        .route("/v1/vms/{id}/logs", get(logs))
        .route("/v1/vms/{id}/console", post(console_input))
        .layer(axum::middleware::from_fn(check_peer))
        .with_state(agent)
}

async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], smartvm::agent::wire::OPENAPI)
}

async fn info(State(agent): State<Shared>) -> Json<AgentInfo> {
    Json(AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        vms: agent.smartvm.vm_count(),
    })
}

impl Agent {
    fn vm(&self, id: &str) -> Result<Arc<MicroVm>, SmartVmError> {
        self.smartvm.vm(id).ok_or_else(|| SmartVmError::VmNotFound { id: id.into() })
    }

    async fn summary(&self, vm: &MicroVm) -> VmSummary {
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner()).get(vm.id()).copied();
        let taps = vm.tap_devices().await;
        let cfg = vm.config();
        let running = matches!(vm.state(), VmState::Running | VmState::Paused);
        VmSummary {
            id: vm.id().into(),
            state: vm.state().to_string(),
            pid: vm.pid().await.filter(|_| running),
            socket: vm.socket_path(),
            vcpus: cfg.machine_config.vcpu_count,
            mem_mib: cfg.machine_config.mem_size_mib,
            taps: taps.iter().map(|t| t.name.clone()).collect(),
            guest_ip: taps.first().map(|t| t.guest_ip.to_string()),
            uptime_s: started.filter(|_| running).map(|s| s.elapsed().as_secs()),
            exit: vm.exit_info().map(|e| ExitSummary { code: e.code, signal: e.signal }),
            config: cfg.clone(),
        }
    }
}

async fn list(State(agent): State<Shared>) -> Json<Vec<VmSummary>> {
    let mut out = Vec::new();
    for id in agent.smartvm.vm_ids() {
        if let Some(vm) = agent.smartvm.vm(&id) {
            out.push(agent.summary(&vm).await);
        }
    }
    Json(out)
}

/// Creates and starts a VM; on any failure nothing stays registered or on the host.
async fn create(State(agent): State<Shared>, body: Bytes) -> Answer<(StatusCode, Json<VmSummary>)> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| SmartVmError::from(smartvm::config::ConfigErrors::single("<body>", "is not UTF-8")))?;
    let config = VmConfig::from_json(text).map_err(SmartVmError::from)?;
    let vm = agent.smartvm.create_vm(&config)?;
    if let Err(e) = vm.start().await {
        let _ = agent.smartvm.remove_vm(vm.id()).await;
        return Err(e.into());
    }
    agent.started.lock().unwrap_or_else(|p| p.into_inner()).insert(vm.id().into(), Instant::now());
    Ok((StatusCode::CREATED, Json(agent.summary(&vm).await)))
}

async fn inspect(State(agent): State<Shared>, Path(id): Path<String>) -> Answer<Json<VmSummary>> {
    let vm = agent.vm(&id)?;
    Ok(Json(agent.summary(&vm).await))
}

async fn pause(State(agent): State<Shared>, Path(id): Path<String>) -> Answer<Json<VmSummary>> {
    let vm = agent.vm(&id)?;
    vm.pause().await?;
    Ok(Json(agent.summary(&vm).await))
}

async fn resume(State(agent): State<Shared>, Path(id): Path<String>) -> Answer<Json<VmSummary>> {
    let vm = agent.vm(&id)?;
    vm.resume().await?;
    Ok(Json(agent.summary(&vm).await))
}

#[derive(serde::Deserialize)]
struct StopQuery {
    timeout_ms: Option<u64>,
}

async fn stop(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Answer<Json<StopSummary>> {
    let vm = agent.vm(&id)?;
    let outcome = match q.timeout_ms {
        Some(ms) => vm.stop_with(&StopPlan::with_grace(Duration::from_millis(ms))).await?,
        None => vm.stop().await?,
    };
    Ok(Json(StopSummary { id, step: format!("{:?}", outcome.step) }))
}

#[derive(serde::Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Answer<StatusCode> {
    let vm = agent.vm(&id)?;
    let state = vm.state();
    if matches!(state, VmState::Running | VmState::Paused) && !q.force {
        return Err(SmartVmError::InvalidState { operation: "remove (without force)", state }.into());
    }
    agent.smartvm.remove_vm(&id).await?;
    agent.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// Start with the lines kept so far (default); `false` for new output only (attach).
    history: Option<bool>,
}

/// Writes the body into the VM's console input (the guest's serial receiver).
async fn console_input(State(agent): State<Shared>, Path(id): Path<String>, body: Bytes) -> Answer<StatusCode> {
    let vm = agent.vm(&id)?;
    let state = vm.state();
    if !matches!(state, VmState::Running | VmState::Paused) {
        return Err(SmartVmError::InvalidState { operation: "type into", state }.into());
    }
    let fifo = smartvm::process::console_input(vm.runtime_dir());
    let write = move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).custom_flags(libc_nonblock()).open(&fifo)?;
        f.write_all(&body)
    };
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| SmartVmError::Io {
            context: "console input task failed".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| SmartVmError::Io { context: format!("cannot write to the console of {id}"), source })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `O_NONBLOCK`: a console nobody reads must not hang the agent.
fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

/// The console lines kept so far, then (with `follow`) each new one until the console ends.
async fn logs(State(agent): State<Shared>, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> Answer<Response> {
    let vm = agent.vm(&id)?;
    let console = vm.console().await.ok_or(SmartVmError::NoClient)?;
    let (kept, live) = console.follow();
    let history = q.history.unwrap_or(true);
    let text: String = kept.iter().filter(|_| history).map(|l| format!("{l}\n")).collect();
    if !q.follow {
        return Ok(text.into_response());
    }
    let head = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(text) });
    let tail = futures_util::stream::unfold((live, console), |(mut live, console)| async move {
        loop {
            match live.recv().await {
                // The end-of-stream wake-up (a real empty line is passed on).
                Ok(line) if line.is_empty() && console.is_closed() => return None,
                Ok(line) => return Some((Ok(format!("{line}\n")), (live, console))),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    Ok(Body::from_stream(futures_util::StreamExt::chain(head, tail)).into_response())
}

pub async fn serve(args: ServeArgs) -> Result<Exit, CliError> {
    let options = SmartVmOptions::from_env();
    let socket = args.socket.clone().unwrap_or_else(|| AgentClient::default_socket(&options));
    smartvm::trust::ensure_private_dir(&options.runtime_dir).map_err(SmartVmError::from)?;
    let listener = bind(&socket).await?;
    let options = SmartVmOptions { detached_vms: true, ..options };
    let agent = Arc::new(Agent { smartvm: SmartVm::new(options), started: Mutex::new(HashMap::new()) });
    adopt(&agent).await?;
    eprintln!("smartvm agent listening on {}", socket.display());
    // Under systemd `Type=notify`: ready once the socket answers (a no-op elsewhere).
    if let Err(e) = sd_notify::notify(true, &[sd_notify::NotifyState::Ready]) {
        eprintln!("warning: cannot notify systemd: {e}");
    }
    let app = router(agent.clone()).into_make_service_with_connect_info::<Peer>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    let _ = std::fs::remove_file(&socket);
    if args.stop_vms_on_exit {
        agent.smartvm.cleanup().await?;
    }
    served.map_err(|e| CliError::new(Exit::Failure, e))?;
    Ok(Exit::Success)
}

/// Takes over the VMs a previous agent left running, then reclaims what dead ones left.
async fn adopt(agent: &Agent) -> Result<(), CliError> {
    let (adopted, failed) = agent.smartvm.adopt_detached().await?;
    let now = Instant::now();
    agent.started.lock().unwrap_or_else(|p| p.into_inner()).extend(adopted.iter().map(|id| (id.clone(), now)));
    for id in &adopted {
        eprintln!("adopted {id}");
    }
    for (dir, e) in &failed {
        eprintln!("warning: cannot adopt {}: {e}", dir.display());
    }
    let report = agent.smartvm.reclaim().await?;
    for id in &report.reclaimed {
        eprintln!("reclaimed {id}");
    }
    Ok(())
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
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
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
