//! [`MicroVm`]: one Firecracker instance and its lifecycle.
//!
//! Where things live:
//! - `steps`: `start()` and `restore()` as named step lists ([`start_steps`],
//!   [`restore_steps`]);
//! - `ledger` (in [`crate::host`]): every host resource a VM acquires, journaled before it is
//!   acquired, and the one reverse unwind that serves failure, `cleanup()`, `Drop` and
//!   [`SmartVm::reclaim`](crate::SmartVm::reclaim);
//! - `plan`: the pre-boot configuration, planned as data, which is both the requests and the
//!   [`boot_file`] (the default [`BootPath`] when the Firecracker version is known);
//!
//! `steps`, `plan` and `ledger` are machinery, not API: public only for the integration tests,
//! hidden from the docs, and free to change.
//! - `state`: which operation each [`VmState`] allows;
//! - `hot_api`: what a running VM's API offers (instance info, MMDS, hot updates, metrics).
//!
//! Any failure during start unwinds the ledger and leaves the VM in `Error`.

mod adopt;
pub mod boot_file;
mod events;
mod fetch;
mod hot_api;
mod listing;
#[doc(hidden)]
pub mod plan;
pub mod reclaim;
mod runtime_options;
mod snapshots;
mod state;
#[doc(hidden)]
pub mod steps;
mod warm;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use crate::api::{ApiClient, PatchVmState, VmStateBody, VmStateRequest};
use crate::config::{ConfigErrors, VmConfig};
use crate::error::{Result, SmartVmError};
use crate::process::{Console, ExitInfo, FirecrackerProcess, StopOutcome};
use crate::version::FirecrackerVersion;

#[doc(hidden)]
pub use crate::host::ledger;
pub use crate::host::{process_start_time, JailedImage, ProcessRecord, Resource, UnwindScope, VmJournal};
pub use boot_file::BootPath;
pub use events::{VmEvent, EVENT_BUFFER};
pub use fetch::{FetchBinary, FetchFuture};
pub use listing::{journaled_vms, JournaledVm};
#[doc(hidden)]
pub use plan::{boot_plan, check_for_version, BootPlan, ResolvedResources};
pub use runtime_options::{VmPolicy, VmRuntimeOptions};
pub use state::{Operation, Transition, VmState};
pub use steps::{restore_steps, start_steps, Step};
pub use warm::{checkout_steps, configured_warm_steps, warm_steps};

#[derive(Debug, Default)]
struct VmResources {
    process: Option<FirecrackerProcess>,
    api: Option<Arc<ApiClient>>,
    version: Option<FirecrackerVersion>,
    last_stop: Option<StopOutcome>,
    #[cfg(feature = "network")]
    taps: Vec<crate::network::TapDevice>,
    ledger: Option<ledger::Ledger>,
    /// A warm VM whose config Firecracker has already been sent (a configured pool's): its
    /// start is only `InstanceStart`.
    configured_ahead: bool,
}

/// What others may read of a VM without waiting for an operation in progress (a start holds the
/// VM for its whole step list): its process id and TAPs, updated as they change.
#[derive(Debug, Default)]
struct Facts {
    pid: Option<i32>,
    #[cfg(feature = "network")]
    taps: Vec<crate::network::TapDevice>,
}

/// One microVM. Methods take `&self`; operations on one VM are serialized internally.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(smartvm: smartvm::SmartVm) -> smartvm::Result<()> {
/// use std::time::Duration;
/// use smartvm::VmConfig;
///
/// let vm = smartvm.create_vm(&VmConfig::new("/images/vmlinux").with_boot_args("console=ttyS0"))?;
/// vm.start().await?;
/// // The serial console: wait for a line, then read what is kept.
/// let console = vm.console();
/// match console.wait_for(Duration::from_secs(10), |l| l.contains("login:")).await {
///     Ok(line) => println!("booted: {line}"),
///     Err(why) => println!("no login prompt: {why}"),
/// }
/// vm.pause().await?;
/// vm.resume().await?;
/// let outcome = vm.stop().await?; // Ctrl-Alt-Del, then SIGTERM, then SIGKILL
/// println!("stopped by {:?}; exit {:?}", outcome.step, vm.exited().await);
/// vm.cleanup().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MicroVm {
    id: String,
    config: VmConfig,
    options: VmRuntimeOptions,
    vm_dir: PathBuf,
    executor: Box<dyn crate::executor::Executor>,
    /// Where the executor puts this VM's files.
    layout: crate::executor::Layout,
    state: StdMutex<VmState>,
    events: Arc<events::Events>,
    console: Console,
    stderr: Console,
    inner: tokio::sync::Mutex<VmResources>,
    exit: StdMutex<Option<tokio::sync::watch::Receiver<Option<ExitInfo>>>>,
    /// When the guest first ran (for an adopted VM: when its process started).
    running_since: StdMutex<Option<std::time::SystemTime>>,
    facts: StdMutex<Facts>,
    /// The pool this VM is made for (journaled while it waits there).
    pool: Option<String>,
}

