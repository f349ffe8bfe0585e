//! `bench --clones N`: N VMs restored at once from one snapshot, raw spawns + loads against
//! `clone_vms`, round by round (each round's time is until the last VM is loaded, so the
//! table's max is the tail); and the same from a 128 MiB guest that wrote all of its memory
//! before the snapshot, with each Firecracker's PSS right after: what a clone costs when the
//! memory file is shared (mapped privately, pages shared through the page cache).

use std::time::Instant;

use futures_util::future::join_all;
use smartvm::config::SnapshotLoadParams;
use smartvm::snapshot::Snapshot;
use smartvm::VmConfig;

use super::report::Scenario;
use super::stats::{load_average, mean, pss_kib, resident_kib, CpuMeter};
use super::{bench_error, compared, ms, raw, Measured, Rig};
use crate::exit::CliError;

/// Memory of the guest whose clones' PSS is measured, all of it written before the snapshot.
const TOUCHED_MIB: u64 = 128;

/// What one round measured.
struct Round {
    raw_ms: f64,
    smartvm_ms: f64,
    /// Mean Firecracker PSS (KiB) of each side, when asked for.
    pss: Option<(Option<f64>, Option<f64>)>,
}

/// Both sides' CPU meters.
struct Meters {
    raw: CpuMeter,
    smartvm: CpuMeter,
}

impl Rig {
    /// `rounds` rounds of `n` clones of `snap` (made from `cfg`).
    pub(super) async fn clones(
        &self,
        n: u32,
        rounds: u32,
        cfg: &VmConfig,
        snap: &Snapshot,
    ) -> Result<Vec<Scenario>, CliError> {
        let load = load_average();
        let (mut raw_all, mut sv_all, mut rss_per_vm) = (Vec::new(), Vec::new(), None::<f64>);
        let mut meters = Meters { raw: CpuMeter::default(), smartvm: CpuMeter::default() };
        for round in 0..rounds {
            let r = self.clone_round(n, &format!("clone{round}"), cfg, snap, &mut meters, false).await?;
            raw_all.push(r.raw_ms);
            sv_all.push(r.smartvm_ms);
            // An upper bound: everything the program holds above its start, over the clones
            // that were alive at once.
            if let Some(grown) = resident_kib().zip(self.rss_start).map(|(now, s)| now.saturating_sub(s) as f64) {
                rss_per_vm = Some(rss_per_vm.unwrap_or(0.0).max(grown / f64::from(n)));
            }
        }
        let [raw, smartvm] = pair(n, "", (raw_all, sv_all), (load, load_average()), &meters);
        Ok(vec![raw, Scenario { rss_kib_per_vm: rss_per_vm, ..smartvm }])
    }

