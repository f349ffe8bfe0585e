//! Warm pools: VMs made ready before anyone asks for one, handed out by
//! [`SmartVm::checkout`](crate::SmartVm::checkout).
//!
//! Two kinds ([`PoolKind`]):
//! - **cold**: Firecracker spawned with its API up and nothing configured; a checkout
//!   configures it with the config it is given and boots it, with no exec, process start-up
//!   or API wait left on the way to the guest;
//! - **template**: VMs restored from one snapshot and left paused; a checkout resumes one.
//!
//! A pool refills in the background, making at most
//! [`refill_concurrency`](PoolSpec::refill_concurrency) VMs at once (its CPU budget; an idle
//! pooled Firecracker waits in `epoll` and costs none). A VM waiting in a pool is journaled
//! like any other, its journal naming the pool, so `smartvm gc` reclaims it when the program
//! that made it died. Before a VM is handed out its process is checked (it runs, with the pid,
//! start time, executable and command line its journal names); one that fails is destroyed and
//! the next one taken. When none is ready, the checkout makes its VM on the spot as it would
//! without a pool: a pool can make a start faster, never fail it.
//!
//! The refill planning ([`refill::plan`]) is a plain function; [`VmPool`] performs it.

pub mod refill;
mod spec;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub use spec::{PoolKind, PoolSpec, PoolStats, MAX_POOL_NAME, MAX_POOL_SIZE};

use crate::error::Result;
use crate::vm::{MicroVm, VmRuntimeOptions};
use crate::VmConfig;

/// A warm pool (see the [module docs](self)). Made by
/// [`SmartVm::create_pool`](crate::SmartVm::create_pool); closing it (or dropping the last
/// handle) destroys the VMs that wait in it.
#[derive(Debug)]
pub struct VmPool {
    shared: Arc<Shared>,
    refiller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the pool, its refiller and its VMs' exit watchers share.
#[derive(Debug)]
struct Shared {
    spec: PoolSpec,
    options: VmRuntimeOptions,
    ready: Mutex<VecDeque<MicroVm>>,
    warming: AtomicUsize,
    /// The tasks making VMs now: a close cancels them (their start unwinds) and waits for them.
    makers: Mutex<tokio::task::JoinSet<()>>,
    /// Checkouts booting their VM (see [`refill::plan`]).
    booting: AtomicUsize,
    closed: AtomicBool,
    /// Wakes the refiller: a VM was taken, made, or its process ended.
    wake: tokio::sync::Notify,
    stats: tokio::sync::watch::Sender<PoolStats>,
    handed_out: AtomicU64,
    misses: AtomicU64,
    discarded: AtomicU64,
    failed: AtomicU64,
}

impl VmPool {
    /// A pool of `spec` whose VMs run with `options`, holding `ready` (VMs adopted from a
    /// previous owner) to begin with; starts refilling at once (on the current tokio runtime).
    pub(crate) fn start(spec: PoolSpec, options: VmRuntimeOptions, ready: Vec<MicroVm>) -> Arc<Self> {
        let stats =
            PoolStats { name: spec.name.clone(), kind: spec.kind.name().into(), size: spec.size, ..Default::default() };
        let shared = Arc::new(Shared {
            spec,
            options,
            ready: Mutex::new(VecDeque::new()),
            warming: AtomicUsize::new(0),
            makers: Mutex::new(tokio::task::JoinSet::new()),
            booting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            stats: tokio::sync::watch::channel(stats).0,
            handed_out: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        for vm in &ready {
            watch_exit(vm, Arc::downgrade(&shared));
        }
        shared.lock_ready().extend(ready);
        shared.publish();
        let refiller = tokio::spawn(refill::run(shared.clone()));
        Arc::new(Self { shared, refiller: Mutex::new(Some(refiller)) })
    }

    /// The pool's spec.
    pub fn spec(&self) -> &PoolSpec {
        &self.shared.spec
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    /// What it holds and has done now.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats.borrow().clone()
    }

    /// Its stats as they change (each change of the counts or of the ready VMs).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<PoolStats> {
        self.shared.stats.subscribe()
    }

    /// Waits until `size` VMs are ready, up to `timeout`; false when they are not by then.
    pub async fn ready(&self, timeout: std::time::Duration) -> bool {
        let size = self.shared.spec.size;
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.ready >= size)).await.is_ok_and(|r| r.is_ok())
    }

    /// The ids and Firecracker pids of the VMs ready now, oldest first.
    pub fn ready_vms(&self) -> Vec<(String, Option<i32>)> {
        let ready = self.shared.lock_ready();
        ready.iter().map(|vm| (vm.id().to_string(), vm.current_pid())).collect()
    }

