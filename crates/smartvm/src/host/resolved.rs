//! [`ResolvedResources`]: the host-side names a start resolves (staged drives, TAPs, paths as a
//! jailed Firecracker sees them), which the boot plan then uses in place of the config's.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::{LoggerConfig, MetricsConfig, VmConfig};

/// Host-side names resolved at start: staged drive paths and TAP names per interface id.
#[derive(Debug, Clone, Default)]
pub struct ResolvedResources {
    /// Drive id → path Firecracker should open (staged copy); others use their `pathOnHost`.
    pub drive_paths: HashMap<String, PathBuf>,
    /// Interface id → TAP device name (created ones); others use their `hostDevName`.
    pub tap_names: HashMap<String, String>,
    /// Interface id → MAC assigned by the network manager (when the config gives none).
    pub guest_macs: HashMap<String, macaddr::MacAddr6>,
    /// Appended to the kernel command line (the guest's `ip=` argument).
    pub extra_boot_args: Option<String>,
    /// Kernel and initrd paths as Firecracker sees them (inside a jail), when not the config's.
    pub kernel_path: Option<PathBuf>,
    /// See `kernel_path`.
    pub initrd_path: Option<PathBuf>,
    /// Logger, metrics and vsock socket paths as Firecracker sees them, when not the config's.
    pub logger_path: Option<PathBuf>,
    /// See `logger_path`.
    pub metrics_path: Option<PathBuf>,
    /// See `logger_path`.
    pub vsock_path: Option<PathBuf>,
}

impl ResolvedResources {
    /// The config's logger, at the path Firecracker sees.
    pub fn logger(&self, config: &VmConfig) -> Option<LoggerConfig> {
        config.logger.as_ref().map(|l| {
            let path = self.logger_path.clone().unwrap_or_else(|| l.log_path.clone());
            LoggerConfig { log_path: path, ..l.clone() }
        })
    }

    /// The config's metrics, at the path Firecracker sees.
    pub fn metrics(&self, config: &VmConfig) -> Option<MetricsConfig> {
        config.metrics.as_ref().map(|m| {
            let path = self.metrics_path.clone().unwrap_or_else(|| m.metrics_path.clone());
            MetricsConfig { metrics_path: path }
        })
    }
}
