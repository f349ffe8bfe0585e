//! Boot-level checks: every capability proven from inside the guest through the probe report.

mod common;

use std::time::Duration;

use common::{env, report};
use smartvm::config::{BalloonConfig, DriveConfig, EntropyConfig, VsockConfig};
use smartvm::probe::ProbeArgs;

#[tokio::test]
async fn devices_seen_match_devices_configured_and_staging_semantics_hold() {
    let Some(env) = env() else { return };
    let eph = env.disk("ephemeral.img", 8, "eph-source");
    let persistent = env.disk("persistent.img", 16, "persistent");
    let ro = env.disk("readonly.img", 24, "readonly");
    let args = ProbeArgs::new()
        .read(0, 0)
        .write(0, 1, "guest-wrote-eph")
        .write(1, 1, "guest-wrote-persistent")
        .write(2, 1, "guest-wrote-ro")
        .read(2, 0)
        .to_boot_args();
    let boot_args = format!("console=ttyS0 quoted=\"a b\" {args}");
    let mut cfg = env
        .probe_config("devices", "")
        .with_boot_args(boot_args.clone())
        .with_drive(DriveConfig::new("eph", &eph))
        .with_drive(DriveConfig::new("persist", &persistent).ephemeral(false))
        .with_drive(DriveConfig::new("ro", &ro).read_only())
        .with_vsock(VsockConfig::new(42, env.dir.path().join("v.sock")))
        .with_balloon(BalloonConfig::new(0, false));
    cfg.entropy = Some(EntropyConfig::default());
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let r = report(&vm).await;

    let cmdline = r.cmdline.as_deref().unwrap();
    assert!(cmdline.starts_with(&boot_args), "boot args arrive intact: {cmdline}");
    let kinds: Vec<&str> = r.devices.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["balloon", "block", "block", "block", "vsock", "entropy"]);
    let blocks = r.devices_of("block");
    let caps: Vec<_> = blocks.iter().map(|d| (d.capacity, d.read_only)).collect();
    assert_eq!(caps, [(Some(8), Some(false)), (Some(16), Some(false)), (Some(24), Some(true))]);
    assert_eq!(r.devices_of("vsock")[0].cid, Some(42));

    assert_eq!(r.reads[0].data.as_deref(), Some("eph-source"));
    let statuses: Vec<&str> = r.writes.iter().map(|w| w.status.as_str()).collect();
    assert_eq!(statuses, ["ok", "ok", "ioerr"], "read-only drive refuses writes");
    assert_eq!(r.reads[1].data.as_deref(), Some("readonly"));

    vm.wait_for_exit(Duration::from_secs(5)).await.expect("probe resets");
    let staged = vm.runtime_dir().join("drives/eph-ephemeral.img");
    let staged_bytes = std::fs::read(&staged).unwrap();
    assert_eq!(&staged_bytes[512..527], b"guest-wrote-eph", "the write lands in the staged copy");
    let source = std::fs::read(&eph).unwrap();
    assert!(source[512..1024].iter().all(|&b| b == 0), "the source stays untouched");
    assert_eq!(&source[..10], b"eph-source");
    assert_eq!(
        &std::fs::read(&persistent).unwrap()[512..534],
        b"guest-wrote-persistent",
        "non-ephemeral written in place"
    );
    assert!(std::fs::read(&ro).unwrap()[512..1024].iter().all(|&b| b == 0));

    env.smartvm.cleanup().await.unwrap();
    assert!(!staged.exists() && !vm.runtime_dir().exists(), "staged copies removed");
    assert!(!env.dir.path().join("v.sock").exists(), "vsock socket removed");
    assert!(eph.exists() && persistent.exists() && ro.exists());
}

