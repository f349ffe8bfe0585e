//! VMs with the API off (`VmRuntimeOptions::api = false`): Firecracker runs with `--no-api`,
//! boots from its config file, and everything that needs the API answers `NO_CLIENT`.

mod common;

use std::time::Duration;

use common::{env, next_count, pid_alive};
use smartvm::config::{DriveConfig, SnapshotLoadParams};
use smartvm::process::StopStep;
use smartvm::vm::BootPath;
use smartvm::vm::VmRuntimeOptions;
use smartvm::{VmConfig, VmState};

fn api_off(env: &common::TestEnv) -> VmRuntimeOptions {
    VmRuntimeOptions { api: false, ..env.runtime_options() }
}

fn args_of(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

#[tokio::test]
async fn a_vm_with_the_api_off_runs_without_a_socket_and_stops_with_sigterm() {
    let Some(env) = env() else { return };
    let vm = env.smartvm.create_vm_with(&env.probe_config("noapi", "probe.count=20"), api_off(&env)).unwrap();
    assert_eq!(vm.boot_path(), BootPath::NoApi);
    vm.start().await.unwrap();
    assert_eq!(vm.state(), VmState::Running);
    let pid = vm.pid().await.unwrap();
    let args = args_of(pid);
    assert!(args.iter().any(|a| a == "--no-api") && !args.iter().any(|a| a == "--api-sock"), "{args:?}");
    assert!(args.iter().any(|a| a == "--config-file"), "{args:?}");
    assert!(!vm.socket_path().exists(), "no API socket");
    next_count(&vm, None, Duration::from_secs(5)).await.expect("the guest runs");

    let refused = [
        vm.pause().await.unwrap_err(),
        vm.info().await.map(drop).unwrap_err(),
        vm.set_metadata(&serde_json::json!({"k": "v"})).await.unwrap_err(),
        vm.flush_metrics().await.unwrap_err(),
    ];
    for err in refused {
        assert_eq!(err.code(), "NO_CLIENT", "{err}");
    }
    assert_eq!(vm.state(), VmState::Running, "refused calls change nothing");

    // No API for Ctrl-Alt-Del: the stop plan goes on to SIGTERM.
    let outcome = vm.stop().await.unwrap();
    assert_eq!(outcome.step, StopStep::Sigterm);
    assert!(!pid_alive(pid));
    env.smartvm.cleanup().await.unwrap();
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn a_guest_that_runs_to_completion_with_the_api_off_ends_cleanly() {
    let Some(env) = env() else { return };
    let vm = env.smartvm.create_vm_with(&env.probe_config("noapi-done", ""), api_off(&env)).unwrap();
    vm.start().await.unwrap();
    let exit = vm.wait_for_exit(Duration::from_secs(10)).await.expect("the probe resets and Firecracker exits");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(vm.console().lines().last().map(String::as_str), Some("smartvm-probe done"));
    assert_eq!(vm.state(), VmState::Stopped);
    env.smartvm.remove_vm("noapi-done").await.unwrap();
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn what_firecracker_refuses_is_named_as_with_the_api() {
    let Some(env) = env() else { return };
    let junk = env.dir.path().join("junk-kernel");
    std::fs::write(&junk, b"not an elf").unwrap();
    let disk = env.disk("noapi-src.img", 8, "source");
    let cfg = VmConfig::new(&junk).with_id("noapi-junk").with_machine(1, 16).with_drive(DriveConfig::new("d", &disk));
    let vm = env.smartvm.create_vm_with(&cfg, api_off(&env)).unwrap();
    let err = vm.start().await.unwrap_err();
    assert_eq!(err.root().code(), "API_ERROR", "{err:?}");
    assert!(err.fault_message().is_some_and(|m| !m.is_empty()), "{err:?}");
    assert_eq!(vm.state(), VmState::Error);
    assert!(!vm.runtime_dir().exists(), "nothing left behind");
    assert!(vm.pid().await.is_none());
}

#[tokio::test]
async fn the_api_off_is_refused_where_it_cannot_work_before_anything_exists() {
    let Some(env) = env() else { return };
    // Through the API path, the API cannot be off.
    let options = {
        let mut o = api_off(&env);
        o.policy.boot_via_api = true;
        o
    };
    let err = env.smartvm.create_vm_with(&env.probe_config("noapi-via-api", ""), options).unwrap_err();
    let smartvm::SmartVmError::InvalidConfig(problems) = &err else { panic!("{err}") };
    assert!(problems.has_field("api"), "{err}");
    // A detached VM is taken over again (by a restarted agent) through its API.
    let options = {
        let mut o = api_off(&env);
        o.policy.detached = true;
        o
    };
    let err = env.smartvm.create_vm_with(&env.probe_config("noapi-detached", ""), options).unwrap_err();
    assert_eq!(err.code(), "INVALID_CONFIG", "{err}");
    assert_eq!(env.smartvm.vm_count(), 0);

    // A restore loads its snapshot through the API.
    let vm = env.smartvm.create_vm_with(&env.probe_config("noapi-restore", ""), api_off(&env)).unwrap();
    let err = vm.restore(&SnapshotLoadParams::new("/nonexistent/state", "/nonexistent/mem")).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_CONFIG", "{err}");
    assert_eq!(vm.state(), VmState::Created, "nothing happened");
    assert!(!vm.runtime_dir().exists());
    env.smartvm.cleanup().await.unwrap();
}
