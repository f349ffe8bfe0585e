//! Opt-in: boots a real Linux guest. Needs a host with hardware KVM (a stock kernel dies early
//! under the paravirtual `kvm_pvm`) and either `SMARTVM_LINUX_KERNEL` + `SMARTVM_LINUX_ROOTFS`
//! pointing at a vmlinux and a rootfs image, or, as in the seed's integration tests,
//! `SMARTVM_RUN_INTEGRATION=1` (or `true`, `yes`, as the seed accepts): the base image of
//! `SMARTVM_BASE_IMAGE_PRESET` (default `latest`; `hosted` when `SMARTVM_BASE_IMAGE_MANIFEST_URL`
//! or `_PATH` is set), cached under `SMARTVM_BASE_IMAGE_CACHE_DIR` (see
//! `SmartVmOptions::from_env`), is pulled and booted. Skipped, with a message in the test summary, everywhere else — `SMARTVM_REQUIRE_KVM`
//! does not force it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use smartvm::config::DriveConfig;
use smartvm::VmConfig;

/// The seed's truthy values of `SMARTVM_RUN_INTEGRATION`: `1`, `true`, `yes`.
fn run_integration(value: &str) -> bool {
    ["1", "true", "yes"].contains(&value.trim().to_ascii_lowercase().as_str())
}

#[test]
fn run_integration_accepts_the_seeds_truthy_values() {
    for yes in ["1", "true", "yes", "TRUE", "Yes"] {
        assert!(run_integration(yes), "{yes}");
    }
    for no in ["", "0", "false", "no", "on", "2"] {
        assert!(!run_integration(no), "{no}");
    }
}

async fn linux_images() -> Option<(PathBuf, PathBuf)> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        common::skipped("/dev/kvm is served by kvm_pvm, where a stock Linux kernel cannot boot");
        return None;
    }
    match (std::env::var_os("SMARTVM_LINUX_KERNEL"), std::env::var_os("SMARTVM_LINUX_ROOTFS")) {
        (Some(k), Some(r)) => Some((k.into(), r.into())),
        _ if std::env::var("SMARTVM_RUN_INTEGRATION").is_ok_and(|v| run_integration(&v)) => preset_images().await,
        _ => {
            common::skipped(
                "set SMARTVM_LINUX_KERNEL and SMARTVM_LINUX_ROOTFS, or SMARTVM_RUN_INTEGRATION=1|true|yes, to boot a Linux guest",
            );
            None
        }
    }
}

/// The kernel and rootfs of `SMARTVM_BASE_IMAGE_PRESET` (default `latest`), pulled or cached.
#[cfg(not(feature = "images"))]
async fn preset_images() -> Option<(PathBuf, PathBuf)> {
    common::skipped("base images need the images feature");
    None
}

/// The kernel and rootfs of `SMARTVM_BASE_IMAGE_PRESET` (default `latest`), pulled or cached.
#[cfg(feature = "images")]
async fn preset_images() -> Option<(PathBuf, PathBuf)> {
    use smartvm::images::{BaseImageOptions, NoProgress, Preset};
    let preset = std::env::var("SMARTVM_BASE_IMAGE_PRESET").ok().map(|p| p.parse::<Preset>().unwrap());
    let smartvm = smartvm::SmartVm::new(smartvm::SmartVmOptions::from_env());
    let bundle = smartvm.ensure_base_image(&BaseImageOptions { preset, ..Default::default() }, &NoProgress).await;
    let bundle = bundle.expect("the preset's base image");
    Some((bundle.kernel_image_path, bundle.rootfs_path))
}

