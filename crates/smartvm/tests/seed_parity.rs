#![cfg(feature = "images")]
//! The seed's quick start on a fresh host: `create_vm` + `start` get Firecracker themselves,
//! here from a local server with GitHub's release shapes serving the real v1.12.1 binaries.

mod common;
#[allow(dead_code)]
mod logs {
    include!("common/logs.rs");
}
mod fake;

use std::path::Path;
use std::time::Duration;

use fake::FakeServer;
use smartvm::{SmartVm, SmartVmOptions, VmConfig};

const TARBALL: &str = "/gh/firecracker-microvm/firecracker/releases/download/v1.12.1/firecracker-v1.12.1-x86_64.tgz";

/// An orchestrator on a fresh data dir (no binary in it), downloading from `server`.
fn fresh(dir: &Path, server: &FakeServer) -> SmartVm {
    SmartVm::new(SmartVmOptions {
        data_dir: dir.join("data"),
        runtime_dir: dir.join("run"),
        mirrors: server.mirrors(),
        stop_grace: Duration::from_millis(300),
        ..SmartVmOptions::from_lookup(|_| None)
    })
}

fn runtime_entries(sv: &SmartVm) -> Vec<String> {
    std::fs::read_dir(sv.runtime_dir()).map_or(vec![], |rd| {
        rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
    })
}

#[tokio::test]
async fn the_quick_start_downloads_firecracker_as_the_vm_starts() {
    let Some(env) = common::env() else { return };
    let real = |name: &str| std::fs::read(env.binary.with_file_name(name)).unwrap();
    let server = FakeServer::start().await;
    server.release("v1.12.1", &real("firecracker"), &real("jailer"), false);
    let sv = fresh(env.dir.path(), &server);
    assert_eq!(sv.find_binary().unwrap_err().code(), "BINARY_NOT_FOUND", "a fresh host (nothing on PATH either)");
    let config = |id: &str| VmConfig::new(&env.kernel).with_id(id).with_machine(1, 16).with_boot_args("console=ttyS0");

    let vm = sv.create_vm(&config("first")).expect("create_vm needs no binary yet");
    assert_eq!(server.hits(TARBALL), 0, "nothing downloaded before start");
    let (logs, guard) = logs::capture();
    vm.start().await.unwrap();
    drop(guard);
    assert!(logs.text().contains("download started") && logs.text().contains("download ended"), "{}", logs.text());
    let booted = vm.console().wait_for_line(Duration::from_secs(10), |l| l.starts_with("smartvm-probe")).await;
    assert!(booted.is_some(), "the probe booted on the downloaded Firecracker");
    let installed = env.dir.path().join("data/bin/v1.12.1/firecracker");
    assert_eq!(sv.find_binary().unwrap(), installed);
    assert_eq!(std::fs::read(&installed).unwrap(), real("firecracker"));

    // A second VM uses the installed binary: one download in all.
    let second = sv.create_vm(&config("second")).unwrap();
    second.start().await.unwrap();
    assert_eq!(server.hits(TARBALL), 1);
    sv.cleanup().await.unwrap();
    assert!(runtime_entries(&sv).is_empty(), "{:?}", runtime_entries(&sv));
}

#[tokio::test]
async fn a_failed_auto_download_fails_the_start_with_its_code_and_leaves_nothing() {
    let Some(env) = common::env() else { return };
    let server = FakeServer::start().await; // serves no release: 404
    let sv = fresh(env.dir.path(), &server);
    let vm = sv.create_vm(&VmConfig::new(&env.kernel).with_id("nofc").with_machine(1, 16)).unwrap();
    let err = vm.start().await.unwrap_err();
    assert_eq!(err.code(), "DOWNLOAD_FAILED", "{err:?}");
    assert_eq!(err.step(), Some(smartvm::vm::Step::CheckHost));
    assert_eq!(vm.state(), smartvm::VmState::Error);
    assert!(runtime_entries(&sv).is_empty() && !env.dir.path().join("data/bin/v1.12.1").exists());

    // Turned off (or with an explicit binary path): the seed's BINARY_NOT_FOUND at create_vm.
    let off = SmartVm::new(SmartVmOptions {
        data_dir: env.dir.path().join("data"),
        runtime_dir: env.dir.path().join("run"),
        auto_download_binary: false,
        ..SmartVmOptions::from_lookup(|_| None)
    });
    let err = off.create_vm(&VmConfig::new(&env.kernel).with_machine(1, 16)).unwrap_err();
    assert_eq!(err.code(), "BINARY_NOT_FOUND");
    let explicit = SmartVm::new(SmartVmOptions {
        firecracker_binary_path: Some(env.dir.path().join("no-such-firecracker")),
        ..SmartVmOptions::from_lookup(|_| None)
    });
    assert_eq!(explicit.create_vm(&VmConfig::new(&env.kernel)).unwrap_err().code(), "BINARY_NOT_FOUND");
    assert_eq!(server.hits(&format!("{TARBALL}.sha256.txt")), 1, "only the first orchestrator tried");
}

