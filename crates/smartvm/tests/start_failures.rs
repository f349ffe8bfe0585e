//! A failed start leaves no process, socket, staged drive or runtime dir, and the state `Error`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{env, pid_alive};
use smartvm::config::DriveConfig;
use smartvm::vm::Step;
use smartvm::{MicroVm, VmState};

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn runtime_entries(env: &common::TestEnv) -> Vec<String> {
    match std::fs::read_dir(env.smartvm.runtime_dir()) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn invalid_config_is_rejected_before_anything_exists() {
    let Some(env) = env() else { return };
    let cfg = env
        .probe_config("bad", "")
        .with_machine(0, 16)
        .with_drive(DriveConfig::new("d", env.dir.path().join("missing.img")));
    let cfg = smartvm::VmConfig {
        boot_source: smartvm::config::BootSourceConfig::new(env.dir.path().join("no-kernel")),
        ..cfg
    };
    let err = env.smartvm.create_vm(&cfg).unwrap_err();
    assert_eq!(err.code(), "INVALID_CONFIG");
    let smartvm::SmartVmError::InvalidConfig(problems) = &err else { panic!("{err}") };
    assert!(problems.has_field("bootSource.kernelImagePath"));
    assert!(problems.has_field("machineConfig.vcpuCount"));
    assert!(problems.has_field("drives[0].pathOnHost"));
    assert_eq!(env.smartvm.vm_count(), 0);
    assert!(runtime_entries(&env).is_empty());
}

#[tokio::test]
async fn kernel_rejected_by_firecracker_cleans_up_staged_drives() {
    let Some(env) = env() else { return };
    let junk = env.dir.path().join("junk-kernel");
    std::fs::write(&junk, b"not an elf").unwrap();
    let disk = env.disk("src.img", 8, "source");
    let cfg =
        smartvm::VmConfig::new(&junk).with_id("junk").with_machine(1, 16).with_drive(DriveConfig::new("d", &disk));
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    let err = vm.start().await.unwrap_err();
    // The seed's code of the cause, not a START_FAILED wrapper; the step is kept.
    assert_eq!(err.code(), "API_ERROR", "{err:?}");
    assert_eq!(err.step(), Some(Step::ConfirmBoot), "the config-file boot's check");
    assert_eq!(err.status(), Some(400));
    assert!(err.fault_message().is_some_and(|m| !m.is_empty()));
    assert_eq!(vm.state(), VmState::Error);
    assert!(!vm.runtime_dir().exists(), "runtime dir (socket, staged drive) must be gone");
    assert!(vm.pid().await.is_none());
    assert_eq!(std::fs::read(&disk).unwrap()[..6], *b"source");
    assert_eq!(vm.start().await.unwrap_err().code(), "INVALID_STATE");
}

#[tokio::test]
async fn bogus_binary_fails_and_leaves_nothing() {
    let Some(env) = env() else { return };
    let fake = script(env.dir.path(), "fake-fc", "echo 'boom' >&2; exit 3");
    let mut opts = env.runtime_options();
    opts.firecracker_binary = fake;
    let vm = MicroVm::new(&env.probe_config("bogus", ""), opts).unwrap();
    let err = vm.start().await.unwrap_err();
    assert_eq!(err.code(), "PROCESS_FAILED", "{err:?}");
    let text = format!("{:?}", err.root());
    assert!(text.contains("boom") && text.contains('3'), "{text}");
    assert_eq!(vm.state(), VmState::Error);
    assert!(!vm.runtime_dir().exists());

    let mut opts = env.runtime_options();
    opts.firecracker_binary = env.dir.path().join("does-not-exist");
    let vm = MicroVm::new(&env.probe_config("nobin", ""), opts).unwrap();
    let err = vm.start().await.unwrap_err();
    assert_eq!((err.code(), err.step()), (smartvm::error::ErrorCode::BinaryNotFound, Some(Step::CheckHost)));
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn socket_that_never_appears_times_out_and_kills_the_process() {
    let Some(env) = env() else { return };
    let pidfile = env.dir.path().join("pid");
    let hang = script(env.dir.path(), "hang-fc", &format!("echo $$ > {}; exec sleep 600", pidfile.display()));
    let mut opts = env.runtime_options();
    opts.firecracker_binary = hang;
    opts.policy.socket_timeout = Duration::from_millis(300);
    let vm = MicroVm::new(&env.probe_config("hang", ""), opts).unwrap();
    let err = vm.start().await.unwrap_err();
    assert_eq!(err.code(), "SOCKET_TIMEOUT", "{err:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!pid_alive(pid), "the hung process must be killed");
    assert!(!vm.runtime_dir().exists());
    assert_eq!(vm.state(), VmState::Error);
}

/// A fake Firecracker that binds its API socket but never listens: the socket exists, the API
/// never answers. The seed's `API_TIMEOUT` (not `SOCKET_TIMEOUT`), on both boot paths.
#[tokio::test]
async fn api_that_never_answers_is_an_api_timeout() {
    let Some(env) = env() else { return };
    let pidfile = env.dir.path().join("pid");
    let bind = "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); time.sleep(600)";
    let body = format!(
        "while [ $# -gt 0 ]; do [ \"$1\" = --api-sock ] && sock=$2; shift; done\necho $$ > {}\nexec python3 -c '{bind}' \"$sock\"",
        pidfile.display()
    );
    let mute = script(env.dir.path(), "mute-fc", &body);
    for (id, via_api, step) in [("mute-file", false, Step::ConfirmBoot), ("mute-api", true, Step::WaitForApi)] {
        let mut opts = env.runtime_options();
        opts.firecracker_binary = mute.clone();
        opts.policy.socket_timeout = Duration::from_millis(500);
        opts.policy.boot_via_api = via_api;
        let vm = MicroVm::new(&env.probe_config(id, ""), opts).unwrap();
        let err = vm.start().await.unwrap_err();
        assert_eq!(err.code(), "API_TIMEOUT", "{id}: {err:?}");
        assert_eq!(err.step(), Some(step), "{id}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(!pid_alive(pid), "{id}: the mute process must be killed");
        assert!(!vm.runtime_dir().exists(), "{id}");
        assert_eq!(vm.state(), VmState::Error);
    }
}

/// What a VM reports (its pid, its TAPs) is read without waiting for the start that holds it:
/// a host agent lists its VMs while others start.
#[tokio::test]
async fn what_a_vm_reports_never_waits_for_its_start() {
    use futures_util::FutureExt;
    let Some(env) = env() else { return };
    let bind = "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); time.sleep(600)";
    let body = format!(
        "while [ $# -gt 0 ]; do [ \"$1\" = --api-sock ] && sock=$2; shift; done\nexec python3 -c '{bind}' \"$sock\""
    );
    let mute = script(env.dir.path(), "slow-fc", &body);
    let mut opts = env.runtime_options();
    opts.firecracker_binary = mute;
    opts.policy.socket_timeout = Duration::from_secs(3);
    opts.policy.boot_via_api = true;
    let vm = std::sync::Arc::new(MicroVm::new(&env.probe_config("slow", ""), opts).unwrap());
    let mut events = vm.events();
    let starting = tokio::spawn({
        let vm = vm.clone();
        async move { vm.start().await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv()).await.unwrap().unwrap();
        if event.step == Some(Step::WaitForApi) {
            break;
        }
    }
    let pid = vm.pid().now_or_never().expect("pid() answers while the start waits for the API");
    assert!(pid.is_some_and(pid_alive), "{pid:?}");
    #[cfg(feature = "network")]
    assert!(vm.tap_devices().now_or_never().is_some());
    assert_eq!(starting.await.unwrap().unwrap_err().code(), "API_TIMEOUT");
    assert_eq!(vm.pid().now_or_never(), Some(None), "no pid once the start failed");
}
