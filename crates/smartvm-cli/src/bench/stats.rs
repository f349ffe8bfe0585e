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

/// CPU time (user + system, every thread) this process has used so far.
fn own_cpu() -> std::time::Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else { return std::time::Duration::ZERO };
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    std::time::Duration::from_micros((micros(usage.user_time()) + micros(usage.system_time())) as u64)
}

/// This program's own CPU time spent on VMs, summed over the measured parts of a scenario:
/// what the orchestrator itself costs per VM, beside the wall time.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuMeter {
    total: std::time::Duration,
    vms: u32,
}

impl CpuMeter {
    /// Runs `work` (which handles `vms` VMs) and adds the CPU it took.
    pub async fn measure<F: std::future::Future>(&mut self, vms: u32, work: F) -> F::Output {
        let before = own_cpu();
        let out = work.await;
        self.total += own_cpu().saturating_sub(before);
        self.vms += vms;
        out
    }

    /// Milliseconds of CPU per VM.
    pub fn per_vm_ms(&self) -> Option<f64> {
        (self.vms > 0).then(|| self.total.as_secs_f64() * 1e3 / f64::from(self.vms))
    }
}

/// This process's resident set in KiB (`VmRSS`).
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // 40 ms of spinning over 4 VMs: about 10 ms each (a busy host may deschedule us).
        assert!(per_vm > 2.0 && per_vm < 40.0, "{per_vm}");
        assert!(resident_kib().unwrap() > 0);
    }
}
