//! VMs run under Firecracker's jailer (chroot, unprivileged uid/gid, cgroups), and reclaim of
//! orphaned VMs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{env, next_count};
use std::os::unix::fs::MetadataExt;

use smartvm::config::{DriveConfig, LogLevel, LoggerConfig, MetricsConfig, VsockConfig};
use smartvm::process::{JailerConfig, StopStep};
use smartvm::vm::{ProcessRecord, Resource, VmJournal};
use smartvm::{MicroVm, VmConfig, VmState};

/// A jail base on a filesystem that allows device nodes (/dev/shm is nodev).
fn jail_base() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("svjail").tempdir_in("/tmp").unwrap()
}

fn jailer(env: &common::TestEnv, base: &Path) -> Option<JailerConfig> {
    let binary = env.binary.with_file_name("jailer");
    if !binary.exists() {
        assert!(std::env::var("SMARTVM_REQUIRE_KVM").is_err(), "jailer missing beside {}", env.binary.display());
        common::skipped(&format!("no jailer beside {}", env.binary.display()));
        return None;
    }
    let mut j = JailerConfig::new(binary, 65534, 65534);
    j.chroot_base_dir = base.to_path_buf();
    Some(j)
}

fn uid_of(pid: i32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
}

#[tokio::test]
async fn jailed_probe_sees_its_drives_runs_unprivileged_and_is_cleaned_up() {
    let Some(env) = env() else { return };
    let base = jail_base();
    let Some(mut jail) = jailer(&env, base.path()) else { return };
    if Path::new("/sys/fs/cgroup/cpuset").is_dir() {
        jail.cgroup_version = Some(1);
        jail.cgroups = vec![("cpuset.cpus".into(), "0".into()), ("cpuset.mems".into(), "0".into())];
    }
    let rw = env.disk("jail-rw.img", 8, "jail-source");
    let ro = env.disk("jail-ro.img", 16, "read-only");
    let args = smartvm::probe::ProbeArgs::new()
        .read(0, 0)
        .write(0, 1, "jailed-write")
        .write(1, 1, "nope")
        .count(20)
        .to_boot_args();
    let cfg = env
        .probe_config("jailed", &args)
        .with_drive(DriveConfig::new("rw", &rw))
        .with_drive(DriveConfig::new("ro", &ro).read_only());
    let mut opts = env.runtime_options();
    opts.jailer = Some(jail.clone());
    let vm = MicroVm::new(&cfg, opts).unwrap();
    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    assert_eq!(uid_of(pid).as_deref(), Some("65534"), "Firecracker runs as the jail user");
    let root = jail.chroot_root(&env.binary, "jailed");
    assert!(vm.socket_path().starts_with(&root));
    let cgroups = jail.cgroup_dirs(&env.binary, "jailed");
    for cg in &cgroups {
        let tasks = std::fs::read_to_string(cg.join("tasks")).unwrap();
        assert!(tasks.lines().any(|t| t == pid.to_string()), "{} holds the VM", cg.display());
    }
    next_count(&vm, None, Duration::from_secs(5)).await.expect("jailed guest runs");
    let lines = vm.console().lines();
    let r = smartvm::probe::ProbeReport::parse(lines.iter().map(String::as_str));
    assert_eq!(r.reads[0].data.as_deref(), Some("jail-source"));
    let statuses: Vec<&str> = r.writes.iter().map(|w| w.status.as_str()).collect();
    assert_eq!(statuses, ["ok", "ioerr"]);
    assert_eq!(&std::fs::read(root.join("drives/rw-jail-rw.img")).unwrap()[512..524], b"jailed-write");
    assert!(std::fs::read(&rw).unwrap()[512..1024].iter().all(|&b| b == 0), "source untouched");

    vm.pause().await.unwrap();
    vm.resume().await.unwrap();
    let outcome = vm.stop().await.unwrap();
    assert_eq!(outcome.step, StopStep::CtrlAltDel);
    vm.cleanup().await.unwrap();
    assert_eq!(vm.state(), VmState::Stopped);
    assert!(!jail.jail_dir(&env.binary, "jailed").exists(), "jail removed");
    for cg in &cgroups {
        assert!(!cg.exists(), "cgroup {} removed", cg.display());
    }
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn jailed_logger_metrics_and_vsock_show_at_the_configured_paths() {
    let Some(env) = env() else { return };
    let base = jail_base();
    let Some(jail) = jailer(&env, base.path()) else { return };
    let mut opts = env.runtime_options();
    opts.jailer = Some(jail.clone());
    let (log, metrics, vsock) =
        (env.dir.path().join("vm.log"), env.dir.path().join("vm.metrics"), env.dir.path().join("v.sock"));
    std::fs::write(&log, "kept from before\n").unwrap();
    let mut cfg = env.probe_config("jailout", "probe.count=200").with_vsock(VsockConfig::new(3, &vsock));
    cfg.logger = Some(LoggerConfig::new(&log, LogLevel::Info));
    cfg.metrics = Some(MetricsConfig { metrics_path: metrics.clone() });
    let vm = MicroVm::new(&cfg, opts).unwrap();
    vm.start().await.unwrap();
    let root = jail.chroot_root(&env.binary, "jailout");
    for link in [&log, &metrics, &vsock] {
        assert!(
            std::fs::symlink_metadata(link).unwrap().file_type().is_symlink(),
            "{} links into the jail",
            link.display()
        );
    }
    assert_eq!(vm.vsock_socket(), Some(root.join("vsock.sock")));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[jailout:main]"), "live log through the link: {text}");
    vm.flush_metrics().await.unwrap();
    assert!(std::fs::read_to_string(&metrics).unwrap().contains("\"utc_timestamp_ms\""));
    // A host-initiated vsock connection reaches Firecracker through the link.
    std::os::unix::net::UnixStream::connect(&vsock).expect("connect through the vsock link");

    vm.stop().await.unwrap();
    vm.cleanup().await.unwrap();
    assert!(!jail.jail_dir(&env.binary, "jailout").exists(), "jail removed");
    for (path, wanted) in [(&log, "[jailout:main]"), (&metrics, "utc_timestamp_ms")] {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.is_file(), "{} is a file again", path.display());
        assert!(std::fs::read_to_string(path).unwrap().contains(wanted), "{} kept its contents", path.display());
    }
    assert!(std::fs::symlink_metadata(&vsock).is_err(), "the vsock link is gone");
}

