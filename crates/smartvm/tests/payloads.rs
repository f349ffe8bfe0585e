//! Every pre-boot payload kind the library generates is accepted (204) by a real Firecracker,
//! and the booted probe sees the resulting devices. Firecracker runs inside a network namespace
//! that this test creates (for its TAP) and deletes.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::env;
use smartvm::api::Endpoint;
use smartvm::api::{ActionType, ApiClient, GetVersion, GetVmConfig, PutAction, PutMmds};
use smartvm::config::*;
use smartvm::probe::ProbeReport;
use smartvm::vm::{boot_plan, ResolvedResources};
use smartvm::FirecrackerVersion;
use tokio::io::AsyncReadExt;

struct Netns(String);

impl Netns {
    fn create(name: String) -> Self {
        let ok = std::process::Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        let ns = Netns(name);
        let ok = std::process::Command::new("ip")
            .args(["-n", &ns.0, "tuntap", "add", "dev", "svtap0", "mode", "tap"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "create TAP in {}", ns.0);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Firecracker in `ns` with its API on `socket` (plus `extra` arguments), once it answers.
async fn spawn_in(
    ns: &Netns,
    binary: &std::path::Path,
    socket: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> (tokio::process::Child, ApiClient) {
    let child = tokio::process::Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(binary)
        .arg("--api-sock")
        .arg(socket)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = ApiClient::new(socket);
    api.wait_ready(Duration::from_secs(5)).await.unwrap();
    (child, api)
}

#[tokio::test]
async fn every_payload_kind_is_accepted_by_firecracker() {
    let Some(env) = env() else { return };
    let ns = Netns::create(format!("svt-payload-{}", std::process::id()));
    let dir = env.dir.path();
    let root = env.disk("root.img", 8, "root");
    let data = env.disk("data.img", 16, "data");
    let initrd = env.disk("initrd.img", 2, "initrd");
    let bucket = |size| Some(TokenBucket { size, refill_time: 100, one_time_burst: Some(size) });

    let mut cfg = env.probe_config("payloads", "").with_machine(1, 32);
    cfg.boot_source.initrd_path = Some(initrd);
    cfg.machine_config.smt = Some(false);
    cfg.machine_config.track_dirty_pages = Some(true);
    cfg.machine_config.huge_pages = Some(HugePages::None);
    cfg.machine_config.cpu_template = Some(CpuTemplate::None);
    let mut root_drive = DriveConfig::new("rootfs", &root).root();
    root_drive.partuuid = Some("0eaa91a0-01".into());
    root_drive.cache_type = Some(CacheType::Writeback);
    root_drive.io_engine = Some(IoEngine::Sync);
    root_drive.rate_limiter = Some(RateLimiter { bandwidth: bucket(1 << 20), ops: bucket(1000) });
    let mut data_drive = DriveConfig::new("data", &data).read_only();
    data_drive.cache_type = Some(CacheType::Unsafe);
    cfg.drives = vec![root_drive, data_drive];
    let mut nic = NetworkInterfaceConfig::new("eth0", "svtap0").with_mac("02:fc:00:00:00:07");
    nic.rx_rate_limiter = Some(RateLimiter { bandwidth: bucket(1 << 20), ops: None });
    nic.tx_rate_limiter = Some(RateLimiter { bandwidth: None, ops: bucket(500) });
    cfg.network_interfaces = vec![nic];
    cfg.vsock = Some(VsockConfig::new(9, dir.join("payload-v.sock")));
    cfg.balloon = Some(BalloonConfig { stats_polling_interval_s: Some(1), ..BalloonConfig::new(1, true) });
    cfg.entropy = Some(EntropyConfig { rate_limiter: Some(RateLimiter { bandwidth: bucket(4096), ops: None }) });
    cfg.mmds_config = Some(MmdsConfig {
        network_interfaces: vec!["eth0".into()],
        version: Some(MmdsVersion::V2),
        ipv4_address: Some("169.254.170.2".parse().unwrap()),
        imds_compat: None,
    });
    cfg.logger = Some(LoggerConfig {
        show_level: Some(true),
        show_log_origin: Some(false),
        ..LoggerConfig::new(dir.join("fc.log"), LogLevel::Info)
    });
    cfg.metrics = Some(MetricsConfig { metrics_path: dir.join("fc.metrics") });
    cfg.validate().unwrap();
    std::fs::File::create(dir.join("fc.log")).unwrap();
    std::fs::File::create(dir.join("fc.metrics")).unwrap();

    let (mut child, api) = spawn_in(&ns, &env.binary, &dir.join("payloads.sock"), &[]).await;
    let version: FirecrackerVersion = api.send(&GetVersion).await.unwrap().firecracker_version.parse().unwrap();

    let plan = boot_plan(&cfg, &ResolvedResources::default(), version).unwrap();
    let requests = plan.requests().unwrap();
    assert_eq!(requests.len(), 11, "logger, metrics, machine, boot, 2 drives, nic, vsock, balloon, entropy, mmds");
    for request in &requests {
        if let Err(e) = api.send(request).await {
            panic!("{} rejected: {e} ({:?})", request.path(), e.fault_message());
        }
    }
    api.send(&PutMmds(serde_json::json!({"k": "v"}))).await.unwrap();
    let raw = api.put("/actions", &serde_json::json!({"action_type": "InstanceStart"})).await.unwrap();
    assert_eq!(raw.status_code, 204, "{}", raw.body);
    assert!(api.send(&PutAction::new(ActionType::InstanceStart)).await.is_err(), "second start is refused");
    let via_api = api.send(&GetVmConfig).await.unwrap();

    let out = probe_output(&mut child).await;
    let r = ProbeReport::parse(out.lines());
    assert!(r.done, "{out}");
    let kinds: Vec<&str> = r.devices.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["balloon", "block", "block", "net", "vsock", "entropy"]);
    assert_eq!(r.devices_of("net")[0].mac.as_deref(), Some("02:fc:00:00:00:07"));
    assert_eq!(r.devices_of("block")[1].read_only, Some(true));
    assert!(r.cmdline.unwrap().contains("root=PARTUUID=0eaa91a0-01"));

    // The same plan as one --config-file builds the same VM.
    let _ = std::fs::remove_file(dir.join("payload-v.sock"));
    let file = dir.join("vm-config.json");
    std::fs::write(&file, plan.config_file().unwrap()).unwrap();
    let config_file = [std::ffi::OsStr::new("--config-file"), file.as_os_str()];
    let (mut child, api) = spawn_in(&ns, &env.binary, &dir.join("payloads-file.sock"), &config_file).await;
    let via_file = api.send(&GetVmConfig).await.unwrap();
    assert_eq!(via_file, via_api, "the config file and the requests configure the same VM");
    let out = probe_output(&mut child).await;
    let r = ProbeReport::parse(out.lines());
    let file_kinds: Vec<&str> = r.devices.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(file_kinds, kinds);
}

/// Everything the probe in `child` printed, once it has finished (bounded), and its exit.
async fn probe_output(child: &mut tokio::process::Child) -> String {
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_to_string(&mut out))
        .await
        .expect("probe finishes")
        .unwrap();
    let _ = child.wait().await;
    out
}
