//! The host agent's server, embeddable: [`AgentServer`] serves the [routes](super::Route) over
//! a Unix socket for a [`SmartVm`] whose VMs are detached (they outlive the server; the next
//! server adopts the live ones and reclaims what dead ones left). `smartvm serve` is a thin
//! wrapper around it; a containerd shim or a user's own daemon can run it the same way.
//!
//! Laid out like a daemon: the router (here, built from [`Route::ALL`](super::Route::ALL)),
//! the handlers by topic (`vms`, `streams`, `snapshots`), one store of VMs (`store`) and
//! who may call (`peer`).
//!
//! ```no_run
//! # async fn demo() -> smartvm::Result<()> {
//! use smartvm::agent::server::{bind, AgentServer};
//! let options = smartvm::SmartVmOptions::from_env();
//! let listener = bind(&options.runtime_dir.join("my-agent.sock")).await?;
//! let server = AgentServer::new(options);
//! let report = server.adopt().await?;
//! println!("adopted {:?}", report.adopted);
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod answer;
mod guest;
mod peer;
mod policy;
mod pool_book;
mod pools;
mod snapshots;
mod store;
mod streams;
mod vms;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::MethodRouter;
use axum::Router;
use tokio::net::UnixListener;

pub use peer::{Peer, AGENT_GROUP};
pub use policy::{AgentPolicy, Caller};

use super::route::Route;
use crate::agent::wire::VmSummary;
use crate::error::{Result, SmartVmError};
use crate::options::SmartVmOptions;
use crate::smartvm::SmartVm;

/// What the server shares with its handlers: the store of VMs, the record of its pools, the
/// policy and the gate for starts, and whether it is closing.
struct Agent {
    store: store::VmStore,
    pool_book: pool_book::PoolBook,
    policy: AgentPolicy,
    starts: policy::StartGate,
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::ops::Deref for Agent {
    type Target = store::VmStore;
    fn deref(&self) -> &store::VmStore {
        &self.store
    }
}

impl Agent {
    /// A turn to start `vms` VMs: `BUSY` when the agent holds its most VMs already, or when
    /// too many starts wait.
    async fn start_turn(&self, vms: usize) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.room_for(vms)?;
        self.starts.enter(vms).await
    }

    /// `BUSY` unless `vms` more VMs fit under the limit, counting the VMs held and those
    /// pools keep ready.
    fn room_for(&self, vms: usize) -> Result<()> {
        let held = self.smartvm().vm_count();
        let pooled: usize = self.smartvm().pools().iter().map(|p| p.spec().size).sum();
        if held + pooled + vms > self.policy.max_vms {
            let limit = self.policy.max_vms;
            return Err(SmartVmError::Busy(format!(
                "the agent holds {held} VMs and its pools keep {pooled} ready; its limit is {limit}"
            )));
        }
        Ok(())
    }

    /// Resolves when the server shuts down: every open stream ends with it.
    fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }
}

type Shared = Arc<Agent>;

/// The host agent's server.
pub struct AgentServer {
    agent: Shared,
}

/// What [`AgentServer::adopt`] found.
#[derive(Debug, Default)]
pub struct AdoptReport {
    /// Live VMs taken over.
    pub adopted: Vec<String>,
    /// Runtime dirs whose live VM could not be taken over, and why (it was killed and unwound).
    pub failed: Vec<(PathBuf, SmartVmError)>,
    /// VMs that ended while no agent ran (reported `error` until removed).
    pub ended: Vec<VmSummary>,
    /// VMs whose leftovers were reclaimed.
    pub reclaimed: Vec<String>,
    /// Pools made again from the agent's record, each with the waiting VMs taken over.
    pub pools: Vec<(String, Vec<String>)>,
    /// Recorded pools that could not be made again (a bundle gone, an untrusted record), and
    /// why; their waiting VMs were reclaimed.
    pub pools_failed: Vec<(PathBuf, SmartVmError)>,
}

impl AgentServer {
    /// A server over a new [`SmartVm`] with `options`, its VMs detached, with the default
    /// [`AgentPolicy`].
    pub fn new(options: SmartVmOptions) -> Self {
        Self::with_policy(options, AgentPolicy::default())
    }

    /// A server over a new [`SmartVm`] with `options`, its VMs detached, under `policy`.
    pub fn with_policy(options: SmartVmOptions, policy: AgentPolicy) -> Self {
        let vm_policy = crate::vm::VmPolicy { detached: true, ..options.vm_policy.clone() };
        let smartvm = SmartVm::new(SmartVmOptions { vm_policy, ..options });
        let agent = Agent {
            pool_book: pool_book::PoolBook::new(&smartvm.options().runtime_dir),
            store: store::VmStore::new(smartvm),
            starts: policy::StartGate::new(&policy),
            policy,
            closing: tokio::sync::watch::channel(false).0,
        };
        Self { agent: Arc::new(agent) }
    }

    /// The orchestrator behind it.
    pub fn smartvm(&self) -> &SmartVm {
        self.agent.smartvm()
    }

