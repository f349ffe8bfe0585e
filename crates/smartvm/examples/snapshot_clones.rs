//! Snapshots a counting probe guest and starts three clones from the snapshot.
//!
//! `cargo run -p smartvm --example snapshot_clones` (needs /dev/kvm and Firecracker).

use std::time::Duration;

use smartvm::probe::{install_probe_kernel, ProbeArgs};
use smartvm::snapshot::Snapshot;
use smartvm::{SmartVm, SmartVmError, SmartVmOptions, VmConfig};

#[tokio::main]
async fn main() -> Result<(), SmartVmError> {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    let io = |context: &str| {
        let context = context.to_string();
        move |source| SmartVmError::Io { context, source }
    };
    let kernel = install_probe_kernel(&smartvm.options().data_dir.join("kernels"))?;
    let dir = tempfile_dir().map_err(io("snapshot dir"))?;
    let config = VmConfig::new(kernel)
        .with_id("origin")
        .with_machine(1, 16)
        .with_boot_args(format!("console=ttyS0 {}", ProbeArgs::new().count(100).to_boot_args()));
    let vm = smartvm.create_vm(&config)?;
    vm.start().await?;
    vm.console().wait_for_line(Duration::from_secs(5), |l| l.contains("count n=1")).await;
    vm.pause().await?;
    let snapshot = Snapshot::full(dir.join("vm.state"), dir.join("vm.mem"));
    vm.create_snapshot(&snapshot.create_params()).await?;
    smartvm.remove_vm("origin").await?;
    let clones = smartvm.clone_vms(&config, &snapshot, 3, true).await?;
    println!("running clones: {:?}", clones.iter().map(|c| c.id().to_string()).collect::<Vec<_>>());
    smartvm.cleanup().await?;
    std::fs::remove_dir_all(&dir).map_err(io("removing snapshot dir"))
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("smartvm-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
