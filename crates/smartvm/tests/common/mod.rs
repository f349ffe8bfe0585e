//! Shared setup of the integration tests: a real Firecracker, /dev/kvm and the probe guest.
//!
//! Without Firecracker or /dev/kvm a test prints why and returns early — unless
//! `SMARTVM_REQUIRE_KVM=1` (set by `.ci/run`), which turns that skip into a failure.
#![allow(dead_code)]

pub mod netns;
mod skip;

pub use skip::skipped;

use std::path::{Path, PathBuf};
use std::time::Duration;

use smartvm::probe::{install_probe_kernel, ProbeReport};
use smartvm::vm::VmRuntimeOptions;
use smartvm::{MicroVm, SmartVm, SmartVmOptions, VmConfig};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub smartvm: SmartVm,
    pub kernel: PathBuf,
    pub binary: PathBuf,
}

fn find_firecracker() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SMARTVM_FIRECRACKER_BIN") {
        return Some(p.into());
    }
    let data = std::env::var_os("SMARTVM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| smartvm::SmartVmOptions::default().data_dir);
    let p = data.join("bin/v1.12.1/firecracker");
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("firecracker")).find(|p| p.exists()))
}

/// The environment, or `None` (after printing why) when this host cannot run VMs.
pub fn env() -> Option<TestEnv> {
    let required = std::env::var("SMARTVM_REQUIRE_KVM").is_ok_and(|v| v == "1");
    let skip = |why: &str| {
        assert!(!required, "SMARTVM_REQUIRE_KVM=1 but {why}");
        skipped(&format!("{why} (set SMARTVM_REQUIRE_KVM=1 to make this a failure)"));
        None
    };
    if !Path::new("/dev/kvm").exists() {
        return skip("/dev/kvm is missing");
    }
    let Some(binary) = find_firecracker() else {
        return skip("no Firecracker binary (run scripts/install-firecracker.sh)");
    };
    if !cfg!(target_arch = "x86_64") {
        return skip("the probe guest is x86_64 only");
    }
    let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") };
    let dir = tempfile::Builder::new().prefix("svt").tempdir_in(base).expect("tempdir");
    let kernel = install_probe_kernel(&dir.path().join("kernels")).expect("probe kernel");
    let options = SmartVmOptions {
        data_dir: dir.path().join("data"),
        runtime_dir: dir.path().join("run"),
        firecracker_binary_path: Some(binary.clone()),
        stop_grace: Duration::from_millis(300),
        ..SmartVmOptions::default()
    };
    Some(TestEnv { smartvm: SmartVm::new(options), kernel, binary, dir })
}

impl TestEnv {
    /// A probe VM config with `args` on its command line.
    pub fn probe_config(&self, id: &str, args: &str) -> VmConfig {
        VmConfig::new(&self.kernel).with_id(id).with_machine(1, 16).with_boot_args(format!("console=ttyS0 {args}"))
    }

    /// A file of `sectors` 512-byte sectors with `text` at the start of sector 0.
    pub fn disk(&self, name: &str, sectors: u64, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        let mut data = vec![0u8; (sectors * 512) as usize];
        data[..text.len()].copy_from_slice(text.as_bytes());
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn runtime_options(&self) -> VmRuntimeOptions {
        self.smartvm.runtime_options(self.binary.clone())
    }
}

/// Waits for the guest to report `done` (or end) and parses its console.
pub async fn report(vm: &MicroVm) -> ProbeReport {
    let console = vm.console();
    let done = console.wait_for_line(Duration::from_secs(10), |l| l == "smartvm-probe done").await;
    let lines = console.lines();
    assert!(done.is_some(), "probe did not finish; console:\n{}", lines.join("\n"));
    ProbeReport::parse(lines.iter().map(String::as_str))
}

/// Waits until the console shows a `count n=` line with a value above `above`.
pub async fn next_count(vm: &MicroVm, above: Option<u64>, timeout: Duration) -> Option<u64> {
    let console = vm.console();
    let parse = |l: &str| l.strip_prefix("smartvm-probe count n=").and_then(|n| n.parse::<u64>().ok());
    let line = console.wait_for_line(timeout, |l| parse(l).is_some_and(|n| above.is_none_or(|a| n > a))).await?;
    parse(&line)
}

/// The highest count seen so far.
pub async fn last_count(vm: &MicroVm) -> Option<u64> {
    let console = vm.console();
    console.lines().iter().filter_map(|l| l.strip_prefix("smartvm-probe count n=")?.parse().ok()).max()
}

/// A live, non-zombie process.
pub fn pid_alive(pid: i32) -> bool {
    smartvm::vm::process_start_time(pid).is_some()
}

/// Kills the processes (detached VMs, which outlive their program) when a test ends, passed or
/// failed.
pub struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Waits (at most 20 s) until `pid` is gone; true when it is.
pub fn wait_gone(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pid_alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// Writes `text` at the start of 512-byte sector `sector` of the file at `path` (the rest of the
/// sector zeroed), synced.
pub fn write_sector(path: &Path, sector: u64, text: &str) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(sector * 512)).unwrap();
    let mut data = [0u8; 512];
    data[..text.len()].copy_from_slice(text.as_bytes());
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
}
