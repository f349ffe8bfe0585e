use super::*;
use serde_json::json;

fn existing_file(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"x").unwrap();
    p
}

#[test]
fn validate_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let img = existing_file(dir.path(), "a.img");
    let cfg = VmConfig {
        id: Some("bad id".into()),
        machine_config: MachineConfig::new(0, 0),
        drives: vec![
            DriveConfig::new("root", &img).root(),
            DriveConfig::new("root", &img).root(),
            DriveConfig::new("bad-id", "relative.img"),
        ],
        network_interfaces: vec![
            NetworkInterfaceConfig::new("eth0", "tap0").with_mac("02:00:00:00:00:01"),
            NetworkInterfaceConfig::new("eth1", "tap1").with_mac("02:00:00:00:00:01"),
            NetworkInterfaceConfig::new("eth2", "tap2").with_mac("zz"),
        ],
        vsock: Some(VsockConfig::new(1, dir.path().join("v.sock"))),
        mmds_config: Some(MmdsConfig {
            network_interfaces: vec!["eth9".into()],
            version: None,
            ipv4_address: None,
            imds_compat: None,
        }),
        ..VmConfig::new(dir.path().join("missing-kernel"))
    };
    let err = cfg.validate().unwrap_err();
    for field in [
        "id",
        "bootSource.kernelImagePath",
        "machineConfig.vcpuCount",
        "machineConfig.memSizeMib",
        "drives[1].driveId",
        "drives[1].isRootDevice",
        "drives[2].driveId",
        "drives[2].pathOnHost",
        "networkInterfaces[1].guestMac",
        "networkInterfaces[2].guestMac",
        "vsock.guestCid",
        "mmdsConfig.networkInterfaces[0]",
    ] {
        assert!(err.has_field(field), "missing problem for {field}: {err}");
    }
    assert_eq!(crate::SmartVmError::from(err).code(), "INVALID_CONFIG");
}

#[test]
fn valid_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = existing_file(dir.path(), "vmlinux");
    let img = existing_file(dir.path(), "root.ext4");
    let cfg = VmConfig::new(&kernel)
        .with_id("vm_1.a-b")
        .with_machine(2, 256)
        .with_drive(DriveConfig::new("rootfs", &img).root())
        .with_network_interface(NetworkInterfaceConfig::new("eth0", "tap0"))
        .with_vsock(VsockConfig::new(3, dir.path().join("v.sock")));
    cfg.validate().unwrap();
}

