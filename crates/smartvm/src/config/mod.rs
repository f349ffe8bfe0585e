//! The VM configuration: one module per Firecracker resource, each holding its one struct (smartvm's
//! input and Firecracker's wire body at once) and its validation.
//!
//! Input comes three ways: Rust values (constructors and `with_*` helpers), smartvm's camelCase
//! JSON (the TypeScript library's shape; snake_case keys are accepted too), and Firecracker's own
//! `--config-file` JSON (`boot-source`, `drives`, `machine-config`, …). [`VmConfig::validate`]
//! reports every problem at once, before anything is created on disk or spawned. Serialised, a
//! `VmConfig` is in Firecracker's `--config-file` form (plus smartvm's `id` and per-drive
//! `ephemeral`, which the resolved config Firecracker gets has consumed);
//! [`VmConfig::to_camel_case`] gives smartvm's camelCase form for APIs that show it.
//!
//! Adding a Firecracker resource: a module here with its struct, `impl FirecrackerResource`
//! (API path, refusal name, version gate) and `impl Validate`, then its field in [`VmConfig`]
//! and one line in the `resource_table!` below.

mod balloon;
mod boot_source;
mod drive;
mod entropy;
mod logger;
mod machine;
mod mmds;
mod network;
mod problems;
mod rate_limiter;
mod resource;
mod snapshot;
mod vsock;

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use balloon::{BalloonConfig, BalloonStatsUpdate, BalloonUpdate};
pub use boot_source::{BootSourceConfig, MAX_BOOT_ARGS};
pub use drive::{CacheType, DriveConfig, DriveUpdate, IoEngine};
pub use entropy::EntropyConfig;
pub use logger::{LogLevel, LoggerConfig, MetricsConfig};
pub use machine::{CpuTemplate, HugePages, MachineConfig};
pub use mmds::{MmdsConfig, MmdsVersion};
pub use network::{is_valid_mac, mac_text, parse_mac, NetworkInterfaceConfig, NetworkInterfaceUpdate};
pub use problems::{ConfigErrors, ConfigProblem, NeedsNewerFirecracker};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use resource::{FirecrackerResource, ResourceVisitor};
pub use snapshot::{NetworkOverride, SnapshotCreateParams, SnapshotLoadParams, SnapshotLoadPayload, SnapshotType};
pub use vsock::VsockConfig;

use crate::version::FirecrackerVersion;
use problems::Problems;

/// Everything needed to boot one microVM.
///
/// # Examples
///
/// ```
/// use smartvm::config::{DriveConfig, NetworkInterfaceConfig};
/// use smartvm::VmConfig;
///
/// let config = VmConfig::new("/images/vmlinux")
///     .with_id("web")
///     .with_machine(2, 256)
///     .with_boot_args("console=ttyS0 reboot=k panic=1")
///     .with_drive(DriveConfig::new("rootfs", "/images/rootfs.ext4").root())
///     .with_network_interface(NetworkInterfaceConfig::managed("eth0"));
/// // Every problem at once, each naming its field; the same from JSON (camelCase or
/// // Firecracker's --config-file form).
/// let json = r#"{"bootSource": {"kernelImagePath": "k"}, "machineConfig": {"vcpuCount": 99, "memSizeMib": 128}}"#;
/// let bad = VmConfig::from_json(json)
///     .unwrap()
///     .validate()
///     .unwrap_err();
/// assert!(bad.has_field("machineConfig.vcpuCount"));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all(serialize = "kebab-case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct VmConfig {
    /// VM id (default: a UUID v4). Used for the runtime dir name and Firecracker's `--id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Kernel and command line.
    #[serde(alias = "boot_source", alias = "boot-source")]
    pub boot_source: BootSourceConfig,
    /// vCPUs and memory (default 1 vCPU, 128 MiB).
    #[serde(default, alias = "machine_config", alias = "machine-config")]
    pub machine_config: MachineConfig,
    /// Block devices, in guest order.
    #[serde(default)]
    pub drives: Vec<DriveConfig>,
    /// Network interfaces, in guest order.
    #[serde(default, alias = "network_interfaces", alias = "network-interfaces")]
    pub network_interfaces: Vec<NetworkInterfaceConfig>,
    /// vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// Balloon device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
    /// Entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyConfig>,
    /// MMDS configuration.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "mmds",
        alias = "mmds_config",
        alias = "mmds-config"
    )]
    pub mmds_config: Option<MmdsConfig>,
    /// Firecracker's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<LoggerConfig>,
    /// Firecracker's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

resource::resource_table! {
    logger ("logger"): LoggerConfig,
    metrics ("metrics"): MetricsConfig,
    machine_config ("machineConfig"): MachineConfig,
    boot_source ("bootSource"): BootSourceConfig,
    drives ("drives"): DriveConfig,
    network_interfaces ("networkInterfaces"): NetworkInterfaceConfig,
    vsock ("vsock"): VsockConfig,
    balloon ("balloon"): BalloonConfig,
    entropy ("entropy"): EntropyConfig,
    mmds_config ("mmdsConfig"): MmdsConfig,
}