#[tokio::test]
async fn jailed_snapshots_restore_into_jailed_clones_with_their_own_drives() {
    let Some(env) = env() else { return };
    let base = jail_base();
    let Some(jail) = jailer(&env, base.path()) else { return };
    let mut opts = env.runtime_options();
    opts.jailer = Some(jail.clone());
    let disk = env.disk("jsnap.img", 16, "source");
    let args = smartvm::probe::ProbeArgs::new().write(0, 1, "before-snapshot").watch(0, 1, 5).to_boot_args();
    let cfg = env.probe_config("jsrc", &args).with_drive(DriveConfig::new("data", &disk));
    let seen =
        |text: &'static str| move |l: &str| l == format!("smartvm-probe read drive=0 sector=1 status=ok data={text}");
    let vm = MicroVm::new(&cfg, opts.clone()).unwrap();
    vm.start().await.unwrap();
    let console = vm.console();
    assert!(console.wait_for_line(Duration::from_secs(5), seen("before-snapshot")).await.is_some());
    vm.pause().await.unwrap();
    let bundle = env.dir.path().join("jsnap");
    let snap = vm.snapshot(&bundle, None).await.unwrap();
    for file in [&snap.state_path, &snap.mem_path, &snap.drives[0].path] {
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "{} is ours and private", file.display());
    }
    assert!(!jail.chroot_root(&env.binary, "jsrc").join("snapshot-out").exists(), "nothing left in the jail");
    vm.cleanup().await.unwrap();

    let mut clones = Vec::new();
    for id in ["jclone0", "jclone1"] {
        let clone = MicroVm::new(&VmConfig { id: Some(id.into()), ..cfg.clone() }, opts.clone()).unwrap();
        clone.restore_snapshot(&snap, true, false).await.unwrap();
        assert_eq!(clone.state(), VmState::Running);
        clones.push(clone);
    }
    let copy = |id: &str| jail.chroot_root(&env.binary, id).join("drives").join(&snap.drives[0].file_name);
    for (vm, id, text) in [(&clones[0], "jclone0", "clone-zero"), (&clones[1], "jclone1", "clone-one!")] {
        common::write_sector(&copy(id), 1, text);
        let console = vm.console();
        assert!(console.wait_for_line(Duration::from_secs(5), seen(text)).await.is_some(), "{:?}", console.lines());
    }
    let c1 = clones[1].console();
    assert!(!c1.lines().iter().any(|l| l.contains("clone-zero")), "clones share no drive");
    for (vm, id) in clones.iter().zip(["jclone0", "jclone1"]) {
        vm.cleanup().await.unwrap();
        assert!(!jail.jail_dir(&env.binary, id).exists());
    }
    assert_eq!(&std::fs::read(&snap.drives[0].path).unwrap()[512..527], b"before-snapshot", "bundle untouched");
}