impl MicroVm {
    /// A VM in `Created` state. Validates (and clones) `config`; nothing is created on disk.
    pub fn new(config: &VmConfig, options: VmRuntimeOptions) -> Result<Self> {
        config.validate()?;
        let vm = Self::from_validated(config, options);
        vm.check_runtime_fit()?;
        Ok(vm)
    }

    /// What depends on how the VM will run, checked before anything exists: fields the
    /// Firecracker version cannot take, configs the executor (e.g. the jailer) cannot run.
    pub(crate) fn check_runtime_fit(&self) -> Result<()> {
        if let Some(v) = self.options.firecracker_version {
            plan::check_for_version(&self.config, v)?;
        }
        if !self.options.api && self.boot_path() != BootPath::NoApi {
            let why = "the API can be off only for a config-file boot (Firecracker version known, \
                       its log read by smartvm: no logger in the config, not jailed, not boot_via_api)";
            return Err(ConfigErrors::single("api", why).into());
        }
        if !self.options.api && self.options.policy.detached {
            let why = "a detached VM is taken over again through its API: it cannot be off";
            return Err(ConfigErrors::single("api", why).into());
        }
        self.executor.check(&self.config, crate::executor::CheckScope::Config)
    }

    /// For callers that validated `config` already.
    pub(crate) fn from_validated(config: &VmConfig, options: VmRuntimeOptions) -> Self {
        let config = config.clone();
        let id = config.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let vm_dir = options.runtime_dir.join(crate::staging::sanitize_path_part(&id));
        let placement = crate::executor::Placement {
            binary: &options.firecracker_binary,
            jailer: options.jailer.as_ref(),
            drive_namespace: options.drive_namespace,
            runtime_dir: &options.runtime_dir,
        };
        let executor = crate::executor::for_vm(placement, &id, &vm_dir);
        let layout = executor.layout();
        let lines = options.console_lines;
        Self {
            id,
            config,
            options,
            vm_dir,
            executor,
            layout,
            state: StdMutex::new(VmState::Created),
            events: Arc::new(events::Events::new()),
            console: Console::new(lines),
            stderr: Console::new(lines),
            inner: tokio::sync::Mutex::new(VmResources::default()),
            exit: StdMutex::new(None),
            running_since: StdMutex::new(None),
            facts: StdMutex::new(Facts::default()),
            pool: None,
        }
    }

    /// The VM id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The VM's own copy of its configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }
    /// The per-VM runtime dir (exists between start and cleanup).
    pub fn runtime_dir(&self) -> &Path {
        &self.vm_dir
    }
    /// How this VM is configured before its guest runs: from one `--config-file` when the
    /// Firecracker version is known in advance, else (or when asked) through API requests.
    pub fn boot_path(&self) -> BootPath {
        use crate::config::LogLevel;
        let quiet =
            matches!(self.options.firecracker_log_level, Some(LogLevel::Error | LogLevel::Warning | LogLevel::Off));
        let log_readable = self.config.logger.is_none() && self.layout.logs_to_stderr && !quiet;
        let o = &self.options;
        boot_file::boot_path(o.firecracker_version.is_some(), log_readable, o.policy.boot_via_api, o.api)
    }

    /// The host path of the vsock socket, when the config has a vsock device (inside the
    /// chroot when jailed; the configured `udsPath` links to it): guest-initiated connections
    /// to port `P` go to a socket listening at `<this path>_P`.
    pub fn vsock_socket(&self) -> Option<PathBuf> {
        self.executor.vsock_socket(&self.config)
    }

