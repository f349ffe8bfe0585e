//! Boots the embedded probe guest, prints what it reports, and cleans up.
//!
//! `cargo run -p smartvm --example boot_probe` (needs /dev/kvm and Firecracker).

use std::time::Duration;

use smartvm::probe::{install_probe_kernel, ProbeArgs, ProbeReport};
use smartvm::{SmartVm, SmartVmError, SmartVmOptions, VmConfig};

#[tokio::main]
async fn main() -> Result<(), SmartVmError> {
    let smartvm = SmartVm::new(SmartVmOptions::from_env());
    let kernel = install_probe_kernel(&smartvm.options().data_dir.join("kernels"))?;
    let config = VmConfig::new(kernel)
        .with_id("example")
        .with_machine(1, 16)
        .with_boot_args(format!("console=ttyS0 {}", ProbeArgs::new().to_boot_args()));
    let vm = smartvm.create_vm(&config)?;
    vm.start().await?;
    let console = vm.console();
    // `wait_for` tells a time-out from a guest that ended without the line.
    if let Err(why) = console.wait_for(Duration::from_secs(10), |l| l == "smartvm-probe done").await {
        eprintln!("no report: {why}");
    }
    let report = ProbeReport::parse(console.lines().iter().map(String::as_str));
    println!("guest saw cmdline {:?} and {} device(s)", report.cmdline, report.devices.len());
    smartvm.cleanup().await
}
