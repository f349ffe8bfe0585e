//! `bench --pools`: a checkout from a full warm pool against the cold raw floor, run by run
//! (interleaved): a cold pool's checkout + boot → first probe line vs a raw `--no-api` spawn →
//! first probe line, and a template pool's checkout (resume) → first count line vs a raw
//! spawn + `PUT /snapshot/load` (resume) → first count line. The pool is full before each
//! timed checkout (its refill is not timed).

use std::time::{Duration, Instant};

use smartvm::pool::{PoolKind, PoolSpec, VmPool};
use smartvm::snapshot::Snapshot;
use smartvm::{probe, VmConfig};

use super::raw::{self, Flavor};
use super::report::Scenario;
use super::stats::{load_average, CpuMeter};
use super::{bench_error, ms, scenario, Rig};
use crate::exit::CliError;

/// How long a pool may take to refill between timed checkouts.
const REFILL: Duration = Duration::from_secs(30);

impl Rig {
    /// The pool scenarios, `runs` of each side.
    pub(super) async fn pools(&self, runs: u32, cfg: &VmConfig, snap: &Snapshot) -> Result<Vec<Scenario>, CliError> {
        let mut scenarios = self.cold_pool(runs, false).await?;
        scenarios.extend(self.cold_pool(runs, true).await?);
        scenarios.extend(self.template_pool(runs, cfg, snap).await?);
        Ok(scenarios)
    }

    /// A cold pool's checkouts (with `configured`, a configured pool's) against raw boots.
    async fn cold_pool(&self, runs: u32, configured: bool) -> Result<Vec<Scenario>, CliError> {
        let config = VmConfig { id: None, ..self.cfg("pooled".into(), "") };
        let (kind, name, what) = match configured {
            false => (PoolKind::Cold(config), "cold", "configure + boot a waiting Firecracker"),
            true => (PoolKind::Configured(config), "configured", "start a waiting, configured Firecracker"),
        };
        let pool = self.smartvm.create_pool(PoolSpec::new(format!("bench-{name}"), 2, kind)).await?;
        let load = load_average();
        let (mut raw_all, mut sv_all) = (Vec::new(), Vec::new());
        let (mut raw_cpu, mut sv_cpu) = (CpuMeter::reaping(), CpuMeter::default());
        for _ in 0..runs {
            let start = Instant::now();
            let (first, _) = raw_cpu.measure(1, raw::boot(&self.binary, &self.raw_config, Flavor::NoApi)).await?;
            raw_all.push(ms(first - start));
            sv_all.push(self.checkout(&pool, &mut sv_cpu, probe::LINE_PREFIX).await?);
        }
        self.smartvm.remove_pool(pool.name()).await;
        let load = (load, load_average());
        let raw_name = format!("pool.{name}.raw");
        Ok(vec![
            scenario(
                &raw_name,
                "raw firecracker --no-api --config-file: spawn → first probe line".into(),
                None,
                raw_all,
                load,
                &raw_cpu,
            ),
            scenario(
                &format!("pool.{name}.smartvm"),
                format!("{name} pool: checkout ({what}) → first probe line"),
                Some(&raw_name),
                sv_all,
                load,
                &sv_cpu,
            ),
        ])
    }

    async fn template_pool(&self, runs: u32, cfg: &VmConfig, snap: &Snapshot) -> Result<Vec<Scenario>, CliError> {
        let kind = PoolKind::Template { snapshot: snap.clone(), config: VmConfig { id: None, ..cfg.clone() } };
        let pool = self.smartvm.create_pool(PoolSpec::new("bench-template", 2, kind)).await?;
        let load = load_average();
        let (mut raw_all, mut sv_all) = (Vec::new(), Vec::new());
        let (mut raw_cpu, mut sv_cpu) = (CpuMeter::default(), CpuMeter::default());
        let params = self.raw_load(snap);
        for i in 0..runs {
            raw_all.push(self.raw_restore_once(&format!("raw-pool-restore-{i}"), &params, &mut raw_cpu).await?);
            sv_all.push(self.checkout(&pool, &mut sv_cpu, "smartvm-probe count n=").await?);
        }
        self.smartvm.remove_pool(pool.name()).await;
        let load = (load, load_average());
        let raw_name = "pool.template.raw";
        Ok(vec![
            scenario(
                raw_name,
                "raw spawn + PUT /snapshot/load (resume) → first count line".into(),
                None,
                raw_all,
                load,
                &raw_cpu,
            ),
            scenario(
                "pool.template.smartvm",
                "template pool: checkout (resume a restored, paused VM) → first count line".into(),
                Some(raw_name),
                sv_all,
                load,
                &sv_cpu,
            ),
        ])
    }

    /// Waits until `pool` is full, then times one checkout until a console line with `prefix`;
    /// the VM is removed afterwards.
    async fn checkout(&self, pool: &VmPool, cpu: &mut CpuMeter, prefix: &str) -> Result<f64, CliError> {
        if !pool.ready(REFILL).await {
            return Err(bench_error("pool", format!("not refilled in {REFILL:?}: {:?}", pool.stats())));
        }
        let start = Instant::now();
        let vm = cpu
            .measure(1, async {
                let vm = self.smartvm.checkout(pool, None).await?;
                let line = vm.console().wait_for_line(Duration::from_secs(10), |l| l.starts_with(prefix)).await;
                line.ok_or_else(|| bench_error("pool checkout", "the guest printed nothing"))?;
                Ok::<_, CliError>(vm)
            })
            .await?;
        let took = ms(start.elapsed());
        self.smartvm.remove_vm(vm.id()).await?;
        Ok(took)
    }
}
