//! `smartvm snapshot` end to end: take from another process, restore, direct and jailed.

mod common;

use common::env;

#[test]
fn snapshot_take_from_another_process_and_restore() {
    snapshot_round_trip(false);
}

#[test]
fn snapshot_take_from_another_process_and_restore_jailed() {
    snapshot_round_trip(true);
}

/// `run` in one process, `snapshot take <id>` from another, `snapshot restore` in a third;
/// `jailed` runs all three with `SMARTVM_JAILED=1`.
fn snapshot_round_trip(jailed: bool) {
    let Some(mut env) = env() else { return };
    if jailed {
        env.extra_env.push(("SMARTVM_JAILED".into(), "1".into()));
    }
    let id = |name: &str| if jailed { format!("j{name}") } else { name.to_string() };
    let disk = env.dir.path().join("snapdisk.img");
    let mut data = vec![0u8; 4096];
    data[..6].copy_from_slice(b"origin");
    std::fs::write(&disk, data).unwrap();
    let cfg = env.dir.path().join("snapvm.json");
    let kernel = smartvm::probe::install_probe_kernel(&env.dir.path().join("k")).unwrap();
    let doc = serde_json::json!({
        "id": id("snapsrc"),
        "bootSource": {"kernelImagePath": kernel, "bootArgs": "console=ttyS0 probe.write=0:1:pre-snap probe.count=20"},
        "machineConfig": {"vcpuCount": 1, "memSizeMib": 16},
        "drives": [{"driveId": "data", "pathOnHost": disk, "isRootDevice": false, "isReadOnly": false}]
    });
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let (mut source, mut lines) = env.spawn_run(&["--config", cfg.to_str().unwrap()]);
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l == "smartvm-probe count n=2"));
    let jail = std::path::Path::new("/srv/jailer/firecracker").join(id("snapsrc"));
    assert_eq!(jail.exists(), jailed, "jailed only when asked: {}", jail.display());
    let bundle = env.dir.path().join("bundle");
    let out = env.cmd(&["snapshot", "take", &id("snapsrc"), "--out", bundle.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), bundle.join("snapshot.json").to_str().unwrap());
    // The source was resumed and keeps counting.
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.starts_with("smartvm-probe count")));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(source.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(source.wait().unwrap().code(), Some(130));
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(snap["drives"][0]["driveId"], "data");
    let saved = bundle.join(snap["drives"][0]["path"].as_str().unwrap());
    assert_eq!(&std::fs::read(saved).unwrap()[512..520], b"pre-snap");

    let out = env
        .cmd(&["snapshot", "restore", bundle.to_str().unwrap(), "--id", &id("restored"), "--timeout", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "the timeout ended it: {stderr}");
    assert!(stderr.contains("timed out after 1 s"), "{stderr}");
    let restored = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u64> =
        restored.lines().filter_map(|l| l.strip_prefix("smartvm-probe count n=")?.parse().ok()).collect();
    assert!(counts.len() > 3 && counts[0] >= 2, "restored guest counts on from the snapshot: {restored}");
    assert!(!restored.contains("boot cmdline"), "it did not boot again");
    assert!(env.runtime_is_empty());
    if jailed {
        for name in ["snapsrc", "restored"] {
            let jail = std::path::Path::new("/srv/jailer/firecracker").join(id(name));
            assert!(!jail.exists(), "jail {} removed", jail.display());
        }
    }
    assert!(std::fs::read(&disk).unwrap()[512..520].iter().all(|&b| b == 0), "source image untouched");
}
