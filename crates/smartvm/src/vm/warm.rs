//! Warm VMs, for [pools](crate::pool): a start split in two. [`warm_steps`] spawn Firecracker
//! and wait for its API before anyone asks for a VM; [`checkout_steps`] are the rest of an API
//! boot, run when one is handed out, with the config it is handed out for.
//!
//! A warm VM stays in `Created` (its process exists, nothing is configured): `start()` on it
//! runs only the checkout steps. Its runtime dir and journal exist from the first warm step, so
//! `reclaim` (`smartvm gc`) treats it like any VM whose owner died.

use super::steps::{start_steps, StartContext, Step};
use super::{BootPath, MicroVm, StartGuard, VmState};
use crate::config::{ConfigErrors, VmConfig};
use crate::error::{Result, SmartVmError};

/// The steps that run ahead of a checkout: nothing here depends on the VM's config.
pub fn warm_steps() -> Vec<Step> {
    vec![Step::CheckHost, Step::CreateRuntimeDir, Step::Spawn, Step::WaitForApi, Step::LearnVersion]
}

/// The steps that run ahead of a checkout from a configured pool: the whole API boot but its
/// `InstanceStart` (the config is the pool's, known ahead).
pub fn configured_warm_steps() -> Vec<Step> {
    start_steps(BootPath::Api).into_iter().filter(|s| *s != Step::InstanceStart).collect()
}

/// The steps of an API boot that [`warm_steps`] did not run, in their order.
pub fn checkout_steps() -> Vec<Step> {
    let warm = warm_steps();
    start_steps(BootPath::Api).into_iter().filter(|s| !warm.contains(s)).collect()
}

impl MicroVm {
    /// Runs [`warm_steps`] (or with `configured`, [`configured_warm_steps`]): afterwards
    /// Firecracker runs with its API up and nothing (or its whole config) sent, and the VM is
    /// still `Created`. Only for Firecracker run directly (a jail or a drive namespace is shaped
    /// by the config, which a cold pool's VM does not have yet) with its API on. On failure
    /// nothing is left and the VM is in `Error`.
    pub(crate) async fn warm_up(&self, configured: bool) -> Result<()> {
        self.can_warm_up()?;
        let inner = self.inner.lock().await;
        let state = self.state();
        if state != VmState::Created || inner.process.is_some() {
            return Err(SmartVmError::InvalidState { operation: "warm_up", state });
        }
        let _starting = crate::process::spawner::StartInProgress::begin();
        let mut cx = StartContext::new(None);
        let mut guard = StartGuard { vm: self, inner, failed: Some(VmState::Error) };
        let steps = if configured { configured_warm_steps() } else { warm_steps() };
        let result = self.run_steps(&steps, &mut guard.inner, &mut cx).await;
        guard.failed = None;
        guard.inner.configured_ahead = configured && result.is_ok();
        if let Err((step, e)) = result {
            self.teardown(&mut guard.inner).await;
            self.set_state(VmState::Error);
            return Err(SmartVmError::StartFailed { vm_id: self.id.clone(), step, source: Box::new(e) });
        }
        Ok(())
    }

    /// Whether [`warm_up`](Self::warm_up) can run this VM (`INVALID_CONFIG` if not).
    pub(crate) fn can_warm_up(&self) -> Result<()> {
        if self.executor.kind() != "direct" || !self.options.api {
            let why = "a cold pool runs Firecracker directly with its API on (no jailer, no drive namespace)";
            return Err(ConfigErrors::single("kind", why).into());
        }
        Ok(())
    }

    /// True when this VM waits ready in a pool, warm (`Created` with its process up) or
    /// restored paused, and its process still runs and is the one its journal names (same pid,
    /// start time, executable and markers): a pool hands out nothing else.
    pub(crate) fn is_warm_and_intact(&mut self) -> bool {
        if !matches!(self.state(), VmState::Created | VmState::Paused) || self.exit_info().is_some() {
            return false;
        }
        let inner = self.inner.get_mut();
        let journaled = inner.ledger.as_ref().and_then(|l| l.journal().process().cloned());
        inner.process.is_some() && journaled.is_some_and(|p| p.is_live())
    }