    /// Stops refilling and destroys the VMs that wait (their processes, dirs and journals) and
    /// those being made (their start is cancelled and unwinds). VMs handed out are not the
    /// pool's and stay. Idempotent.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(refiller) = self.refiller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            refiller.abort();
        }
        let mut makers = std::mem::take(&mut *self.shared.lock_makers());
        makers.abort_all();
        while makers.join_next().await.is_some() {}
        self.shared.warming.store(0, Ordering::SeqCst);
        let waiting: Vec<MicroVm> = self.shared.lock_ready().drain(..).collect();
        self.shared.publish();
        futures_util::future::join_all(waiting.iter().map(|vm| vm.cleanup())).await;
    }

    /// True once [`close`](Self::close) ran.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// A ready VM that passes its identity check, if any; broken ones found on the way are
    /// destroyed.
    pub(crate) fn take(&self) -> Option<MicroVm> {
        loop {
            let mut vm = self.shared.lock_ready().pop_front()?;
            if vm.is_warm_and_intact() {
                self.shared.handed_out.fetch_add(1, Ordering::Relaxed);
                self.shared.changed();
                return Some(vm);
            }
            tracing::warn!(pool = %self.name(), vm = %vm.id(), "a ready VM failed its check; destroyed");
            self.shared.discarded.fetch_add(1, Ordering::Relaxed);
            self.shared.changed();
            vm.destroy_now();
        }
    }

    /// Puts back a VM that was taken but not handed out (its checkout was refused).
    pub(crate) fn give_back(&self, vm: MicroVm) {
        self.shared.handed_out.fetch_sub(1, Ordering::Relaxed);
        self.shared.lock_ready().push_front(vm);
        self.shared.changed();
    }

    /// A VM handed out turned out broken after all (its process ended during the checkout).
    pub(crate) fn discard_handed_out(&self) {
        self.shared.handed_out.fetch_sub(1, Ordering::Relaxed);
        self.shared.discarded.fetch_add(1, Ordering::Relaxed);
        self.shared.publish();
    }

    /// Counts a checkout's boot until the guard drops (then the refiller may go on).
    pub(crate) fn booting(&self) -> Booting<'_> {
        self.shared.booting.fetch_add(1, Ordering::SeqCst);
        Booting(&self.shared)
    }

    /// A checkout found none ready.
    pub(crate) fn missed(&self) {
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        self.shared.publish();
    }

    /// A new VM id of this pool.
    pub(crate) fn new_id(&self) -> String {
        self.shared.new_id()
    }

    /// The runtime options its VMs run with.
    pub(crate) fn options(&self) -> &VmRuntimeOptions {
        &self.shared.options
    }
}

/// One checkout booting its VM.
pub(crate) struct Booting<'a>(&'a Shared);

impl Drop for Booting<'_> {
    fn drop(&mut self) {
        self.0.booting.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

impl Drop for VmPool {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(refiller) = self.refiller.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            refiller.abort();
        }
        self.shared.lock_makers().abort_all();
        // The waiting VMs unwind synchronously as they drop (a detached one, a host agent's,
        // lives on for the next agent to take over).
        self.shared.lock_ready().clear();
    }
}

impl Shared {
    fn lock_ready(&self) -> std::sync::MutexGuard<'_, VecDeque<MicroVm>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_makers(&self) -> std::sync::MutexGuard<'_, tokio::task::JoinSet<()>> {
        self.makers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_id(&self) -> String {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        format!("{}-{}", self.spec.name, &hex[..12])
    }

    /// The stats as of now, to subscribers.
    fn publish(&self) {
        let ready = self.lock_ready().len();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.stats.send_modify(|s| {
            s.ready = ready;
            s.warming = self.warming.load(Ordering::Relaxed);
            s.handed_out = load(&self.handed_out);
            s.misses = load(&self.misses);
            s.discarded = load(&self.discarded);
            s.failed = load(&self.failed);
        });
    }

    /// Something changed: publish it and wake the refiller.
    fn changed(&self) {
        self.publish();
        self.wake.notify_one();
    }

    /// A VM of this pool's kind, made ready: warmed up (cold) or restored paused (template).
    async fn make(&self) -> Result<MicroVm> {
        let config = VmConfig { id: Some(self.new_id()), ..self.spec.kind.config().clone() };
        let vm = MicroVm::new(&config, self.options.clone())?.for_pool(&self.spec.name);
        match &self.spec.kind {
            PoolKind::Cold(_) => vm.warm_up(false).await?,
            PoolKind::Configured(_) => vm.warm_up(true).await?,
            PoolKind::Template { snapshot, .. } => vm.restore_snapshot(snapshot, false, false).await?,
        }
        Ok(vm)
    }
}

/// Wakes the pool's refiller when `vm`'s process ends (while it waits, or later: a spurious
/// wake is harmless).
fn watch_exit(vm: &MicroVm, pool: Weak<Shared>) {
    let Some(mut exit) = vm.exit_receiver() else { return };
    tokio::spawn(async move {
        let _ = exit.wait_for(Option::is_some).await;
        if let Some(pool) = pool.upgrade() {
            pool.wake.notify_one();
        }
    });
}
