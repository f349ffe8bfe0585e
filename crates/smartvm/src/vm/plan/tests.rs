use super::*;
use crate::config::{
    BalloonConfig, DriveConfig, EntropyConfig, LogLevel, LoggerConfig, MmdsConfig, NetworkInterfaceConfig, VsockConfig,
};
use serde_json::{json, Value};

fn full_config() -> VmConfig {
    let mut cfg = VmConfig::new("/k")
        .with_id("web")
        .with_drive(DriveConfig::new("root", "/src/root.ext4").root())
        .with_drive(DriveConfig::new("data", "/src/data.ext4").ephemeral(false))
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
    cfg
}

fn resolved() -> ResolvedResources {
    let mut resolved = ResolvedResources::default();
    resolved.drive_paths.insert("root".into(), "/run/vm/drives/root-root.ext4".into());
    resolved.tap_names.insert("eth0".into(), "svtap0".into());
    resolved.guest_macs.insert("eth0".into(), macaddr::MacAddr6::new(2, 0, 0, 0, 0, 9));
    resolved.extra_boot_args = Some("ip=1.2.3.4::1.2.3.1:255.255.255.0::eth0:off".into());
    resolved
}

#[test]
fn requests_in_configuration_order_with_host_names_resolved() {
    let cfg = full_config();
    let v = FirecrackerVersion::DEFAULT;
    let err = boot_plan(&cfg, &ResolvedResources::default(), v).unwrap_err();
    assert!(err.has_field("networkInterfaces[0].hostDevName"));
    let requests = boot_plan(&cfg, &resolved(), v).unwrap().requests().unwrap();
    let paths: Vec<String> = requests.iter().map(crate::api::Endpoint::path).collect();
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
    let body = |i: usize| requests[i].body_json();
    assert_eq!(body(2)["boot_args"], "ip=1.2.3.4::1.2.3.1:255.255.255.0::eth0:off");
    assert_eq!(body(3)["path_on_host"], "/run/vm/drives/root-root.ext4");
    assert_eq!(
        body(4),
        json!({"drive_id": "data", "path_on_host": "/src/data.ext4", "is_root_device": false, "is_read_only": false}),
        "smartvm's ephemeral is consumed"
    );
    assert_eq!(body(5), json!({"iface_id": "eth0", "host_dev_name": "svtap0", "guest_mac": "02:00:00:00:00:09"}));
}

#[test]
fn the_config_file_is_the_same_resources_in_firecrackers_keys() {
    let plan = boot_plan(&full_config(), &resolved(), FirecrackerVersion::DEFAULT).unwrap();
    let doc: Value = serde_json::from_slice(&plan.config_file().unwrap()).unwrap();
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = [
        "logger",
        "machine-config",
        "boot-source",
        "drives",
        "network-interfaces",
        "vsock",
        "balloon",
        "entropy",
        "mmds-config",
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected, "no id, no empty sections");
    // Each section is the body of its request.
    for request in plan.requests().unwrap() {
        let path = crate::api::Endpoint::path(&request);
        let section = match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
            ["drives", id] => doc["drives"].as_array().unwrap().iter().find(|d| d["drive_id"] == id).cloned(),
            ["network-interfaces", id] => {
                doc["network-interfaces"].as_array().unwrap().iter().find(|n| n["iface_id"] == id).cloned()
            }
            ["mmds", "config"] => doc.get("mmds-config").cloned(),
            [name] => doc.get(name).cloned(),
            _ => None,
        };
        assert_eq!(section, Some(request.body_json()), "{path}");
    }
    let bare = boot_plan(&VmConfig::new("/k"), &ResolvedResources::default(), FirecrackerVersion::DEFAULT).unwrap();
    let bare: Value = serde_json::from_slice(&bare.config_file().unwrap()).unwrap();
    assert_eq!(bare["drives"], json!([]), "Firecracker requires the drives key");
}

#[test]
fn version_gates_name_the_field() {
    let mut mtu = full_config();
    mtu.network_interfaces[0].mtu = Some(1400);
    let err = check_for_version(&mtu, FirecrackerVersion::new(1, 12, 1)).unwrap_err();
    assert!(err.has_field("networkInterfaces[0].mtu"), "{err}");
    check_for_version(&mtu, FirecrackerVersion::new(1, 16, 0)).unwrap();
    let mut hinting = full_config();
    hinting.balloon.as_mut().unwrap().free_page_hinting = Some(true);
    let err = check_for_version(&hinting, FirecrackerVersion::new(1, 12, 1)).unwrap_err();
    assert!(err.has_field("balloon.freePageHinting"), "{err}");
}

#[test]
fn boot_args_stay_within_the_limit_with_smartvms_own() {
    let long = "x".repeat(crate::config::MAX_BOOT_ARGS - 10);
    let cfg = VmConfig::new("/k").with_boot_args(long);
    boot_plan(&cfg, &ResolvedResources::default(), FirecrackerVersion::DEFAULT).unwrap();
    let err = boot_plan(&cfg, &resolved(), FirecrackerVersion::DEFAULT).unwrap_err();
    assert!(err.has_field("bootSource.bootArgs"), "{err}");
}
