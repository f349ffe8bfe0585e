//! Lifecycle of a booted probe guest against the real Firecracker.

mod common;

use std::time::Duration;

use common::{env, last_count, next_count, pid_alive, report};
use smartvm::process::StopStep;
use smartvm::VmState;

#[tokio::test]
async fn start_pause_resume_stop_cleanup() {
    let Some(env) = env() else { return };
    let vm = env.smartvm.create_vm(&env.probe_config("life", "probe.count=20")).unwrap();
    assert_eq!(vm.state(), VmState::Created);
    assert!(!vm.runtime_dir().exists(), "create_vm must not touch the disk");
    vm.start().await.unwrap();
    assert_eq!(vm.state(), VmState::Running);
    assert!(vm.socket_path().exists());
    let pid = vm.pid().await.unwrap();

    let info = vm.info().await.unwrap();
    assert_eq!((info.app_name.as_str(), info.state.as_str(), info.id.as_str()), ("Firecracker", "Running", "life"));
    assert_eq!(vm.version().await.unwrap().firecracker_version, "1.12.1");
    let cfg = vm.vm_config().await.unwrap();
    assert_eq!(cfg["machine-config"]["mem_size_mib"], 16);

    let first = next_count(&vm, None, Duration::from_secs(5)).await.expect("guest counts");
    vm.pause().await.unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    assert_eq!(vm.info().await.unwrap().state, "Paused");
    let at_pause = last_count(&vm).await.unwrap();
    assert!(at_pause >= first);
    // While paused no new count may appear within several counting periods.
    assert_eq!(next_count(&vm, Some(at_pause), Duration::from_millis(300)).await, None, "guest counted while paused");
    vm.resume().await.unwrap();
    assert_eq!(vm.state(), VmState::Running);
    let after = next_count(&vm, Some(at_pause), Duration::from_secs(5)).await.expect("counting continues after resume");
    let console = vm.console().lines();
    assert_eq!(after, at_pause + 1, "counting continues where it stopped: {console:?}");

    let outcome = vm.stop().await.unwrap();
    // The probe answers Ctrl-Alt-Del like an OS shutting down: the graceful step ends it.
    assert_eq!(outcome.step, StopStep::CtrlAltDel);
    assert!(outcome.exit.success());
    let lines = vm.console().lines();
    assert_eq!(lines.last().map(String::as_str), Some("smartvm-probe ctrl-alt-del"));
    assert_eq!(vm.state(), VmState::Stopped);
    assert!(!pid_alive(pid));
    assert!(vm.runtime_dir().exists(), "stop keeps the runtime dir until cleanup");
    assert_eq!(vm.info().await.unwrap_err().code(), "NO_CLIENT");

    env.smartvm.cleanup().await.unwrap();
    assert!(!vm.runtime_dir().exists());
    assert_eq!(env.smartvm.vm_count(), 0);
}

#[tokio::test]
async fn wrong_state_calls_change_nothing() {
    let Some(env) = env() else { return };
    let vm = env.smartvm.create_vm(&env.probe_config("states", "probe.count=50")).unwrap();
    for err in [vm.pause().await.unwrap_err(), vm.resume().await.unwrap_err(), vm.stop().await.map(|_| ()).unwrap_err()]
    {
        assert_eq!(err.code(), "INVALID_STATE");
    }
    assert_eq!(vm.set_metadata(&serde_json::json!({})).await.unwrap_err().code(), "INVALID_STATE");
    assert_eq!(vm.state(), VmState::Created);
    assert!(!vm.runtime_dir().exists());

    vm.start().await.unwrap();
    assert_eq!(vm.start().await.unwrap_err().code(), "INVALID_STATE");
    assert_eq!(vm.resume().await.unwrap_err().code(), "INVALID_STATE");
    let snap = smartvm::config::SnapshotCreateParams {
        snapshot_path: env.dir.path().join("s"),
        mem_file_path: env.dir.path().join("m"),
        snapshot_type: Default::default(),
    };
    assert_eq!(vm.create_snapshot(&snap).await.unwrap_err().code(), "INVALID_STATE");
    assert!(!snap.snapshot_path.exists());
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(vm.info().await.unwrap().state, "Running");
    vm.cleanup().await.unwrap();
    assert_eq!(vm.state(), VmState::Stopped);
    assert_eq!(vm.pause().await.unwrap_err().code(), "INVALID_STATE");
    vm.cleanup().await.unwrap(); // idempotent
}

