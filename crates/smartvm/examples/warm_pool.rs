//! Fills a cold pool of probe VMs, shows how much CPU the waiting Firecrackers use over two
//! seconds, then checks one out and prints its first line.
//!
//! `cargo run -p smartvm --example warm_pool` (needs /dev/kvm and Firecracker).

use std::time::{Duration, Instant};

use smartvm::pool::{PoolKind, PoolSpec};
use smartvm::probe::install_probe_kernel;
use smartvm::{SmartVm, SmartVmError, SmartVmOptions, VmConfig};

/// CPU time (user + system, clock ticks) of `pid` so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

#[tokio::main]
async fn main() -> Result<(), SmartVmError> {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    let kernel = install_probe_kernel(&smartvm.options().data_dir.join("kernels"))?;
    let config = VmConfig::new(kernel).with_machine(1, 16).with_boot_args("console=ttyS0");
    let pool = smartvm.create_pool(PoolSpec::new("example", 4, PoolKind::Cold(config))).await?;
    if !pool.ready(Duration::from_secs(30)).await {
        eprintln!("the pool did not fill: {:?}", pool.stats());
    }
    let pids: Vec<i32> = pool.ready_vms().iter().filter_map(|(_, pid)| *pid).collect();
    let before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    println!("{} waiting Firecrackers used {} clock ticks in 2 s", pids.len(), after - before);
    let start = Instant::now();
    let vm = smartvm.checkout(&pool, None).await?;
    let first = vm.console().wait_for_line(Duration::from_secs(10), |_| true).await;
    println!("checkout → first line in {:?}: {first:?}", start.elapsed());
    smartvm.cleanup().await
}
