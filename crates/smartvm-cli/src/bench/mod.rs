//! `smartvm bench`: boot-path measurements any user can run, printed as a table or JSON.
//!
//! Every smartvm scenario is interleaved with its raw-Firecracker counterpart in the same run,
//! so their ratio compares like with like:
//! - one VM: raw `firecracker --no-api --config-file` vs `create_vm` + `start`, to the probe's
//!   first line and to its exit (and jailed, with `--jailed`);
//! - N VMs at once from one process (`--concurrency 10,50,100`): until every first line;
//! - one restore: raw spawn + `PUT /snapshot/load` vs `restore_vm`, to the first count line;
//! - clones of one snapshot at once (`--clones 50`) vs as many raw loads at once, until every
//!   load returned (the guests keep running until all are measured, on both sides).
//!
//! `--guest` measures the guest agent instead (see [`guest`]).

mod clones;
mod guest;
mod pool;
mod raw;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use smartvm::config::SnapshotLoadParams;
use smartvm::snapshot::Snapshot;
use smartvm::{probe, FirecrackerVersion, SmartVm, SmartVmOptions, VmConfig};

use crate::exit::{CliError, Exit};
use raw::Flavor;
use report::{Report, Scenario};
use stats::{load_average, resident_kib, CpuMeter};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Runs of each one-VM scenario (boot, restore).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// VMs started at once: one scenario per value.
    #[arg(long, value_delimiter = ',', default_values_t = [10u32, 50, 100],
          value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Vec<u32>,
    /// Rounds of each at-once scenario (and of the clones).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Clones started at once from one snapshot (0 leaves the scenario out); also from a 128 MiB
    /// guest that wrote all of its memory, with each Firecracker's PSS right after.
    #[arg(long, default_value_t = 50)]
    clones: u32,
    /// Also measure VMs under the jailer (chroot, uid/gid drop, jail base `/srv/jailer`),
    /// interleaved with the direct path.
    #[arg(long)]
    jailed: bool,
    /// Run each one-VM pair (and each at-once round) in a random order instead of raw first
    /// (at once: rotated each round): with a fixed order each side always follows the same one,
    /// and on some hosts what ran just before a boot moves its time.
    #[arg(long)]
    shuffle: bool,
    /// Also measure raw Firecracker run the way smartvm runs it (`--api-sock --config-file`,
    /// Info log): the floor for a VM whose API stays up after boot. Interleaved with the others;
    /// smartvm's ratio to it is shown beside its ratio to `--no-api`.
    #[arg(long)]
    api_floor: bool,
    /// Also measure smartvm VMs with the API off (`smartvm run --no-api`,
    /// `VmRuntimeOptions::api`), for the one-VM and at-once scenarios.
    #[arg(long)]
    no_api: bool,
    /// Also measure warm pools: a cold pool's checkout → first probe line and a template pool's
    /// checkout (resume) → first count line, each interleaved with its cold raw floor.
    #[arg(long)]
    pools: bool,
    /// Only the pool scenarios (implies `--pools`).
    #[arg(long)]
    pools_only: bool,
    /// Print one JSON document (schema in the README) instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure the guest agent instead of boots: `hello`, `exec true` and 64 MiB copies over a
    /// Unix socket to `smartvm-guest`, `hello`/`echo` over Firecracker's vsock to the probe,
    /// each beside its raw socket round trip.
    #[arg(long)]
    guest: bool,
    /// The `smartvm-guest` binary for `--guest` (default: the one beside this program).
    #[arg(long, value_name = "PATH")]
    guest_agent: Option<PathBuf>,
}

/// A random number below `n` (from the standard library's randomly keyed hasher).
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (random % n.max(1) as u64) as usize
}

/// `items` in a random order (Fisher–Yates).
fn shuffled<T: Copy>(items: &[T]) -> Vec<T> {
    let mut out = items.to_vec();
    for i in (1..out.len()).rev() {
        out.swap(i, random_below(i + 1));
    }
    out
}

/// The order of `sides` in at-once round `round`: rotated by one each round, or random with
/// `shuffle`. What ran just before moves a boot's time on some hosts (BENCHMARKS.md), so a fixed
/// order would always hand the same predecessor to the same side.
fn round_order(sides: &[Side], round: usize, shuffle: bool) -> Vec<Side> {
    if shuffle {
        return shuffled(sides);
    }
    let mut order = sides.to_vec();
    order.rotate_left(round % sides.len().max(1));
    order
}