/// The seed's path helpers and cache accessor.
#[test]
fn the_seeds_helpers_exist_and_sanitize() {
    use smartvm::images::{BaseImageManager, ImageManager, Mirrors};
    let images = ImageManager::new("/var/lib/sv", "x86_64", Mirrors::default());
    assert_eq!(images.sockets_dir(), Path::new("/var/lib/sv/sockets"));
    assert_eq!(images.socket_path("api-worker-1"), Path::new("/var/lib/sv/sockets/api-worker-1.sock"));
    assert_eq!(images.socket_path("../etc/x"), Path::new("/var/lib/sv/sockets/.._etc_x.sock"), "no separator survives");
    let base = BaseImageManager::new(images, "/var/lib/sv/base-images", 4).unwrap();
    assert_eq!(base.max_stored_base_images(), 4);
    let dir = tempfile::tempdir().unwrap();
    let images = ImageManager::new(dir.path().join("data"), "x86_64", Mirrors::default());
    images.ensure_directories().unwrap();
    assert!(images.sockets_dir().is_dir());
}

/// The example hosted manifest the repository ships is valid against the schema.
#[test]
fn the_example_hosted_manifest_is_valid() {
    use smartvm::images::{ArtifactLocation, HostedManifest};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/base-images/smartvm-minimal.manifest.example.json");
    let manifest = HostedManifest::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(manifest.bundle_id, "smartvm-minimal-v1-x86_64");
    let (kernel, rootfs) = manifest.validate("x86_64", None).unwrap();
    assert!(matches!(kernel.location, ArtifactLocation::Url(ref u) if u.ends_with("/vmlinux")));
    assert_eq!((rootfs.file_name.as_str(), rootfs.size), ("rootfs.squashfs", Some(12345678)));
    assert_eq!(manifest.validate("aarch64", None).unwrap_err().code(), "INVALID_BASE_IMAGE_MANIFEST");
}

/// A TAP's JSON form has the seed's field names; smartvm's earlier names still parse.
#[cfg(feature = "network")]
#[test]
fn tap_devices_serialize_with_the_seeds_names() {
    use smartvm::network::TapDevice;
    let seed = serde_json::json!({
        "tapName": "svvmideth0", "guestIp": "172.30.0.2", "gatewayIp": "172.30.0.1",
        "subnetMask": "255.255.255.0", "mac": "02:a3:b1:c4:d2:e5", "vmId": "vmid", "ifaceId": "eth0"
    });
    let tap: TapDevice = serde_json::from_value(seed.clone()).unwrap();
    assert_eq!((tap.name.as_str(), tap.gateway.to_string()), ("svvmideth0", "172.30.0.1".to_string()));
    assert_eq!(tap.guest_boot_args(), "ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off");
    assert_eq!(serde_json::to_value(&tap).unwrap(), seed, "written with the seed's names");
    let older = serde_json::json!({
        "name": "svvmideth0", "guestIp": "172.30.0.2", "gateway": "172.30.0.1",
        "netmask": "255.255.255.0", "mac": "02:a3:b1:c4:d2:e5", "vmId": "vmid", "ifaceId": "eth0"
    });
    assert_eq!(serde_json::from_value::<TapDevice>(older).unwrap(), tap);
}

/// `forget_vm` is the seed's `removeVM`: unregistered, untouched; `remove_vm` also tears down.
#[tokio::test]
async fn forget_vm_unregisters_without_tearing_down() {
    let Some(env) = common::env() else { return };
    let vm = env.smartvm.create_vm(&env.probe_config("kept", "probe.count=100")).unwrap();
    vm.start().await.unwrap();
    let forgotten = env.smartvm.forget_vm("kept").expect("registered");
    assert_eq!(env.smartvm.vm_count(), 0);
    assert!(env.smartvm.forget_vm("kept").is_none());
    env.smartvm.cleanup().await.unwrap();
    assert_eq!(forgotten.state(), smartvm::VmState::Running, "the orchestrator's cleanup no longer reaches it");
    assert!(forgotten.runtime_dir().exists());
    forgotten.cleanup().await.unwrap();
    assert!(!forgotten.runtime_dir().exists());
}
