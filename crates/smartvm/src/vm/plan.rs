//! The pre-boot request sequence, planned as data before anything is sent.

use crate::api::{
    ApiClient, PutBalloon, PutBootSource, PutDrive, PutEntropy, PutLogger, PutMachineConfig, PutMetrics, PutMmdsConfig,
    PutNetworkInterface, PutVsock,
};
use crate::config::{ConfigErrors, VmConfig};
use crate::error::Result;
use crate::version::FirecrackerVersion;

pub use crate::host::ResolvedResources;

/// One pre-boot request.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum PreBootCall {
    Logger(PutLogger),
    Metrics(PutMetrics),
    MachineConfig(PutMachineConfig),
    BootSource(PutBootSource),
    Drive(PutDrive),
    NetworkInterface(PutNetworkInterface),
    Vsock(PutVsock),
    Balloon(PutBalloon),
    Entropy(PutEntropy),
    MmdsConfig(PutMmdsConfig),
}

impl PreBootCall {
    /// The request path (for logs and tests).
    pub fn path(&self) -> String {
        use crate::api::Endpoint;
        match self {
            PreBootCall::Logger(e) => e.path(),
            PreBootCall::Metrics(e) => e.path(),
            PreBootCall::MachineConfig(e) => e.path(),
            PreBootCall::BootSource(e) => e.path(),
            PreBootCall::Drive(e) => e.path(),
            PreBootCall::NetworkInterface(e) => e.path(),
            PreBootCall::Vsock(e) => e.path(),
            PreBootCall::Balloon(e) => e.path(),
            PreBootCall::Entropy(e) => e.path(),
            PreBootCall::MmdsConfig(e) => e.path(),
        }
    }

    /// Sends it.
    pub async fn send(&self, api: &ApiClient) -> Result<()> {
        match self {
            PreBootCall::Logger(e) => api.send(e).await,
            PreBootCall::Metrics(e) => api.send(e).await,
            PreBootCall::MachineConfig(e) => api.send(e).await,
            PreBootCall::BootSource(e) => api.send(e).await,
            PreBootCall::Drive(e) => api.send(e).await,
            PreBootCall::NetworkInterface(e) => api.send(e).await,
            PreBootCall::Vsock(e) => api.send(e).await,
            PreBootCall::Balloon(e) => api.send(e).await,
            PreBootCall::Entropy(e) => api.send(e).await,
            PreBootCall::MmdsConfig(e) => api.send(e).await,
        }
    }
}

/// The ordered pre-boot requests for `config` on `version`: logger and metrics first (so that
/// later failures are logged), machine config, boot source, drives, network interfaces, vsock,
/// balloon, entropy, and MMDS config last (it names interfaces that must already exist).
pub fn boot_plan(
    config: &VmConfig,
    resolved: &ResolvedResources,
    version: FirecrackerVersion,
) -> Result<Vec<PreBootCall>, ConfigErrors> {
    let mut calls = Vec::new();
    calls.extend(resolved.logger(config).map(PreBootCall::Logger));
    calls.extend(resolved.metrics(config).map(PreBootCall::Metrics));
    calls.push(PreBootCall::MachineConfig(PutMachineConfig(config.machine_config.payload())));
    let mut boot = config.boot_source.clone();
    if let Some(extra) = &resolved.extra_boot_args {
        boot.boot_args = Some(match &boot.boot_args {
            Some(args) => format!("{args} {extra}"),
            None => extra.clone(),
        });
    }
    if let Some(kernel) = &resolved.kernel_path {
        boot.kernel_image_path = kernel.clone();
    }
    if let Some(initrd) = &resolved.initrd_path {
        boot.initrd_path = Some(initrd.clone());
    }
    calls.push(PreBootCall::BootSource(PutBootSource(boot.payload())));
    for d in &config.drives {
        let path = resolved.drive_paths.get(&d.drive_id).unwrap_or(&d.path_on_host);
        calls.push(PreBootCall::Drive(PutDrive(d.payload(path))));
    }
    for (i, n) in config.network_interfaces.iter().enumerate() {
        let tap = resolved.tap_names.get(&n.iface_id).or(n.host_dev_name.as_ref()).ok_or_else(|| {
            ConfigErrors::single(
                format!("networkInterfaces[{i}].hostDevName"),
                "is required (no TAP was created for it)",
            )
        })?;
        let mut payload_config = n.clone();
        if let Some(mac) = resolved.guest_macs.get(&n.iface_id).filter(|_| n.guest_mac.is_none()) {
            payload_config.guest_mac = Some(crate::config::mac_text(*mac));
        }
        let payload = payload_config.payload(tap, version).map_err(|e| e.at(&format!("networkInterfaces[{i}]")))?;
        calls.push(PreBootCall::NetworkInterface(PutNetworkInterface(payload)));
    }
    if let Some(v) = &config.vsock {
        let path = resolved.vsock_path.clone().unwrap_or_else(|| v.uds_path.clone());
        calls.push(PreBootCall::Vsock(PutVsock(crate::config::VsockConfig { uds_path: path, ..v.clone() }.payload())));
    }
    if let Some(b) = &config.balloon {
        let payload = b.payload(version).map_err(|e| e.at("balloon"))?;
        calls.push(PreBootCall::Balloon(PutBalloon(payload)));
    }
    if let Some(e) = &config.entropy {
        calls.push(PreBootCall::Entropy(PutEntropy(e.payload())));
    }
    if let Some(m) = &config.mmds_config {
        let payload = m.payload(version).map_err(|e| e.at("mmdsConfig"))?;
        calls.push(PreBootCall::MmdsConfig(PutMmdsConfig(payload)));
    }
    Ok(calls)
}

