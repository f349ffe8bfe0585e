//! The agent's routes: one handler per route of `smartvm::agent::wire::ROUTES`.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use smartvm::agent::wire::{AgentInfo, ErrorBody, ExitSummary, ImageVmRequest, StopSummary, VmEvent, VmSummary};
use smartvm::process::StopPlan;
use smartvm::{MicroVm, SmartVm, SmartVmError, VmConfig, VmState};

/// The agent's state: the orchestrator and when each VM started.
pub(super) struct Agent {
    pub(super) smartvm: SmartVm,
    pub(super) started: Mutex<HashMap<String, Instant>>,
    /// VMs that ended while no agent ran (found at start): reported `error` until removed.
    pub(super) ended: Mutex<HashMap<String, VmSummary>>,
    /// State changes, for `GET /v1/events`.
    pub(super) events: tokio::sync::broadcast::Sender<VmEvent>,
    /// Turns true when the agent shuts down: every open stream ends.
    pub(super) closing: tokio::sync::watch::Receiver<bool>,
}

pub(super) type Shared = Arc<Agent>;

/// An error answer: a smartvm error (status and [`ErrorBody`] from its code), or a refusal.
pub(super) enum Failure {
    Error(SmartVmError),
    /// 403 `PERMISSION_DENIED`.
    Forbidden(&'static str),
}

impl Failure {
    /// A 403 with `PERMISSION_DENIED`.
    pub(super) fn forbidden(message: &'static str) -> Self {
        Failure::Forbidden(message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Failure::Error(e) => ErrorBody::of(e),
            Failure::Forbidden(message) => {
                let code = smartvm::error::ErrorCode::PermissionDenied.as_str().into();
                (403, ErrorBody { code, message: (*message).into(), problems: Vec::new() })
            }
        };
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response()
    }
}

impl From<SmartVmError> for Failure {
    fn from(e: SmartVmError) -> Self {
        Failure::Error(e)
    }
}

pub(super) type Answer<T> = Result<T, Failure>;

pub(super) async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], smartvm::agent::wire::OPENAPI)
}

pub(super) async fn info(State(agent): State<Shared>) -> Json<AgentInfo> {
    Json(AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        vms: agent.smartvm.vm_count(),
    })
}

impl Agent {
    fn vm(&self, id: &str) -> Result<Arc<MicroVm>, SmartVmError> {
        match self.smartvm.vm(id) {
            Some(vm) => Ok(vm),
            None if self.ended_vm(id).is_some() => {
                Err(SmartVmError::InvalidState { operation: "act on", state: VmState::Error })
            }
            None => Err(SmartVmError::VmNotFound { id: id.into() }),
        }
    }

    /// Announces that VM `id` is now `state`.
    pub(super) fn emit(&self, id: &str, state: &str, exit: Option<ExitSummary>) {
        let at_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let _ = self.events.send(VmEvent { id: id.into(), state: state.into(), at_ms, exit });
    }

    /// Started (or adopted): announce it, and announce its end whenever its process ends.
    pub(super) fn watch(self: &Arc<Self>, vm: Arc<MicroVm>) {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).insert(vm.id().into(), Instant::now());
        self.emit(vm.id(), &vm.state().to_string(), None);
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            let exit = vm.exited().await;
            if let Some(agent) = agent.upgrade() {
                let exit = exit.map(|e| ExitSummary { code: e.code, signal: e.signal });
                agent.emit(vm.id(), &vm.state().to_string(), exit);
            }
        });
    }

    fn ended_vm(&self, id: &str) -> Option<VmSummary> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub(super) async fn summary(&self, vm: &MicroVm) -> VmSummary {
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
            console_file: Some(smartvm::process::detached_files(vm.runtime_dir()).0).filter(|f| f.exists()),
            config: cfg.clone(),
        }
    }
}

pub(super) async fn list(State(agent): State<Shared>) -> Json<Vec<VmSummary>> {
    let mut out = Vec::new();
    for id in agent.smartvm.vm_ids() {
        if let Some(vm) = agent.smartvm.vm(&id) {
            out.push(agent.summary(&vm).await);
        }
    }
    out.extend(agent.ended.lock().unwrap_or_else(|p| p.into_inner()).values().cloned());
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Json(out)
}

/// Creates and starts a VM; on any failure nothing stays registered or on the host.
pub(super) async fn create(State(agent): State<Shared>, body: Bytes) -> Answer<(StatusCode, Json<VmSummary>)> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| SmartVmError::from(smartvm::config::ConfigErrors::single("<body>", "is not UTF-8")))?;
    let is_image = serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("image").is_some());
    let config = match is_image {
        true => image_config(&agent.smartvm, text).await?,
        false => VmConfig::from_json(text).map_err(SmartVmError::from)?,
    };
    let vm = agent.smartvm.create_vm(&config)?;
    if let Err(e) = vm.start().await {
        let _ = agent.smartvm.remove_vm(vm.id()).await;
        return Err(e.into());
    }
    agent.watch(vm.clone());
    Ok((StatusCode::CREATED, Json(agent.summary(&vm).await)))
}

