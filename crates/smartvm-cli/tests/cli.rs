//! The `smartvm` binary end to end: console streaming, exit codes, error chains, Ctrl-C cleanup.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use smartvm::vm::ledger::VmJournal;

use common::{env, firecracker_bin, in_netns, wait_for_exit, Env};

#[test]
fn run_boots_the_probe_and_streams_its_console() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["run", "--boot-args", "console=ttyS0 probe.read=0:0", "--id", "cli-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    assert_eq!(first, "smartvm-probe boot cmdline=\"console=ttyS0 probe.read=0:0\"");
    assert!(stdout.contains("read drive=0 sector=0 status=no-device"));
    assert_eq!(stdout.lines().last(), Some("smartvm-probe done"));
    assert!(env.runtime_is_empty(), "run cleans up");
}

#[test]
fn run_accepts_firecracker_config_files() {
    let Some(env) = env() else { return };
    let kernel = smartvm::probe::install_probe_kernel(&env.dir.path().join("k")).unwrap();
    let disk = env.dir.path().join("disk.img");
    let mut data = vec![0u8; 4096];
    data[..5].copy_from_slice(b"hello");
    std::fs::write(&disk, data).unwrap();
    let cfg = env.dir.path().join("fc.json");
    let doc = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0 probe.read=0:0"},
        "drives": [{"drive_id": "d", "path_on_host": disk, "is_root_device": false, "is_read_only": true}],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 16}
    });
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let out = env.cmd(&["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("read drive=0 sector=0 status=ok data=hello"));
}

#[test]
fn bad_input_gets_a_typed_error_chain_and_exit_code() {
    let Some(env) = env() else { return };
    let cfg = env.dir.path().join("bad.json");
    std::fs::write(
        &cfg,
        r#"{"bootSource": {"kernelImagePath": "/nope"}, "machineConfig": {"vcpuCount": 99, "memSizeMib": 16}}"#,
    )
    .unwrap();
    let out = env.cmd(&["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error[INVALID_CONFIG]"), "{stderr}");
    // One problem per line, each naming its field.
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(problems.len(), 2, "{stderr}");
    for field in ["bootSource.kernelImagePath", "machineConfig.vcpuCount"] {
        assert!(problems.iter().any(|p| p.contains(field)), "{field}: {stderr}");
    }
    assert!(out.stdout.is_empty());
    assert!(env.runtime_is_empty());

    // The probe guest with a bad value: refused before the probe kernel is written anywhere.
    let out = env.cmd(&["run", "--mem", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("machineConfig.memSizeMib"));
    assert!(!env.dir.path().join("data/kernels").exists(), "invalid input installed nothing");

    let out = env.cmd(&["run", "--vcpus", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = env.cmd(&["run"]).env("SMARTVM_FIRECRACKER_BIN", "/nonexistent/fc").output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[BINARY_NOT_FOUND]"));
}

#[test]
fn ctrl_c_stops_and_cleans_up() {
    let Some(env) = env() else { return };
    let (mut child, mut lines) = env.spawn_run(&["--boot-args", "console=ttyS0 probe.count=10", "--id", "cli-int"]);
    let vm_dir = env.runtime().join("cli-int");
    // Synchronize on the guest's output rather than on time.
    let first_count = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("smartvm-probe count"));
    assert!(first_count.is_some(), "guest never counted");
    assert!(vm_dir.exists());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!vm_dir.exists(), "runtime dir removed after Ctrl-C");
}

#[test]
fn doctor_json_and_version() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["doctor", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(out.status.code(), Some(0));
    let probe = doc["checks"].as_array().unwrap().iter().find(|c| c["name"] == "probe-boot").unwrap();
    assert_eq!(probe["status"], "ok");
    let out = env.cmd(&["version"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("smartvm ") && text.contains("firecracker v1.12.1"), "{text}");
}

#[test]
fn a_crashed_host_program_takes_its_vm_along_and_gc_reclaims_the_rest() {
    let Some(env) = env() else { return };
    let (mut child, mut lines) = env.spawn_run(&["--boot-args", "console=ttyS0 probe.count=10", "--id", "cli-crash"]);
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.starts_with("smartvm-probe count")));
    let vm_dir = env.runtime().join("cli-crash");
    let fc_pid = VmJournal::read(&vm_dir).unwrap().pid().unwrap();
    assert!(Path::new(&format!("/proc/{fc_pid}")).exists());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // The parent-death signal kills Firecracker: wait for its exit through a pidfd (bounded).
    assert!(wait_for_exit(fc_pid, 5000), "Firecracker outlived its parent");
    assert!(vm_dir.exists(), "a crash leaves the runtime dir");
    let out = env.cmd(&["gc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli-crash");
    assert!(!vm_dir.exists(), "gc reclaimed it");
}

/// A hosted manifest (local paths, no checksums needed) for the probe kernel and a fresh ext4.
fn probe_bundle(env: &Env, id: &str, rootfs_mib: u64) -> PathBuf {
    let dir = env.dir.path().join(format!("bundle-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = smartvm::probe::install_probe_kernel(&dir).unwrap();
    let rootfs = dir.join("rootfs.ext4");
    std::fs::File::create(&rootfs).unwrap().set_len(rootfs_mib << 20).unwrap();
    let ok = Command::new("mkfs.ext4").args(["-F", "-q"]).arg(&rootfs).status().unwrap().success();
    assert!(ok, "mkfs.ext4");
    let manifest = serde_json::json!({
        "schemaVersion": 1, "bundleId": id, "arch": "x86_64", "firecrackerVersion": "v1.12.1",
        "rootfsType": "ext4", "rootfsIsReadOnly": false, "bootArgs": "console=ttyS0 probe.write=0:4000:hello",
        "kernel": {"path": kernel.file_name().unwrap().to_str().unwrap(), "fileName": "vmlinux"},
        "rootfs": {"path": "rootfs.ext4"}
    });
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

#[test]
fn hosted_bundle_boots_through_run_manifest() {
    let Some(env) = env() else { return };
    let manifest = probe_bundle(&env, "probe-bundle", 16);
    let out = env.cmd(&["run", "--manifest", manifest.to_str().unwrap(), "--mem", "16"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = smartvm::probe::ProbeReport::parse(stdout.lines());
    assert!(report.cmdline.as_deref().unwrap().contains("root=/dev/vda rw"), "{stdout}");
    let block = &report.devices_of("block")[0];
    assert_eq!((block.capacity, block.read_only), (Some(16 << 11), Some(false)));
    assert_eq!(report.writes[0].status, "ok");
    // The write went to the VM's staged copy: the cached bundle rootfs is untouched.
    let cached = env.dir.path().join("data/base-images/probe-bundle/rootfs.ext4");
    let bytes = std::fs::read(cached).unwrap();
    assert!(bytes[4000 * 512..4000 * 512 + 5].iter().all(|&b| b == 0));
}

#[test]
fn image_pull_ls_prune_and_two_concurrent_pulls() {
    let Some(env) = env() else { return };
    let first = probe_bundle(&env, "first", 64);
    let second = probe_bundle(&env, "second", 8);
    let spawn_pull = |m: &Path| {
        env.cmd(&["image", "pull", "--json", "--manifest", m.to_str().unwrap()]).stdout(Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn_pull(&first), spawn_pull(&first));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let (ja, jb): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&a.stdout).unwrap(), serde_json::from_slice(&b.stdout).unwrap());
    assert_eq!(ja["rootfsSha256"], jb["rootfsSha256"]);
    assert_eq!(ja["rootfsSizeBytes"], 64 << 20);
    assert!(env.cmd(&["image", "pull", "--manifest", second.to_str().unwrap()]).output().unwrap().status.success());
    let ls = env.cmd(&["image", "ls", "--json"]).output().unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    let ids: Vec<&str> = list.iter().map(|b| b["bundleId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["second", "first"]);
    let pruned = env.cmd(&["image", "prune", "--keep", "1"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&pruned.stdout).trim(), "first");
    let pruned_err = String::from_utf8_lossy(&pruned.stderr);
    assert!(
        !pruned_err.contains("WARN") && !pruned_err.contains('\x1b'),
        "reported once, no colour in a pipe: {pruned_err}"
    );
    let bad = env.cmd(&["image", "prune", "--keep", "0"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--keep"));
    let out = env.cmd(&["binary", "ensure"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), Path::new(&firecracker_bin()).to_str().unwrap());
}

#[test]
fn run_net_attaches_a_nic_inside_a_test_namespace() {
    let Some(env) = env() else { return };
    let ns = format!("svt-clinet-{}", std::process::id());
    let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    let _ = Command::new("ip").args(["netns", "delete", &ns]).stderr(Stdio::null()).status();
    ip(&["netns", "add", &ns]);
    struct Delete(String);
    impl Drop for Delete {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
        }
    }
    let _guard = Delete(ns.clone());
    ip(&["-n", &ns, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p"]);
    ip(&["-n", &ns, "link", "set", "uplink0", "up"]);
    ip(&["-n", &ns, "addr", "add", "192.0.2.10/24", "dev", "uplink0"]);
    ip(&["-n", &ns, "route", "add", "default", "dev", "uplink0"]);
    let mut cmd = in_netns(&ns, env.cmd(&["run", "--net"]));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = smartvm::probe::ProbeReport::parse(String::from_utf8_lossy(&out.stdout).lines());
    assert!(report.cmdline.as_deref().unwrap().contains("ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off"));
    let mac = report.devices_of("net")[0].mac.clone().unwrap();
    assert!(mac.starts_with("02:"), "{mac}");
    let links = Command::new("ip").args(["-n", &ns, "-o", "link", "show"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("svbr0") && !links.contains(": sv"), "bridge and TAP removed: {links}");
}

#[test]
fn an_untrusted_firecracker_is_refused_with_exit_4() {
    let Some(env) = env() else { return };
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let marker = env.dir.path().join("executed");
    let bin = env.dir.path().join("planted/firecracker");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&bin, Some(65534), Some(65534)).unwrap();
    let out = env.cmd(&["run", "--timeout", "1"]).env("SMARTVM_FIRECRACKER_BIN", &bin).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("error[UNTRUSTED_PATH]") && stderr.contains("chown root"), "{stderr}");
    let out = env.cmd(&["version"]).env("SMARTVM_FIRECRACKER_BIN", &bin).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!marker.exists(), "the planted binary was executed");
}

#[test]
fn ctrl_c_during_a_blocked_start_ends_within_a_second_and_leaves_nothing() {
    let Some(env) = env() else { return };
    // A Firecracker that never opens its API socket: start blocks in its wait-for-API step.
    let fake = env.dir.path().join("hanging-firecracker");
    std::fs::write(
        &fake,
        "#!/bin/bash\ncase \"$1\" in --version) echo 'Firecracker v1.12.1';; \
         *) exec -a \"hanging-firecracker $*\" sleep 600;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = env
        .cmd(&["run", "--id", "blocked"])
        .env("SMARTVM_FIRECRACKER_BIN", &fake)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let vm_dir = env.runtime().join("blocked");
    let socket = env.runtime().join("blocked/firecracker.sock").display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !VmJournal::read(&vm_dir).is_ok_and(|j| j.pid().is_some()) {
        assert!(std::time::Instant::now() < deadline, "start never reached spawn");
        std::thread::yield_now();
    }
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(wait_for_exit(child.id() as i32, 1000), "still running 1 s after SIGINT");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert!(env.runtime_is_empty(), "nothing left in the runtime dir");
    let survivors = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).into_owned();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                cmd.contains(&socket).then(|| format!("{cmd} {stat}"))
            })
            .collect()
    };
    // A killed process can still be listed while the kernel finishes its exit.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut left = survivors();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
        left = survivors();
    }
    assert!(left.is_empty(), "the stand-in Firecracker was killed: {left:?}");
}

#[test]
fn a_firecracker_killed_under_run_is_reported_with_its_code() {
    use std::io::{BufRead, Read};
    let Some(env) = env() else { return };
    let args = ["run", "--boot-args", "console=ttyS0 probe.count=1000", "--id", "killed"];
    let mut child = env.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.starts_with("smartvm-probe count")));
    let fc_pid = VmJournal::read(&env.runtime().join("killed")).unwrap().pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(fc_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    lines.for_each(drop);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(5), "{stderr}");
    assert!(stderr.contains("error[PROCESS_FAILED]: Firecracker ended with signal 9"), "{stderr}");
    assert!(env.runtime_is_empty());
}

#[test]
fn run_says_what_happened_on_stderr_and_keeps_stdout_for_the_console() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["run", "--id", "said", "--mem", "16"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().all(|l| l.starts_with("smartvm-probe")), "only the console on stdout: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("smartvm: started VM said (kernel ") && lines[0].contains("1 vCPU, 16 MiB"),
        "{stderr}"
    );
    assert!(lines[1].starts_with("smartvm: VM said exited (code 0) after "), "{stderr}");
    assert!(lines[1].contains("; first output ") && lines[1].ends_with(" ms after the start"), "{stderr}");

    // Without any Firecracker: where it looked and how to get one, exit 4, nothing downloaded.
    let out = env
        .cmd(&["run"])
        .env("SMARTVM_FIRECRACKER_BIN", env.dir.path().join("none"))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("error[BINARY_NOT_FOUND]") && stderr.contains("smartvm binary ensure"), "{stderr}");
}

#[test]
fn a_closed_stdout_stops_the_vm_with_141() {
    use std::io::BufRead;
    let Some(env) = env() else { return };
    let mut run = common::Running(
        env.cmd(&["run", "--boot-args", "console=ttyS0 probe.count=20"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdout = std::io::BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        stdout.read_line(&mut line).unwrap();
    }
    drop(stdout); // like `| head -2`
    assert!(common::wait_for_exit(run.id() as i32, 10_000), "run ends once nobody reads the console");
    assert_eq!(run.wait().unwrap().code(), Some(141));
    assert!(env.runtime_is_empty());
}

#[test]
fn usage_errors_name_the_flag() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["image", "prune", "--keep", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keep"));
    let out = env.cmd(&["image", "pull", "--preset", "hosted"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--manifest"));
    // A newer manifest schema is named as such.
    let manifest = env.dir.path().join("m.json");
    std::fs::write(&manifest, r#"{"schemaVersion": 2, "something": "new"}"#).unwrap();
    let out = env.cmd(&["image", "pull", "--manifest", manifest.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("unsupported schemaVersion 2 (supported: 1)"), "{stderr}");
}

#[test]
fn run_no_api_boots_without_the_api_and_refuses_what_needs_it() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["-v", "run", "--no-api", "--id", "cli-noapi"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().last(), Some("smartvm-probe done"));
    assert!(stderr.contains("path=NoApi"), "the debug log says which boot path was taken: {stderr}");
    assert!(env.runtime_is_empty());
    let metadata = env.dir.path().join("md.json");
    std::fs::write(&metadata, "{}").unwrap();
    for flag in [vec!["-d"], vec!["--metadata", metadata.to_str().unwrap()], vec!["--socket-path", "/tmp/x.sock"]] {
        let out = env.cmd(&[&["run", "--no-api"], &flag[..]].concat()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--no-api with {flag:?} is a usage error");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag[0]), "{flag:?}");
    }
}

#[test]
fn relative_paths_resolve_against_the_current_dir_or_the_config_file() {
    let Some(env) = env() else { return };
    let mut data = vec![0u8; 4096];
    data[..8].copy_from_slice(b"relative");
    std::fs::write(env.dir.path().join("rel.img"), &data).unwrap();
    let args = ["run", "--rootfs", "rel.img", "--boot-args", "console=ttyS0 probe.read=0:0"];
    let out = env.cmd(&args).current_dir(env.dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status=ok data=relative"));

    // In a config file, relative to the file (run from elsewhere).
    let conf_dir = env.dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("disk.img"), &data).unwrap();
    let kernel = smartvm::probe::install_probe_kernel(&conf_dir).unwrap();
    let doc = serde_json::json!({
        "bootSource": {"kernelImagePath": kernel.file_name().unwrap().to_str().unwrap(), "bootArgs": "console=ttyS0 probe.read=0:0"},
        "machineConfig": {"vcpuCount": 1, "memSizeMib": 16},
        "drives": [{"driveId": "d", "pathOnHost": "disk.img", "isRootDevice": false, "isReadOnly": true}]
    });
    std::fs::write(conf_dir.join("vm.json"), doc.to_string()).unwrap();
    let out = env.cmd(&["run", "--config", "conf/vm.json"]).current_dir(env.dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status=ok data=relative"));
}

#[test]
fn firectl_flags_completions_man_and_quiet() {
    let Some(env) = env() else { return };
    let mut data = vec![0u8; 4096];
    data[..5].copy_from_slice(b"extra");
    std::fs::write(env.dir.path().join("extra.img"), &data).unwrap();
    std::fs::write(env.dir.path().join("meta.json"), r#"{"latest": {"meta-data": {"x": 1}}}"#).unwrap();
    let args = [
        "-q",
        "run",
        "--add-drive",
        "extra.img:ro",
        "--metadata",
        "meta.json",
        "--boot-args",
        "console=ttyS0 probe.read=0:0 probe.write=0:1:nope",
    ];
    let out = env.cmd(&args).current_dir(env.dir.path()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("read drive=0 sector=0 status=ok data=extra"), "{stdout}");
    assert!(!stdout.contains("write drive=0 sector=1 status=ok"), "the added drive is read-only: {stdout}");
    assert!(stderr.is_empty(), "-q: no notices: {stderr}");
    let out = env.cmd(&["run", "--tap-device", "nomac"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "TAP/MAC is required");

    let bash = env.cmd(&["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("_smartvm()"));
    let man = env.cmd(&["man"]).output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH smartvm 1") && man.contains("attach"), "{man}");
}

#[test]
fn json_outputs_help_lines_and_a_refused_kernel() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["version", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["smartvm"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["firecracker"]["version"], "v1.12.1");
    let out = env.cmd(&["gc", "--json"]).output().unwrap();
    let gc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(gc["reclaimed"].as_array().unwrap().is_empty() && gc["rejected"].is_array());
    let out = env.cmd(&["image", "prune", "--keep", "1", "--json"]).output().unwrap();
    let pruned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pruned, serde_json::json!({"evicted": []}));
    let out = env.cmd(&["image", "ls"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no base images"));
    let out = env.cmd(&["run", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--json needs --detach");

    // help: lines where a fix is known.
    let out = env.cmd(&["ps"]).env("SMARTVM_AGENT_SOCKET", env.dir.path().join("none.sock")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).lines().last().unwrap().starts_with("help: start the agent"));

    // A kernel Firecracker refuses: Firecracker ended with an error, exit 5.
    let junk = env.dir.path().join("junk-kernel");
    std::fs::write(&junk, b"not an elf").unwrap();
    let out = env.cmd(&["run", "--kernel", junk.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("error[API_ERROR]"), "the cause's code, not START_FAILED: {stderr}");
    assert!(env.runtime_is_empty());
}

#[test]
fn a_malformed_probe_argument_is_reported_not_guessed() {
    let Some(env) = env() else { return };
    let out = env.cmd(&["run", "--timeout", "1", "--boot-args", "console=ttyS0 probe.watch=x:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(124));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("smartvm-probe read arg=x:1 status=bad-argument"), "{stdout}");
    assert!(!stdout.contains("sector=0"), "{stdout}");
}

#[test]
fn gc_removes_what_killed_pulls_left() {
    let Some(env) = env() else { return };
    let stale = env.dir.path().join("data/base-images/.tmp-somebundle-a1b2c3");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("vmlinux"), b"half a kernel").unwrap();
    let out = env.cmd(&["gc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed the partial download"), "{:?}", out);
    assert!(!stale.exists());
    assert!(!env.dir.path().join("data/base-images/.locks/somebundle.lock").exists(), "no lock file left either");
}

#[test]
fn log_level_shows_firecrackers_log_and_socket_path_links_the_api_socket() {
    let Some(env) = env() else { return };
    let link = env.dir.path().join("api.sock");
    let args = [
        "run",
        "--id",
        "loud",
        "--log-level",
        "Info",
        "--socket-path",
        link.to_str().unwrap(),
        "--timeout",
        "1",
        "--boot-args",
        "console=ttyS0 probe.count=50",
    ];
    // Ends by itself (--timeout 1).
    let run = env.cmd(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::symlink_metadata(&link).is_err() {
        assert!(std::time::Instant::now() < deadline, "the socket link appears");
        std::thread::yield_now();
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let info = runtime.block_on(smartvm::api::ApiClient::new(&link).send(&smartvm::api::GetInstanceInfo)).unwrap();
    assert_eq!(info.id, "loud", "the link reaches the VM's API");
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("[loud:main]"), "Firecracker's log on stderr: {stderr}");
    assert!(std::fs::symlink_metadata(&link).is_err(), "the link is removed at the end");
    // A level quieter than Info takes the API boot path (a config-file boot reports at Info).
    let out = env.cmd(&["run", "--log-level", "Warning"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Api boot"), "{}", String::from_utf8_lossy(&out.stderr));
}
