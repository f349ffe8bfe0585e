//! Taking over what a previous owner left running: detached VMs (a host agent restarted after
//! a crash) and the VMs that waited in its pools.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SmartVm;
use crate::error::{Result, SmartVmError};
use crate::lifecycle::VmState;
use crate::pool::{PoolKind, PoolSpec, VmPool};
use crate::vm::reclaim::{reclaim_one, Spare};
use crate::vm::{MicroVm, VmJournal, VmRuntimeOptions};

/// How long an adoption waits before its second try at a VM.
const ADOPT_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// What [`SmartVm::adopt_detached`] or [`SmartVm::adopt_pool`] did.
#[derive(Debug, Default)]
pub struct AdoptOutcome {
    /// VMs taken over.
    pub adopted: Vec<String>,
    /// Runtime dirs whose live VM could not be taken over, and why (it was then reclaimed).
    pub failed: Vec<(PathBuf, SmartVmError)>,
    /// VMs that could not be taken over and were killed and unwound.
    pub reclaimed: Vec<String>,
}

/// The VM dirs of the runtime dir (not the hidden infrastructure) with their journals.
fn journaled_vm_dirs(runtime_dir: &Path) -> Vec<(PathBuf, VmJournal)> {
    let Ok(entries) = std::fs::read_dir(runtime_dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|dir| dir.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .filter_map(|dir| VmJournal::read(&dir).ok().map(|j| (dir, j)))
        .collect()
}

/// True when a pooled VM's journal is this program's to act on: its owner is gone (or is this
/// program); a pool of another live program is left alone.
fn pooled_here(journal: &VmJournal) -> bool {
    journal.pool.is_some() && (!journal.owner_alive() || journal.owner_pid == Some(std::process::id() as i32))
}

impl SmartVm {
    /// Adopts every detached VM in the runtime dir whose process still runs and that is not
    /// registered yet (a host agent restarting after a crash). One that cannot be taken over
    /// (after a second try: its API may be slow under load) is killed and unwound, so that no VM
    /// runs that nothing answers for; dead ones are left to [`reclaim`](Self::reclaim).
    ///
    /// VMs that waited in a pool are [`adopt_pool`](Self::adopt_pool)'s: adopt the pools
    /// first. A waiting VM of a pool that is not registered (by then) is killed and unwound.
    pub async fn adopt_detached(&self) -> Result<AdoptOutcome> {
        let mut outcome = AdoptOutcome::default();
        let mut binary = None;
        for (dir, journal) in journaled_vm_dirs(&self.options.runtime_dir) {
            if !journal.detached || !journal.process_alive() || self.vm(&journal.vm_id).is_some() {
                continue;
            }
            if let Some(pool) = &journal.pool {
                if pooled_here(&journal) && self.pool(pool).is_none() {
                    outcome.reclaimed.extend(reclaim_one(&self.reclaim_scope(), &dir, Spare::Nothing).reclaimed);
                }
                continue;
            }
            let binary = match &binary {
                Some(b) => b,
                None => binary.insert(self.find_binary()?),
            };
            let options = self.runtime_options(binary.clone());
            match adopt_twice(&dir, &options, None).await {
                Ok(vm) => {
                    outcome.adopted.push(journal.vm_id);
                    self.registry().insert(vm.id().to_string(), Arc::new(vm));
                }
                Err(e) => self.give_up(&dir, e, &mut outcome),
            }
        }
        Ok(outcome)
    }

    /// Creates pool `spec` as [`create_pool`](Self::create_pool) does, first taking over the
    /// VMs a previous owner (a host agent before its restart) left waiting in a pool of that
    /// name: each whose process still runs, unused (warm or paused), is ready at once; one that
    /// cannot be taken over is killed and unwound. The pool refills the rest.
    pub async fn adopt_pool(&self, spec: PoolSpec) -> Result<(Arc<VmPool>, AdoptOutcome)> {
        let options = self.pool_options(&spec)?;
        if self.pool(&spec.name).is_some() {
            // Checked before anything is taken over (and again, atomically, on registering).
            return Err(super::pools::name_in_use(&spec.name));
        }
        let mut outcome = AdoptOutcome::default();
        let mut ready = Vec::new();
        for (dir, journal) in journaled_vm_dirs(&self.options.runtime_dir) {
            let ours = journal.pool.as_deref() == Some(spec.name.as_str()) && pooled_here(&journal);
            if !ours || !journal.detached || !journal.process_alive() {
                continue;
            }
            let waiting = match spec.kind {
                PoolKind::Cold(_) => VmState::Created,
                PoolKind::Template { .. } => VmState::Paused,
                // What a configured pool's VM was sent cannot be read back and checked: replaced.
                PoolKind::Configured(_) => {
                    outcome.reclaimed.extend(reclaim_one(&self.reclaim_scope(), &dir, Spare::Nothing).reclaimed);
                    continue;
                }
            };
            match adopt_twice(&dir, &options, Some((&spec.name, waiting))).await {
                Ok(vm) if ready.len() < spec.size => {
                    outcome.adopted.push(journal.vm_id);
                    ready.push(vm);
                }
                Ok(vm) => vm.destroy_now(), // more than the pool holds now
                Err(e) => self.give_up(&dir, e, &mut outcome),
            }
        }
        let pool = self.register_pool(spec, options, ready)?;
        Ok((pool, outcome))
    }

    /// A VM that could not be taken over: killed and unwound, so that no VM runs that nothing
    /// answers for.
    fn give_up(&self, dir: &Path, e: SmartVmError, outcome: &mut AdoptOutcome) {
        let report = reclaim_one(&self.reclaim_scope(), dir, Spare::Nothing);
        outcome.reclaimed.extend(report.reclaimed);
        outcome.failed.push((dir.to_path_buf(), e));
    }

    /// The detached VMs in the runtime dir whose process is gone (a host agent reports them
    /// before [`reclaim`](Self::reclaim) removes what they left): their journals, with the exit
    /// code Firecracker logged, if any. VMs that waited in a pool are not reported: nobody
    /// used them.
    pub fn ended_detached(&self) -> Vec<(VmJournal, Option<i32>)> {
        journaled_vm_dirs(&self.options.runtime_dir)
            .into_iter()
            .filter(|(_, j)| j.detached && j.pool.is_none() && j.pid().is_some() && !j.process_alive())
            .map(|(dir, journal)| {
                let code = crate::process::logged_exit_code(&crate::process::detached_files(&dir).1);
                (journal, code)
            })
            .collect()
    }
}

/// Adopts the VM of `dir` (waiting in `pool`, if named), trying again once: its API may be
/// slow under load.
async fn adopt_twice(dir: &Path, options: &VmRuntimeOptions, pool: Option<(&str, VmState)>) -> Result<MicroVm> {
    let adopt = || async {
        match pool {
            Some((pool, waiting)) => MicroVm::adopt_pooled(dir, options.clone(), pool, waiting).await,
            None => MicroVm::adopt(dir, options.clone()).await,
        }
    };
    match adopt().await {
        Ok(vm) => Ok(vm),
        Err(_) => {
            tokio::time::sleep(ADOPT_RETRY_AFTER).await;
            adopt().await
        }
    }
}
