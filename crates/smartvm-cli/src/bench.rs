//! `smartvm bench`: boot-path measurements any user can run, printed as a table.
//!
//! (a) raw `firecracker --no-api --config-file` boot of the probe: to its first report line and
//!     to exit; (b) the same VM through smartvm (`create_vm` + `start`), interleaved with (a) in
//!     one run so the ratio b/a compares like with like; (c) N VMs started at once from one
//!     process vs N raw processes; (d) snapshot load → first line of the resumed guest.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use smartvm::snapshot::Snapshot;
use smartvm::{probe, SmartVm, SmartVmError, SmartVmOptions, VmConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Runs per scenario.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// VMs started at once in the concurrency scenario.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Also measure VMs under the jailer (chroot, uid/gid drop, jail base `/srv/jailer`),
    /// interleaved with the direct path.
    #[arg(long)]
    jailed: bool,
}

/// Median, p95, min, max of a sample set (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentiles; `None` for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    Some(Summary { mean, median: rank(0.5), p95: rank(0.95), min: s[0], max: s[s.len() - 1] })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_error(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(Exit::Failure, format!("{what}: {e}"))
}

/// One raw Firecracker boot: (first probe line, exit) after spawn.
async fn raw_boot(binary: &Path, config_file: &Path) -> Result<(Duration, Duration), CliError> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .args(["--no-api", "--level", "Warning", "--log-path", "/dev/stderr", "--config-file"])
        .arg(config_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| bench_error("spawn firecracker", e))?;
    let stdout = child.stdout.take().ok_or_else(|| bench_error("firecracker", "no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut first = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if first.is_none() && line.starts_with(probe::LINE_PREFIX) {
            first = Some(start.elapsed());
        }
    }
    child.wait().await.map_err(|e| bench_error("wait firecracker", e))?;
    let exit = start.elapsed();
    Ok((first.ok_or_else(|| bench_error("raw boot", "probe printed nothing"))?, exit))
}

/// One boot through smartvm: (first probe line, exit) after `create_vm`.
async fn smartvm_boot(smartvm: &SmartVm, cfg: &VmConfig) -> Result<(Duration, Duration), CliError> {
    let start = Instant::now();
    let vm = smartvm.create_vm(cfg)?;
    vm.start().await?;
    let console = vm.console().await.ok_or(SmartVmError::NoClient)?;
    let first = console.wait_for_line(Duration::from_secs(10), |l| l.starts_with(probe::LINE_PREFIX)).await;
    let first = first.map(|_| start.elapsed());
    vm.wait_for_exit(Duration::from_secs(10)).await;
    let exit = start.elapsed();
    smartvm.remove_vm(vm.id()).await?;
    Ok((first.ok_or_else(|| bench_error("smartvm boot", "probe printed nothing"))?, exit))
}

fn row(out: &mut Vec<String>, name: &str, samples: &[f64]) {
    if let Some(s) = summarize(samples) {
        out.push(format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            samples.len(),
            s.mean,
            s.median,
            s.p95,
            s.min,
            s.max
        ));
    }
}

/// Every sample set the bench collects (milliseconds).
#[derive(Default)]
struct Samples {
    raw_first: Vec<f64>,
    raw_exit: Vec<f64>,
    sv_first: Vec<f64>,
    sv_exit: Vec<f64>,
    jailed_first: Vec<f64>,
    conc_raw: Vec<f64>,
    conc_sv: Vec<f64>,
    snapshot: Vec<f64>,
}

/// What the boots need: the binary, the raw config, the probe kernel, the orchestrators.
struct Rig {
    binary: PathBuf,
    raw_config: PathBuf,
    kernel: PathBuf,
    smartvm: SmartVm,
    jailed: Option<SmartVm>,
}

impl Rig {
    fn cfg(&self, id: String) -> VmConfig {
        VmConfig::new(&self.kernel).with_id(id).with_machine(1, 16).with_boot_args("console=ttyS0")
    }

    /// (a), (b) and (e) interleaved run by run, so their ratios compare like with like.
    async fn serial(&self, runs: usize, s: &mut Samples) -> Result<(), CliError> {
        for i in 0..runs {
            let (f, e) = raw_boot(&self.binary, &self.raw_config).await?;
            s.raw_first.push(ms(f));
            s.raw_exit.push(ms(e));
            let (f, e) = smartvm_boot(&self.smartvm, &self.cfg(format!("bench-{i}"))).await?;
            s.sv_first.push(ms(f));
            s.sv_exit.push(ms(e));
            if let Some(j) = &self.jailed {
                s.jailed_first.push(ms(smartvm_boot(j, &self.cfg(format!("jailed-{i}"))).await?.0));
            }
        }
        Ok(())
    }

    /// (c): `n` raw processes at once, then `n` smartvm VMs at once, per round.
    async fn concurrent(&self, rounds: usize, n: usize, s: &mut Samples) -> Result<(), CliError> {
        for round in 0..rounds {
            let start = Instant::now();
            let raws = futures_util::future::join_all((0..n).map(|_| raw_boot(&self.binary, &self.raw_config))).await;
            raws.into_iter().collect::<Result<Vec<_>, _>>()?;
            s.conc_raw.push(ms(start.elapsed()));
            let start = Instant::now();
            let configs: Vec<VmConfig> = (0..n).map(|i| self.cfg(format!("conc-{round}-{i}"))).collect();
            let svs = futures_util::future::join_all(configs.iter().map(|c| smartvm_boot(&self.smartvm, c))).await;
            svs.into_iter().collect::<Result<Vec<_>, _>>()?;
            s.conc_sv.push(ms(start.elapsed()));
        }
        Ok(())
    }
}

