//! `ctr` against a private containerd 1.6 with runtime `io.containerd.smartvm.v2`: the probe
//! stand-in's lines on stdout and its exit status as ctr's; the detached lifecycle leaves
//! nothing; bad bundles fail with the reason.

mod common;

use std::time::{Duration, Instant};

use common::{usable, Containerd, IMAGE};

const RUNTIME: &str = "io.containerd.smartvm.v2";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ctr_run_streams_the_probe_and_exits_with_its_status() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let out = run_probe(&containerd, &[], "t1", &["probe.lines=3", "probe.exit=3"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("smartvm-probe line n=2"),
        "stdout: {stdout}\nstderr: {}\n{}",
        text(&out.stderr),
        containerd.log()
    );
    assert!(stdout.contains("smartvm-probe exit code=3"), "{stdout}");
    assert_eq!(out.status.code(), Some(3), "ctr exits with the task's status: {}", text(&out.stderr));
    assert!(containerd.ctr(&["container", "rm", "t1"]).status.success());
    assert!(runtime_dir_is_empty(&containerd), "VM dirs left: {:?}", vm_dirs(&containerd));
}

#[test]
fn a_detached_task_runs_pauses_resumes_and_is_removed_without_a_trace() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let run = run_probe(&containerd, &["-d"], "d1", &["probe.count=50"]);
    assert!(run.status.success(), "{}\n{}", text(&run.stderr), containerd.log());
    let ls = text(&containerd.ctr(&["task", "ls"]).stdout);
    assert!(ls.lines().any(|l| l.starts_with("d1") && l.contains("RUNNING")), "{ls}");
    // Journaled like every smartvm VM: what `smartvm ps` lists beside the agent's.
    let listed = smartvm::vm::journaled_vms(&containerd.runtime_dir());
    let shim = containerd.shim_pids();
    assert!(
        listed.iter().any(|vm| vm.journal.vm_id == "ctr-default-d1"
            && vm.running
            && vm.owner.as_ref().is_some_and(|(pid, name)| shim.contains(pid) && name.starts_with("containerd-shim"))),
        "{listed:?}"
    );
    assert!(containerd.ctr(&["task", "pause", "d1"]).status.success());
    assert!(text(&containerd.ctr(&["task", "ls"]).stdout).contains("PAUSED"));
    assert!(containerd.ctr(&["task", "resume", "d1"]).status.success());
    let pids = text(&containerd.ctr(&["task", "ps", "d1"]).stdout);
    assert!(pids.lines().count() >= 2, "the Firecracker process is the task's: {pids}");
    // Stats: the VM's Firecracker process as cgroup v1 metrics, the guest memory as the limit.
    let metrics = text(&containerd.ctr(&["task", "metrics", "d1"]).stdout);
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {metrics}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert!(value("memory.usage_in_bytes") > 1 << 20, "{metrics}");
    assert_eq!(value("memory.limit_in_bytes"), 128 << 20, "{metrics}");
    assert!(value("pids.current") >= 1, "{metrics}");
    kill_and_remove(&containerd, "d1");
    assert!(runtime_dir_is_empty(&containerd), "VM dirs left: {:?}", vm_dirs(&containerd));
}

#[test]
fn bad_bundles_fail_in_ctr_with_the_reason_and_create_nothing() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let cases: [(&[&str], &str); 3] = [
        (&["--annotation", "io.smartvm.color=red"], "unknown annotation"),
        (&["--annotation", "io.smartvm.guest=probe", "--annotation", "io.smartvm.vcpus=1000"], "io.smartvm.vcpus"),
        (&["--annotation", "io.smartvm.kernel=/etc/hostname"], "outside the allowed dirs"),
    ];
    for (i, (flags, reason)) in cases.iter().enumerate() {
        let id = format!("bad{i}");
        let mut args = vec!["run", "--snapshotter", "native", "--runtime", RUNTIME];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, &id]);
        let out = containerd.ctr(&args);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(reason), "{reason}: {}", text(&out.stderr));
        let _ = containerd.ctr(&["container", "rm", &id]);
    }
    assert!(runtime_dir_is_empty(&containerd), "nothing created: {:?}", vm_dirs(&containerd));
}

#[test]
fn twenty_tasks_at_once_each_exit_with_their_own_status() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let (id, exit) = (format!("many{i}"), format!("probe.exit={}", i + 1));
            containerd
                .ctr_command(&probe_args(&[], &id, &["probe.lines=2", &exit]))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(i as i32 + 1), "many{i}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("line n=1"), "many{i}: {}", text(&out.stdout));
        assert!(containerd.ctr(&["container", "rm", &format!("many{i}")]).status.success());
    }
    assert!(runtime_dir_is_empty(&containerd));
}