/// A host path a config names ([`VmConfig::host_paths`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath<'a> {
    /// The field, in the camelCase input form.
    pub field: String,
    /// The path.
    pub path: &'a Path,
    /// What is done with it.
    pub used: HostPathUse,
}

impl<'a> HostPath<'a> {
    fn new(field: impl Into<String>, path: &'a Path, used: HostPathUse) -> Self {
        Self { field: field.into(), path, used }
    }
}

/// What is done with a [`HostPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathUse {
    /// Read (kernel, initrd, drives; a drive's vhost-user socket is connected to).
    Reads,
    /// Created or written (logger, metrics, the vsock socket).
    Creates,
}

/// `#[serde(serialize_with = "…")]` for a [`VmConfig`] shown in camelCase
/// ([`VmConfig::to_camel_case`]).
pub fn serialize_camel_case<S: serde::Serializer>(config: &VmConfig, serializer: S) -> Result<S::Ok, S::Error> {
    config.to_camel_case().serialize(serializer)
}

/// [`serialize_camel_case`] for an optional config.
pub fn serialize_camel_case_option<S: serde::Serializer>(
    config: &Option<VmConfig>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    config.as_ref().map(VmConfig::to_camel_case).serialize(serializer)
}

/// Largest config file [`VmConfig::from_file`] reads.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most drives one VM may have (each costs Firecracker a file and an MMIO slot).
pub const MAX_DRIVES: usize = 64;
/// Most network interfaces one VM may have.
pub const MAX_NETWORK_INTERFACES: usize = 32;

impl VmConfig {
    /// A VM booting `kernel` with the default machine (1 vCPU, 128 MiB) and no devices.
    pub fn new(kernel: impl Into<std::path::PathBuf>) -> Self {
        Self { boot_source: BootSourceConfig::new(kernel), ..Self::default() }
    }

    /// Sets the VM id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the kernel command line.
    pub fn with_boot_args(mut self, args: impl Into<String>) -> Self {
        self.boot_source.boot_args = Some(args.into());
        self
    }
    /// Sets vCPUs and memory.
    pub fn with_machine(mut self, vcpus: u32, mem_mib: u64) -> Self {
        self.machine_config.vcpu_count = vcpus;
        self.machine_config.mem_size_mib = mem_mib;
        self
    }
    /// Adds a drive.
    pub fn with_drive(mut self, drive: DriveConfig) -> Self {
        self.drives.push(drive);
        self
    }
    /// Adds a network interface.
    pub fn with_network_interface(mut self, iface: NetworkInterfaceConfig) -> Self {
        self.network_interfaces.push(iface);
        self
    }
    /// Adds a vsock device.
    pub fn with_vsock(mut self, vsock: VsockConfig) -> Self {
        self.vsock = Some(vsock);
        self
    }
    /// Adds a balloon device.
    pub fn with_balloon(mut self, balloon: BalloonConfig) -> Self {
        self.balloon = Some(balloon);
        self
    }