    /// A client of the guest agent behind this VM's vsock device, on `smartvm-guest`'s port
    /// ([`DEFAULT_VSOCK_PORT`](crate::guest::protocol::DEFAULT_VSOCK_PORT)). A VM without a
    /// vsock device fails at once with `GUEST_UNAVAILABLE`.
    pub fn guest(&self) -> Result<crate::guest::GuestClient> {
        self.guest_on(crate::guest::protocol::DEFAULT_VSOCK_PORT)
    }

    /// As [`guest`](Self::guest), for an agent listening on another vsock `port`.
    pub fn guest_on(&self, port: u32) -> Result<crate::guest::GuestClient> {
        let socket = self.vsock_socket().ok_or_else(|| crate::error::GuestError::Unavailable {
            address: format!("VM {}", self.id),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the VM has no vsock device"),
        })?;
        Ok(crate::guest::GuestClient::new(crate::guest::GuestAddress::Vsock { socket, port }))
    }

    /// The API socket path (inside the chroot when jailed).
    pub fn socket_path(&self) -> PathBuf {
        self.layout.socket.clone()
    }
    /// TAP devices this VM created (removed at cleanup).
    #[cfg(feature = "network")]
    pub async fn tap_devices(&self) -> Vec<crate::network::TapDevice> {
        self.facts().taps.clone()
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state. A VM whose process ended by itself reads as `Stopped` (exit code 0,
    /// e.g. the guest rebooted) or `Error` (anything else).
    pub fn state(&self) -> VmState {
        let recorded = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(recorded, VmState::Running | VmState::Paused) {
            if let Some(exit) = self.exit_info() {
                return if exit.success() { VmState::Stopped } else { VmState::Error };
            }
        }
        recorded
    }

    fn set_state(&self, s: VmState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        if s == VmState::Running {
            self.running_since.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(std::time::SystemTime::now);
        }
        let exit = if matches!(s, VmState::Stopped | VmState::Error) { self.exit_info() } else { None };
        self.events.publish(VmEvent { state: s, step: None, exit });
        if matches!(s, VmState::Running | VmState::Paused) {
            // A short guest may have ended before its start finished: that end follows at once.
            if let Some(ended) = self.exit_info() {
                self.events.process_ended(ended);
            }
        }
    }

    /// Every state change from now on, and each start step, as it happens (see [`VmEvent`]).
    /// Any number of subscribers; one that falls [`EVENT_BUFFER`] events behind is told how
    /// many it missed.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    /// When the guest first ran (resumed or not since); for an adopted VM, when its process
    /// started. `None` before it ran.
    pub fn running_since(&self) -> Option<std::time::SystemTime> {
        *self.running_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the Firecracker process ended, if it has.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|rx| *rx.borrow())
    }

    /// Waits for the Firecracker process to end (e.g. the guest powered off), up to `timeout`.
    pub async fn wait_for_exit(&self, timeout: Duration) -> Option<ExitInfo> {
        let rx = self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut rx = rx?;
        let ended = tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| *v));
        ended.or_else(|| self.exit_info())
    }

    /// Waits, without a time limit, until the Firecracker process ends; `None` when the VM
    /// never started (nothing to wait for).
    pub async fn exited(&self) -> Option<ExitInfo> {
        let rx = self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut rx = rx?;
        let ended = rx.wait_for(|e| e.is_some()).await.ok().and_then(|v| *v);
        ended.or_else(|| self.exit_info())
    }

    /// The guest serial console: it exists from creation (empty until the VM starts) and keeps
    /// what the VM printed after it ends.
    pub fn console(&self) -> Console {
        self.console.clone()
    }

    /// Firecracker's own stderr (its log, when the config has no logger), like [`console`](Self::console).
    pub fn stderr(&self) -> Console {
        self.stderr.clone()
    }
    /// The Firecracker process id, while it exists.
    /// Firecracker's pid while it is this VM's (never waits for an operation in progress).
    pub async fn pid(&self) -> Option<i32> {
        self.facts().pid
    }
    /// The running Firecracker's version (learned at start).
    pub async fn firecracker_version(&self) -> Option<FirecrackerVersion> {
        self.inner.lock().await.version
    }
    /// How the last `stop()` ended the process.
    pub async fn last_stop(&self) -> Option<StopOutcome> {
        self.inner.lock().await.last_stop
    }
    /// The API client, while the process exists.
    pub async fn api(&self) -> Result<Arc<ApiClient>> {
        client(&*self.inner.lock().await)
    }

    /// Boots the VM (see the module docs). On failure nothing is left behind and the state is `Error`.
    pub async fn start(&self) -> Result<()> {
        self.launch(None).await
    }

    /// Start or restore: on any failure tear down what was created and end in `Error`.
    async fn launch(&self, source: Option<steps::RestoreSource>) -> Result<()> {
        if source.is_some() && !self.options.api {
            let why = "a restore loads its snapshot through the API: it cannot be off";
            return Err(ConfigErrors::single("api", why).into());
        }
        let inner = self.inner.lock().await;
        let op = match &source {
            None => Operation::Start,
            Some(s) => Operation::Restore { resume: s.resumes() },
        };
        let warm = source.is_none() && inner.process.is_some();
        let transition = self.begin(op)?;
        let _starting = crate::process::spawner::StartInProgress::begin();
        // A restore always loads its snapshot through the API, and a warm VM is configured
        // through it.
        let path = if source.is_some() || warm { BootPath::Api } else { self.boot_path() };
        let (steps, mut cx) = match source {
            Some(_) => (restore_steps(), steps::StartContext::new(source)),
            None if warm && inner.configured_ahead => (vec![Step::InstanceStart], steps::StartContext::warmed(&inner)),
            None if warm => (checkout_steps(), steps::StartContext::warmed(&inner)),
            None => (start_steps(path), steps::StartContext::new(None)),
        };
        let restore = steps.contains(&Step::LoadSnapshot);
        tracing::debug!(vm = %self.id, ?path, warm, restore, executor = self.executor.kind(), "starting");
        // Cancel-safe: if this future is dropped mid-start, the guard unwinds what was acquired.
        let mut guard = StartGuard { vm: self, inner, failed: Some(transition.on_failure) };
        let result = self.run_steps(&steps, &mut guard.inner, &mut cx).await;
        guard.failed = None;
        if result.is_err() {
            self.teardown(&mut guard.inner).await;
        }
        let result =
            result.map_err(|(step, e)| SmartVmError::StartFailed { vm_id: self.id.clone(), step, source: Box::new(e) });
        self.finish(transition, &result);
        result
    }

    /// Checks `op` against the [state table](state) and enters its running state, if any.
    fn begin(&self, op: Operation) -> Result<state::Transition> {
        let t = op.check(self.state())?;
        if let Some(during) = t.during {
            self.set_state(during);
        }
        Ok(t)
    }

    /// Ends an operation: the table's state for success or failure. With `begin`, the one place
    /// operations change the state.
    fn finish<T>(&self, t: state::Transition, result: &Result<T>) {
        self.set_state(if result.is_ok() { t.on_success } else { t.on_failure });
    }

    /// Pauses the vCPUs.
    pub async fn pause(&self) -> Result<()> {
        self.set_vm_state(Operation::Pause, VmStateRequest::Paused).await
    }

    /// Resumes the vCPUs.
    pub async fn resume(&self) -> Result<()> {
        self.set_vm_state(Operation::Resume, VmStateRequest::Resumed).await
    }

    async fn set_vm_state(&self, op: Operation, request: VmStateRequest) -> Result<()> {
        let inner = self.inner.lock().await;
        let t = self.begin(op)?;
        let api = client(&inner)?;
        let result = api.send(&PatchVmState(VmStateBody { state: request })).await;
        self.finish(t, &result);
        result
    }

    /// Ends the process with the configured [`StopPlan`](crate::process::StopPlan) (Ctrl-Alt-Del is skipped when paused,
    /// since a paused guest cannot react). The runtime dir stays until [`cleanup`](Self::cleanup).
    pub async fn stop(&self) -> Result<StopOutcome> {
        self.stop_with(&self.options.stop_plan).await
    }

    /// [`stop`](Self::stop) along `plan` instead of the VM's own stop plan (e.g. a longer
    /// graceful step).
    pub async fn stop_with(&self, plan: &crate::process::StopPlan) -> Result<StopOutcome> {
        let mut inner = self.inner.lock().await;
        let paused = self.state() == VmState::Paused;
        let t = self.begin(Operation::Stop)?;
        let mut plan = plan.clone();
        if paused {
            plan.steps.retain(|(s, _)| *s != crate::process::StopStep::CtrlAltDel);
        }
        let process = inner.process.as_ref().ok_or(SmartVmError::NoClient)?;
        self.events.expect_exit(true);
        let result = process.stop(inner.api.as_deref(), &plan).await.map_err(SmartVmError::from);
        self.events.expect_exit(result.is_ok());
        self.finish(t, &result);
        let outcome = result?;
        inner.last_stop = Some(outcome);
        inner.api = None;
        Ok(outcome)
    }

    /// Stops the process if needed (SIGKILL) and removes the socket, the runtime dir (staged
    /// drives included) and TAPs this VM created. Valid in any state; idempotent.
    pub async fn cleanup(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let t = self.begin(Operation::Cleanup)?;
        self.events.expect_exit(true);
        self.teardown(&mut inner).await;
        self.finish(t, &Ok(()));
        Ok(())
    }
}