    /// Makes the recorded pools again (with the VMs waiting in them), takes over the VMs a
    /// previous agent left running, records those that died meanwhile, then reclaims what dead
    /// ones left.
    pub async fn adopt(&self) -> Result<AdoptReport> {
        let smartvm = self.agent.smartvm();
        let mut report = AdoptReport::default();
        self.adopt_pools(&mut report).await;
        let outcome = smartvm.adopt_detached().await?;
        for vm in outcome.adopted.iter().filter_map(|id| smartvm.vm(id)) {
            self.agent.watch(&vm);
        }
        report.ended = smartvm.ended_detached().into_iter().filter_map(store::ended_summary).collect();
        self.agent.add_ended(report.ended.clone());
        report.adopted = outcome.adopted;
        report.failed.extend(outcome.failed);
        report.reclaimed.extend(outcome.reclaimed);
        report.reclaimed.extend(smartvm.reclaim().await?.reclaimed);
        Ok(report)
    }

    /// The recorded pools, made again with the VMs that waited in them; a record that cannot
    /// be made again is reported (it stays), a waiting VM that cannot be taken over is killed
    /// and unwound.
    async fn adopt_pools(&self, report: &mut AdoptReport) {
        let (requests, failed) = self.agent.pool_book.load();
        report.pools_failed = failed;
        for request in requests {
            let record = self.agent.pool_book.file(&request.name);
            let adopted = match request.to_spec() {
                Ok(spec) => self.agent.smartvm().adopt_pool(spec).await,
                Err(e) => Err(e),
            };
            match adopted {
                Ok((pool, outcome)) => {
                    report.failed.extend(outcome.failed);
                    report.reclaimed.extend(outcome.reclaimed);
                    report.pools.push((pool.name().to_string(), outcome.adopted));
                }
                Err(e) => report.pools_failed.push((record, e)),
            }
        }
    }

    /// The routes, each behind the peer check (answers need the peer's credentials: serve the
    /// router with `into_make_service_with_connect_info::<Peer>()`, as [`serve`](Self::serve) does).
    pub fn router(&self) -> Router {
        // One method router per path, holding the handlers of each method on it.
        let mut paths: Vec<(&str, MethodRouter<Shared>)> = Vec::new();
        for route in Route::ALL {
            match paths.iter().position(|(p, _)| *p == route.template()) {
                Some(i) => paths[i].1 = std::mem::take(&mut paths[i].1).merge(handler(route)),
                None => paths.push((route.template(), handler(route))),
            }
        }
        let routes = paths
            .into_iter()
            .fold(Router::new(), |router, (path, methods)| router.route(path, methods.fallback(answer::no_route)));
        routes
            .fallback(answer::no_route)
            .layer(axum::middleware::from_fn_with_state(self.agent.clone(), peer::check_peer))
            .with_state(self.agent.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; open streams (events, followed logs)
    /// end then, and the VMs keep running.
    pub async fn serve(
        &self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let app = self.router().into_make_service_with_connect_info::<Peer>();
        let closing = self.agent.closing.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = closing.send(true);
        };
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        served.map_err(|e| SmartVmError::io("the agent server failed", e))
    }
}

/// The handler of each route: a new route does not compile until it has one.
fn handler(route: Route) -> MethodRouter<Shared> {
    use axum::routing::{delete, get, post};
    match route {
        Route::OpenApi => get(openapi),
        Route::Info => get(vms::info),
        Route::Events => get(streams::events),
        Route::ListVms => get(vms::list),
        Route::CreateVm => post(vms::create),
        Route::GetVm => get(vms::inspect),
        Route::RemoveVm => delete(vms::remove),
        Route::PauseVm => post(vms::pause),
        Route::ResumeVm => post(vms::resume),
        Route::StopVm => post(vms::stop),
        Route::VmLogs => get(streams::logs),
        Route::VmConsole => post(streams::console_input),
        Route::SnapshotVm => post(snapshots::snapshot),
        Route::RestoreSnapshot => post(snapshots::restore),
        Route::GuestConnect => get(guest::connect),
        Route::ListPools => get(pools::list),
        Route::CreatePool => post(pools::create),
        Route::GetPool => get(pools::inspect),
        Route::RemovePool => delete(pools::remove),
        Route::CheckoutPool => post(pools::checkout),
    }
}

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], super::wire::OPENAPI)
}

/// Binds the agent socket at `socket`: `0600`, or `0660` for the [`AGENT_GROUP`] when that
/// group exists; a stale socket no agent answers on is replaced, a live one is refused.
pub async fn bind(socket: &Path) -> Result<UnixListener> {
    bind_for(socket, AGENT_GROUP).await
}

/// [`bind`] for the members of `group` (an [`AgentPolicy::group`] of its own).
pub async fn bind_for(socket: &Path, group: &str) -> Result<UnixListener> {
    let failed = |e: std::io::Error| SmartVmError::io(format!("cannot bind {}", socket.display()), e);
    if socket.exists() {
        if super::AgentClient::new(socket).info().await.is_ok() {
            return Err(failed(std::io::Error::new(std::io::ErrorKind::AddrInUse, "an agent already listens there")));
        }
        let _ = std::fs::remove_file(socket);
    }
    let listener = UnixListener::bind(socket).map_err(failed)?;
    let group = nix::unistd::Group::from_name(group).ok().flatten();
    if let Some(g) = &group {
        nix::unistd::chown(socket, None, Some(g.gid)).map_err(|e| failed(e.into()))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(failed)?;
    Ok(listener)
}