    /// Parses smartvm's camelCase JSON or Firecracker's `--config-file` JSON (kebab-case
    /// sections, snake_case fields); the forms may be mixed. Errors name the offending field.
    pub fn from_json(text: &str) -> Result<Self, ConfigErrors> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigErrors::single("<file>", format!("not valid JSON: {e}")))?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigErrors::single(if path == "." { "<root>".into() } else { path }, e.into_inner().to_string())
        })
    }

    /// Reads and parses a config file (see [`from_json`](Self::from_json)).
    /// A regular file of at most [`MAX_CONFIG_BYTES`] (read with that cap, so `/dev/zero` or a
    /// huge file is refused without being read whole).
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        use std::io::Read;
        let fail = |m: String| ConfigErrors::single("<file>", format!("cannot read {}: {m}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        if !file.metadata().map_err(|e| fail(e.to_string()))?.is_file() {
            return Err(fail("not a regular file".into()));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(fail(format!("larger than {} KiB", MAX_CONFIG_BYTES >> 10)));
        }
        Self::from_json(&text)
    }

    /// The config in smartvm's camelCase input form (the TypeScript library's shape, what the
    /// host agent's API shows): the serialised keys, each made camelCase.
    pub fn to_camel_case(&self) -> serde_json::Value {
        fn camel(key: &str) -> String {
            let mut out = String::with_capacity(key.len());
            let mut upper = false;
            for c in key.chars() {
                match c {
                    '_' | '-' => upper = true,
                    c if upper => {
                        out.push(c.to_ascii_uppercase());
                        upper = false;
                    }
                    c => out.push(c),
                }
            }
            out
        }
        fn rekey(value: serde_json::Value) -> serde_json::Value {
            match value {
                serde_json::Value::Object(map) => map.into_iter().map(|(k, v)| (camel(&k), rekey(v))).collect(),
                serde_json::Value::Array(items) => items.into_iter().map(rekey).collect(),
                other => other,
            }
        }
        rekey(serde_json::to_value(self).unwrap_or_default())
    }

    /// Every host path the config names, with its field (`drives[0].pathOnHost`) and whether
    /// Firecracker (or smartvm, staging a copy) reads it or creates it.
    pub fn host_paths(&self) -> Vec<HostPath<'_>> {
        use HostPathUse::{Creates, Reads};
        let mut out = vec![HostPath::new("bootSource.kernelImagePath", &self.boot_source.kernel_image_path, Reads)];
        out.extend(self.boot_source.initrd_path.iter().map(|p| HostPath::new("bootSource.initrdPath", p, Reads)));
        for (i, d) in self.drives.iter().enumerate() {
            match &d.socket {
                Some(socket) => out.push(HostPath::new(format!("drives[{i}].socket"), socket, Reads)),
                None => out.push(HostPath::new(format!("drives[{i}].pathOnHost"), &d.path_on_host, Reads)),
            }
        }
        out.extend(self.logger.iter().map(|l| HostPath::new("logger.logPath", &l.log_path, Creates)));
        out.extend(self.metrics.iter().map(|m| HostPath::new("metrics.metricsPath", &m.metrics_path, Creates)));
        out.extend(self.vsock.iter().map(|v| HostPath::new("vsock.udsPath", &v.uds_path, Creates)));
        out
    }

    /// Checks the whole config and returns every problem found.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut p = Problems::default();
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                p.push("id", format!("{id:?} must be 1-64 characters of [A-Za-z0-9._-]"));
            } else if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) || id.ends_with(".sock") {
                // The runtime dir also holds `.drives`, `.network` and the agent's socket.
                p.push("id", format!("{id:?} must start with a letter or digit and not end in .sock"));
            }
        }
        self.validate_each(&mut p);
        if self.drives.len() > MAX_DRIVES {
            p.push("drives", format!("{} drives; at most {MAX_DRIVES}", self.drives.len()));
        }
        if self.network_interfaces.len() > MAX_NETWORK_INTERFACES {
            let n = self.network_interfaces.len();
            p.push("networkInterfaces", format!("{n} interfaces; at most {MAX_NETWORK_INTERFACES}"));
        }
        self.validate_drives_together(&mut p);
        self.validate_interfaces_together(&mut p);
        self.validate_kernel_fits(&mut p);
        if let Some(b) = &self.balloon {
            let mem = self.machine_config.mem_size_mib;
            if b.amount_mib > mem {
                p.push("balloon.amountMib", format!("{} MiB exceeds guest memory of {mem} MiB", b.amount_mib));
            }
        }
        if let Some(m) = &self.mmds_config {
            for (i, id) in m.network_interfaces.iter().enumerate() {
                if !self.network_interfaces.iter().any(|n| &n.iface_id == id) {
                    p.push(format!("mmdsConfig.networkInterfaces[{i}]"), format!("no network interface {id:?}"));
                }
            }
        }
        p.into_result()
    }

    /// Guest memory holds the kernel where Firecracker loads it (x86_64: at 1 MiB; aarch64: at
    /// 2 MiB); a smaller machine makes Firecracker fail as it starts instead of a clear refusal.
    fn validate_kernel_fits(&self, p: &mut Problems) {
        const LOAD_OFFSET_MIB: u64 = if cfg!(target_arch = "aarch64") { 2 } else { 1 };
        let Ok(meta) = std::fs::metadata(&self.boot_source.kernel_image_path) else { return };
        let needed = LOAD_OFFSET_MIB + meta.len().div_ceil(1 << 20);
        let mem = self.machine_config.mem_size_mib;
        if meta.is_file() && mem > 0 && mem < needed {
            let why =
                format!("{mem} MiB cannot hold the kernel ({} KiB loaded at {LOAD_OFFSET_MIB} MiB)", meta.len() >> 10);
            p.push("machineConfig.memSizeMib", why);
        }
    }

    /// Drive ids are unique and at most one drive is the root device.
    fn validate_drives_together(&self, p: &mut Problems) {
        let mut ids = HashSet::new();
        let mut roots = 0;
        for (i, d) in self.drives.iter().enumerate() {
            if !ids.insert(d.drive_id.as_str()) {
                p.push(format!("drives[{i}].driveId"), format!("duplicate id {:?}", d.drive_id));
            }
            if d.is_root_device {
                roots += 1;
                if roots > 1 {
                    p.push(format!("drives[{i}].isRootDevice"), "only one drive can be the root device");
                }
            }
        }
    }

    /// Interface ids, MACs and TAPs are unique.
    fn validate_interfaces_together(&self, p: &mut Problems) {
        let (mut ids, mut macs, mut taps) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, n) in self.network_interfaces.iter().enumerate() {
            if !ids.insert(n.iface_id.as_str()) {
                p.push(format!("networkInterfaces[{i}].ifaceId"), format!("duplicate id {:?}", n.iface_id));
            }
            if let Some(mac) = n.guest_mac.as_deref().and_then(network::parse_mac) {
                if !macs.insert(mac) {
                    p.push(format!("networkInterfaces[{i}].guestMac"), format!("duplicate MAC {mac}"));
                }
            }
            if let Some(tap) = &n.host_dev_name {
                if !taps.insert(tap.as_str()) {
                    p.push(format!("networkInterfaces[{i}].hostDevName"), format!("duplicate TAP {tap}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