    /// `rounds` rounds of `n` clones of a 128 MiB guest that wrote every page, with PSS.
    pub(super) async fn clones_pss(&self, n: u32, rounds: u32) -> Result<Vec<Scenario>, CliError> {
        let (cfg, snap) = self.touched_snapshot().await?;
        let load = load_average();
        let (mut raw_all, mut sv_all, mut raw_pss, mut sv_pss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut meters = Meters { raw: CpuMeter::default(), smartvm: CpuMeter::default() };
        for round in 0..rounds {
            let r = self.clone_round(n, &format!("touched{round}"), &cfg, &snap, &mut meters, true).await?;
            raw_all.push(r.raw_ms);
            sv_all.push(r.smartvm_ms);
            let (raw, smartvm) = r.pss.unwrap_or_default();
            raw_pss.extend(raw);
            sv_pss.extend(smartvm);
        }
        let [raw, smartvm] = pair(n, ".pss", (raw_all, sv_all), (load, load_average()), &meters);
        let avg = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Ok(vec![Scenario { pss_kib_per_vm: avg(raw_pss), ..raw }, Scenario { pss_kib_per_vm: avg(sv_pss), ..smartvm }])
    }

    /// A snapshot of a probe with 128 MiB that wrote all of it, then counts.
    async fn touched_snapshot(&self) -> Result<(VmConfig, Snapshot), CliError> {
        let args = smartvm::probe::ProbeArgs::new().touch(TOUCHED_MIB).count(1).to_boot_args();
        let cfg = self.cfg("touched-origin".into(), &args).with_machine(1, TOUCHED_MIB);
        let vm = self.smartvm.create_vm(&cfg)?;
        vm.start().await?;
        let counting = vm.console().wait_for_line(std::time::Duration::from_secs(60), |l| l.contains("count n=")).await;
        counting.ok_or_else(|| bench_error("touched snapshot", "the guest did not count after its touch"))?;
        vm.pause().await?;
        let snap = Snapshot::full(self.work.join("touched.state"), self.work.join("touched.mem"));
        vm.create_snapshot(&snap.create_params()).await?;
        self.smartvm.remove_vm(vm.id()).await?;
        Ok((cfg, snap))
    }

    /// `n` raw spawns + loads at once, then `clone_vms(n)`, each side torn down before the next.
    async fn clone_round(
        &self,
        n: u32,
        tag: &str,
        cfg: &VmConfig,
        snap: &Snapshot,
        meters: &mut Meters,
        with_pss: bool,
    ) -> Result<Round, CliError> {
        let params = self.raw_load(snap);
        let t0 = Instant::now();
        let loads = meters.raw.measure(n, join_all((0..n).map(|i| self.raw_clone(&params, format!("raw-{tag}-{i}")))));
        let mut vms = loads.await.into_iter().collect::<Result<Vec<_>, _>>()?;
        let raw_ms = ms(vms.iter().map(|(seen, _)| *seen).max().unwrap_or(t0) - t0);
        let raw_pss =
            with_pss.then(|| mean(&vms.iter().filter_map(|(_, vm)| vm.id().and_then(pss_kib)).collect::<Vec<_>>()));
        for (_, vm) in &mut vms {
            let _ = vm.kill().await;
        }
        let t0 = Instant::now();
        let base = VmConfig { id: Some(tag.to_string()), ..cfg.clone() };
        let clones = meters.smartvm.measure(n, self.smartvm.clone_vms(&base, snap, n as usize, true)).await?;
        let smartvm_ms = ms(t0.elapsed());
        let mut sv_pss = None;
        if with_pss {
            let mut each = Vec::new();
            for c in &clones {
                each.extend(c.pid().await.and_then(|p| u32::try_from(p).ok()).and_then(pss_kib));
            }
            sv_pss = mean(&each);
        }
        for c in &clones {
            self.smartvm.remove_vm(c.id()).await?;
        }
        Ok(Round { raw_ms, smartvm_ms, pss: raw_pss.map(|raw| (raw, sv_pss)) })
    }

    /// One raw clone: spawn + load (resume); when its load returned.
    async fn raw_clone(
        &self,
        params: &SnapshotLoadParams,
        name: String,
    ) -> Result<(Instant, tokio::process::Child), CliError> {
        let socket = self.work.join(format!("{name}.sock"));
        raw::restore(&self.binary, &socket, params, self.version, false).await
    }
}

/// The raw and smartvm scenarios of `n` clones (`kind`: `""` or `".pss"`).
fn pair(
    n: u32,
    kind: &str,
    (raw_all, sv_all): (Vec<f64>, Vec<f64>),
    load: (Option<f64>, Option<f64>),
    meters: &Meters,
) -> [Scenario; 2] {
    let what =
        if kind.is_empty() { String::new() } else { format!(" of a {TOUCHED_MIB} MiB guest that wrote all of it") };
    let raw = Measured {
        name: format!("clones{kind}.{n}.raw"),
        title: format!("{n} raw spawns + snapshot loads{what} (resume) at once → all loaded"),
        samples: raw_all,
        cpu: &meters.raw,
    };
    let smartvm = Measured {
        name: format!("clones{kind}.{n}.smartvm"),
        title: format!("smartvm clone_vms({n}){what} (resume) → all restored"),
        samples: sv_all,
        cpu: &meters.smartvm,
    };
    compared(raw, smartvm, load)
}
