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
use super::{bench_error, compared, ms, Measured, Rig};
use crate::exit::CliError;

/// How long a pool may take to refill between timed checkouts.
const REFILL: Duration = Duration::from_secs(30);

/// The writable data drive of the `*-drive` pool scenarios: what staging copies per VM.
const DRIVE_MIB: usize = 32;

/// A cold or configured pool's VMs, with or without a data drive.
#[derive(Clone, Copy)]
struct Warm {
    configured: bool,
    drive: bool,
}

impl Rig {
    /// The pool scenarios, `runs` of each side.
    pub(super) async fn pools(&self, runs: u32, cfg: &VmConfig, snap: &Snapshot) -> Result<Vec<Scenario>, CliError> {
        let mut scenarios = Vec::new();
        for drive in [false, true] {
            for configured in [false, true] {
                scenarios.extend(self.cold_pool(runs, Warm { configured, drive }).await?);
            }
        }
        scenarios.extend(self.template_pool(runs, cfg, snap).await?);
        Ok(scenarios)
    }

    /// A cold pool's checkouts (a configured pool's; with a data drive, which smartvm stages
    /// per VM and raw Firecracker is given as it is) against raw boots.
    async fn cold_pool(&self, runs: u32, warm: Warm) -> Result<Vec<Scenario>, CliError> {
        let mut config = VmConfig { id: None, ..self.cfg("pooled".into(), "") };
        let raw_config = match warm.drive {
            true => {
                let drive = self.data_drive()?;
                config.drives.push(smartvm::config::DriveConfig::new("data", &drive));
                self.raw_config_with_drive(&drive)?
            }
            false => self.raw_config.clone(),
        };
        let (kind, name, what) = match warm.configured {
            false => (PoolKind::Cold(config), "cold", "configure + boot a waiting Firecracker"),
            true => (PoolKind::Configured(config), "configured", "start a waiting, configured Firecracker"),
        };
        let (name, what) = match warm.drive {
            true => (format!("{name}-drive"), format!("{what}, {DRIVE_MIB} MiB data drive staged")),
            false => (name.to_string(), what.to_string()),
        };
        let pool = self.smartvm.create_pool(PoolSpec::new(format!("bench-{name}"), 2, kind)).await?;
        let load = load_average();
        let (mut raw_all, mut sv_all) = (Vec::new(), Vec::new());
        let (mut raw_cpu, mut sv_cpu) = (CpuMeter::reaping(), CpuMeter::default());
        for _ in 0..runs {
            let start = Instant::now();
            let (first, _) = raw_cpu.measure(1, raw::boot(&self.binary, &raw_config, Flavor::NoApi)).await?;
            raw_all.push(ms(first - start));
            sv_all.push(self.checkout(&pool, &mut sv_cpu, probe::LINE_PREFIX).await?);
        }
        self.smartvm.remove_pool(pool.name()).await;
        let with_drive =
            if warm.drive { format!(" ({DRIVE_MIB} MiB data drive, used in place)") } else { String::new() };
        let raw = Measured {
            name: format!("pool.{name}.raw"),
            title: format!("raw firecracker --no-api --config-file{with_drive}: spawn → first probe line"),
            samples: raw_all,
            cpu: &raw_cpu,
        };
        let smartvm = Measured {
            name: format!("pool.{name}.smartvm"),
            title: format!("{name} pool: checkout ({what}) → first probe line"),
            samples: sv_all,
            cpu: &sv_cpu,
        };
        Ok(compared(raw, smartvm, (load, load_average())).into())
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
        let raw = Measured {
            name: "pool.template.raw".into(),
            title: "raw spawn + PUT /snapshot/load (resume) → first count line".into(),
            samples: raw_all,
            cpu: &raw_cpu,
        };
        let smartvm = Measured {
            name: "pool.template.smartvm".into(),
            title: "template pool: checkout (resume a restored, paused VM) → first count line".into(),
            samples: sv_all,
            cpu: &sv_cpu,
        };
        Ok(compared(raw, smartvm, (load, load_average())).into())
    }

    /// A data drive of `DRIVE_MIB` MiB, every byte written (made once).
    fn data_drive(&self) -> Result<std::path::PathBuf, CliError> {
        let path = self.work.join("data.img");
        if !path.exists() {
            let data: Vec<u8> = (0..DRIVE_MIB << 20).map(|i| (i % 251) as u8 | 1).collect();
            std::fs::write(&path, data).map_err(|e| bench_error("write the data drive", e))?;
        }
        Ok(path)
    }

    /// The raw config with `drive` attached (writable: raw Firecracker writes the file itself).
    fn raw_config_with_drive(&self, drive: &std::path::Path) -> Result<std::path::PathBuf, CliError> {
        let text = std::fs::read_to_string(&self.raw_config).map_err(|e| bench_error("read the raw config", e))?;
        let mut doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bench_error("raw config", e))?;
        doc["drives"] = serde_json::json!([{"drive_id": "data", "path_on_host": drive, "is_root_device": false, "is_read_only": false}]);
        let path = self.work.join("raw-config-drive.json");
        std::fs::write(&path, doc.to_string()).map_err(|e| bench_error("write the raw config", e))?;
        Ok(path)
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