/// What boots a VM in the one-VM and at-once scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `firecracker --no-api --config-file`.
    Raw,
    /// `create_vm` + `start`.
    Smartvm,
    /// `firecracker --api-sock --config-file`, Info log (`--api-floor`).
    RawApi,
    /// `create_vm_with` (the API off) + `start` (`--no-api`).
    SmartvmNoApi,
}

impl Side {
    fn index(self) -> usize {
        self as usize
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn bench_error(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(Exit::Failure, format!("{what}: {e}"))
}

/// One side of a raw-vs-smartvm comparison: its key, title, samples and CPU.
struct Measured<'a> {
    name: String,
    title: String,
    samples: Vec<f64>,
    cpu: &'a CpuMeter,
}

/// A raw scenario and the smartvm one compared with it, both measured between `load`.
fn compared(raw: Measured<'_>, smartvm: Measured<'_>, load: (Option<f64>, Option<f64>)) -> [Scenario; 2] {
    let smartvm = scenario(&smartvm.name, smartvm.title, Some(&raw.name), smartvm.samples, load, smartvm.cpu);
    [scenario(&raw.name, raw.title, None, raw.samples, load, raw.cpu), smartvm]
}

/// `samples` as a scenario measured between the load averages `load`, costing `cpu`.
fn scenario(
    name: &str,
    title: String,
    raw: Option<&str>,
    samples: Vec<f64>,
    load: (Option<f64>, Option<f64>),
    cpu: &CpuMeter,
) -> Scenario {
    Scenario {
        name: name.into(),
        title,
        samples,
        raw: raw.map(Into::into),
        load,
        cpu_ms_per_vm: cpu.per_vm_ms(),
        vmm_cpu_ms_per_vm: cpu.vmm_per_vm_ms(),
        rss_kib_per_vm: None,
        pss_kib_per_vm: None,
        floor: None,
    }
}

/// One boot through smartvm (with the API off unless `api`): when the first probe line and the
/// exit were seen.
async fn smartvm_boot(smartvm: &SmartVm, cfg: &VmConfig, api: bool) -> Result<(Instant, Instant), CliError> {
    let vm = if api {
        smartvm.create_vm(cfg)?
    } else {
        let options = smartvm::vm::VmRuntimeOptions { api: false, ..smartvm.runtime_options(smartvm.find_binary()?) };
        smartvm.create_vm_with(cfg, options)?
    };
    vm.start().await?;
    let console = vm.console();
    let first = console.wait_for_line(Duration::from_secs(30), |l| l.starts_with(probe::LINE_PREFIX)).await;
    let first = first.map(|_| Instant::now());
    vm.wait_for_exit(Duration::from_secs(30)).await;
    let exit = Instant::now();
    smartvm.remove_vm(vm.id()).await?;
    Ok((first.ok_or_else(|| bench_error("smartvm boot", "probe printed nothing"))?, exit))
}

/// What the scenarios need: the binary, the raw config, the probe kernel, the orchestrators.
struct Rig {
    work: PathBuf,
    binary: PathBuf,
    version: FirecrackerVersion,
    raw_config: PathBuf,
    kernel: PathBuf,
    smartvm: SmartVm,
    jailed: Option<SmartVm>,
    /// What boots in the one-VM and at-once scenarios, in their default order.
    sides: Vec<Side>,
    /// Resident KiB before any VM.
    rss_start: Option<u64>,
}

impl Rig {
    fn cfg(&self, id: String, args: &str) -> VmConfig {
        VmConfig::new(&self.kernel).with_id(id).with_machine(1, 16).with_boot_args(format!("console=ttyS0 {args}"))
    }

    /// One boot by `side` (`cfg` for smartvm, `socket` for the API floor): when its first probe
    /// line and its exit were seen.
    async fn boot(&self, side: Side, cfg: &VmConfig, socket: &Path) -> Result<(Instant, Instant), CliError> {
        match side {
            Side::Smartvm => smartvm_boot(&self.smartvm, cfg, true).await,
            Side::SmartvmNoApi => smartvm_boot(&self.smartvm, cfg, false).await,
            Side::Raw => raw::boot(&self.binary, &self.raw_config, Flavor::NoApi).await,
            Side::RawApi => raw::boot(&self.binary, &self.raw_config, Flavor::Api { socket }).await,
        }
    }