/// The version-dependent checks, done before anything exists (at `create_vm`): the pre-boot plan
/// for `version` is built as if every managed TAP had been created.
pub fn check_for_version(config: &VmConfig, version: FirecrackerVersion) -> Result<(), ConfigErrors> {
    let mut resolved = ResolvedResources::default();
    for n in config.network_interfaces.iter().filter(|n| n.host_dev_name.is_none()) {
        resolved.tap_names.insert(n.iface_id.clone(), "sv0000000000".into());
    }
    boot_plan(config, &resolved, version).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        BalloonConfig, DriveConfig, EntropyConfig, LogLevel, LoggerConfig, MmdsConfig, NetworkInterfaceConfig,
        VsockConfig,
    };

    #[test]
    fn order_and_resolution() {
        let mut cfg = VmConfig::new("/k")
            .with_drive(DriveConfig::new("root", "/src/root.ext4").root())
            .with_drive(DriveConfig::new("data", "/src/data.ext4"))
            .with_network_interface(NetworkInterfaceConfig::managed("eth0"))
            .with_vsock(VsockConfig::new(3, "/tmp/v.sock"))
            .with_balloon(BalloonConfig::new(0, false));
        cfg.entropy = Some(EntropyConfig::default());
        cfg.logger = Some(LoggerConfig::new("/tmp/l", LogLevel::Info));
        cfg.mmds_config = Some(MmdsConfig {
            network_interfaces: vec!["eth0".into()],
            version: None,
            ipv4_address: None,
            imds_compat: None,
        });
        let mut resolved = ResolvedResources::default();
        resolved.drive_paths.insert("root".into(), "/run/vm/drives/root-root.ext4".into());
        let v = FirecrackerVersion::DEFAULT;
        let err = boot_plan(&cfg, &resolved, v).unwrap_err();
        assert!(err.has_field("networkInterfaces[0].hostDevName"));
        resolved.tap_names.insert("eth0".into(), "svtap0".into());
        resolved.guest_macs.insert("eth0".into(), macaddr::MacAddr6::new(2, 0, 0, 0, 0, 9));
        resolved.extra_boot_args = Some("ip=1.2.3.4::1.2.3.1:255.255.255.0::eth0:off".into());
        let plan = boot_plan(&cfg, &resolved, v).unwrap();
        let PreBootCall::BootSource(PutBootSource(boot)) = &plan[2] else { panic!("expected boot source") };
        assert_eq!(serde_json::to_value(boot).unwrap()["boot_args"], "ip=1.2.3.4::1.2.3.1:255.255.255.0::eth0:off");
        let PreBootCall::NetworkInterface(PutNetworkInterface(nic)) = &plan[5] else { panic!("expected nic") };
        let nic = serde_json::to_value(nic).unwrap();
        assert_eq!(
            (nic["host_dev_name"].as_str(), nic["guest_mac"].as_str()),
            (Some("svtap0"), Some("02:00:00:00:00:09"))
        );
        let paths: Vec<String> = plan.iter().map(PreBootCall::path).collect();
        assert_eq!(
            paths,
            [
                "/logger",
                "/machine-config",
                "/boot-source",
                "/drives/root",
                "/drives/data",
                "/network-interfaces/eth0",
                "/vsock",
                "/balloon",
                "/entropy",
                "/mmds/config"
            ]
        );
        let PreBootCall::Drive(PutDrive(root)) = &plan[3] else { panic!("expected drive") };
        assert_eq!(serde_json::to_value(root).unwrap()["path_on_host"], "/run/vm/drives/root-root.ext4");
        let mut mtu = cfg.clone();
        mtu.network_interfaces[0].mtu = Some(1400);
        let err = check_for_version(&mtu, FirecrackerVersion::new(1, 12, 1)).unwrap_err();
        assert!(err.has_field("networkInterfaces[0].mtu"), "{err}");
        check_for_version(&mtu, FirecrackerVersion::new(1, 16, 0)).unwrap();
        let PreBootCall::Drive(PutDrive(data)) = &plan[4] else { panic!("expected drive") };
        assert_eq!(serde_json::to_value(data).unwrap()["path_on_host"], "/src/data.ext4");
    }
}