impl MicroVm {
    /// Where this VM's unwind may act: its runtime dir parent and jail base, as the owner.
    fn unwind_scope(&self) -> UnwindScope {
        UnwindScope {
            runtime_dir: self.options.runtime_dir.clone(),
            jail_base: self.layout.jail_base.clone().unwrap_or_else(|| crate::process::DEFAULT_JAIL_BASE.into()),
            owner: true,
        }
    }

    /// Kills the process (if any) and unwinds the ledger. Never fails: every resource is
    /// attempted and whatever could not be released is logged (and stays journaled for reclaim).
    async fn teardown(&self, inner: &mut VmResources) {
        inner.api = None;
        // The process goes first, waited for without blocking: what remains of the unwind
        // (files, TAP ioctls) is quick, and runs on this thread, in this thread's network
        // namespace, where the TAPs were made.
        if let Some(process) = inner.process.take() {
            if let Err(e) = process.stop(None, &crate::process::StopPlan::kill()).await {
                tracing::warn!(vm = %self.id, error = %e, "could not kill Firecracker");
            }
            // Let the console readers finish; the exit watch stays for state().
            let _ = process.wait(Duration::from_secs(1)).await;
        }
        if let Some(mut ledger) = inner.ledger.take() {
            for f in ledger.unwind(&self.unwind_scope()) {
                tracing::warn!(vm = %self.id, error = %f, "could not release a resource");
            }
        }
        *self.facts() = Facts::default();
        #[cfg(feature = "network")]
        for tap in std::mem::take(&mut inner.taps) {
            if let Some(net) = &self.options.network {
                net.forget_tap(&tap.name).await;
            }
        }
    }
}

