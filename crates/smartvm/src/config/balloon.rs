//! `PUT /balloon` (pre-boot), `PATCH /balloon` and `/balloon/statistics` (post-boot).

use super::problems::NeedsNewerFirecracker;
use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::resource::{FirecrackerResource, Validate};
use crate::version::FirecrackerVersion;

/// The memory balloon device: smartvm's input and Firecracker's `PUT /balloon` body in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct BalloonConfig {
    /// Target balloon size in MiB.
    #[serde(alias = "amount_mib")]
    pub amount_mib: u64,
    /// Deflate when the guest is out of memory.
    #[serde(default, alias = "deflate_on_oom")]
    pub deflate_on_oom: bool,
    /// Statistics polling interval in seconds (0 disables statistics).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "stats_polling_interval_s")]
    pub stats_polling_interval_s: Option<u32>,
    /// Free page hinting (Firecracker v1.14+).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "free_page_hinting")]
    pub free_page_hinting: Option<bool>,
    /// Free page reporting (Firecracker v1.14+).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "free_page_reporting")]
    pub free_page_reporting: Option<bool>,
}

/// Firecracker's `PATCH /balloon` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalloonUpdate {
    /// New target size in MiB.
    pub amount_mib: u64,
}

/// Firecracker's `PATCH /balloon/statistics` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalloonStatsUpdate {
    /// New polling interval in seconds.
    pub stats_polling_interval_s: u32,
}

impl FirecrackerResource for BalloonConfig {
    const API_PATH: &'static str = "/balloon";
    const REFUSED_AS: &'static str = "BalloonDevice";
    fn check_version(&self, version: FirecrackerVersion) -> Result<(), NeedsNewerFirecracker> {
        NeedsNewerFirecracker::gate(self.free_page_hinting.is_some(), "freePageHinting", (1, 14), version)?;
        NeedsNewerFirecracker::gate(self.free_page_reporting.is_some(), "freePageReporting", (1, 14), version)
    }
}

/// Alone a balloon has nothing to check: its size is checked against guest memory by
/// [`VmConfig::validate`](super::VmConfig::validate).
impl Validate for BalloonConfig {
    fn validate(&self, _at: &str, _p: &mut Problems) {}
}

impl BalloonConfig {
    /// A balloon of `amount_mib` MiB.
    pub fn new(amount_mib: u64, deflate_on_oom: bool) -> Self {
        Self {
            amount_mib,
            deflate_on_oom,
            stats_polling_interval_s: None,
            free_page_hinting: None,
            free_page_reporting: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_per_version() {
        let mut b = BalloonConfig::new(16, true);
        b.stats_polling_interval_s = Some(1);
        let v12 = FirecrackerVersion::new(1, 12, 1);
        b.check_version(v12).unwrap();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"amount_mib": 16, "deflate_on_oom": true, "stats_polling_interval_s": 1})
        );
        b.free_page_reporting = Some(true);
        assert!(b.check_version(v12).is_err());
        b.check_version(FirecrackerVersion::new(1, 14, 0)).unwrap();
        assert_eq!(serde_json::to_value(&b).unwrap()["free_page_reporting"], true);
    }
}
