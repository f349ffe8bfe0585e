//! `smartvm image inject-agent`: a static agent lands at /sbin/smartvm-guest of a real ext4
//! image (read back with debugfs), twice in a row; a dynamic one or a non-image is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::BIN;

fn tools_present() -> bool {
    let present = ["mkfs.ext4", "debugfs"].iter().all(|t| Command::new(t).arg("-V").output().is_ok());
    if !present {
        assert!(std::env::var("SMARTVM_REQUIRE_KVM").is_err(), "e2fsprogs missing in CI");
        common::skipped("mkfs.ext4/debugfs (e2fsprogs) not installed");
    }
    present
}

/// A small static executable, built with this toolchain.
fn static_binary(dir: &Path) -> PathBuf {
    let source = dir.join("tiny.rs");
    std::fs::write(&source, "fn main() { println!(\"tiny\"); }\n").unwrap();
    let out = dir.join("tiny");
    let status = Command::new("rustc")
        .args(["-C", "target-feature=+crt-static", "-C", "opt-level=1", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

fn image(dir: &Path) -> PathBuf {
    let img = dir.join("root.ext4");
    std::fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    assert!(Command::new("mkfs.ext4").args(["-F", "-q"]).arg(&img).status().unwrap().success());
    img
}

#[test]
fn a_static_agent_is_installed_without_a_mount_and_can_be_replaced() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = static_binary(dir.path());
    let img = image(dir.path());
    for round in 0..2 {
        let out = Command::new(BIN)
            .args(["image", "inject-agent", "--json", "--agent"])
            .arg(&agent)
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["path"], "/sbin/smartvm-guest");
        assert_eq!(report["size"], std::fs::metadata(&agent).unwrap().len());
    }
    let copy = dir.path().join("copy");
    let dump = format!("dump /sbin/smartvm-guest {}", copy.display());
    assert!(Command::new("debugfs").args(["-R", &dump]).arg(&img).output().unwrap().status.success());
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&agent).unwrap(), "the bytes in the image are the agent's");
    let stat = Command::new("debugfs").args(["-R", "stat /sbin/smartvm-guest"]).arg(&img).output().unwrap();
    let fields = smartvm::images::parse_stat(&String::from_utf8_lossy(&stat.stdout)).unwrap();
    assert_eq!((fields.mode, fields.uid, fields.gid, fields.regular), (0o755, 0, 0, true));
}

#[test]
fn a_dynamic_agent_or_a_non_image_is_refused() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let dynamic = Command::new(BIN).args(["image", "inject-agent", "--agent", BIN]).arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&dynamic.stderr);
    assert!(err.contains("ROOTFS_CREATE_FAILED") && err.contains("dynamically linked"), "{err}");
    assert_eq!(dynamic.status.code(), Some(1));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not ext4").unwrap();
    let agent = static_binary(dir.path());
    let wrong = Command::new(BIN).args(["image", "inject-agent", "--agent"]).arg(&agent).arg(&text).output().unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("ROOTFS_CREATE_FAILED"));
}
