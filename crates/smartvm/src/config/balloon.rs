//! `PUT /balloon` (pre-boot), `PATCH /balloon` and `/balloon/statistics` (post-boot).

use super::problems::NeedsNewerFirecracker;
use serde::{Deserialize, Serialize};

use super::problems::Problems;
use crate::version::FirecrackerVersion;

/// The memory balloon device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

/// Firecracker's `PUT /balloon` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalloonPayload {
    amount_mib: u64,
    deflate_on_oom: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats_polling_interval_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    free_page_hinting: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    free_page_reporting: Option<bool>,
}

/// Firecracker's `PATCH /balloon` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalloonUpdatePayload {
    /// New target size in MiB.
    pub amount_mib: u64,
}

/// Firecracker's `PATCH /balloon/statistics` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalloonStatsUpdatePayload {
    /// New polling interval in seconds.
    pub stats_polling_interval_s: u32,
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

    pub(crate) fn validate(&self, mem_size_mib: u64, p: &mut Problems) {
        if self.amount_mib > mem_size_mib {
            p.push("balloon.amountMib", format!("{} MiB exceeds guest memory of {mem_size_mib} MiB", self.amount_mib));
        }
    }

    /// Firecracker's payload for `version`.
    pub fn payload(&self, version: FirecrackerVersion) -> Result<BalloonPayload, NeedsNewerFirecracker> {
        NeedsNewerFirecracker::gate(self.free_page_hinting.is_some(), "freePageHinting", (1, 14), version)?;
        NeedsNewerFirecracker::gate(self.free_page_reporting.is_some(), "freePageReporting", (1, 14), version)?;
        Ok(BalloonPayload {
            amount_mib: self.amount_mib,
            deflate_on_oom: self.deflate_on_oom,
            stats_polling_interval_s: self.stats_polling_interval_s,
            free_page_hinting: self.free_page_hinting,
            free_page_reporting: self.free_page_reporting,
        })
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
        assert_eq!(
            serde_json::to_value(b.payload(v12).unwrap()).unwrap(),
            json!({"amount_mib": 16, "deflate_on_oom": true, "stats_polling_interval_s": 1})
        );
        b.free_page_reporting = Some(true);
        assert!(b.payload(v12).is_err());
        assert_eq!(
            serde_json::to_value(b.payload(FirecrackerVersion::new(1, 14, 0)).unwrap()).unwrap()["free_page_reporting"],
            true
        );
    }
}
