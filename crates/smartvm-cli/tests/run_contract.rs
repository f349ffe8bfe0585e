//! The contract of a foreground `smartvm run` that supervisors rely on (Nomad's `raw_exec`,
//! systemd): the console streams to stdout as it comes, the guest's reported workload status is
//! the exit status, and SIGTERM stops the VM in order and leaves nothing.

mod common;

use std::time::Duration;

use common::env;

#[test]
fn the_workload_s_reported_status_is_the_exit_status_and_stdout_streams() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["run", "--boot-args", "console=ttyS0 probe.lines=2 probe.exit=4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("smartvm-probe line n=1") && stdout.contains("smartvm-probe exit code=4"), "{stdout}");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let zero = env.cmd(&["run", "--boot-args", "console=ttyS0 probe.exit=0"]).output().unwrap();
    assert_eq!(zero.status.code(), Some(0));
    assert!(env.runtime_is_empty());
}

#[test]
fn sigterm_stops_the_vm_in_order_and_leaves_nothing() {
    let Some(env) = env() else { return };
    let (mut run, mut lines) = env.spawn_run(&["--boot-args", "console=ttyS0 probe.count=20"]);
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("smartvm-probe"), "stdout streams before the end: {first}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    drop(lines);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !env.runtime_is_empty() {
        assert!(std::time::Instant::now() < deadline, "the VM's dir is left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ps_lists_a_vm_another_program_owns_with_its_owner() {
    let Some(env) = env() else { return };
    let none = env.cmd(&["ps"]).output().unwrap();
    assert_eq!(none.status.code(), Some(4), "no agent and no VM: AGENT_UNAVAILABLE as before");
    let (mut run, mut lines) = env.spawn_run(&["--boot-args", "console=ttyS0 probe.count=100000"]);
    assert!(lines.next().unwrap().unwrap().starts_with("smartvm-probe"));
    let owner = format!("smartvm[{}]", run.0.id());
    let out = env.cmd(&["ps", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0]["state"], "running");
    assert_eq!(vms[0]["owner"], owner.as_str());
    assert!(vms[0]["pid"].as_i64().is_some_and(|p| p > 0), "Firecracker's pid: {vms:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("note:"), "says why only these are listed");
    let table = String::from_utf8_lossy(&env.cmd(&["ps"]).output().unwrap().stdout).into_owned();
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("running") && l.ends_with(&owner)), "{table}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    run.0.wait().unwrap();
}