/// The config of a `{"image": …}` request: the bundle fetched (or cached), then the overrides.
async fn image_config(smartvm: &SmartVm, text: &str) -> Result<VmConfig, SmartVmError> {
    use smartvm::config::ConfigErrors;
    use smartvm::images::{BaseImageOptions, Preset};
    let request: ImageVmRequest =
        serde_json::from_str(text).map_err(|e| ConfigErrors::single("<body>", e.to_string()))?;
    let mut options = BaseImageOptions::default();
    if let Some(p) = &request.image.preset {
        options.preset = Some(p.parse::<Preset>().map_err(|m| ConfigErrors::single("image.preset", m))?);
    }
    if let Some(m) = request.image.manifest {
        if !m.starts_with("https://") && !m.starts_with("http://") {
            return Err(ConfigErrors::single("image.manifest", "must be an http(s) URL").into());
        }
        options.manifest_url = Some(m);
    }
    let bundle = smartvm.ensure_base_image(&options, &smartvm::images::NoProgress).await?;
    let mut config = bundle.vm_config();
    config.id = request.id;
    if let Some(v) = request.vcpus {
        config.machine_config.vcpu_count = v;
    }
    if let Some(m) = request.mem_mib {
        config.machine_config.mem_size_mib = m;
    }
    Ok(config)
}

pub(super) async fn inspect(State(agent): State<Shared>, Path(id): Path<String>) -> Answer<Json<VmSummary>> {
    if let Some(ended) = agent.ended_vm(&id) {
        return Ok(Json(ended));
    }
    let vm = agent.vm(&id)?;
    Ok(Json(agent.summary(&vm).await))
}

pub(super) async fn pause(State(agent): State<Shared>, Path(id): Path<String>) -> Answer<Json<VmSummary>> {
    let vm = agent.vm(&id)?;
    vm.pause().await?;
    agent.emit(&id, &vm.state().to_string(), None);
    Ok(Json(agent.summary(&vm).await))
}

pub(super) async fn resume(State(agent): State<Shared>, Path(id): Path<String>) -> Answer<Json<VmSummary>> {
    let vm = agent.vm(&id)?;
    vm.resume().await?;
    agent.emit(&id, &vm.state().to_string(), None);
    Ok(Json(agent.summary(&vm).await))
}

#[derive(serde::Deserialize)]
pub(super) struct StopQuery {
    timeout_ms: Option<u64>,
}

pub(super) async fn stop(
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
pub(super) struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

pub(super) async fn remove(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Answer<StatusCode> {
    if agent.ended.lock().unwrap_or_else(|p| p.into_inner()).remove(&id).is_some() {
        return Ok(StatusCode::NO_CONTENT); // what it left was reclaimed when the agent started
    }
    let vm = agent.vm(&id)?;
    let state = vm.state();
    if matches!(state, VmState::Running | VmState::Paused) && !q.force {
        return Err(SmartVmError::InvalidState { operation: "remove (without force)", state }.into());
    }
    agent.smartvm.remove_vm(&id).await?;
    agent.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    agent.emit(&id, "removed", None);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub(super) struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// Start with the lines kept so far (default); `false` for new output only (attach).
    history: Option<bool>,
}

/// Each VM's current state, then every state change, one JSON object per line, until the agent
/// shuts down.
pub(super) async fn events(State(agent): State<Shared>) -> Response {
    let live = agent.events.subscribe();
    let mut current = String::new();
    for id in agent.smartvm.vm_ids() {
        if let Some(vm) = agent.smartvm.vm(&id) {
            let at_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let event = VmEvent { id, state: vm.state().to_string(), at_ms, exit: None };
            current += &(serde_json::to_string(&event).unwrap_or_default() + "\n");
        }
    }
    let head = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(current) });
    let stream = futures_util::stream::unfold((live, agent.closing.clone()), |(mut live, mut closing)| async move {
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                _ = closing.wait_for(|c| *c) => return None,
            };
            match received {
                Ok(event) => {
                    let line = serde_json::to_string(&event).unwrap_or_default() + "\n";
                    return Some((Ok::<_, std::convert::Infallible>(line), (live, closing)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, stream));
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Writes the body into the VM's console input (the guest's serial receiver).
pub(super) async fn console_input(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<StatusCode> {
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
pub(super) async fn logs(
    State(agent): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Answer<Response> {
    let vm = agent.vm(&id)?;
    let history = q.history.unwrap_or(true);
    if !q.follow {
        // Only what is kept: the lines buffered now.
        let text: String = vm.console().lines().iter().filter(|_| history).map(|l| format!("{l}\n")).collect();
        return Ok(text.into_response());
    }
    let lines = vm.console().stream(history).map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    // Every stream ends when the agent shuts down.
    let mut closing = agent.closing.clone();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    Ok(Body::from_stream(lines.take_until(closed)).into_response())
}
