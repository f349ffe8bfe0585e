//! Taking over a detached VM that another program started (a host agent restarted after a
//! crash): from its journal, its process (only if it is still the one journaled), its console
//! and log files, and its API socket. Everything it holds stays in its ledger, so removing the
//! adopted VM unwinds exactly as if this program had started it.

use std::path::Path;
use std::sync::Arc;

use super::ledger::{Ledger, VmJournal};
use super::{MicroVm, VmRuntimeOptions, VmState};
use crate::api::{ApiClient, GetInstanceInfo};
use crate::error::{Result, SmartVmError};
use crate::process::FirecrackerProcess;

fn refuse(vm_dir: &Path, why: &str) -> SmartVmError {
    SmartVmError::io(format!("cannot adopt {}", vm_dir.display()), std::io::Error::other(why.to_string()))
}

impl MicroVm {
    /// Adopts the detached VM whose runtime dir is `vm_dir` (see
    /// [`VmPolicy::detached`](super::VmPolicy::detached)): its journal must be trusted, name a detached VM with a
    /// config, and its process must still run (same pid, start time, executable and command
    /// line). The VM comes back `Running` or `Paused`, as Firecracker reports it; its console
    /// is followed from the start of its file, so nothing is missed or repeated.
    pub async fn adopt(vm_dir: &Path, options: VmRuntimeOptions) -> Result<MicroVm> {
        Self::adopt_journaled(vm_dir, options, None).await
    }

    /// Adopts a detached VM that waits in pool `pool` (journaled so) and must be in `waiting`:
    /// a cold pool's `Created` (warm: its process up, nothing configured), a template pool's
    /// `Paused` (restored). Anything else Firecracker reports (a guest that runs, a restore
    /// that never loaded) is refused: a pool hands out only VMs made as it makes them.
    pub(crate) async fn adopt_pooled(
        vm_dir: &Path,
        options: VmRuntimeOptions,
        pool: &str,
        waiting: VmState,
    ) -> Result<MicroVm> {
        Self::adopt_journaled(vm_dir, options, Some((pool, waiting))).await
    }

    async fn adopt_journaled(
        vm_dir: &Path,
        options: VmRuntimeOptions,
        pooled: Option<(&str, VmState)>,
    ) -> Result<MicroVm> {
        let pool = pooled.map(|(name, _)| name);
        let journal = VmJournal::read(vm_dir).map_err(|e| match e {
            super::ledger::JournalError::Untrusted { source, .. } => SmartVmError::Untrusted(source),
            other => refuse(vm_dir, &other.to_string()),
        })?;
        if !journal.detached {
            return Err(refuse(vm_dir, "not a detached VM"));
        }
        if journal.pool.as_deref() != pool {
            return Err(refuse(vm_dir, "its journal names another pool (or none)"));
        }
        let config = journal.config.clone().ok_or_else(|| refuse(vm_dir, "its journal has no config"))?;
        let pid =
            journal.pid().filter(|_| journal.process_alive()).ok_or_else(|| refuse(vm_dir, "its process is gone"))?;
        let mut vm = MicroVm::from_validated(
            &config,
            VmRuntimeOptions { policy: super::VmPolicy { detached: true, ..options.policy.clone() }, ..options },
        );
        vm.pool = pool.map(str::to_string);
        if vm.vm_dir != vm_dir {
            return Err(refuse(vm_dir, "its journal names another VM"));
        }
        let process = FirecrackerProcess::adopt(pid, vm_dir, (vm.console.clone(), vm.stderr.clone()))?;
        let api = Arc::new(ApiClient::new(&journal.socket).with_timeout(vm.options.request_timeout));
        let state = match (api.send(&GetInstanceInfo).await?.state.as_str(), pooled) {
            ("Paused", Some((_, VmState::Paused))) => VmState::Paused,
            ("Not started", Some((_, VmState::Created))) => VmState::Created,
            (_, Some(_)) => return Err(refuse(vm_dir, "a pooled VM not in the state its pool leaves it in")),
            ("Paused", None) => VmState::Paused,
            (_, None) => VmState::Running,
        };
        {
            let mut inner = vm.inner.lock().await;
            *vm.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(process.exit_watch());
            vm.facts().pid = Some(process.pid());
            inner.process = Some(process);
            inner.api = Some(api);
            inner.version = vm.options.firecracker_version;
            let ledger =
                Ledger::adopt(vm_dir, journal).map_err(|e| SmartVmError::io("cannot write the VM journal", e))?;
            inner.ledger = Some(ledger);
        }
        if state != VmState::Created {
            *vm.running_since.lock().unwrap_or_else(|p| p.into_inner()) = crate::host::process_started_at(pid);
        }
        vm.set_state(state);
        tracing::debug!(vm = %vm.id, pid, ?state, "adopted");
        Ok(vm)
    }
}