#[tokio::test]
async fn unsupported_jailed_configs_fail_before_anything_exists() {
    let Some(env) = env() else { return };
    let base = jail_base();
    let Some(jail) = jailer(&env, base.path()) else { return };
    let mut opts = env.runtime_options();
    opts.jailer = Some(jail.clone());
    // Refused when the VM is created, before anything exists.
    let keep = env.disk("keep.img", 8, "x");
    let cfg = env.probe_config("jailkeep", "").with_drive(DriveConfig::new("keep", &keep).ephemeral(false));
    let err = MicroVm::new(&cfg, opts.clone()).unwrap_err();
    assert_eq!(err.code(), "INVALID_CONFIG");
    assert!(err.to_string().contains("drives[0].ephemeral"), "{err}");
    // A FIFO as the log path cannot be shown from inside a jail: refused at start, nothing left.
    let fifo = env.dir.path().join("log.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut cfg = env.probe_config("jailfifo", "");
    cfg.logger = Some(LoggerConfig::new(&fifo, LogLevel::Info));
    let vm = MicroVm::new(&cfg, opts).unwrap();
    let err = vm.start().await.unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain += &format!(": {s}");
        source = s.source();
    }
    assert!(chain.contains("logger.logPath: must be a regular file or absent"), "{chain}");
    assert!(
        std::fs::read_dir(base.path().join("firecracker")).map_or(true, |mut d| d.next().is_none()),
        "no jail left"
    );
    assert!(!env.smartvm.runtime_dir().join("jailkeep").exists());
    assert!(!vm.runtime_dir().exists());
}

#[tokio::test]
async fn reclaim_kills_orphans_and_spares_owned_vms() {
    let Some(env) = env() else { return };
    let base = jail_base();
    let mut options = env.smartvm.options().clone();
    options.jailer = jailer(&env, base.path());
    if options.jailer.is_none() {
        return;
    }
    // A stand-in for an orphaned VM process, and an owner that has exited.
    let mut orphan = Command::new("sleep").arg("600").spawn().unwrap();
    let mut owner = Command::new("true").spawn().unwrap();
    let owner_pid = owner.id() as i32;
    owner.wait().unwrap();
    let run = env.smartvm.runtime_dir().to_path_buf();
    let jail_dir = base.path().join("firecracker/orphan");
    std::fs::create_dir_all(jail_dir.join("root")).unwrap();
    let write = |name: &str, journal: VmJournal| {
        let dir = run.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        journal.write(&dir).unwrap();
        dir
    };
    let process = |pid: i32| {
        let sleep = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let record = ProcessRecord::new(vec![sleep], vec!["600".into()]);
        Resource::Process(ProcessRecord { pid: Some(pid), start_time: smartvm::vm::process_start_time(pid), ..record })
    };
    let orphan_pid = orphan.id() as i32;
    let orphan_dir = write(
        "orphan",
        VmJournal {
            vm_id: "orphan".into(),
            owner_pid: Some(owner_pid),
            owner_start_time: Some(1),
            resources: vec![
                Resource::RuntimeDir { path: run.join("orphan") },
                Resource::JailDir { path: jail_dir.clone() },
                process(orphan_pid),
            ],
            ..VmJournal::default()
        },
    );
    let mut owned_proc = Command::new("sleep").arg("600").spawn().unwrap();
    let owned_pid = owned_proc.id() as i32;
    let owned_dir = write(
        "owned",
        VmJournal {
            vm_id: "owned".into(),
            resources: vec![Resource::RuntimeDir { path: run.join("owned") }, process(owned_pid)],
            ..VmJournal::default()
        }
        .owned_by_this_process(),
    );
    let smartvm = smartvm::SmartVm::new(options);
    let report = smartvm.reclaim().await.unwrap();
    assert_eq!(report.reclaimed, ["orphan"], "{report:?}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(orphan.wait().unwrap().signal(), Some(9), "the orphan was killed");
    assert!(!orphan_dir.exists() && !jail_dir.exists());
    assert!(owned_dir.exists(), "a VM whose owner lives is left alone");
    owned_proc.kill().unwrap();
    owned_proc.wait().unwrap();
    let report = smartvm.reclaim().await.unwrap();
    assert_eq!(report.reclaimed, ["owned"], "once its process is gone it is reclaimed");
}
