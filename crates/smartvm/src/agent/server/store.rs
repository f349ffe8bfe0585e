//! [`VmStore`]: every VM the agent answers for, live (held by its [`SmartVm`]) or ended while no
//! agent ran (reported `error` until removed), and the one stream of their events, which each
//! VM publishes itself ([`MicroVm::events`]); the agent adds only `removed`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot};

use crate::agent::wire::{EventState, VmEvent, VmSummary};
use crate::error::{Result, SmartVmError};
use crate::lifecycle::VmState;
use crate::smartvm::SmartVm;
use crate::vm::MicroVm;

/// Agent events a slow `/v1/events` client may fall behind by before it misses some.
const AGENT_EVENT_BUFFER: usize = 1024;

/// The agent's VMs and their events.
pub(super) struct VmStore {
    smartvm: SmartVm,
    /// VMs that ended while no agent ran, found at start.
    ended: Mutex<HashMap<String, VmSummary>>,
    /// Per watched VM: tells its forwarder the VM was removed.
    removals: Mutex<HashMap<String, oneshot::Sender<()>>>,
    events: broadcast::Sender<VmEvent>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VmStore {
    pub(super) fn new(smartvm: SmartVm) -> Self {
        Self {
            smartvm,
            ended: Mutex::new(HashMap::new()),
            removals: Mutex::new(HashMap::new()),
            events: broadcast::channel(AGENT_EVENT_BUFFER).0,
        }
    }

    pub(super) fn smartvm(&self) -> &SmartVm {
        &self.smartvm
    }

    /// A live VM; `INVALID_STATE` for one that ended while no agent ran, else `VM_NOT_FOUND`.
    pub(super) fn live(&self, id: &str) -> Result<Arc<MicroVm>> {
        match self.smartvm.vm(id) {
            Some(vm) => Ok(vm),
            None if lock(&self.ended).contains_key(id) => {
                Err(SmartVmError::InvalidState { operation: "act on", state: VmState::Error })
            }
            None => Err(SmartVmError::VmNotFound { id: id.into() }),
        }
    }

    /// One VM, live or ended.
    pub(super) async fn get(&self, id: &str) -> Result<VmSummary> {
        if let Some(ended) = lock(&self.ended).get(id).cloned() {
            return Ok(ended);
        }
        Ok(summary(&*self.live(id)?).await)
    }

    /// Every VM, by id.
    pub(super) async fn list(&self) -> Vec<VmSummary> {
        let mut out = Vec::new();
        for id in self.smartvm.vm_ids() {
            if let Some(vm) = self.smartvm.vm(&id) {
                out.push(summary(&vm).await);
            }
        }
        out.extend(lock(&self.ended).values().cloned());
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Records VMs that ended while no agent ran.
    pub(super) fn add_ended(&self, vms: impl IntoIterator<Item = VmSummary>) {
        lock(&self.ended).extend(vms.into_iter().map(|vm| (vm.id.clone(), vm)));
    }

    /// Follows `vm`'s own events into the agent's stream, starting with its current state,
    /// until it is removed.
    pub(super) fn watch(&self, vm: &MicroVm) {
        let id = vm.id().to_string();
        let mut changes = vm.events();
        let (removed_tx, mut removed) = oneshot::channel();
        lock(&self.removals).insert(id.clone(), removed_tx);
        let events = self.events.clone();
        let publish = move |id: &str, state: EventState, e: Option<crate::vm::VmEvent>| {
            let (step, exit) = e.map_or((None, None), |e| (e.step, e.exit));
            let _ = events.send(VmEvent { id: id.into(), state, step, at_ms: now_ms(), exit });
        };
        publish(&id, vm.state().into(), None);
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    biased;
                    change = changes.recv() => change,
                    _ = &mut removed => break,
                };
                match change {
                    Ok(e) => publish(&id, e.state.into(), Some(e)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    // The VM is gone (its last holder dropped it): removed, if the store says so.
                    Err(broadcast::error::RecvError::Closed) => {
                        if (&mut removed).await.is_ok() {
                            publish(&id, EventState::Removed, None);
                        }
                        return;
                    }
                }
            }
            // Removed: what the VM published before its removal first, then `removed`.
            while let Ok(e) = changes.try_recv() {
                publish(&id, e.state.into(), Some(e));
            }
            publish(&id, EventState::Removed, None);
        });
    }

    /// Removes VM `id` and everything it holds on the host; a running one only with `force`.
    pub(super) async fn remove(&self, id: &str, force: bool) -> Result<()> {
        if lock(&self.ended).remove(id).is_some() {
            return Ok(()); // what it left was reclaimed when the agent started
        }
        let state = self.live(id)?.state();
        if matches!(state, VmState::Running | VmState::Paused) && !force {
            return Err(SmartVmError::InvalidState { operation: "remove (without force)", state });
        }
        self.smartvm.remove_vm(id).await?;
        if let Some(removed) = lock(&self.removals).remove(id) {
            let _ = removed.send(());
        }
        Ok(())
    }

    /// Every change from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    /// Each live VM's current state, as events.
    pub(super) fn current(&self) -> Vec<VmEvent> {
        let vms = self.smartvm.vm_ids().into_iter().filter_map(|id| self.smartvm.vm(&id));
        vms.map(|vm| VmEvent { id: vm.id().into(), state: vm.state().into(), step: None, at_ms: now_ms(), exit: None })
            .collect()
    }
}

/// How the agent reports a live VM.
pub(super) async fn summary(vm: &MicroVm) -> VmSummary {
    let taps = vm.tap_devices().await;
    let cfg = vm.config();
    let running = matches!(vm.state(), VmState::Running | VmState::Paused);
    let uptime = vm.running_since().and_then(|t| t.elapsed().ok()).map(|d| d.as_secs());
    VmSummary {
        id: vm.id().into(),
        state: vm.state(),
        pid: vm.pid().await.filter(|_| running),
        socket: vm.socket_path(),
        vcpus: cfg.machine_config.vcpu_count,
        mem_mib: cfg.machine_config.mem_size_mib,
        taps: taps.iter().map(|t| t.name.clone()).collect(),
        guest_ip: taps.first().map(|t| t.guest_ip.to_string()),
        uptime_s: uptime.filter(|_| running),
        exit: vm.exit_info(),
        console_file: Some(crate::process::detached_files(vm.runtime_dir()).0).filter(|f| f.exists()),
        config: cfg.clone(),
        owner: None,
    }
}

/// How a VM that ended while no agent ran is reported: `error`, with its exit code if logged.
pub(super) fn ended_summary((journal, code): (crate::vm::VmJournal, Option<i32>)) -> Option<VmSummary> {
    let config = journal.config.clone()?;
    Some(VmSummary {
        id: journal.vm_id.clone(),
        state: VmState::Error,
        pid: None,
        socket: journal.socket.clone(),
        vcpus: config.machine_config.vcpu_count,
        mem_mib: config.machine_config.mem_size_mib,
        taps: journal.taps().iter().map(|t| t.to_string()).collect(),
        guest_ip: None,
        uptime_s: None,
        exit: Some(crate::lifecycle::ExitInfo { code, signal: None }),
        console_file: None,
        config,
        owner: None,
    })
}
