//! Warm pools against the real Firecracker and the probe guest: cold pools (spawned, API up,
//! nothing configured) and template pools (restored paused), checkouts under concurrency, a
//! ready VM killed while it waits, a cancelled checkout, `reclaim` after the owner died, and
//! refused specs and checkouts.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{env, next_count, pid_alive, TestEnv};
use smartvm::pool::{PoolKind, PoolSpec, PoolStats, VmPool};
use smartvm::probe::ProbeArgs;
use smartvm::vm::VmJournal;
use smartvm::{VmConfig, VmState};

const READY: Duration = Duration::from_secs(20);

/// A probe config without an id (a pool's VMs get theirs from the pool).
fn probe(env: &TestEnv, args: &str) -> VmConfig {
    VmConfig { id: None, ..env.probe_config("unused", args) }
}

fn runtime_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| !n.starts_with('.') || n.starts_with(".new-"));
    names.sort();
    names
}

async fn wait_stats(pool: &VmPool, what: &str, ok: impl Fn(&PoolStats) -> bool) -> PoolStats {
    let mut rx = pool.subscribe();
    // The guard `wait_for` returns holds the stats' read lock: it is dropped at once, before the
    // stats are read again (a refill publishing meanwhile would wait for it, and then so would
    // that second read: a deadlock).
    let seen = tokio::time::timeout(READY, rx.wait_for(|s| ok(s))).await.is_ok_and(|r| r.is_ok());
    assert!(seen, "{what}: stats stayed {:?}", pool.stats());
    pool.stats()
}