#[tokio::test]
async fn guest_that_ends_by_itself_reads_as_stopped() {
    let Some(env) = env() else { return };
    let vm = env.smartvm.create_vm(&env.probe_config("selfstop", "")).unwrap();
    vm.start().await.unwrap();
    let r = report(&vm).await;
    assert!(r.done);
    let exit = vm.wait_for_exit(Duration::from_secs(5)).await.expect("probe resets after done");
    assert!(exit.success());
    assert_eq!(vm.state(), VmState::Stopped);
    assert_eq!(vm.pause().await.unwrap_err().code(), "INVALID_STATE");
    env.smartvm.cleanup().await.unwrap();
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn registry_and_ids() {
    let Some(env) = env() else { return };
    let a = env.smartvm.create_vm(&env.probe_config("a", "")).unwrap();
    let b = env.smartvm.create_vm(&smartvm::VmConfig { id: None, ..env.probe_config("x", "") }).unwrap();
    assert!(uuid_like(b.id()), "generated id {}", b.id());
    assert_eq!(env.smartvm.vm_count(), 2);
    assert!(env.smartvm.vm("a").is_some());
    let dup = env.smartvm.create_vm(&env.probe_config("a", "")).unwrap_err();
    assert_eq!(dup.code(), "INVALID_CONFIG");
    a.start().await.unwrap();
    assert!(env.smartvm.remove_vm("a").await.unwrap());
    assert!(!a.runtime_dir().exists());
    assert_eq!(env.smartvm.vm_ids(), vec![b.id().to_string()]);
    env.smartvm.cleanup().await.unwrap();
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn process_killed_from_outside_reads_as_error_and_console_goes_to_file() {
    let Some(env) = env() else { return };
    let console_file = env.dir.path().join("console.log");
    let mut opts = env.runtime_options();
    opts.console_file = Some(console_file.clone());
    let vm = env.smartvm.create_vm_with(&env.probe_config("killed", "probe.count=10"), opts).unwrap();
    vm.start().await.unwrap();
    next_count(&vm, None, Duration::from_secs(5)).await.unwrap();
    let pid = vm.pid().await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit = vm.wait_for_exit(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exit.signal, Some(9));
    assert_eq!(vm.state(), VmState::Error);
    assert_eq!(vm.pause().await.unwrap_err().code(), "INVALID_STATE");
    let logged = std::fs::read_to_string(&console_file).unwrap();
    assert!(logged.starts_with("smartvm-probe boot cmdline="), "{logged}");
    assert!(logged.contains("smartvm-probe count n=0\n"));
    env.smartvm.cleanup().await.unwrap();
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn stop_all_stops_running_and_paused_vms() {
    let Some(env) = env() else { return };
    let a = env.smartvm.create_vm(&env.probe_config("all-a", "probe.count=20")).unwrap();
    let b = env.smartvm.create_vm(&env.probe_config("all-b", "probe.count=20")).unwrap();
    let c = env.smartvm.create_vm(&env.probe_config("all-c", "")).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    b.pause().await.unwrap();
    env.smartvm.stop_all().await.unwrap();
    assert_eq!((a.state(), b.state(), c.state()), (VmState::Stopped, VmState::Stopped, VmState::Created));
    assert_eq!(b.last_stop().await.unwrap().step, StopStep::Sigterm, "paused VMs skip Ctrl-Alt-Del");
    assert_eq!(a.last_stop().await.unwrap().step, StopStep::CtrlAltDel);
    env.smartvm.cleanup().await.unwrap();
}

#[tokio::test]
async fn dropping_a_vm_without_cleanup_kills_it_and_removes_its_dir() {
    let Some(env) = env() else { return };
    let vm = smartvm::MicroVm::new(&env.probe_config("dropped", "probe.count=20"), env.runtime_options()).unwrap();
    vm.start().await.unwrap();
    let (pid, dir) = (vm.pid().await.unwrap(), vm.runtime_dir().to_path_buf());
    let exit = vm.console();
    drop(vm);
    // The console stream closes when the killed process's stdout does.
    assert_eq!(exit.wait_for_line(Duration::from_secs(5), |l| l == "never printed").await, None);
    assert!(exit.is_closed());
    assert!(!pid_alive(pid), "Firecracker must not outlive its MicroVm");
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_started_from_a_short_lived_thread_keeps_running() {
    let Some(env) = env() else { return };
    let vm = std::sync::Arc::new(env.smartvm.create_vm(&env.probe_config("thread", "probe.count=50")).unwrap());
    let handle = tokio::runtime::Handle::current();
    let starter = vm.clone();
    // The thread that calls start() exits right after: the parent-death signal must not follow it.
    std::thread::spawn(move || handle.block_on(starter.start())).join().unwrap().unwrap();
    let pid = vm.pid().await.unwrap();
    let first = next_count(&vm, None, Duration::from_secs(5)).await.expect("counting");
    next_count(&vm, Some(first + 2), Duration::from_secs(5)).await.expect("still counting after the thread exited");
    assert!(pid_alive(pid));
    assert_eq!(vm.state(), VmState::Running);
    env.smartvm.cleanup().await.unwrap();
}

/// A stand-in Firecracker that answers `--version` and otherwise never opens its API socket
/// (its arguments stay on its command line, so it can be found).
pub fn hanging_firecracker(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("hanging-firecracker");
    std::fs::write(
        &p,
        "#!/bin/bash\ncase \"$1\" in --version) echo 'Firecracker v1.12.1';; \
         *) exec -a \"hanging-firecracker $*\" sleep 600;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            pid_alive(*pid) && String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

#[tokio::test]
async fn a_cancelled_start_unwinds_everything() {
    let Some(env) = env() else { return };
    let fake = hanging_firecracker(env.dir.path());
    let mut opts = smartvm::vm::VmRuntimeOptions::new(&fake, env.smartvm.runtime_dir());
    opts.policy.socket_timeout = Duration::from_secs(60);
    let disk = env.disk("cancel.img", 8, "x");
    let cfg = env.probe_config("cancelled", "").with_drive(smartvm::config::DriveConfig::new("rw", &disk));
    let vm = smartvm::MicroVm::new(&cfg, opts).unwrap();
    let socket = vm.socket_path().display().to_string();
    {
        let start = vm.start();
        tokio::pin!(start);
        // Let it run until the process is journaled (blocked waiting for the socket), then drop it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::select! {
                r = &mut start => panic!("start ended: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            let journal = smartvm::vm::ledger::VmJournal::read(vm.runtime_dir());
            let spawned = journal.is_ok_and(|j| j.pid().is_some());
            if spawned && !processes_mentioning(&socket).is_empty() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the fake never spawned");
        }
    }
    assert_eq!(vm.state(), VmState::Error);
    assert!(!vm.runtime_dir().exists(), "runtime dir (journal, staged drive) removed");
    let left = processes_mentioning(&socket);
    let cmds: Vec<String> = left
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()).into_owned())
        .collect();
    assert!(left.is_empty(), "the process was killed: {left:?} {cmds:?}");
}

#[tokio::test]
async fn cancelling_start_at_any_moment_leaves_nothing() {
    let Some(env) = env() else { return };
    let fake = hanging_firecracker(env.dir.path());
    let disk = env.disk("cancel-any.img", 8, "x");
    for (i, micros) in [0u64, 50, 200, 500, 1000, 2000, 5000, 10000, 20000].into_iter().enumerate() {
        let mut opts = smartvm::vm::VmRuntimeOptions::new(&fake, env.smartvm.runtime_dir());
        opts.policy.socket_timeout = Duration::from_secs(60);
        let id = format!("cancel-{i}");
        let cfg = env.probe_config(&id, "").with_drive(smartvm::config::DriveConfig::new("rw", &disk));
        let vm = smartvm::MicroVm::new(&cfg, opts).unwrap();
        let socket = vm.socket_path().display().to_string();
        let r = tokio::time::timeout(Duration::from_micros(micros), vm.start()).await;
        assert!(r.is_err(), "start cannot finish against a Firecracker that never answers");
        assert!(!vm.runtime_dir().exists(), "cancelled after {micros} µs: runtime dir left");
        assert!(processes_mentioning(&socket).is_empty(), "cancelled after {micros} µs: process left");
    }
    let leftovers: Vec<_> = std::fs::read_dir(env.smartvm.runtime_dir())
        .map(|rd| rd.flatten().map(|e| e.file_name()).filter(|n| n != ".drives").collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
