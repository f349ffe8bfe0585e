//! `PUT /machine-config`: vCPUs, memory, SMT, CPU template, dirty-page tracking, huge pages.

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::resource::{FirecrackerResource, Validate};

/// Static CPU templates Firecracker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    None,
}

/// Backing page size of guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    None,
    /// 2 MiB huge pages (hugetlbfs).
    #[serde(rename = "2M")]
    TwoMiB,
}

/// The machine's shape: smartvm's input and Firecracker's `PUT /machine-config` body in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1-32.
    #[serde(alias = "vcpu_count")]
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    #[serde(alias = "mem_size_mib")]
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Static CPU template.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "cpu_template")]
    pub cpu_template: Option<CpuTemplate>,
    /// Track dirty pages, needed for Diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "track_dirty_pages")]
    pub track_dirty_pages: Option<bool>,
    /// Huge pages for guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "huge_pages")]
    pub huge_pages: Option<HugePages>,
}

impl FirecrackerResource for MachineConfig {
    const API_PATH: &'static str = "/machine-config";
    const REFUSED_AS: &'static str = "MachineConfig";
}

impl Validate for MachineConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        self.validate_cpus(at, p);
        self.validate_memory(at, p);
    }
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self::new(1, 128)
    }
}

impl MachineConfig {
    /// `vcpus` vCPUs and `mem_mib` MiB of memory.
    pub fn new(vcpus: u32, mem_mib: u64) -> Self {
        Self {
            vcpu_count: vcpus,
            mem_size_mib: mem_mib,
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: None,
        }
    }

    fn validate_cpus(&self, at: &str, p: &mut Problems) {
        if !(1..=32).contains(&self.vcpu_count) {
            p.push(format!("{at}.vcpuCount"), format!("{} is outside 1-32", self.vcpu_count));
        }
        if self.vcpu_count > 1 && self.vcpu_count % 2 == 1 && self.smt == Some(true) {
            p.push(format!("{at}.vcpuCount"), "must be 1 or even when smt is enabled");
        }
    }

    fn validate_memory(&self, at: &str, p: &mut Problems) {
        if self.mem_size_mib == 0 {
            p.push(format!("{at}.memSizeMib"), "must be greater than 0");
        } else if let Some(host) = host_memory_mib().filter(|host| self.mem_size_mib > *host) {
            p.push(
                format!("{at}.memSizeMib"),
                format!("{} MiB is more than this host's {host} MiB", self.mem_size_mib),
            );
        }
        if self.huge_pages == Some(HugePages::TwoMiB) && self.mem_size_mib % 2 != 0 {
            p.push(format!("{at}.memSizeMib"), "must be a multiple of 2 with 2M huge pages");
        }
    }
}

/// Total RAM of this host (`MemTotal` of `/proc/meminfo`), in MiB.
fn host_memory_mib() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_payload() {
        assert_eq!(
            serde_json::to_value(MachineConfig::new(2, 256)).unwrap(),
            json!({"vcpu_count": 2, "mem_size_mib": 256})
        );
        let all: MachineConfig = serde_json::from_value(json!({
            "vcpuCount": 2, "memSizeMib": 256, "smt": false, "cpuTemplate": "T2", "trackDirtyPages": true, "hugePages": "2M"
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "cpu_template": "T2", "track_dirty_pages": true, "huge_pages": "2M"})
        );
    }

    #[test]
    fn validation() {
        for (v, m, ok) in [(0, 128, false), (33, 128, false), (1, 0, false), (32, 1, true), (1, 1, true)] {
            let mut p = Problems::default();
            MachineConfig::new(v, m).validate("machineConfig", &mut p);
            assert_eq!(p.0.is_empty(), ok, "vcpus={v} mem={m}: {:?}", p.0);
        }
    }
}