#[tokio::test]
async fn update_drive_is_seen_by_the_guest() {
    let Some(env) = env() else { return };
    let first = env.disk("first.img", 8, "first-file");
    let second = env.disk("second.img", 8, "second-file");
    let cfg = env
        .probe_config("hotswap", &ProbeArgs::new().watch(0, 0, 5).to_boot_args())
        .with_drive(DriveConfig::new("data", &first).read_only());
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let console = vm.console();
    let seen = |text: &'static str| move |l: &str| l.ends_with(&format!("status=ok data={text}"));
    assert!(console.wait_for_line(Duration::from_secs(5), seen("first-file")).await.is_some());
    vm.update_drive("data", &second).await.unwrap();
    assert!(
        console.wait_for_line(Duration::from_secs(5), seen("second-file")).await.is_some(),
        "guest reads the new backing file: {:?}",
        console.lines()
    );
    assert_eq!(vm.update_drive("nope", &second).await.unwrap_err().code(), "INVALID_CONFIG");
    assert_eq!(vm.update_drive("data", &env.dir.path().join("missing")).await.unwrap_err().code(), "INVALID_CONFIG");
    env.smartvm.cleanup().await.unwrap();
}

#[tokio::test]
async fn mmds_balloon_and_metrics_through_the_api() {
    let Some(env) = env() else { return };
    let mut balloon = BalloonConfig::new(0, true);
    balloon.stats_polling_interval_s = Some(1);
    let mut cfg = env.probe_config("apis", "probe.count=200").with_balloon(balloon);
    cfg.metrics = Some(smartvm::config::MetricsConfig { metrics_path: env.dir.path().join("metrics.json") });
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();

    let doc = serde_json::json!({"latest": {"meta-data": {"instance-id": "i-123"}}});
    vm.set_metadata(&doc).await.unwrap();
    vm.patch_metadata(&serde_json::json!({"latest": {"user-data": "hello"}})).await.unwrap();
    let back = vm.metadata().await.unwrap();
    assert_eq!(back["latest"]["meta-data"]["instance-id"], "i-123");
    assert_eq!(back["latest"]["user-data"], "hello");

    let stats = vm.balloon_statistics().await.unwrap();
    assert_eq!(stats.target_mib, 0);
    // The probe has no balloon driver: Firecracker refuses inflation and says why.
    let err = vm.update_balloon(4).await.unwrap_err();
    assert_eq!((err.code().as_str(), err.status()), ("API_ERROR", Some(400)));
    assert!(err.fault_message().is_some_and(|m| !m.is_empty()));

    vm.flush_metrics().await.unwrap();
    let metrics = std::fs::read_to_string(env.dir.path().join("metrics.json")).unwrap();
    assert!(metrics.contains("\"api_server\""), "metrics flushed: {metrics:.200}");
    env.smartvm.cleanup().await.unwrap();
}

#[tokio::test]
async fn drives_on_another_filesystem_are_staged_too() {
    let Some(env) = env() else { return };
    // The usual layout: images on disk, runtime dir on tmpfs.
    let disk_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let img = disk_dir.path().join("on-disk.img");
    let mut data = vec![0u8; 8 << 20];
    data[..7].copy_from_slice(b"on-disk");
    std::fs::write(&img, data).unwrap();
    let cfg = env
        .probe_config("crossfs", &ProbeArgs::new().read(0, 0).write(0, 1, "staged").to_boot_args())
        .with_drive(DriveConfig::new("d", &img));
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let r = report(&vm).await;
    assert_eq!(r.reads[0].data.as_deref(), Some("on-disk"));
    assert_eq!(r.writes[0].status, "ok");
    vm.wait_for_exit(Duration::from_secs(5)).await.expect("probe resets");
    assert_eq!(&std::fs::read(vm.runtime_dir().join("drives/d-on-disk.img")).unwrap()[512..518], b"staged");
    assert!(std::fs::read(&img).unwrap()[512..1024].iter().all(|&b| b == 0));
    env.smartvm.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_probe_prints_lines_and_reports_an_exit_code_before_it_ends() {
    let Some(env) = common::env() else { return };
    let args = ProbeArgs::new().lines(3).exit(7).to_boot_args();
    let vm = env.smartvm.create_vm(&env.probe_config("exit7", &args)).unwrap();
    vm.start().await.unwrap();
    assert!(vm.wait_for_exit(Duration::from_secs(10)).await.is_some(), "the probe ends the VM after its exit line");
    let report = smartvm::probe::ProbeReport::parse(vm.console().lines().iter().map(String::as_str));
    assert_eq!(report.lines, [0, 1, 2]);
    assert_eq!(report.exit_code, Some(7));
    assert!(!report.done, "nothing runs after probe.exit");
    vm.cleanup().await.unwrap();
}
