//! Full and Diff snapshots of a counting probe guest, restored into new processes.

mod common;

use std::time::Duration;

use common::{env, last_count, next_count};
use smartvm::snapshot::Snapshot;
use smartvm::VmState;

fn first_count(lines: &[String]) -> Option<u64> {
    lines.iter().find_map(|l| l.strip_prefix("smartvm-probe count n=")?.parse().ok())
}

#[tokio::test]
async fn full_then_diff_snapshot_restore_and_continue_counting() {
    let Some(env) = env() else { return };
    let snaps = env.dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let mut cfg = env.probe_config("origin", "probe.count=5");
    cfg.machine_config.track_dirty_pages = Some(true);
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let seen = next_count(&vm, Some(3), Duration::from_secs(5)).await.expect("counting");
    vm.pause().await.unwrap();
    let full = Snapshot::full(snaps.join("full.state"), snaps.join("full.mem"));
    vm.create_snapshot(&full.create_params()).await.unwrap();
    let at_full = last_count(&vm).await.unwrap();
    assert!(at_full >= seen);
    env.smartvm.remove_vm("origin").await.unwrap();

    // Restore the Full snapshot into a new process, keep tracking dirty pages for a Diff.
    let restored = env.smartvm.create_vm(&smartvm::VmConfig { id: Some("restored".into()), ..cfg.clone() }).unwrap();
    restored.restore_snapshot(&full, true, true).await.unwrap();
    assert_eq!(restored.state(), VmState::Running);
    let next = next_count(&restored, None, Duration::from_secs(5)).await.expect("restored guest counts");
    let lines = restored.console().lines();
    let first = first_count(&lines).unwrap();
    assert!(first == at_full + 1 || first == at_full + 2, "continues from {at_full}, got {first}: {lines:?}");
    assert!(next >= first);

    let later = next_count(&restored, Some(first + 2), Duration::from_secs(5)).await.unwrap();
    restored.pause().await.unwrap();
    let diff = Snapshot::diff(snaps.join("diff.state"), snaps.join("diff.mem"), full.clone());
    restored.create_snapshot(&diff.create_params()).await.unwrap();
    let at_diff = last_count(&restored).await.unwrap();
    assert!(at_diff >= later);
    env.smartvm.remove_vm("restored").await.unwrap();

    // Diff restored through its base: merged memory lives in the new VM's runtime dir.
    let from_diff = env
        .smartvm
        .restore_vm(&smartvm::VmConfig { id: Some("from-diff".into()), ..cfg.clone() }, &diff, true)
        .await
        .unwrap();
    assert!(from_diff.runtime_dir().join("memory.merged").exists());
    next_count(&from_diff, None, Duration::from_secs(5)).await.expect("diff-restored guest counts");
    let lines = from_diff.console().lines();
    let first = first_count(&lines).unwrap();
    assert!(first == at_diff + 1 || first == at_diff + 2, "continues from {at_diff}, got {first}: {lines:?}");
    env.smartvm.cleanup().await.unwrap();
    assert!(!from_diff.runtime_dir().exists());
    assert!(full.mem_path.exists() && diff.mem_path.exists(), "snapshot files are the caller's");
}

#[tokio::test]
async fn clones_from_one_snapshot_and_failed_restore_leaves_nothing() {
    let Some(env) = env() else { return };
    let snaps = env.dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let cfg = env.probe_config("seed", "probe.count=50");
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    next_count(&vm, None, Duration::from_secs(5)).await.unwrap();
    vm.pause().await.unwrap();
    let full = Snapshot::full(snaps.join("s.state"), snaps.join("s.mem"));
    vm.create_snapshot(&full.create_params()).await.unwrap();
    env.smartvm.remove_vm("seed").await.unwrap();

    let clones = env.smartvm.clone_vms(&cfg, &full, 3, true).await.unwrap();
    assert_eq!(clones.len(), 3);
    for c in &clones {
        assert!(next_count(c, None, Duration::from_secs(5)).await.is_some(), "clone {} runs", c.id());
    }
    assert_eq!(env.smartvm.vm_ids(), ["seed-0", "seed-1", "seed-2"]);
    env.smartvm.cleanup().await.unwrap();

    let missing = Snapshot::full(snaps.join("nope.state"), snaps.join("nope.mem"));
    let err = env.smartvm.restore_vm(&cfg, &missing, true).await.unwrap_err();
    assert_eq!(err.code(), "API_ERROR", "Firecracker refused the load: {err:?}");
    assert_eq!(err.step(), Some(smartvm::vm::Step::LoadSnapshot));
    assert_eq!(env.smartvm.vm_count(), 0);
    let left: Vec<_> = std::fs::read_dir(env.smartvm.runtime_dir()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "no runtime dir left: {left:?}");
}