/// Holds a VM's resources while it starts; dropped armed (the start future was cancelled), it
/// kills the process and unwinds the ledger synchronously and leaves the VM in `Error`.
/// The VM's API client: none before start, after stop, or with the API off (`NO_CLIENT`).
fn client(inner: &VmResources) -> Result<Arc<ApiClient>> {
    inner.api.clone().ok_or(SmartVmError::NoClient)
}

struct StartGuard<'a> {
    vm: &'a MicroVm,
    inner: tokio::sync::MutexGuard<'a, VmResources>,
    /// Armed with the state a failed start ends in; disarmed (`None`) once the steps returned.
    failed: Option<VmState>,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        let Some(failed) = self.failed else { return };
        // A spawn may be in flight on the spawner thread: let it finish (it ends the orphan).
        crate::process::spawner::flush();
        drop(self.inner.process.take());
        self.inner.api = None;
        if let Some(mut ledger) = self.inner.ledger.take() {
            for f in ledger.unwind(&self.vm.unwind_scope()) {
                tracing::warn!(vm = %self.vm.id, error = %f, "leftover after a cancelled start");
            }
        }
        #[cfg(feature = "network")]
        self.inner.taps.clear();
        *self.vm.facts() = Facts::default();
        self.vm.set_state(failed);
    }
}

impl Drop for MicroVm {
    fn drop(&mut self) {
        // Last resort for callers that never called cleanup(): the process goes first (its Drop
        // kills it and waits), then the ledger unwinds everything else, synchronously.
        let scope = self.unwind_scope();
        let inner = self.inner.get_mut();
        let running = inner.process.as_ref().is_some_and(|p| p.exit_info().is_none());
        if self.options.policy.detached && running {
            return; // it outlives this program; its journal names everything for whoever adopts it
        }
        drop(inner.process.take());
        if let Some(mut ledger) = inner.ledger.take() {
            for f in ledger.unwind(&scope) {
                tracing::warn!(vm = %self.id, error = %f, "leftover after drop");
            }
        }
    }
}
