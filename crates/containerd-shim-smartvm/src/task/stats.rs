//! `Stats` of a task: its VM's Firecracker process as containerd's cgroup v1 metrics (what
//! `ctr task metrics` and the kubelet read) — CPU time, resident memory, threads. The guest's
//! own view (its processes, its page cache) is inside the VM and not counted here.

use containerd_shim_protos::cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

/// One process's accounting from `/proc` (pure parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// User CPU time, ns.
    pub user_ns: u64,
    /// Kernel CPU time, ns.
    pub kernel_ns: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
}

/// Parses `/proc/PID/stat` and `/proc/PID/status` (`ticks_per_sec`: `_SC_CLK_TCK`).
pub fn parse(stat: &str, status: &str, ticks_per_sec: u64) -> Option<ProcessUsage> {
    // Fields after the command name (which may hold spaces), numbered from 3 (state).
    let rest: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / ticks_per_sec.max(1);
    let rss_kib =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(ProcessUsage {
        user_ns: to_ns(field(14)?),
        kernel_ns: to_ns(field(15)?),
        rss_bytes: rss_kib * 1024,
        threads: field(20)?,
    })
}

/// The usage of process `pid`, now.
pub fn read(pid: u32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    parse(&stat, &status, ticks as u64)
}

/// The usage as containerd's `io.containerd.cgroups.v1.Metrics`, with the guest memory as the
/// memory limit.
pub fn metrics(usage: ProcessUsage, mem_limit_bytes: u64) -> Any {
    let cpu = CPUUsage {
        total: usage.user_ns + usage.kernel_ns,
        user: usage.user_ns,
        kernel: usage.kernel_ns,
        ..Default::default()
    };
    let memory = MemoryStat {
        rss: usage.rss_bytes,
        usage: Some(MemoryEntry { usage: usage.rss_bytes, limit: mem_limit_bytes, ..Default::default() }).into(),
        ..Default::default()
    };
    let metrics = Metrics {
        pids: Some(PidsStat { current: usage.threads, ..Default::default() }).into(),
        cpu: Some(CPUStat { usage: Some(cpu).into(), ..Default::default() }).into(),
        memory: Some(memory).into(),
        ..Default::default()
    };
    Any {
        type_url: "io.containerd.cgroups.v1.Metrics".into(),
        value: metrics.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_accounting_parses_even_with_spaces_in_the_name() {
        let stat = "4242 (fire cracker) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 3 0 100 0 0";
        let status = "Name:\tfirecracker\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        let usage = parse(stat, status, 100).unwrap();
        assert_eq!(
            usage,
            ProcessUsage { user_ns: 1_500_000_000, kernel_ns: 500_000_000, rss_bytes: 20 << 20, threads: 3 }
        );
        assert_eq!(parse("garbage", status, 100), None);
        let decoded = Metrics::parse_from_bytes(&metrics(usage, 128 << 20).value).unwrap();
        assert_eq!(decoded.memory.usage.limit, 128 << 20);
        assert_eq!(decoded.cpu.usage.total, 2_000_000_000);
    }
}