    /// One VM at a time: raw, smartvm (and the API floor, and jailed) interleaved run by run;
    /// in that order, or in a random order per run with `shuffle`.
    async fn single(&self, runs: u32, shuffle: bool) -> Result<Vec<Scenario>, CliError> {
        let load = load_average();
        let (mut first, mut exit) = (<[Vec<f64>; 4]>::default(), <[Vec<f64>; 4]>::default());
        let mut cpu: [CpuMeter; 4] = std::array::from_fn(|_| CpuMeter::reaping());
        let (mut jailed, mut jailed_cpu) = (Vec::new(), CpuMeter::reaping());
        let socket = self.work.join("raw-api.sock");
        for i in 0..runs {
            let order = if shuffle { shuffled(&self.sides) } else { self.sides.clone() };
            for side in order {
                let cfg = self.cfg(format!("bench-{i}"), "");
                let start = Instant::now();
                let (f, e) = cpu[side.index()].measure(1, self.boot(side, &cfg, &socket)).await?;
                first[side.index()].push(ms(f - start));
                exit[side.index()].push(ms(e - start));
            }
            if let Some(j) = &self.jailed {
                let start = Instant::now();
                let boot = jailed_cpu.measure(1, smartvm_boot(j, &self.cfg(format!("jailed-{i}"), ""), true)).await?;
                jailed.push(ms(boot.0 - start));
            }
        }
        let load = (load, load_average());
        let [raw_first, sv_first, api_first, off_first] = first;
        let [raw_exit, sv_exit, api_exit, off_exit] = exit;
        let [raw_cpu, sv_cpu, api_cpu, off_cpu] = &cpu;
        let raw = "raw firecracker --no-api --config-file: spawn →";
        let api = "raw firecracker --api-sock --config-file (Info log): spawn →";
        let sv = "smartvm create_vm+start →";
        let off = "smartvm, the API off (--no-api): create_vm_with+start →";
        Ok(vec![
            scenario("boot.first-line.raw", format!("{raw} first probe line"), None, raw_first, load, raw_cpu),
            scenario("boot.exit.raw", format!("{raw} exit"), None, raw_exit, load, raw_cpu),
            scenario(
                "boot.first-line.smartvm",
                format!("{sv} first probe line"),
                Some("boot.first-line.raw"),
                sv_first,
                load,
                sv_cpu,
            )
            .with_floor("boot.first-line.raw-api"),
            scenario("boot.exit.smartvm", format!("{sv} exit"), Some("boot.exit.raw"), sv_exit, load, sv_cpu)
                .with_floor("boot.exit.raw-api"),
            scenario(
                "boot.first-line.raw-api",
                format!("{api} first probe line"),
                Some("boot.first-line.raw"),
                api_first,
                load,
                api_cpu,
            ),
            scenario("boot.exit.raw-api", format!("{api} exit"), Some("boot.exit.raw"), api_exit, load, api_cpu),
            scenario(
                "boot.first-line.smartvm-no-api",
                format!("{off} first probe line"),
                Some("boot.first-line.raw"),
                off_first,
                load,
                off_cpu,
            ),
            scenario("boot.exit.smartvm-no-api", format!("{off} exit"), Some("boot.exit.raw"), off_exit, load, off_cpu),
            scenario(
                "boot.first-line.jailed",
                "smartvm jailed create_vm+start → first probe line".into(),
                Some("boot.first-line.raw"),
                jailed,
                load,
                &jailed_cpu,
            ),
        ])
    }

    /// `n` VMs at once per round, each side in turn (see [`round_order`]):
    /// until every first line was seen.
    async fn at_once(&self, n: u32, rounds: u32, shuffle: bool) -> Result<Vec<Scenario>, CliError> {
        let load = load_average();
        let mut all = <[Vec<f64>; 4]>::default();
        let mut cpu: [CpuMeter; 4] = std::array::from_fn(|_| CpuMeter::reaping());
        let sockets: Vec<PathBuf> = (0..n).map(|i| self.work.join(format!("raw-api-{i}.sock"))).collect();
        for round in 0..rounds {
            // One set of ids a round: each side's VMs are removed before the next side starts.
            let configs: Vec<VmConfig> = (0..n).map(|i| self.cfg(format!("conc{n}-{round}-{i}"), "")).collect();
            for side in round_order(&self.sides, round as usize, shuffle) {
                let t0 = Instant::now();
                let boots = join_all(configs.iter().zip(&sockets).map(|(cfg, socket)| self.boot(side, cfg, socket)));
                let boots = cpu[side.index()].measure(n, boots).await;
                let last = boots.into_iter().map(|r| r.map(|(first, _)| first)).collect::<Result<Vec<_>, _>>()?;
                all[side.index()].push(ms(last.into_iter().max().unwrap_or(t0) - t0));
            }
        }
        let load = (load, load_average());
        let [raw_all, sv_all, api_all, off_all] = all;
        let (raw_name, api_name) = (format!("at-once.{n}.raw"), format!("at-once.{n}.raw-api"));
        let title = |what: &str| format!("{n} {what} at once → all first lines");
        Ok(vec![
            scenario(&raw_name, title("raw firecrackers"), None, raw_all, load, &cpu[0]),
            scenario(
                &format!("at-once.{n}.smartvm"),
                title("smartvm VMs from one process"),
                Some(&raw_name),
                sv_all,
                load,
                &cpu[1],
            )
            .with_floor(&api_name),
            scenario(&api_name, title("raw firecrackers --api-sock"), Some(&raw_name), api_all, load, &cpu[2]),
            scenario(
                &format!("at-once.{n}.smartvm-no-api"),
                title("smartvm VMs with the API off from one process"),
                Some(&raw_name),
                off_all,
                load,
                &cpu[3],
            ),
        ])
    }