fn render(s: &Samples, header: String, n: usize) -> Vec<String> {
    let median = |v: &[f64]| summarize(v).map_or(f64::NAN, |s| s.median);
    let mean = |v: &[f64]| summarize(v).map_or(f64::NAN, |s| s.mean);
    let mut out = vec![
        header,
        String::new(),
        "| scenario | n | mean ms | median ms | p95 ms | min ms | max ms |".into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    row(&mut out, "(a) raw firecracker: spawn → first probe line", &s.raw_first);
    row(&mut out, "(a) raw firecracker: spawn → exit", &s.raw_exit);
    row(&mut out, "(b) smartvm create_vm+start → first probe line", &s.sv_first);
    row(&mut out, "(b) smartvm create_vm+start → exit", &s.sv_exit);
    row(&mut out, &format!("(c) {n} raw processes at once → all exited"), &s.conc_raw);
    row(&mut out, &format!("(c) {n} smartvm VMs at once → all exited"), &s.conc_sv);
    row(&mut out, "(d) snapshot load (resume) → first count line", &s.snapshot);
    row(&mut out, "(e) smartvm jailed create_vm+start → first probe line", &s.jailed_first);
    out.push(String::new());
    let ratio = |name: &str, b: &[f64], a: &[f64]| {
        format!("ratio {name}: mean {:.3}, median {:.3}", mean(b) / mean(a), median(b) / median(a))
    };
    out.push(ratio("(b)/(a) first line", &s.sv_first, &s.raw_first));
    out.push(ratio("(b)/(a) exit      ", &s.sv_exit, &s.raw_exit));
    out.push(ratio("(c) smartvm/raw   ", &s.conc_sv, &s.conc_raw));
    if !s.jailed_first.is_empty() {
        out.push(ratio("(e)/(b) jailed/direct", &s.jailed_first, &s.sv_first));
    }
    if std::env::var_os("SMARTVM_BENCH_SAMPLES").is_some() {
        let sets = [
            ("raw_first", &s.raw_first),
            ("sv_first", &s.sv_first),
            ("raw_exit", &s.raw_exit),
            ("sv_exit", &s.sv_exit),
        ];
        for (name, v) in sets {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            out.push(format!("{name}: {}", v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" ")));
        }
    }
    out
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
    let kernel =
        probe::install_probe_kernel(&work.path().join("kernels")).map_err(|e| bench_error("probe kernel", e))?;
    let raw_config = write_raw_config(work.path(), &kernel)?;
    let jailed = args.jailed.then(|| SmartVm::new(SmartVmOptions { jailed_by_default: true, ..options.clone() }));
    let rig = Rig { binary, raw_config, kernel, smartvm, jailed };

    // Warm-up (page cache, first spawn).
    raw_boot(&rig.binary, &rig.raw_config).await?;
    smartvm_boot(&rig.smartvm, &rig.cfg("warmup".into())).await?;
    let mut samples = Samples::default();
    rig.serial(args.runs, &mut samples).await?;
    let n = args.concurrency.max(1);
    rig.concurrent(args.runs.clamp(1, 15), n, &mut samples).await?;
    samples.snapshot = snapshot_restore(&rig.smartvm, &rig.kernel, work.path(), args.runs).await?;
    let version = rig.smartvm.binary_version(&rig.binary).map(|v| v.to_string()).unwrap_or_default();
    let header = format!("smartvm bench: {} runs, concurrency {n}, Firecracker {version}", args.runs);
    println!("{}", render(&samples, header, n).join("\n"));
    rig.smartvm.cleanup().await?;
    if let Some(j) = &rig.jailed {
        j.cleanup().await?;
    }
    Ok(Exit::Success)
}

fn write_raw_config(dir: &Path, kernel: &Path) -> Result<PathBuf, CliError> {
    let doc = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0"},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 16}
    });
    let path = dir.join("raw-config.json");
    std::fs::write(&path, doc.to_string()).map_err(|e| bench_error("write raw config", e))?;
    Ok(path)
}

async fn snapshot_restore(smartvm: &SmartVm, kernel: &Path, dir: &Path, runs: usize) -> Result<Vec<f64>, CliError> {
    let cfg =
        VmConfig::new(kernel).with_id("snap-origin").with_machine(1, 16).with_boot_args("console=ttyS0 probe.count=1");
    let vm = smartvm.create_vm(&cfg)?;
    vm.start().await?;
    let console = vm.console().await.ok_or(SmartVmError::NoClient)?;
    console.wait_for_line(Duration::from_secs(5), |l| l.contains("count n=")).await;
    vm.pause().await?;
    let snap = Snapshot::full(dir.join("bench.state"), dir.join("bench.mem"));
    vm.create_snapshot(&snap.create_params()).await?;
    smartvm.remove_vm("snap-origin").await?;
    let mut samples = Vec::new();
    for i in 0..runs {
        let start = Instant::now();
        let restored =
            smartvm.restore_vm(&VmConfig { id: Some(format!("snap-{i}")), ..cfg.clone() }, &snap, true).await?;
        let console = restored.console().await.ok_or(SmartVmError::NoClient)?;
        let seen = console.wait_for_line(Duration::from_secs(5), |l| l.starts_with("smartvm-probe count n=")).await;
        if seen.is_none() {
            return Err(bench_error("snapshot restore", "restored guest printed nothing"));
        }
        samples.push(ms(start.elapsed()));
        smartvm.remove_vm(restored.id()).await?;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.p95, s.mean), (3.0, 1.0, 5.0, 5.0, 3.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&hundred).unwrap();
        assert_eq!((s.median, s.p95), (50.0, 95.0));
        assert_eq!(summarize(&[]), None);
    }
}
