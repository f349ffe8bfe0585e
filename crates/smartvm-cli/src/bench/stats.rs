//! Summaries of sample sets and the host's load while they were taken.

use serde::Serialize;

/// Mean, median, p95, min, max of a sample set (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
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
    Some(Summary { n: s.len(), mean, median: rank(0.5), p95: rank(0.95), min: s[0], max: s[s.len() - 1] })
}

/// The 1-minute load average (`/proc/loadavg`), when readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system, every thread) used so far by `who`: this process, or its children
/// that have been waited for.
fn cpu_time(who: nix::sys::resource::UsageWho) -> std::time::Duration {
    let Ok(usage) = nix::sys::resource::getrusage(who) else { return std::time::Duration::ZERO };
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    std::time::Duration::from_micros((micros(usage.user_time()) + micros(usage.system_time())) as u64)
}

/// CPU time spent on VMs, summed over the measured parts of a scenario, beside the wall time:
/// this program's own (what the orchestrator costs per VM) and its reaped children's (what
/// the Firecracker processes cost, when the scenario waits for them to exit).
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    own: std::time::Duration,
    children: std::time::Duration,
    vms: u32,
    /// Whether the measured work waits for its Firecracker processes to exit (only then is
    /// their CPU time known inside the measurement).
    reaps: bool,
}

impl CpuMeter {
    /// A meter for work that waits for its VMs to exit.
    pub fn reaping() -> Self {
        Self { reaps: true, ..Self::default() }
    }

    /// Runs `work` (which handles `vms` VMs) and adds the CPU it took.
    pub async fn measure<F: std::future::Future>(&mut self, vms: u32, work: F) -> F::Output {
        use nix::sys::resource::UsageWho::{RUSAGE_CHILDREN, RUSAGE_SELF};
        let (own, children) = (cpu_time(RUSAGE_SELF), cpu_time(RUSAGE_CHILDREN));
        let out = work.await;
        self.own += cpu_time(RUSAGE_SELF).saturating_sub(own);
        self.children += cpu_time(RUSAGE_CHILDREN).saturating_sub(children);
        self.vms += vms;
        out
    }

    /// Milliseconds of this program's CPU per VM.
    pub fn per_vm_ms(&self) -> Option<f64> {
        (self.vms > 0).then(|| self.own.as_secs_f64() * 1e3 / f64::from(self.vms))
    }

    /// Milliseconds of the reaped Firecracker processes' CPU per VM (for reaping meters).
    pub fn vmm_per_vm_ms(&self) -> Option<f64> {
        (self.reaps && self.vms > 0).then(|| self.children.as_secs_f64() * 1e3 / f64::from(self.vms))
    }
}

/// This process's resident set in KiB (`VmRSS`).
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// Process `pid`'s proportional set size in KiB (`Pss` of `/proc/<pid>/smaps_rollup`): its
/// private pages plus its share of the pages it maps together with other processes.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(|l| l.strip_prefix("Pss:"))?.split_whitespace().next()?.parse().ok()
}

/// The mean of `values`, if there are any.
pub fn mean(values: &[u64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<u64>() as f64 / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_pss() {
        let pss = pss_kib(std::process::id()).expect("smaps_rollup is readable");
        assert!(pss > 0 && pss <= resident_kib().unwrap() + 64, "{pss}");
        assert_eq!(mean(&[1, 2, 6]), Some(3.0));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn summary_percentiles() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max, s.p95, s.mean), (5, 3.0, 1.0, 5.0, 5.0, 3.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&hundred).unwrap();
        assert_eq!((s.median, s.p95), (50.0, 95.0));
        assert_eq!(summarize(&[]), None);
    }

    #[tokio::test]
    async fn cpu_meter_counts_busy_work_per_vm() {
        let mut meter = CpuMeter::default();
        assert_eq!(meter.per_vm_ms(), None);
        let spin = async {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(40);
            while std::time::Instant::now() < until {
                std::hint::black_box(0u64);
            }
        };
        meter.measure(4, spin).await;
        let per_vm = meter.per_vm_ms().unwrap();
        assert_eq!(meter.vmm_per_vm_ms(), None, "a meter that does not wait for exits knows no VMM time");
        // A child that counts for a while: its CPU shows up once it has been waited for.
        let mut meter = CpuMeter::reaping();
        let busy = ["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"];
        let ran = meter.measure(1, async { std::process::Command::new("sh").args(busy).status() }).await;
        assert!(ran.unwrap().success());
        assert!(meter.vmm_per_vm_ms().unwrap() > 5.0, "{:?}", meter.vmm_per_vm_ms());
        // 40 ms of spinning over 4 VMs: about 10 ms each (a busy host may deschedule us).
        assert!(per_vm > 2.0 && per_vm < 40.0, "{per_vm}");
        assert!(resident_kib().unwrap() > 0);
    }
}
