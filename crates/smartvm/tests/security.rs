//! smartvm as root on a shared host: each attack a local user could try is a test here.
//! Binaries and dirs another user could write are never executed or trusted; forged journals
//! are harmless and reported; a running VM's files are private; bundles cannot point outside
//! themselves.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use smartvm::snapshot::Snapshot;
use smartvm::vm::{ProcessRecord, Resource, VmJournal};
use smartvm::{MicroVm, SmartVm, SmartVmOptions};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o777
}

/// A "firecracker" that, if ever executed, leaves `marker` behind.
fn planted_binary(path: &Path, marker: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\ntouch {}\necho 'Firecracker v1.12.1'\n", marker.display())).unwrap();
    chmod(path, 0o777);
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

#[tokio::test]
async fn untrusted_binaries_are_never_executed() {
    if !is_root() {
        common::skipped("needs root to plant files owned by another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("executed");
    let data = dir.path().join("data");
    planted_binary(&data.join("bin/v1.12.1/firecracker"), &marker);
    let options = SmartVmOptions {
        data_dir: data.clone(),
        runtime_dir: dir.path().join("run"),
        ..SmartVmOptions::from_lookup(|_| None)
    };
    // Implicit: found in the data dir.
    let implicit = SmartVm::new(options.clone());
    let err = implicit.find_binary().unwrap_err();
    assert_eq!(err.code(), "UNTRUSTED_PATH");
    assert!(err.to_string().contains("owner uid 65534"), "{err}");
    assert!(implicit.binary_version(&data.join("bin/v1.12.1/firecracker")).is_none());
    let kernel = smartvm::probe::install_probe_kernel(&dir.path().join("k")).unwrap();
    let cfg = smartvm::VmConfig::new(&kernel).with_id("planted");
    assert_eq!(implicit.create_vm(&cfg).unwrap_err().code(), "UNTRUSTED_PATH");
    // Explicit: SMARTVM_FIRECRACKER_BIN / firecracker_binary_path, and straight runtime options.
    let explicit_path = dir.path().join("explicit/firecracker");
    planted_binary(&explicit_path, &marker);
    let explicit =
        SmartVm::new(SmartVmOptions { firecracker_binary_path: Some(explicit_path.clone()), ..options.clone() });
    assert_eq!(explicit.find_binary().unwrap_err().code(), "UNTRUSTED_PATH");
    let vm = MicroVm::new(&cfg, smartvm::vm::VmRuntimeOptions::new(&explicit_path, dir.path().join("run"))).unwrap();
    assert_eq!(vm.start().await.unwrap_err().root().code(), "UNTRUSTED_PATH");
    assert!(!vm.runtime_dir().exists(), "nothing created");
    // A trusted binary in a directory others may write to is just as untrusted.
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::copy("/bin/true", open_dir.join("firecracker")).unwrap();
    chmod(&open_dir, 0o777);
    let e = smartvm::trust::check(&open_dir.join("firecracker"), smartvm::trust::Expect::Executable).unwrap_err();
    assert_eq!((e.path.as_path(), e.problem), (open_dir.as_path(), smartvm::trust::TrustProblem::Writable));
    assert!(!marker.exists(), "the planted binary was executed");
}

#[tokio::test]
async fn a_runtime_dir_made_by_another_user_is_refused() {
    let Some(env) = common::env() else { return };
    if !is_root() {
        return;
    }
    let run = env.dir.path().join("foreign-run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
    // Its owner plants a journal naming a root-owned file.
    let victim = env.dir.path().join("root-file");
    std::fs::write(&victim, b"keep").unwrap();
    let forged = run.join("vm");
    std::fs::create_dir(&forged).unwrap();
    let journal = VmJournal {
        vm_id: "vm".into(),
        owner_pid: Some(i32::MAX - 1),
        resources: vec![Resource::RuntimeDir { path: forged.clone() }, Resource::Socket { path: victim.clone() }],
        ..VmJournal::default()
    };
    journal.write(&forged).unwrap();
    let options = SmartVmOptions { runtime_dir: run.clone(), ..env.smartvm.options().clone() };
    let smartvm = SmartVm::new(options);
    assert_eq!(smartvm.reclaim().await.unwrap_err().code(), "UNTRUSTED_PATH");
    let vm = smartvm.create_vm(&env.probe_config("in-foreign", "")).unwrap();
    let err = vm.start().await.unwrap_err();
    assert_eq!(err.root().code(), "UNTRUSTED_PATH", "{err}");
    assert!(victim.exists() && !run.join("in-foreign").exists());
}

#[tokio::test]
async fn forged_journals_are_harmless_and_reported() {
    let Some(env) = common::env() else { return };
    let run = env.smartvm.runtime_dir().to_path_buf();
    std::fs::create_dir_all(&run).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim_file = outside.path().join("victim-file");
    let victim_dir = outside.path().join("victim-dir");
    std::fs::write(&victim_file, b"keep").unwrap();
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("x.img"), b"keep").unwrap();
    // A foreign process with its real start time, claimed to be Firecracker.
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = sleeper.id() as i32;
    let claimed = ProcessRecord::new(vec![env.binary.clone()], vec!["--api-sock".into()]);
    let process = ProcessRecord { pid: Some(pid), start_time: smartvm::vm::process_start_time(pid), ..claimed };
    let dir = run.join("forged");
    std::fs::create_dir(&dir).unwrap();
    // A symlink inside the runtime dir pointing out: a drive "staged" through it.
    std::os::unix::fs::symlink(&victim_dir, dir.join("drives")).unwrap();
    let staged =
        smartvm::staging::StagedDrive { drive_id: "d".into(), source: "/img".into(), staged: dir.join("drives/x.img") };
    let journal = VmJournal {
        vm_id: "forged".into(),
        owner_pid: Some(i32::MAX - 1),
        resources: vec![
            Resource::RuntimeDir { path: dir.clone() },
            Resource::JailDir { path: victim_dir.clone() },
            Resource::StagedDrive(staged),
            Resource::Tap { name: "lo".into() },
            Resource::Socket { path: victim_file.clone() },
            Resource::Process(process),
        ],
        ..VmJournal::default()
    };
    journal.write(&dir).unwrap();
    // A journal others may write, one naming another dir, and a symlink among the VM dirs.
    let loose = run.join("loose");
    std::fs::create_dir(&loose).unwrap();
    VmJournal {
        vm_id: "loose".into(),
        resources: vec![Resource::RuntimeDir { path: loose.clone() }],
        ..journal.clone()
    }
    .write(&loose)
    .unwrap();
    chmod(&loose.join(smartvm::vm::ledger::JOURNAL_FILE), 0o666);
    let elsewhere = run.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    VmJournal { resources: vec![Resource::RuntimeDir { path: victim_dir.clone() }], ..journal.clone() }
        .write(&elsewhere)
        .unwrap();
    std::os::unix::fs::symlink(&victim_dir, run.join("planted-link")).unwrap();

    let report = env.smartvm.reclaim().await.unwrap();
    assert!(report.reclaimed.is_empty(), "{report:?}");
    let mut rejected: Vec<String> =
        report.rejected.iter().map(|r| r.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    rejected.sort();
    assert_eq!(rejected, ["elsewhere", "loose", "planted-link"]);
    assert_eq!(report.failures.len(), 5, "every forged entry reported: {:#?}", report.failures);
    assert!(smartvm::vm::process_start_time(pid).is_some(), "the foreign process was not killed");
    assert!(victim_file.exists() && victim_dir.join("x.img").exists(), "nothing outside was deleted");
    assert!(dir.join(smartvm::vm::ledger::JOURNAL_FILE).exists(), "kept for the next reclaim");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

fn all_modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![];
    for e in std::fs::read_dir(root).unwrap().flatten() {
        out.push((e.path(), mode(&e.path())));
        if e.file_type().unwrap().is_dir() {
            out.extend(all_modes(&e.path()));
        }
    }
    out
}

#[tokio::test]
async fn a_running_vm_keeps_everything_private_and_bundles_relocate() {
    let Some(env) = common::env() else { return };
    let disk = env.disk("private-src.img", 8, "source");
    chmod(&disk, 0o644);
    let cfg = env.probe_config("private", "probe.count=5").with_drive(smartvm::config::DriveConfig::new("rw", &disk));
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    common::next_count(&vm, None, Duration::from_secs(5)).await.expect("counting");
    assert_eq!(mode(env.smartvm.runtime_dir()), 0o700);
    let vm_dir = vm.runtime_dir();
    assert_eq!(mode(vm_dir), 0o700);
    assert_eq!(mode(&vm_dir.join(smartvm::vm::ledger::JOURNAL_FILE)), 0o600);
    assert_eq!(mode(&vm.socket_path()), 0o600, "API socket");
    assert_eq!(mode(&vm_dir.join("drives/rw-private-src.img")), 0o600, "staged copy narrower than its 0644 source");

    vm.pause().await.unwrap();
    let bundle = env.dir.path().join("bundle-a");
    let snap = vm.snapshot(&bundle, None).await.unwrap();
    env.smartvm.remove_vm("private").await.unwrap();
    for (path, m) in all_modes(&bundle) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(m, want, "{}", path.display());
    }
    assert_eq!(mode(&bundle), 0o700);
    // Relocated: moved to another dir, the bundle still restores.
    let moved = env.dir.path().join("bundle-moved");
    std::fs::rename(&bundle, &moved).unwrap();
    let loaded = Snapshot::load(&moved).unwrap();
    assert!(loaded.mem_path.starts_with(std::fs::canonicalize(&moved).unwrap()));
    assert_eq!(loaded.drives.len(), snap.drives.len());
    let restored = env.smartvm.restore_vm(&cfg.clone().with_id("relocated"), &loaded, true).await.unwrap();
    common::next_count(&restored, None, Duration::from_secs(5)).await.expect("the relocated bundle restores");
    env.smartvm.remove_vm("relocated").await.unwrap();

    // Tampered: paths that leave the bundle, directly or through a symlink, are refused.
    let json = moved.join(smartvm::snapshot::SNAPSHOT_FILE);
    let original = std::fs::read_to_string(&json).unwrap();
    let outside = env.disk("outside.mem", 1, "secret");
    for tampered in [
        original.replace("\"vm.mem\"", &format!("{:?}", outside.display().to_string())),
        original.replace("\"vm.mem\"", "\"../bundle-other/vm.mem\""),
    ] {
        std::fs::write(&json, tampered).unwrap();
        let err = Snapshot::load(&moved).unwrap_err();
        assert_eq!(err.code(), "SNAPSHOT_FAILED");
        assert!(err.to_string().contains("memPath"), "{err}");
    }
    std::fs::write(&json, &original).unwrap();
    std::fs::remove_file(moved.join("vm.mem")).unwrap();
    std::os::unix::fs::symlink(&outside, moved.join("vm.mem")).unwrap();
    assert!(Snapshot::load(&moved).unwrap_err().to_string().contains("outside the bundle"));
}