    /// Firecracker's pid now, without waiting for an operation in progress.
    pub(crate) fn current_pid(&self) -> Option<i32> {
        self.facts().pid
    }

    /// A watch on how the process ended (`None` inside while it runs); none before a spawn.
    pub(crate) fn exit_receiver(&self) -> Option<tokio::sync::watch::Receiver<Option<crate::process::ExitInfo>>> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Gives a warm VM the config it is handed out for (its id stays the pool's). Checked like
    /// [`MicroVm::new`] checks a config; on error the VM is unchanged and still warm.
    pub(crate) fn assign_config(
        &mut self,
        config: &VmConfig,
        #[cfg(feature = "network")] network: Option<std::sync::Arc<crate::network::NetworkManager>>,
    ) -> Result<()> {
        if config.id.as_ref().is_some_and(|id| *id != self.id) {
            let why = format!("a VM from a pool keeps the id its pool gave it ({})", self.id);
            return Err(ConfigErrors::single("id", why).into());
        }
        config.validate()?;
        let config = VmConfig { id: Some(self.id.clone()), ..config.clone() };
        let previous = std::mem::replace(&mut self.config, config);
        if let Err(e) = self.check_runtime_fit() {
            self.config = previous;
            return Err(e);
        }
        #[cfg(feature = "network")]
        {
            self.options.network = network;
        }
        // What the process holds because of the config (a vsock socket) is the VM's from now.
        let (_, acquired) = self.executor.spawn_resources(&self.config);
        self.leave_pool()?;
        let ledger = self.inner.get_mut().ledger.as_mut().ok_or(SmartVmError::NoClient)?;
        for r in acquired {
            ledger.record(r).map_err(journal_err)?;
        }
        Ok(())
    }

    /// A VM made for pool `name` (its journal says so while it waits there).
    pub(crate) fn for_pool(mut self, name: &str) -> Self {
        self.pool = Some(name.to_string());
        self
    }

    /// Destroys a VM a pool discards, synchronously: its process (even a detached one's: no
    /// one is to adopt it), then everything its ledger holds.
    pub(crate) fn destroy_now(mut self) {
        self.options.policy.detached = false;
        drop(self);
    }

    /// The pool this VM waits in, if it does.
    pub fn pool(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    /// Handed out: journaled with its config as an ordinary VM, no longer the pool's.
    pub(crate) fn leave_pool(&mut self) -> Result<()> {
        self.pool = None;
        let config = self.config.clone();
        let ledger = self.inner.get_mut().ledger.as_mut().ok_or(SmartVmError::NoClient)?;
        ledger.checked_out(config).map_err(journal_err)
    }
}

fn journal_err(e: std::io::Error) -> SmartVmError {
    SmartVmError::io("cannot write the VM journal", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_and_checkout_steps_together_are_an_api_boot() {
        let (warm, checkout) = (warm_steps(), checkout_steps());
        assert_eq!(
            checkout,
            [
                Step::Prepare,
                Step::StageDrives,
                Step::CreateTaps,
                Step::PrepareOutputFiles,
                Step::Configure,
                Step::InstanceStart
            ]
        );
        let mut all: Vec<Step> = warm.iter().chain(&checkout).copied().collect();
        let api = start_steps(BootPath::Api);
        assert_eq!(all.len(), api.len(), "every step once");
        all.sort_by_key(|s| api.iter().position(|a| a == s));
        assert_eq!(all, api);
        assert!(!warm.contains(&Step::Prepare), "nothing that depends on the config runs ahead");
        let mut configured = configured_warm_steps();
        configured.push(Step::InstanceStart);
        assert_eq!(configured, api, "a configured pool runs all but InstanceStart ahead");
    }
}
