//! `run`'s firectl-style flags: extra drives, a read-only root, a TAP with its MAC, a vsock
//! device, initial MMDS metadata, an initrd and the Firecracker binary. Paths are relative to
//! the current directory.

use std::path::{Path, PathBuf};

use smartvm::config::{DriveConfig, LogLevel, NetworkInterfaceConfig, VsockConfig};
use smartvm::VmConfig;

use crate::exit::{CliError, Exit};

#[derive(Debug, Clone, clap::Args)]
pub struct FirectlArgs {
    /// Attach another drive: `PATH` (writable, staged ephemerally) or `PATH:ro`; repeatable.
    #[arg(long = "add-drive", value_name = "PATH[:ro]")]
    add_drive: Vec<String>,
    /// Attach the root drive read-only.
    #[arg(long)]
    root_ro: bool,
    /// Attach a NIC on an existing TAP: `TAP/MAC`; repeatable (eth0, eth1, …).
    #[arg(long = "tap-device", value_name = "TAP/MAC")]
    tap_device: Vec<String>,
    /// A vsock device: `CID:UDS` (guest context id, host socket path).
    #[arg(long = "vsock-device", value_name = "CID:UDS")]
    vsock_device: Option<String>,
    /// Initial MMDS metadata: a JSON file, put once the VM runs.
    #[arg(long, value_name = "FILE")]
    metadata: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The Firecracker binary to run (default: found in the data dir, then PATH).
    #[arg(long)]
    firecracker_binary: Option<PathBuf>,
    /// Also show Firecracker's own log on stderr, at this level (Error, Warning, Info, Debug,
    /// Trace).
    #[arg(long, value_parser = level_parser())]
    pub log_level: Option<LogLevel>,
    /// Make the VM's API socket reachable at this path too (a symlink, removed at the end).
    #[arg(long)]
    pub socket_path: Option<PathBuf>,
}

/// The machine a VM is given by flags (`run`, `pool create`): kernel, command line, vCPUs,
/// memory.
#[derive(Debug, Clone, clap::Args)]
pub struct MachineArgs {
    /// Kernel image (default: the built-in probe guest).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub boot_args: Option<String>,
    /// vCPUs.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    pub mem: Option<u64>,
}

impl MachineArgs {
    /// Puts the command line, vCPUs and memory given over `cfg`'s (the kernel is the
    /// caller's: where its path is relative to differs).
    pub fn apply(&self, cfg: &mut VmConfig) {
        if let Some(b) = &self.boot_args {
            cfg.boot_source.boot_args = Some(b.clone());
        }
        if let Some(v) = self.vcpus {
            cfg.machine_config.vcpu_count = v;
        }
        if let Some(m) = self.mem {
            cfg.machine_config.mem_size_mib = m;
        }
    }
}

/// Firecracker's log levels, by name.
fn level_parser() -> impl clap::builder::TypedValueParser<Value = LogLevel> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["Error", "Warning", "Info", "Debug", "Trace"]).map(|name| {
        match name.as_str() {
            "Error" => LogLevel::Error,
            "Warning" => LogLevel::Warning,
            "Info" => LogLevel::Info,
            "Debug" => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    })
}

/// Copies Firecracker's log lines (`console`, its stderr) to our stderr until it ends.
pub fn mirror_log(console: smartvm::process::Console) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut lines = std::pin::pin!(console.stream(true));
        while let Some(line) = lines.next().await {
            eprintln!("{line}");
        }
    })
}

fn usage(message: String) -> CliError {
    CliError::new(Exit::Usage, message)
}