/// Waits until `pid` has exited or is exiting (killed), with a deadline.
async fn wait_until_ending(pid: i32) {
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if !matches!(state, Some('R' | 'S' | 'D')) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "pid {pid} still runs: {stat}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_pool_hands_out_warm_vms_that_boot_with_the_checkout_config_and_refills() {
    let Some(env) = env() else { return };
    let pool = env.smartvm.create_pool(PoolSpec::new("cold", 2, PoolKind::Cold(probe(&env, "")))).await.unwrap();
    assert!(pool.ready(READY).await, "filled: {:?}", pool.stats());
    let ready = pool.ready_vms();
    assert_eq!(ready.len(), 2);
    for (id, pid) in &ready {
        assert!(id.starts_with("cold-") && id.len() == "cold-".len() + 12, "{id}");
        assert!(pid_alive(pid.unwrap()), "a warm Firecracker runs");
        let journal = VmJournal::read(&env.smartvm.runtime_dir().join(id)).unwrap();
        assert_eq!(journal.pool.as_deref(), Some("cold"), "journaled as the pool's");
    }
    assert_eq!(env.smartvm.vm_count(), 0, "waiting VMs are the pool's, not registered");

    // The checkout config decides what boots: two lines, then the probe's end.
    let config = probe(&env, &ProbeArgs::new().lines(2).to_boot_args());
    let vm = env.smartvm.checkout(&pool, Some(&config)).await.unwrap();
    assert_eq!(vm.id(), ready[0].0, "the oldest ready VM");
    assert_eq!(vm.pid().await, ready[0].1, "its Firecracker was the warm one");
    let report = common::report(&vm).await;
    assert_eq!(report.lines, [0, 1], "booted with the checkout's config");
    let journal = VmJournal::read(vm.runtime_dir()).unwrap();
    assert_eq!((journal.pool, journal.config.unwrap().boot_source.boot_args), (None, config.boot_source.boot_args));
    assert_eq!(env.smartvm.vm_ids(), [vm.id()]);

    let stats = wait_stats(&pool, "refilled", |s| s.ready == 2).await;
    assert_eq!((stats.handed_out, stats.misses, stats.failed), (1, 0, 0));
    let dirs = runtime_entries(env.smartvm.runtime_dir());
    assert_eq!(dirs.len(), 3, "two waiting, one handed out: {dirs:?}");

    let pids: Vec<i32> = pool.ready_vms().iter().filter_map(|(_, p)| *p).collect();
    env.smartvm.cleanup().await.unwrap();
    assert!(pids.iter().all(|p| !pid_alive(*p)), "waiting Firecrackers are gone");
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
    assert!(env.smartvm.pool("cold").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_pool_sends_its_config_ahead_and_takes_no_other() {
    let Some(env) = env() else { return };
    let config = probe(&env, &ProbeArgs::new().lines(3).to_boot_args());
    let pool = env.smartvm.create_pool(PoolSpec::new("conf", 2, PoolKind::Configured(config.clone()))).await.unwrap();
    assert!(pool.ready(READY).await, "filled: {:?}", pool.stats());
    assert_eq!(pool.stats().kind, "configured");
    // A waiting Firecracker already holds the pool's config (and has not started).
    let (first, _) = pool.ready_vms()[0].clone();
    let api = smartvm::api::ApiClient::new(env.smartvm.runtime_dir().join(&first).join("firecracker.sock"));
    let sent = api.get("/vm/config").await.unwrap();
    assert!(sent.ok && sent.body.contains("probe.lines=3"), "{}", sent.body);
    let info = api.get("/").await.unwrap();
    assert!(info.body.contains("Not started"), "{}", info.body);

    // Another config is refused and the VM stays ready; none, or the same, boots it.
    let other = probe(&env, &ProbeArgs::new().lines(1).to_boot_args());
    let refused = env.smartvm.checkout(&pool, Some(&other)).await.unwrap_err();
    assert_eq!(refused.code(), "INVALID_CONFIG", "{refused}");
    assert_eq!(pool.ready_vms()[0].0, first, "the ready VM is untouched");
    let vm = env.smartvm.checkout(&pool, None).await.unwrap();
    assert_eq!(vm.id(), first);
    assert_eq!(common::report(&vm).await.lines, [0, 1, 2]);
    let again = env.smartvm.checkout(&pool, Some(&config)).await.unwrap();
    assert_eq!(common::report(&again).await.lines, [0, 1, 2]);
    assert_eq!(VmJournal::read(again.runtime_dir()).unwrap().pool, None);
    let stats = wait_stats(&pool, "refilled", |s| s.ready == 2).await;
    assert_eq!((stats.handed_out, stats.misses), (2, 0));
    env.smartvm.cleanup().await.unwrap();
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_checkouts_from_a_pool_of_ten_while_it_refills() {
    let Some(env) = env() else { return };
    // The probe reports and ends: a hundred guests spinning would starve two cores.
    let spec = PoolSpec::new("many", 10, PoolKind::Cold(probe(&env, ""))).with_refill_concurrency(2);
    let pool = env.smartvm.create_pool(spec).await.unwrap();
    assert!(pool.ready(READY).await, "filled: {:?}", pool.stats());
    let checkouts = (0..100).map(|_| env.smartvm.checkout(&pool, None));
    let vms: Vec<_> = futures_util::future::join_all(checkouts).await.into_iter().map(Result::unwrap).collect();
    let mut ids: Vec<&str> = vms.iter().map(|v| v.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "every checkout its own VM");
    for vm in &vms {
        let boot = vm.console().wait_for_line(READY, |l| l.starts_with("smartvm-probe boot")).await;
        assert!(boot.is_some(), "{} booted: {:?}", vm.id(), vm.console().lines());
    }
    let stats = pool.stats();
    assert_eq!(stats.handed_out + stats.misses, 100, "{stats:?}");
    assert!(stats.handed_out >= 10, "the ten ready ones were handed out: {stats:?}");
    assert_eq!(env.smartvm.vm_count(), 100);
    wait_stats(&pool, "refilled after the rush", |s| s.ready == 10).await;
    env.smartvm.cleanup().await.unwrap();
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_vm_killed_while_waiting_is_replaced_and_never_handed_out() {
    let Some(env) = env() else { return };
    let pool = env.smartvm.create_pool(PoolSpec::new("killed", 2, PoolKind::Cold(probe(&env, "")))).await.unwrap();
    assert!(pool.ready(READY).await);
    let (victim_id, victim) = pool.ready_vms()[0].clone();
    let victim = victim.unwrap();

    // Killed while it waits: the pool notices, destroys it and makes another.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL).unwrap();
    let stats = wait_stats(&pool, "the dead one discarded and replaced", |s| s.discarded == 1 && s.ready == 2).await;
    assert_eq!(stats.handed_out, 0);
    assert!(!env.smartvm.runtime_dir().join(&victim_id).exists(), "its dir and journal are gone");
    assert!(pool.ready_vms().iter().all(|(id, _)| *id != victim_id));

    // Killed right before a checkout: the identity check refuses it, the next one is handed out.
    let (next_id, next) = pool.ready_vms()[0].clone();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(next.unwrap()), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until_ending(next.unwrap()).await;
    let vm = env.smartvm.checkout(&pool, None).await.unwrap();
    assert_ne!(vm.id(), next_id, "a killed process is never handed out");
    assert!(vm.console().wait_for_line(READY, |l| l.starts_with("smartvm-probe boot")).await.is_some());
    let stats = pool.stats();
    assert_eq!((stats.discarded, stats.handed_out + stats.misses), (2, 1), "{stats:?}");
    env.smartvm.cleanup().await.unwrap();
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_checkout_destroys_the_vm_it_took() {
    use futures_util::FutureExt;
    let Some(env) = env() else { return };
    let pool = env.smartvm.create_pool(PoolSpec::new("cancel", 1, PoolKind::Cold(probe(&env, "")))).await.unwrap();
    assert!(pool.ready(READY).await);
    let (taken_id, taken) = pool.ready_vms()[0].clone();
    // Polled once (it takes the VM and starts configuring it), then dropped.
    assert!(env.smartvm.checkout(&pool, None).now_or_never().is_none(), "a boot takes more than one poll");
    assert!(!pid_alive(taken.unwrap()), "its Firecracker is gone");
    assert!(!env.smartvm.runtime_dir().join(&taken_id).exists(), "its dir is gone");
    assert_eq!(env.smartvm.vm_count(), 0);
    let stats = wait_stats(&pool, "refilled", |s| s.ready == 1).await;
    assert_eq!(stats.handed_out, 1);
    env.smartvm.cleanup().await.unwrap();
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_pool_hands_out_paused_restores_that_resume_counting() {
    let Some(env) = env() else { return };
    let origin = env.smartvm.create_vm(&env.probe_config("origin", "probe.count=20")).unwrap();
    origin.start().await.unwrap();
    next_count(&origin, Some(2), READY).await.expect("counting");
    let bundle = env.dir.path().join("template");
    origin.pause().await.unwrap();
    origin.snapshot(&bundle, None).await.unwrap();
    let at_snapshot = common::last_count(&origin).await.unwrap();
    env.smartvm.remove_vm("origin").await.unwrap();

    let kind = PoolKind::template(&bundle).unwrap();
    assert_eq!(kind.config().id, None, "the pool gives ids");
    let pool = env.smartvm.create_pool(PoolSpec::new("tmpl", 2, kind)).await.unwrap();
    assert!(pool.ready(READY).await, "{:?}", pool.stats());
    let vm = env.smartvm.checkout(&pool, None).await.unwrap();
    assert_eq!(vm.state(), VmState::Running);
    let next = next_count(&vm, Some(at_snapshot), READY).await.expect("the restored guest counts on");
    assert!(next > at_snapshot);
    assert_eq!(VmJournal::read(vm.runtime_dir()).unwrap().pool, None);
    let refused = env.smartvm.checkout(&pool, Some(&probe(&env, ""))).await.unwrap_err();
    assert_eq!(refused.code(), "INVALID_CONFIG", "{refused}");
    wait_stats(&pool, "refilled", |s| s.ready == 2 && s.handed_out == 1).await;
    env.smartvm.cleanup().await.unwrap();
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_checkouts_are_refused_and_change_nothing() {
    let Some(env) = env() else { return };
    let cold = |name: &str, size| PoolSpec::new(name, size, PoolKind::Cold(probe(&env, "")));
    let fields = |e: smartvm::SmartVmError| match e {
        smartvm::SmartVmError::InvalidConfig(c) => c.problems.into_iter().map(|p| p.field).collect::<Vec<_>>(),
        other => panic!("not INVALID_CONFIG: {other:?}"),
    };
    let bad = env.smartvm.create_pool(cold("no spaces", 0).with_refill_concurrency(0)).await.unwrap_err();
    assert_eq!(fields(bad), ["name", "size", "refillConcurrency"]);
    let mut with_id = cold("ided", 1);
    with_id.kind = PoolKind::Cold(env.probe_config("fixed", ""));
    assert_eq!(fields(env.smartvm.create_pool(with_id).await.unwrap_err()), ["config.id"]);
    let mut broken = probe(&env, "");
    broken.machine_config.vcpu_count = 0;
    let broken_pool = env.smartvm.create_pool(PoolSpec::new("broken", 1, PoolKind::Cold(broken.clone()))).await;
    assert!(fields(broken_pool.unwrap_err()).iter().all(|f| f.starts_with("config.machineConfig")));
    assert!(env.smartvm.pools().is_empty());
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new(), "nothing made");

    let pool = env.smartvm.create_pool(cold("good", 1)).await.unwrap();
    assert_eq!(fields(env.smartvm.create_pool(cold("good", 1)).await.unwrap_err()), ["name"]);
    assert!(pool.ready(READY).await);
    let before = pool.ready_vms();
    assert_eq!(env.smartvm.checkout(&pool, Some(&broken)).await.unwrap_err().code(), "INVALID_CONFIG");
    let named = env.probe_config("mine", "");
    assert_eq!(fields(env.smartvm.checkout(&pool, Some(&named)).await.unwrap_err()), ["id"]);
    assert_eq!(pool.ready_vms(), before, "the ready VM stays, untouched");
    assert_eq!(pool.stats().handed_out, 0);
    assert!(env.smartvm.remove_pool("good").await);
    assert!(!env.smartvm.remove_pool("good").await);
    assert!(!pid_alive(before[0].1.unwrap()));
    let closed = env.smartvm.checkout(&pool, None).await.unwrap_err();
    assert_eq!(closed.code(), "INVALID_CONFIG", "{closed}");
    assert_eq!(runtime_entries(env.smartvm.runtime_dir()), Vec::<String>::new());
}

/// The owner of a pool, run as a child of [`reclaim_removes_the_pool_of_an_owner_that_died`]:
/// fills a pool, says so on stdout, and SIGKILLs itself. A no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_owner_that_dies() {
    let Ok(dir) = std::env::var("SMARTVM_TEST_POOL_OWNER") else { return };
    let var = |name: &str| PathBuf::from(std::env::var_os(name).unwrap());
    let options = smartvm::SmartVmOptions {
        runtime_dir: PathBuf::from(dir),
        firecracker_binary_path: Some(var("SMARTVM_TEST_BINARY")),
        ..smartvm::SmartVmOptions::default()
    };
    let smartvm = Arc::new(smartvm::SmartVm::new(options));
    let config = VmConfig::new(var("SMARTVM_TEST_KERNEL")).with_machine(1, 16).with_boot_args("console=ttyS0");
    let pool = smartvm.create_pool(PoolSpec::new("orphan", 3, PoolKind::Cold(config))).await.unwrap();
    assert!(pool.ready(READY).await);
    println!("pool-ready");
    // SAFETY: signalling this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_removes_the_pool_of_an_owner_that_died() {
    let Some(env) = env() else { return };
    let run = env.smartvm.runtime_dir();
    std::fs::create_dir_all(run).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pool_owner_that_dies", "--nocapture", "--test-threads=1"])
        .env("SMARTVM_TEST_POOL_OWNER", run)
        .env("SMARTVM_TEST_BINARY", &env.binary)
        .env("SMARTVM_TEST_KERNEL", &env.kernel)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pool-ready"),
        "the owner filled its pool: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = runtime_entries(run);
    assert_eq!(left.len(), 3, "three journaled pool VMs outlive their owner: {left:?}");
    for id in &left {
        assert_eq!(VmJournal::read(&run.join(id)).unwrap().pool.as_deref(), Some("orphan"));
    }
    let report = env.smartvm.reclaim().await.unwrap();
    assert_eq!(report.reclaimed.len(), 3, "{report:?}");
    assert_eq!(runtime_entries(run), Vec::<String>::new());
}