    /// A Full snapshot of a counting probe (the VM is removed).
    async fn snapshot(&self) -> Result<(VmConfig, Snapshot), CliError> {
        let cfg = self.cfg("snap-origin".into(), "probe.count=1");
        let vm = self.smartvm.create_vm(&cfg)?;
        vm.start().await?;
        let console = vm.console();
        console.wait_for_line(Duration::from_secs(5), |l| l.contains("count n=")).await;
        vm.pause().await?;
        let snap = Snapshot::full(self.work.join("bench.state"), self.work.join("bench.mem"));
        vm.create_snapshot(&snap.create_params()).await?;
        self.smartvm.remove_vm("snap-origin").await?;
        Ok((cfg, snap))
    }

    fn raw_load(&self, snap: &Snapshot) -> SnapshotLoadParams {
        let mut load = SnapshotLoadParams::new(&snap.state_path, &snap.mem_path);
        load.resume_vm = true;
        load
    }

    /// One raw spawn + load (resume) on socket `<name>.sock`: ms to the first count line; the
    /// process is killed afterwards.
    async fn raw_restore_once(
        &self,
        name: &str,
        params: &SnapshotLoadParams,
        cpu: &mut CpuMeter,
    ) -> Result<f64, CliError> {
        let socket = self.work.join(format!("{name}.sock"));
        let start = Instant::now();
        let (seen, mut vm) = cpu.measure(1, raw::restore(&self.binary, &socket, params, self.version, true)).await?;
        let _ = vm.kill().await;
        Ok(ms(seen - start))
    }

    /// One restore at a time: raw spawn + load vs `restore_vm`, to the first count line.
    async fn restore(&self, runs: u32, cfg: &VmConfig, snap: &Snapshot) -> Result<Vec<Scenario>, CliError> {
        let load = load_average();
        let (mut raw_all, mut sv_all) = (Vec::new(), Vec::new());
        let (mut raw_cpu, mut sv_cpu) = (CpuMeter::default(), CpuMeter::default());
        let params = self.raw_load(snap);
        for i in 0..runs {
            raw_all.push(self.raw_restore_once(&format!("raw-restore-{i}"), &params, &mut raw_cpu).await?);
            let start = Instant::now();
            let cfg = VmConfig { id: Some(format!("snap-{i}")), ..cfg.clone() };
            let restored = sv_cpu.measure(1, self.restore_one(&cfg, snap)).await?;
            sv_all.push(ms(start.elapsed()));
            self.smartvm.remove_vm(restored.id()).await?;
        }
        let raw = Measured {
            name: "restore.raw".into(),
            title: "raw spawn + PUT /snapshot/load (resume) → first count line".into(),
            samples: raw_all,
            cpu: &raw_cpu,
        };
        let smartvm = Measured {
            name: "restore.smartvm".into(),
            title: "smartvm restore_vm (resume) → first count line".into(),
            samples: sv_all,
            cpu: &sv_cpu,
        };
        Ok(compared(raw, smartvm, (load, load_average())).into())
    }

