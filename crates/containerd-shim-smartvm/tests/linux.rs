//! Opt-in: a real Linux container image as a smartvm task, the guest agent as its init. Needs a
//! host with hardware KVM (a stock kernel dies under the paravirtual `kvm_pvm`) and
//! `SMARTVM_LINUX_KERNEL` (a vmlinux), `SMARTVM_SHIM_LINUX_IMAGE` (an image archive with
//! `/bin/sh`, e.g. `docker save busybox`) and `SMARTVM_SHIM_LINUX_IMAGE_REF` (its name, e.g.
//! `docker.io/library/busybox:latest`). The static agent comes from `SMARTVM_GUEST_AGENT` or
//! `scripts/build-guest.sh`. Skipped, with the reason in the test summary, everywhere else.

mod common;

use std::path::{Path, PathBuf};

use common::{skipped, usable, Containerd};

struct LinuxImage {
    kernel: PathBuf,
    archive: PathBuf,
    reference: String,
}

fn linux_image() -> Option<LinuxImage> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        skipped("/dev/kvm is served by kvm_pvm, where a stock Linux kernel cannot boot");
        return None;
    }
    let var = |name| std::env::var_os(name);
    match (var("SMARTVM_LINUX_KERNEL"), var("SMARTVM_SHIM_LINUX_IMAGE"), var("SMARTVM_SHIM_LINUX_IMAGE_REF")) {
        (Some(kernel), Some(archive), Some(reference)) => Some(LinuxImage {
            kernel: kernel.into(),
            archive: archive.into(),
            reference: reference.to_string_lossy().into_owned(),
        }),
        _ => {
            skipped("set SMARTVM_LINUX_KERNEL, SMARTVM_SHIM_LINUX_IMAGE and SMARTVM_SHIM_LINUX_IMAGE_REF to run a Linux image");
            None
        }
    }
}

fn static_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("SMARTVM_GUEST_AGENT") {
        return path.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-guest.sh");
    let out = std::process::Command::new(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(String::from_utf8(out.stdout).unwrap().trim())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_linux_image_runs_its_process_through_the_agent_and_execs_into_it() {
    let Some(image) = linux_image() else { return };
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    let data = containerd.dir.path().join("data");
    std::fs::create_dir_all(data.join("kernels")).unwrap();
    std::fs::create_dir_all(data.join("bin")).unwrap();
    std::fs::copy(&image.kernel, data.join("kernels/vmlinux")).unwrap();
    std::fs::copy(static_agent(), data.join("bin/smartvm-guest")).unwrap();
    let import = containerd.ctr(&["image", "import", "--snapshotter", "overlayfs", image.archive.to_str().unwrap()]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    let kernel = format!("io.smartvm.kernel={}", data.join("kernels/vmlinux").display());
    let base = ["run", "--snapshotter", "overlayfs", "--runtime", "io.containerd.smartvm.v2", "--annotation", &kernel];

    let mut once = base.to_vec();
    once.extend_from_slice(&[&image.reference, "l1", "sh", "-c", "echo from linux; exit 3"]);
    let out = containerd.ctr(&once);
    assert_eq!(text(&out.stdout).trim(), "from linux", "{}\n{}", text(&out.stderr), containerd.log());
    assert_eq!(out.status.code(), Some(3));

    let mut detached = base.to_vec();
    detached.extend_from_slice(&["-d", &image.reference, "l2", "sleep", "600"]);
    assert!(containerd.ctr(&detached).status.success());
    let exec = containerd.ctr(&["task", "exec", "--exec-id", "e1", "l2", "sh", "-c", "echo $((6 * 7))"]);
    assert_eq!(text(&exec.stdout).trim(), "42", "{}", text(&exec.stderr));
    assert!(containerd.ctr(&["task", "kill", "-s", "SIGKILL", "l2"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !text(&containerd.ctr(&["task", "ls"]).stdout).contains("STOPPED") {
        assert!(std::time::Instant::now() < deadline, "l2 never stopped");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for args in [&["task", "delete", "l2"][..], &["container", "rm", "l1", "l2"]] {
        assert!(containerd.ctr(args).status.success());
    }
    assert!(containerd.firecracker_pids().is_empty());
}