#[tokio::test]
async fn snapshots_carry_ephemeral_drives_and_each_clone_gets_its_own_copy() {
    let Some(env) = env() else { return };
    let disk = env.disk("data.img", 16, "source");
    let args = smartvm::probe::ProbeArgs::new().write(0, 1, "before-snapshot").watch(0, 1, 5).to_boot_args();
    let cfg = env.probe_config("drv", &args).with_drive(smartvm::config::DriveConfig::new("data", &disk));
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    let seen =
        |text: &'static str| move |l: &str| l == format!("smartvm-probe read drive=0 sector=1 status=ok data={text}");
    let console = vm.console();
    assert!(
        console.wait_for_line(Duration::from_secs(5), seen("before-snapshot")).await.is_some(),
        "{:?}",
        console.lines()
    );
    vm.pause().await.unwrap();
    let snap = vm.snapshot(&env.dir.path().join("snap-drv"), None).await.unwrap();
    assert_eq!(snap.drives.len(), 1);
    assert_eq!(&std::fs::read(&snap.drives[0].path).unwrap()[512..527], b"before-snapshot");
    assert_eq!(Snapshot::load(&env.dir.path().join("snap-drv")).unwrap(), snap);
    env.smartvm.remove_vm("drv").await.unwrap();

    let clones = env.smartvm.clone_vms(&cfg, &snap, 2, true).await.unwrap();
    let copy = |i: usize| clones[i].runtime_dir().join("drives").join(&snap.drives[0].file_name);
    common::write_sector(&copy(0), 1, "clone-zero");
    let c0 = clones[0].console();
    assert!(c0.wait_for_line(Duration::from_secs(5), seen("clone-zero")).await.is_some(), "{:?}", c0.lines());
    common::write_sector(&copy(1), 1, "clone-one!");
    let c1 = clones[1].console();
    assert!(c1.wait_for_line(Duration::from_secs(5), seen("clone-one!")).await.is_some(), "{:?}", c1.lines());
    assert!(!c1.lines().iter().any(|l| l.contains("clone-zero")), "clones share no drive");
    assert!(!c0.lines().iter().any(|l| l.contains("clone-one!")));
    assert!(std::fs::read(&disk).unwrap()[512..1024].iter().all(|&b| b == 0), "the source image is untouched");
    assert_eq!(
        &std::fs::read(&snap.drives[0].path).unwrap()[512..527],
        b"before-snapshot",
        "the snapshot is untouched"
    );
    env.smartvm.cleanup().await.unwrap();
}

/// StrictModes for bundles: a dir or file others could have written, a link, a FIFO as memory
/// or a relative dir is refused before anything reads the files.
#[test]
fn untrusted_or_odd_bundles_are_refused() {
    use smartvm::snapshot::Snapshot;
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let dir = base.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("vm.state"), b"state").unwrap();
        std::fs::write(dir.join("vm.mem"), b"mem").unwrap();
        Snapshot::full(dir.join("vm.state"), dir.join("vm.mem")).save(&dir).unwrap();
        dir
    };
    let good = make("good");
    Snapshot::load(&good).unwrap();

    let open = make("open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(Snapshot::load(&open).unwrap_err().code(), "UNTRUSTED_PATH");

    let writable = make("writable");
    std::fs::set_permissions(writable.join("vm.mem"), std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(Snapshot::load(&writable).unwrap_err().code(), "UNTRUSTED_PATH");

    let linked = make("linked");
    std::fs::rename(linked.join("snapshot.json"), base.path().join("elsewhere.json")).unwrap();
    std::os::unix::fs::symlink(base.path().join("elsewhere.json"), linked.join("snapshot.json")).unwrap();
    let err = Snapshot::load(&linked).unwrap_err();
    assert!(err.code() == "SNAPSHOT_FAILED" && err.to_string().contains("regular file"), "{err}");

    let fifo = make("fifo");
    std::fs::remove_file(fifo.join("vm.mem")).unwrap();
    nix::unistd::mkfifo(&fifo.join("vm.mem"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = Snapshot::load(&fifo).unwrap_err();
    assert!(err.code() == "SNAPSHOT_FAILED" && err.to_string().contains("memPath"), "{err}");

    let relative = std::path::Path::new("relative/bundle");
    assert_eq!(Snapshot::load(relative).unwrap_err().code(), "SNAPSHOT_FAILED");
}

/// A value (KiB) from `/proc/<pid>/smaps_rollup` (`Pss`, `Rss`, …).
fn smaps_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Clones share their snapshot's memory: a 128 MiB guest writes every page, is snapshotted, and
/// each of 4 clones then costs a small fraction of it (PSS), the memory file being mapped
/// privately (pages are shared through the page cache until a clone writes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_the_memory_their_snapshot_holds() {
    let Some(env) = env() else { return };
    let args = smartvm::probe::ProbeArgs::new().touch(128).count(50).to_boot_args();
    let cfg = env.probe_config("toucher", &args).with_machine(1, 128);
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    next_count(&vm, None, Duration::from_secs(20)).await.expect("counting after the touch");
    let lines = vm.console().lines();
    let touched = smartvm::probe::ProbeReport::parse(lines.iter().map(String::as_str)).touched_pages;
    let touched = touched.expect("touch reported");
    assert!(touched >= 120 * 256, "every page above the probe: {touched}");
    let origin_rss = smaps_kib(vm.pid().await.unwrap(), "Rss");
    assert!(origin_rss >= 120 * 1024, "the guest's memory is resident: {origin_rss} KiB");
    vm.pause().await.unwrap();
    let snap = Snapshot::full(env.dir.path().join("t.state"), env.dir.path().join("t.mem"));
    vm.create_snapshot(&snap.create_params()).await.unwrap();
    env.smartvm.remove_vm("toucher").await.unwrap();

    let clones = env.smartvm.clone_vms(&cfg, &snap, 4, true).await.unwrap();
    for c in &clones {
        assert!(next_count(c, None, Duration::from_secs(20)).await.is_some(), "clone {} runs", c.id());
        let pss = smaps_kib(c.pid().await.unwrap(), "Pss");
        assert!(pss <= 8 * 1024, "clone {} costs {pss} KiB of PSS (at most 8 MiB)", c.id());
    }
    env.smartvm.cleanup().await.unwrap();
}