#[test]
fn reads_camel_case_and_snake_case() {
    let cfg = VmConfig::from_json(
        &json!({
            "id": "a",
            "bootSource": {"kernelImagePath": "/k", "bootArgs": "console=ttyS0"},
            "machineConfig": {"vcpuCount": 2, "memSizeMib": 64},
            "drives": [{"driveId": "rootfs", "pathOnHost": "/r", "isRootDevice": true, "isReadOnly": false, "ephemeral": false}],
            "networkInterfaces": [{"ifaceId": "eth0", "hostDevName": "tap0", "guestMac": "02:00:00:00:00:02"}],
            "mmds": {"networkInterfaces": ["eth0"], "version": "V2"}
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(cfg.machine_config.vcpu_count, 2);
    assert_eq!(cfg.drives[0].ephemeral, Some(false));
    assert_eq!(cfg.mmds_config.as_ref().unwrap().version, Some(MmdsVersion::V2));
    let snake = VmConfig::from_json(
        r#"{"boot_source": {"kernel_image_path": "/k"}, "machine_config": {"vcpu_count": 1, "mem_size_mib": 8}}"#,
    )
    .unwrap();
    assert_eq!(snake.machine_config.mem_size_mib, 8);
}

#[test]
fn reads_firecracker_config_files() {
    let cfg = VmConfig::from_json(
        &json!({
            "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true, "is_read_only": true}],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 32, "smt": false},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
            "balloon": {"amount_mib": 0, "deflate_on_oom": false},
            "mmds-config": {"network_interfaces": ["eth0"]}
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(cfg.boot_source.boot_args.as_deref(), Some("console=ttyS0"));
    assert!(cfg.drives[0].is_read_only);
    assert_eq!(cfg.machine_config.smt, Some(false));
    assert_eq!(cfg.network_interfaces[0].host_dev_name.as_deref(), Some("tap0"));
    assert!(cfg.balloon.is_some() && cfg.mmds_config.is_some());
}

#[test]
fn parse_errors_name_the_field() {
    let e = VmConfig::from_json(
        r#"{"bootSource": {"kernelImagePath": "/k"}, "machineConfig": {"vcpuCount": "two", "memSizeMib": 1}}"#,
    )
    .unwrap_err();
    assert_eq!(e.problems[0].field, "machineConfig.vcpuCount");
    let e = VmConfig::from_json(
        r#"{"bootSource": {"kernelImagePath": "/k"}, "drives": [{"driveId": "a", "pathOnHost": "/a", "colour": 1}]}"#,
    )
    .unwrap_err();
    assert!(e.problems[0].field.starts_with("drives[0]"), "{e}");
    assert!(e.to_string().contains("colour"));
    assert_eq!(VmConfig::from_json("{not json").unwrap_err().problems[0].field, "<file>");
    assert!(VmConfig::from_file(Path::new("/nonexistent/cfg.json")).is_err());
}

#[test]
fn drives_must_be_files_or_block_devices_and_sizes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = existing_file(dir.path(), "k");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cfg = VmConfig::new(&kernel)
        .with_drive(DriveConfig::new("fifo", &fifo))
        .with_drive(DriveConfig::new("null", "/dev/null"))
        .with_drive(DriveConfig::new("dir", dir.path()));
    let err = cfg.validate().unwrap_err();
    let text = err.to_string() + &format!("{err:?}");
    for (field, kind) in [(0, "a FIFO"), (1, "a character device"), (2, "a directory")] {
        assert!(err.has_field(&format!("drives[{field}].pathOnHost")), "{text}");
        assert!(text.contains(kind), "{kind}: {text}");
    }
    let img = existing_file(dir.path(), "d.img");
    let many =
        (0..=MAX_DRIVES).fold(VmConfig::new(&kernel), |c, i| c.with_drive(DriveConfig::new(format!("d{i}"), &img)));
    assert!(many.validate().unwrap_err().has_field("drives"));
    let huge = VmConfig::new(&kernel).with_machine(1, u64::MAX);
    assert!(huge.validate().unwrap_err().has_field("machineConfig.memSizeMib"));
    let tib = VmConfig::new(&kernel).with_machine(1, 1 << 20);
    assert!(tib.validate().unwrap_err().has_field("machineConfig.memSizeMib"), "1 TiB is more than this host");
}

#[test]
fn config_files_are_read_with_a_cap() {
    let e = VmConfig::from_file(Path::new("/dev/zero")).unwrap_err();
    assert!(format!("{e:?}").contains("not a regular file"), "{e:?}");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; (MAX_CONFIG_BYTES + 10) as usize]).unwrap();
    assert!(format!("{:?}", VmConfig::from_file(&big).unwrap_err()).contains("larger than"));
}

#[test]
fn serialised_it_is_firecrackers_file_form_and_reads_back_the_same() {
    let mut cfg = VmConfig::new("/k")
        .with_id("web")
        .with_machine(2, 64)
        .with_drive(DriveConfig::new("root", "/r.ext4").root().ephemeral(true))
        .with_network_interface(NetworkInterfaceConfig::managed("eth0"));
    cfg.drives[0].rate_limiter = Some(RateLimiter { bandwidth: Some(TokenBucket::new(1, 2)), ops: None });
    let value = serde_json::to_value(&cfg).unwrap();
    assert_eq!(value["machine-config"], json!({"vcpu_count": 2, "mem_size_mib": 64}));
    assert_eq!(value["boot-source"], json!({"kernel_image_path": "/k"}));
    assert_eq!(value["drives"][0]["rate_limiter"], json!({"bandwidth": {"size": 1, "refill_time": 2}}));
    assert_eq!((value["id"].as_str(), value["drives"][0]["ephemeral"].as_bool()), (Some("web"), Some(true)));
    assert_eq!(VmConfig::from_json(&value.to_string()).unwrap(), cfg, "smartvm's own fields survive");
    let camel = cfg.to_camel_case();
    assert_eq!(camel["machineConfig"], json!({"vcpuCount": 2, "memSizeMib": 64}));
    assert_eq!(camel["drives"][0]["rateLimiter"], json!({"bandwidth": {"size": 1, "refillTime": 2}}));
    assert_eq!(VmConfig::from_json(&camel.to_string()).unwrap(), cfg, "the camelCase form reads back the same");
    // A Firecracker file without drives (Firecracker requires the key; smartvm does not).
    let bare = VmConfig::from_json(r#"{"boot-source": {"kernel_image_path": "/k"}}"#).unwrap();
    assert!(bare.drives.is_empty());
}

#[test]
fn nul_bytes_and_odd_kernels_are_refused_by_field() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let kernel = existing_file(dir.path(), "k");
    let nul = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/a\0b"));
    let err = VmConfig::new(&kernel).with_drive(DriveConfig::new("d", nul)).validate().unwrap_err();
    assert!(err.problems.iter().any(|p| p.field == "drives[0].pathOnHost" && p.message.contains("NUL")), "{err}");
    for odd in ["/dev/zero", "/", "/proc/self/mem"] {
        let err = VmConfig::new(odd).validate().unwrap_err();
        assert!(err.has_field("bootSource.kernelImagePath"), "{odd}: {err}");
    }
    for id in ["smartvm.sock", ".network", "-x"] {
        assert!(VmConfig::new(&kernel).with_id(id).validate().unwrap_err().has_field("id"), "{id}");
    }
    let big = existing_file(dir.path(), "big");
    std::fs::write(&big, vec![0u8; 3 << 20]).unwrap();
    let err = VmConfig::new(&big).with_machine(1, 3).validate().unwrap_err();
    assert!(err.has_field("machineConfig.memSizeMib"), "a 3 MiB kernel does not fit 3 MiB: {err}");
    VmConfig::new(&big).with_machine(1, 5).validate().unwrap();
}