#[tokio::test]
async fn linux_guest_boots_and_shuts_down_on_ctrl_alt_del() {
    let Some((kernel, rootfs)) = linux_images().await else { return };
    let Some(env) = common::env() else { return };
    let squashfs = rootfs.extension().is_some_and(|e| e == "squashfs");
    let mut root = DriveConfig::new("rootfs", &rootfs).root();
    root.is_read_only = squashfs;
    let args = if squashfs {
        "console=ttyS0 reboot=k panic=1 pci=off ro rootfstype=squashfs"
    } else {
        "console=ttyS0 reboot=k panic=1 pci=off"
    };
    let cfg = VmConfig::new(kernel).with_id("linux").with_machine(1, 256).with_boot_args(args).with_drive(root);
    let modified = std::fs::metadata(&rootfs).unwrap().modified().unwrap();
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let console = vm.console();
    let booted =
        console.wait_for_line(Duration::from_secs(60), |l| l.contains("Run /sbin/init") || l.contains("login:")).await;
    assert!(booted.is_some(), "Linux did not reach init:\n{}", console.tail(40));
    assert!(console.lines().iter().any(|l| l.contains("Linux version")));
    let outcome = vm.stop().await.unwrap();
    eprintln!("stopped by {:?}", outcome.step);
    env.smartvm.cleanup().await.unwrap();
    assert!(!vm.runtime_dir().exists());
    let after = std::fs::metadata(&rootfs).unwrap().modified().unwrap();
    assert_eq!(after, modified, "the guest wrote to its staged copy, not the source image");
}

/// The static guest agent: `SMARTVM_GUEST_AGENT`, else built by scripts/build-guest.sh.
#[cfg(feature = "images")]
fn static_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("SMARTVM_GUEST_AGENT") {
        return path.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-guest.sh");
    let out = std::process::Command::new(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// `smartvm-guest` as the init of a real Linux guest: exec, cp in and out, a forwarded port,
/// and a clean power-off that reports the workload's exit status.
#[cfg(feature = "images")]
#[tokio::test]
async fn linux_guest_with_the_agent_as_init_runs_commands_copies_forwards_and_reports_its_exit() {
    use smartvm::config::VsockConfig;
    let Some((kernel, rootfs)) = linux_images().await else { return };
    if rootfs.extension().is_some_and(|e| e == "squashfs") {
        common::skipped("the agent is injected into ext4 rootfs images only; this one is squashfs");
        return;
    }
    let Some(env) = common::env() else { return };
    let image = env.dir.path().join("agent-rootfs.ext4");
    std::fs::copy(&rootfs, &image).unwrap();
    smartvm::images::inject_guest_agent(&image, &static_agent()).unwrap();
    let workload = r#"/bin/sh -c "while [ ! -e /run/stop ]; do sleep 0.1; done; exit 3""#;
    let args = format!("console=ttyS0 reboot=k panic=1 pci=off init=/sbin/smartvm-guest -- {workload}");
    let cfg = VmConfig::new(kernel)
        .with_id("agent-init")
        .with_machine(1, 256)
        .with_boot_args(args)
        .with_drive(DriveConfig::new("rootfs", &image).root())
        .with_vsock(VsockConfig::new(3, env.dir.path().join("agent.vsock")));
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let guest = vm.guest().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while guest.hello().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no agent:\n{}", vm.console().tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uname = guest.output(&["uname", "-a"]).await.unwrap().checked("uname").unwrap();
    assert!(String::from_utf8_lossy(&uname.stdout).contains("Linux"));

    let local = env.dir.path().join("note.txt");
    std::fs::write(&local, "from the host").unwrap();
    guest.copy_in(&local, "/tmp", None).await.unwrap();
    let back = env.dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    guest.copy_out("/tmp/note.txt", &back, None).await.unwrap();
    assert_eq!(std::fs::read_to_string(back.join("note.txt")).unwrap(), "from the host");

    let server = "exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /tmp";
    let _server = guest
        .exec(smartvm::guest::protocol::ExecRequest {
            argv: vec!["sh".into(), "-c".into(), server.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut page = String::new();
    for _ in 0..100 {
        if let Ok(mut stream) = guest.connect_port(8080).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(b"GET /note.txt HTTP/1.0\r\n\r\n").await.unwrap();
            stream.read_to_string(&mut page).await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains("from the host"), "through the forward: {page:?}");

    guest.output(&["touch", "/run/stop"]).await.unwrap();
    let exit = vm.console().wait_for_line(Duration::from_secs(30), |l| l.contains("smartvm-guest exit=")).await;
    assert_eq!(exit.as_deref().map(str::trim), Some("smartvm-guest exit=3"));
    assert!(vm.wait_for_exit(Duration::from_secs(30)).await.is_some(), "the guest powered off");
    env.smartvm.cleanup().await.unwrap();
}
