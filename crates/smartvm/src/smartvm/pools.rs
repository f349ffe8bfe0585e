//! The orchestrator's side of pools: creating them, finding them, handing out their VMs.

use std::sync::Arc;

use super::SmartVm;
use crate::config::{ConfigErrors, VmConfig};
use crate::error::Result;
use crate::pool::{PoolKind, PoolSpec, VmPool};
use crate::vm::{MicroVm, VmRuntimeOptions};

/// `INVALID_CONFIG` on `name`: a pool of that name exists.
pub(super) fn name_in_use(name: &str) -> crate::error::SmartVmError {
    ConfigErrors::single("name", format!("a pool named {name:?} exists")).into()
}

impl SmartVm {
    /// Creates pool `spec` and starts filling it in the background (see [`crate::pool`]).
    /// Refused with `INVALID_CONFIG`, nothing made: an invalid spec or config, a name in use,
    /// or a cold pool for Firecracker under the jailer.
    ///
    /// ```no_run
    /// # async fn demo(smartvm: smartvm::SmartVm, config: smartvm::VmConfig) -> smartvm::Result<()> {
    /// use smartvm::pool::{PoolKind, PoolSpec};
    /// let pool = smartvm.create_pool(PoolSpec::new("sandbox", 8, PoolKind::Cold(config.clone()))).await?;
    /// pool.ready(std::time::Duration::from_secs(10)).await; // optional: wait until it is full
    /// let vm = smartvm.checkout(&pool, Some(&config)).await?; // configured and booted
    /// smartvm.remove_vm(vm.id()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_pool(&self, spec: PoolSpec) -> Result<Arc<VmPool>> {
        let options = self.pool_options(&spec)?;
        self.register_pool(spec, options, Vec::new())
    }

    /// The runtime options of `spec`'s VMs, once the spec and everything a VM of the pool is
    /// checked for at creation are checked.
    pub(super) fn pool_options(&self, spec: &PoolSpec) -> Result<VmRuntimeOptions> {
        spec.validate()?;
        #[cfg_attr(not(feature = "network"), allow(unused_mut))]
        let mut options = self.runtime_options_for_new_vm()?;
        let warm = matches!(spec.kind, PoolKind::Cold(_) | PoolKind::Configured(_));
        if warm && options.jailer.is_some() {
            let why = "a cold or configured pool runs Firecracker directly; under the jailer use a template pool";
            return Err(ConfigErrors::single("kind", why).into());
        }
        #[cfg(feature = "network")]
        {
            options.network = self.network_for(spec.kind.config())?;
        }
        // A template pool's VMs restore their drives through the drive namespace.
        options.drive_namespace = options.drive_namespace && matches!(spec.kind, PoolKind::Template { .. });
        let sample = VmConfig { id: Some(format!("{}-check", spec.name)), ..spec.kind.config().clone() };
        let sample = MicroVm::new(&sample, options.clone())?;
        if warm {
            sample.can_warm_up()?;
        }
        Ok(options)
    }

    /// Starts pool `spec` holding `ready` and registers it; `INVALID_CONFIG` for a name in use
    /// (then `ready` is destroyed: detached VMs would outlive a drop).
    pub(super) fn register_pool(
        &self,
        spec: PoolSpec,
        options: VmRuntimeOptions,
        ready: Vec<MicroVm>,
    ) -> Result<Arc<VmPool>> {
        let mut pools = self.pool_registry();
        if pools.contains_key(&spec.name) {
            ready.into_iter().for_each(MicroVm::destroy_now);
            return Err(name_in_use(&spec.name));
        }
        let pool = VmPool::start(spec, options, ready);
        pools.insert(pool.name().to_string(), pool.clone());
        Ok(pool)
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<VmPool>> {
        self.pool_registry().get(name).cloned()
    }

    /// Every pool, by name.
    pub fn pools(&self) -> Vec<Arc<VmPool>> {
        let mut pools: Vec<_> = self.pool_registry().values().cloned().collect();
        pools.sort_by(|a, b| a.name().cmp(b.name()));
        pools
    }

    /// Closes pool `name` (its waiting VMs are destroyed; those handed out stay); false when
    /// there is none.
    pub async fn remove_pool(&self, name: &str) -> bool {
        let Some(pool) = self.pool_registry().remove(name) else { return false };
        pool.close().await;
        true
    }

    /// Hands out a VM of `pool`, running: a cold pool's is configured with `config` (default:
    /// the pool's) and booted, a template pool's is resumed (it has its snapshot's config: no
    /// `config`). When none is ready the VM is made on the spot. The VM is registered like one
    /// from [`create_vm`](Self::create_vm) once it runs; its id is the pool's (`<pool>-<hex>`).
    ///
    /// Cancel-safe: dropped before it returns, the VM it took is destroyed, never leaked.
    pub async fn checkout(&self, pool: &VmPool, config: Option<&VmConfig>) -> Result<Arc<MicroVm>> {
        if pool.is_closed() {
            return Err(ConfigErrors::single("pool", format!("{} is closed", pool.name())).into());
        }
        let config = self.checkout_config(pool, config)?;
        let _booting = pool.booting();
        let taken = match pool.take() {
            Some(mut vm) => match self.hand_out(&mut vm, pool, config.as_ref()) {
                Ok(()) => Some(vm),
                Err(e) => {
                    pool.give_back(vm);
                    return Err(e);
                }
            },
            None => None,
        };
        let vm = match taken {
            Some(vm) => {
                let vm = Arc::new(vm);
                match Self::boot(pool, &vm).await {
                    Ok(()) => vm,
                    // Its process ended between the check and the boot (its API connection
                    // failed): one made now instead.
                    Err(e) if e.code() == crate::error::ErrorCode::SocketRequestFailed => {
                        tracing::warn!(pool = %pool.name(), vm = %vm.id(), error = %e, "a ready VM ended as it was handed out");
                        pool.discard_handed_out();
                        drop(vm);
                        self.make_on_the_spot(pool, config).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => self.make_on_the_spot(pool, config).await?,
        };
        self.register_arc(vm.clone())?;
        Ok(vm)
    }

    /// A VM of `pool` made and booted now, as without a pool.
    async fn make_on_the_spot(&self, pool: &VmPool, config: Option<VmConfig>) -> Result<Arc<MicroVm>> {
        pool.missed();
        let config = config.unwrap_or_else(|| pool.spec().kind.config().clone());
        let config = VmConfig { id: Some(pool.new_id()), ..config };
        let vm = Arc::new(MicroVm::new(&config, self.vm_options(pool, &config)?)?);
        Self::boot(pool, &vm).await?;
        Ok(vm)
    }

    /// Boots a cold pool's VM (the rest of its start when warm), resumes a template pool's
    /// (restores it first when made on the spot).
    async fn boot(pool: &VmPool, vm: &MicroVm) -> Result<()> {
        match &pool.spec().kind {
            PoolKind::Cold(_) | PoolKind::Configured(_) => vm.start().await,
            PoolKind::Template { .. } if vm.state() == crate::VmState::Paused => vm.resume().await,
            PoolKind::Template { snapshot, .. } => vm.restore_snapshot(snapshot, true, false).await,
        }
    }

    /// The config a checkout of `pool` boots with: checked before any VM is taken.
    fn checkout_config(&self, pool: &VmPool, config: Option<&VmConfig>) -> Result<Option<VmConfig>> {
        let Some(config) = config else { return Ok(None) };
        match &pool.spec().kind {
            PoolKind::Template { .. } => {
                let why = "a template pool's VMs have their snapshot's config";
                return Err(ConfigErrors::single("config", why).into());
            }
            PoolKind::Configured(own) if own != config => {
                let why = "a configured pool's VMs have the pool's config (give none, or the same)";
                return Err(ConfigErrors::single("config", why).into());
            }
            PoolKind::Configured(_) => return Ok(None),
            PoolKind::Cold(_) => {}
        }
        if config.id.is_some() {
            let why = "a VM from a pool gets its id from the pool (`<pool>-<hex>`)";
            return Err(ConfigErrors::single("id", why).into());
        }
        config.validate()?;
        Ok(Some(config.clone()))
    }

    /// Readies a taken VM for its checkout: a warm one gets its config, a paused one leaves the
    /// pool as it is.
    fn hand_out(&self, vm: &mut MicroVm, pool: &VmPool, config: Option<&VmConfig>) -> Result<()> {
        match &pool.spec().kind {
            PoolKind::Template { .. } | PoolKind::Configured(_) => vm.leave_pool(),
            PoolKind::Cold(default) => {
                let config = config.unwrap_or(default);
                #[cfg(feature = "network")]
                return vm.assign_config(config, self.network_for(config)?);
                #[cfg(not(feature = "network"))]
                return vm.assign_config(config);
            }
        }
    }

    /// Runtime options for a VM of `pool` made on the spot with `config`.
    #[cfg_attr(not(feature = "network"), allow(unused_variables))]
    fn vm_options(&self, pool: &VmPool, config: &VmConfig) -> Result<crate::vm::VmRuntimeOptions> {
        #[cfg_attr(not(feature = "network"), allow(unused_mut))]
        let mut options = pool.options().clone();
        #[cfg(feature = "network")]
        {
            options.network = self.network_for(config)?;
        }
        Ok(options)
    }

    /// The network manager when `config` has interfaces smartvm makes TAPs for.
    #[cfg(feature = "network")]
    pub(crate) fn network_for(&self, config: &VmConfig) -> Result<Option<Arc<crate::network::NetworkManager>>> {
        if config.network_interfaces.iter().any(|n| n.host_dev_name.is_none()) {
            Ok(Some(self.network()?))
        } else {
            Ok(None)
        }
    }
}
