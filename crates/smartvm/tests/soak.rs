//! Soak: many create/start/stop/remove cycles, sequential and concurrent, must leave the
//! process flat (file descriptors, threads, memory) and nothing on the host. Cycle counts come
//! from `SMARTVM_SOAK_CYCLES` (sequential) and `SMARTVM_SOAK_ROUNDS` (rounds of 10 at once);
//! small defaults in CI, `1000`/`100` for the full soak.

mod common;

use std::time::Duration;

use common::env;

/// The tests here measure this process's footprint: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Open descriptors, threads and resident memory (KiB) of this process.
fn footprint() -> (usize, usize, u64) {
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (fds, field("Threads:") as usize, field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_leave_the_process_flat_and_the_host_clean() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let cycles = count("SMARTVM_SOAK_CYCLES", 60);
    let rounds = count("SMARTVM_SOAK_ROUNDS", 6);
    let cfg = |id: String| env.probe_config(&id, "probe.count=1000");
    let one = |id: String| {
        let smartvm = &env.smartvm;
        let c = cfg(id);
        async move {
            let vm = smartvm.create_vm(&c).unwrap();
            vm.start().await.unwrap();
            vm.stop().await.unwrap();
            smartvm.remove_vm(vm.id()).await.unwrap();
        }
    };
    // Warm up: runtime pools, the spawner thread, caches.
    for i in 0..5 {
        one(format!("warm-{i}")).await;
    }
    futures_util::future::join_all((0..10).map(|i| one(format!("warmc-{i}")))).await;
    let before = footprint();
    for i in 0..cycles {
        one(format!("seq-{i}")).await;
    }
    for r in 0..rounds {
        futures_util::future::join_all((0..10).map(|i| one(format!("conc-{r}-{i}")))).await;
    }
    // Tokio may still be retiring blocking threads and console readers: wait for the process
    // to settle (bounded), then compare.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut after = footprint();
    while (after.0 > before.0 || after.1 > before.1 + 2) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = footprint();
    }
    println!("soak: {cycles} sequential + {rounds}x10 concurrent; before {before:?}, after {after:?}");
    assert!(after.0 <= before.0, "file descriptors grew: {before:?} → {after:?}");
    assert!(after.1 <= before.1 + 2, "threads grew: {before:?} → {after:?}");
    assert!(after.2 <= before.2 + 16 * 1024, "RSS grew by more than 16 MiB: {before:?} → {after:?}");
    assert_eq!(env.smartvm.vm_count(), 0);
    let left: Vec<_> = std::fs::read_dir(env.smartvm.runtime_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "runtime dirs left: {left:?}");
}

/// What the orchestrator holds per running VM (console buffers, tasks, process handle, ledger)
/// stays within 256 KiB: this process's resident growth with 40 guests running and printing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vm_costs_the_orchestrator_at_most_256_kib() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    const VMS: usize = 40;
    let boot = |id: String| {
        let smartvm = &env.smartvm;
        let cfg = env.probe_config(&id, "probe.count=20");
        async move {
            let vm = smartvm.create_vm(&cfg).unwrap();
            vm.start().await.unwrap();
            let counting = vm.console().wait_for_line(Duration::from_secs(10), |l| l.contains("count n=")).await;
            assert!(counting.is_some(), "{id} never counted");
            vm
        }
    };
    // Warm up the runtime, the spawner threads and the allocator's arenas.
    for vm in futures_util::future::join_all((0..10).map(|i| boot(format!("rss-warm-{i}")))).await {
        env.smartvm.remove_vm(vm.id()).await.unwrap();
    }
    let before = footprint().2;
    let vms = futures_util::future::join_all((0..VMS).map(|i| boot(format!("rss-{i}")))).await;
    let after = footprint().2;
    let per_vm = after.saturating_sub(before) / VMS as u64;
    println!("resident: {before} KiB → {after} KiB with {VMS} VMs running: {per_vm} KiB each");
    for vm in &vms {
        assert_eq!(vm.state(), smartvm::VmState::Running, "{} still runs when measured", vm.id());
        env.smartvm.remove_vm(vm.id()).await.unwrap();
    }
    assert!(per_vm <= 256, "{per_vm} KiB per running VM");
}