    /// One `restore_vm` until the restored guest's first count line.
    async fn restore_one(&self, cfg: &VmConfig, snap: &Snapshot) -> Result<std::sync::Arc<smartvm::MicroVm>, CliError> {
        let restored = self.smartvm.restore_vm(cfg, snap, true).await?;
        let console = restored.console();
        let seen = console.wait_for_line(Duration::from_secs(5), |l| l.starts_with("smartvm-probe count n=")).await;
        seen.ok_or_else(|| bench_error("snapshot restore", "restored guest printed nothing"))?;
        Ok(restored)
    }
}

pub async fn bench(args: BenchArgs) -> Result<Exit, CliError> {
    let work = tempfile::Builder::new()
        .prefix("smartvm-bench")
        .tempdir_in(if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .map_err(|e| bench_error("tempdir", e))?;
    let mut options = SmartVmOptions::from_env();
    options.runtime_dir = work.path().join("run");
    options.stop_grace = Duration::from_millis(100);
    let smartvm = SmartVm::new(options.clone());
    let binary = smartvm.find_binary()?;
    let version = smartvm.binary_version(&binary).unwrap_or(FirecrackerVersion::DEFAULT);
    let kernel = probe::install_probe_kernel(&work.path().join("kernels"))?;
    let raw_config = write_raw_config(work.path(), &kernel)?;
    let jailed = args.jailed.then(|| SmartVm::new(SmartVmOptions { jailed_by_default: true, ..options.clone() }));
    if args.guest {
        return bench_guest(&args, &smartvm, &kernel, work.path(), version).await;
    }
    let rss_start = resident_kib();
    let optional = [(args.api_floor, Side::RawApi), (args.no_api, Side::SmartvmNoApi)];
    let sides = [Side::Raw, Side::Smartvm].into_iter().chain(optional.iter().filter(|o| o.0).map(|o| o.1)).collect();
    let work_dir = work.path().to_path_buf();
    let rig = Rig { work: work_dir, binary, version, raw_config, kernel, smartvm, jailed, sides, rss_start };

    // Warm-up (page cache, first spawn), and the boot path the VMs take.
    raw::boot(&rig.binary, &rig.raw_config, Flavor::NoApi).await?;
    let warm = rig.smartvm.create_vm(&rig.cfg("warmup".into(), ""))?;
    let boot_path = format!("{:?}", warm.boot_path());
    rig.smartvm.remove_vm("warmup").await?;
    smartvm_boot(&rig.smartvm, &rig.cfg("warmup".into(), ""), true).await?;

    let mut scenarios = Vec::new();
    if !args.pools_only {
        scenarios.extend(rig.single(args.runs, args.shuffle).await?);
        for &n in &args.concurrency {
            scenarios.extend(rig.at_once(n, args.rounds, args.shuffle).await?);
        }
    }
    let (cfg, snap) = rig.snapshot().await?;
    if !args.pools_only {
        scenarios.extend(rig.restore(args.runs, &cfg, &snap).await?);
        if args.clones > 0 {
            scenarios.extend(rig.clones(args.clones, args.rounds, &cfg, &snap).await?);
            scenarios.extend(rig.clones_pss(args.clones, args.rounds).await?);
        }
    }
    if args.pools || args.pools_only {
        scenarios.extend(rig.pools(args.runs, &cfg, &snap).await?);
    }
    let mut report = Report::new(version.to_string(), boot_path, args.runs, args.rounds, scenarios);
    report.order = if args.shuffle { "shuffled" } else { "alternating" };
    println!("{}", if args.json { report.json() } else { report.table() });
    rig.smartvm.cleanup().await?;
    if let Some(j) = &rig.jailed {
        j.cleanup().await?;
    }
    Ok(Exit::Success)
}

/// `--guest`: the guest agent's scenarios only.
async fn bench_guest(
    args: &BenchArgs,
    smartvm: &SmartVm,
    kernel: &Path,
    work: &Path,
    version: FirecrackerVersion,
) -> Result<Exit, CliError> {
    let agent = guest::agent_binary(args.guest_agent.clone())?;
    let mut scenarios = guest::unix(work, &agent, args.runs).await?;
    scenarios.extend(guest::vsock(smartvm, kernel, work, args.runs).await?);
    let report = Report::new(version.to_string(), "guest".into(), args.runs, 1, scenarios);
    println!("{}", if args.json { report.json() } else { report.table() });
    smartvm.cleanup().await?;
    Ok(Exit::Success)
}

fn write_raw_config(dir: &Path, kernel: &Path) -> Result<PathBuf, CliError> {
    let doc = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0 "},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 16}
    });
    let path = dir.join("raw-config.json");
    std::fs::write(&path, doc.to_string()).map_err(|e| bench_error("write raw config", e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_once_rounds_rotate_which_side_goes_first_or_shuffle_them() {
        let sides = [Side::Raw, Side::Smartvm, Side::RawApi];
        let firsts: Vec<Side> = (0..3).map(|round| round_order(&sides, round, false)[0]).collect();
        assert_eq!(firsts, sides, "each side goes first once in three rounds");
        assert_eq!(round_order(&sides, 4, false), [Side::Smartvm, Side::RawApi, Side::Raw]);
        for round in 0..20 {
            let mut order = round_order(&sides, round, true);
            order.sort_by_key(|s| s.index());
            assert_eq!(order, sides, "a shuffled round runs every side once");
        }
    }
}