#[test]
fn a_shim_killed_mid_task_is_reported_exited_and_gc_leaves_nothing() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let run = run_probe(&containerd, &["-d"], "k1", &["probe.count=50"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let shim = containerd.shim_pids();
    assert_eq!(shim.len(), 1, "one shim for one task: {shim:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = text(&containerd.ctr(&["task", "ls"]).stdout);
        if !ls.lines().any(|l| l.starts_with("k1") && l.contains("RUNNING")) {
            break;
        }
        assert!(Instant::now() < deadline, "containerd never saw the task end: {ls}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = containerd.ctr(&["task", "delete", "k1"]);
    assert!(containerd.ctr(&["container", "rm", "k1"]).status.success());
    let options = smartvm::SmartVmOptions {
        runtime_dir: containerd.runtime_dir(),
        data_dir: containerd.dir.path().join("data"),
        ..smartvm::SmartVmOptions::default()
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        smartvm::SmartVm::new(options).reclaim().await.unwrap();
    });
    assert!(runtime_dir_is_empty(&containerd), "gc leaves nothing");
    assert!(containerd.firecracker_pids().is_empty(), "no Firecracker of the task is left");
}

/// The VM dirs in smartvm's runtime dir (infrastructure such as `.drives` is not a VM's).
fn vm_dirs(containerd: &Containerd) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(containerd.runtime_dir())
        .map(|d| d.flatten().map(|e| e.file_name()).filter(|n| !n.to_string_lossy().starts_with('.')).collect())
        .unwrap_or_default()
}

fn runtime_dir_is_empty(containerd: &Containerd) -> bool {
    vm_dirs(containerd).is_empty()
}

/// The arguments of `ctr run [flags] --runtime smartvm` of the probe stand-in as task `id`.
fn probe_args<'a>(flags: &[&'a str], id: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run"];
    all.extend_from_slice(flags);
    all.extend_from_slice(&["--snapshotter", "native", "--runtime", RUNTIME]);
    all.extend_from_slice(&["--annotation", "io.smartvm.guest=probe", IMAGE, id]);
    all.extend_from_slice(args);
    all
}

/// Runs [`probe_args`] to its end.
fn run_probe(containerd: &Containerd, flags: &[&str], id: &str, args: &[&str]) -> std::process::Output {
    containerd.ctr(&probe_args(flags, id, args))
}

/// SIGKILL, wait until containerd sees the task stopped, delete the task and the container.
fn kill_and_remove(containerd: &Containerd, id: &str) {
    assert!(containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text(&containerd.ctr(&["task", "ls"]).stdout).contains("STOPPED") {
        assert!(Instant::now() < deadline, "the task never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(containerd.ctr(&["task", "delete", id]).status.success());
    assert!(containerd.ctr(&["container", "rm", id]).status.success());
}

#[test]
fn a_restarted_containerd_reconnects_to_its_running_tasks() {
    if !usable() {
        return;
    }
    let mut containerd = Containerd::start();
    containerd.import_image();
    let run = run_probe(&containerd, &["-d"], "r1", &["probe.count=50"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let before = containerd.firecracker_pids();
    containerd.restart();
    let ls = text(&containerd.ctr(&["task", "ls"]).stdout);
    assert!(
        ls.lines().any(|l| l.starts_with("r1") && l.contains("RUNNING")),
        "after the restart: {ls}\n{}",
        containerd.log()
    );
    assert_eq!(containerd.firecracker_pids(), before, "the same VM kept running");
    kill_and_remove(&containerd, "r1");
    assert!(runtime_dir_is_empty(&containerd));
}

#[test]
fn the_image_s_rootfs_becomes_the_vm_s_ext4_root_drive_and_goes_with_the_task() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let run = run_probe(&containerd, &["-d"], "fs1", &["probe.count=50"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let cache = containerd.dir.path().join("data/shim-rootfs");
    let images: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(images.len(), 1, "{images:?}");
    let cat = std::process::Command::new("debugfs").args(["-R", "cat /hello.txt"]).arg(&images[0]).output().unwrap();
    assert_eq!(text(&cat.stdout), "hello\n", "the layer's file is in the image");
    let vm_dir = std::fs::read_dir(containerd.runtime_dir())
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'));
    let console = std::fs::read_dir(vm_dir.unwrap().path()).unwrap().flatten().count();
    assert!(console > 0);
    kill_and_remove(&containerd, "fs1");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "the task's image goes with it");
}

#[test]
fn the_probe_sees_the_root_drive() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image();
    let out = run_probe(&containerd, &[], "fs2", &["probe.exit=0"]);
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.contains("type=block") && l.contains("ro=0")), "{stdout}");
    assert_eq!(out.status.code(), Some(0));
    assert!(containerd.ctr(&["container", "rm", "fs2"]).status.success());
}

#[test]
fn containers_of_one_image_share_its_layers_drive_on_overlayfs() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start();
    containerd.import_image_as("default", IMAGE, "overlayfs");
    for id in ["ov1", "ov2"] {
        let mut args = vec!["run", "-d", "--snapshotter", "overlayfs", "--runtime", RUNTIME];
        args.extend_from_slice(&["--annotation", "io.smartvm.guest=probe", IMAGE, id, "probe.count=50"]);
        let out = containerd.ctr(&args);
        assert!(out.status.success(), "{id}: {}\n{}", text(&out.stderr), containerd.log());
    }
    let cache = containerd.dir.path().join("data/shim-rootfs");
    let images: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ext4"))
        .collect();
    assert_eq!(images.len(), 1, "one image for both containers: {images:?}");
    assert!(images[0].file_name().unwrap().to_string_lossy().starts_with("layers-"));
    let cat = std::process::Command::new("debugfs").args(["-R", "cat /hello.txt"]).arg(&images[0]).output().unwrap();
    assert_eq!(text(&cat.stdout), "hello\n", "the layer's file is in the shared image");
    assert_eq!(vm_dirs(&containerd).len(), 2, "each container is its own VM");
    kill_and_remove(&containerd, "ov1");
    assert!(images[0].exists(), "the image stays while another container (and the layers) may use it");
    kill_and_remove(&containerd, "ov2");
    assert!(runtime_dir_is_empty(&containerd));
}