impl FirectlArgs {
    /// Applies the flags to `cfg`, relative paths resolved against `cwd`.
    pub fn apply(&self, cfg: &mut VmConfig, cwd: &Path) -> Result<(), CliError> {
        for (i, spec) in self.add_drive.iter().enumerate() {
            let (path, ro) = match spec.strip_suffix(":ro") {
                Some(p) => (p, true),
                None => (spec.as_str(), false),
            };
            let mut drive = DriveConfig::new(format!("drive{i}"), cwd.join(path));
            drive.is_read_only = ro;
            cfg.drives.push(drive);
        }
        if self.root_ro {
            let root = cfg.drives.iter_mut().find(|d| d.is_root_device);
            root.ok_or_else(|| usage("--root-ro needs a root drive (--rootfs or a config with one)".into()))?
                .is_read_only = true;
        }
        for (i, spec) in self.tap_device.iter().enumerate() {
            let (tap, mac) =
                spec.split_once('/').ok_or_else(|| usage(format!("--tap-device {spec:?}: expected TAP/MAC")))?;
            let iface = format!("eth{}", cfg.network_interfaces.len().max(i));
            cfg.network_interfaces.push(NetworkInterfaceConfig::new(iface, tap).with_mac(mac));
        }
        if let Some(spec) = &self.vsock_device {
            let (cid, uds) =
                spec.split_once(':').ok_or_else(|| usage(format!("--vsock-device {spec:?}: expected CID:UDS")))?;
            let cid = cid.parse().map_err(|_| usage(format!("--vsock-device {spec:?}: {cid:?} is not a number")))?;
            cfg.vsock = Some(VsockConfig::new(cid, cwd.join(uds)));
        }
        if let Some(initrd) = &self.initrd {
            cfg.boot_source.initrd_path = Some(cwd.join(initrd));
        }
        Ok(())
    }

    /// The metadata document, read and checked before anything starts.
    pub fn metadata(&self) -> Result<Option<serde_json::Value>, CliError> {
        let Some(path) = &self.metadata else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::new(Exit::InvalidConfig, format!("--metadata {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CliError::new(Exit::InvalidConfig, format!("--metadata {}: not JSON: {e}", path.display())))
    }

    /// True when any of these flags is given.
    pub fn is_set(&self) -> bool {
        let Self {
            add_drive,
            root_ro,
            tap_device,
            vsock_device,
            metadata,
            initrd,
            firecracker_binary,
            log_level,
            socket_path,
        } = self;
        !add_drive.is_empty()
            || *root_ro
            || !tap_device.is_empty()
            || vsock_device.is_some()
            || metadata.is_some()
            || initrd.is_some()
            || firecracker_binary.is_some()
            || log_level.is_some()
            || socket_path.is_some()
    }

    /// `--firecracker-binary`, absolute.
    pub fn binary(&self, cwd: &Path) -> Option<PathBuf> {
        self.firecracker_binary.as_ref().map(|b| cwd.join(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: FirectlArgs,
    }

    #[test]
    fn flags_become_config() {
        let cli = Cli::parse_from([
            "x",
            "--add-drive",
            "a.img",
            "--add-drive",
            "/b.img:ro",
            "--root-ro",
            "--tap-device",
            "tap0/02:00:00:00:00:01",
            "--vsock-device",
            "3:v.sock",
            "--initrd",
            "i.img",
        ]);
        let mut cfg = VmConfig::new("/k").with_drive(DriveConfig::new("rootfs", "/r").root());
        cli.flags.apply(&mut cfg, Path::new("/cwd")).unwrap();
        assert_eq!(cfg.drives[1].path_on_host, Path::new("/cwd/a.img"));
        assert!(!cfg.drives[1].is_read_only && cfg.drives[2].is_read_only);
        assert_eq!(cfg.drives[2].path_on_host, Path::new("/b.img"));
        assert!(cfg.drives[0].is_read_only, "--root-ro");
        assert_eq!(cfg.network_interfaces[0].host_dev_name.as_deref(), Some("tap0"));
        assert_eq!(cfg.network_interfaces[0].guest_mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(cfg.vsock.as_ref().unwrap().uds_path, Path::new("/cwd/v.sock"));
        assert_eq!(cfg.boot_source.initrd_path.as_deref(), Some(Path::new("/cwd/i.img")));
        for bad in [["x", "--tap-device", "tap0"], ["x", "--vsock-device", "x:y"]] {
            let cli = Cli::parse_from(bad);
            assert_eq!(cli.flags.apply(&mut VmConfig::new("/k"), Path::new("/")).unwrap_err().exit, Exit::Usage);
        }
    }
}
