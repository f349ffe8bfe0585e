//! `smartvm run`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use smartvm::config::DriveConfig;
use smartvm::images::BaseImageBundle;
use smartvm::{probe, SmartVm, SmartVmError, SmartVmOptions, VmConfig};

use crate::exit::{CliError, Exit};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// VM config: smartvm camelCase JSON or Firecracker's --config-file JSON.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(flatten)]
    machine: crate::run_flags::MachineArgs,
    /// Root filesystem image (attached as writable root drive `rootfs`, staged ephemerally).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// VM id.
    #[arg(long)]
    id: Option<String>,
    /// Also append the console to this file.
    #[arg(long)]
    console_file: Option<PathBuf>,
    /// Stop the VM after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Attach a NIC (eth0) on the default bridge with a TAP, MAC and address from smartvm's
    /// network manager, and pass the guest its `ip=` argument.
    #[arg(long)]
    net: bool,
    /// Run the VM under Firecracker's jailer (chroot, uid/gid 65534, `/srv/jailer`), as
    /// `SMARTVM_JAILED=1` does.
    #[arg(long)]
    jailed: bool,
    /// Hand the VM to the host agent (`smartvm serve`) and print its id; it keeps running
    /// after this command ends (see `ps`, `logs`, `stop`, `rm`).
    #[arg(long, short = 'd')]
    detach: bool,
    /// With --detach: print the agent's summary of the VM as JSON instead of its id.
    #[arg(long, requires = "detach")]
    json: bool,
    /// Run Firecracker without its API socket (`--no-api`): its fastest boot, for VMs that run
    /// to completion. Nothing that needs the API goes with it (--metadata, --socket-path, -d),
    /// and Ctrl-C or --timeout stop the VM with SIGTERM.
    #[arg(long, conflicts_with_all = ["detach", "metadata", "socket_path"])]
    no_api: bool,
    /// Take the VM from the agent's warm pool NAME (see `smartvm pool`): no cold start. A cold
    /// pool's VM boots the --config given, else the pool's; nothing else shapes it. Without -d
    /// its console streams here until it ends, then it is removed.
    #[arg(long, value_name = "NAME", conflicts_with_all = [
        "kernel", "rootfs", "boot_args", "vcpus", "mem", "id", "console_file", "timeout", "net", "jailed", "no_api",
    ])]
    pool: Option<String>,
    /// Boot a base-image bundle (see `smartvm image pull`).
    #[command(flatten)]
    image: crate::images::SourceArgs,
    #[command(flatten)]
    firectl: crate::run_flags::FirectlArgs,
}

const LINUX_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";

fn build_config(
    args: &RunArgs,
    options: &SmartVmOptions,
    bundle: Option<&BaseImageBundle>,
) -> Result<VmConfig, CliError> {
    let mut cfg = match (&args.config, bundle) {
        (Some(path), _) => crate::config_file::config_from_file(path)?,
        (None, Some(b)) => b.vm_config(),
        (None, None) => {
            let kernel = match &args.machine.kernel {
                Some(k) => k.clone(),
                // Installed only once the rest of the config is known to be valid (see `run`).
                None => probe::probe_kernel_path(&options.data_dir.join("kernels")),
            };
            let default_args = if args.machine.kernel.is_some() { LINUX_BOOT_ARGS } else { "console=ttyS0" };
            VmConfig::new(kernel)
                .with_boot_args(default_args)
                .with_machine(1, if args.machine.kernel.is_some() { 128 } else { 16 })
        }
    };
    if let Some(k) = &args.machine.kernel {
        cfg.boot_source.kernel_image_path = k.clone();
    }
    args.machine.apply(&mut cfg);
    if let Some(id) = &args.id {
        cfg.id = Some(id.clone());
    }
    if args.net && !cfg.network_interfaces.iter().any(|n| n.host_dev_name.is_none()) {
        cfg.network_interfaces.push(smartvm::config::NetworkInterfaceConfig::managed("eth0"));
    }
    if let Some(rootfs) = &args.rootfs {
        cfg.drives.retain(|d| !d.is_root_device);
        cfg.drives.insert(0, DriveConfig::new("rootfs", rootfs).root());
    }
    // Paths given as flags are relative to the current directory.
    if let Ok(cwd) = std::env::current_dir() {
        args.firectl.apply(&mut cfg, &cwd)?;
        if let Some(k) = &args.machine.kernel {
            cfg.boot_source.kernel_image_path = cwd.join(k);
        }
        if let Some(root) = cfg.drives.iter_mut().find(|d| args.rootfs.is_some() && d.drive_id == "rootfs") {
            root.path_on_host = cwd.join(&root.path_on_host);
        }
    }
    Ok(cfg)
}

pub async fn run(args: RunArgs) -> Result<Exit, CliError> {
    if let Some(pool) = &args.pool {
        if args.image.is_set() || args.firectl.is_set() {
            return Err(CliError::new(
                Exit::Usage,
                "--pool takes the pool's VM: only --config, -d and --json go with it",
            ));
        }
        let config = args.config.as_deref().map(crate::config_file::config_from_file).transpose()?;
        return crate::pools::run(pool, config.as_ref(), args.detach, args.json).await;
    }
    let mut options = SmartVmOptions::from_env();
    options.jailed_by_default |= args.jailed;
    if let Some(binary) = std::env::current_dir().ok().and_then(|cwd| args.firectl.binary(&cwd)) {
        options.firecracker_binary_path = Some(binary);
    }
    let metadata = args.firectl.metadata()?;
    let smartvm = SmartVm::new(options.clone());
    let bundle = match args.image.is_set() {
        true => Some(crate::images::pull(&smartvm, &args.image).await?),
        false => None,
    };
    let cfg = build_config(&args, &options, bundle.as_ref())?;
    if args.detach {
        // Nothing is written or started when no agent answers.
        crate::vms::client().info().await?;
        crate::config_file::install_probe_if_used(&cfg, &options)?;
        return crate::vms::detach(&cfg, args.json).await;
    }
    crate::config_file::install_probe_if_used(&cfg, &options)?;
    // No silent download: a missing binary says where it looked and how to get one.
    let binary = smartvm.find_binary()?;
    let mut runtime = smartvm.runtime_options(binary);
    runtime.console_file = args.console_file.clone();
    if cfg.network_interfaces.iter().any(|n| n.host_dev_name.is_none()) {
        runtime.network = Some(smartvm.network()?);
        runtime.append_network_boot_args = args.net;
    }
    runtime.firecracker_log_level = args.firectl.log_level;
    runtime.api = !args.no_api;
    let vm = smartvm.create_vm_with(&cfg, runtime)?;
    let log = args.firectl.log_level.map(|_| crate::run_flags::mirror_log(vm.stderr()));
    let socket_link = args.firectl.socket_path.clone();
    let start = async {
        vm.start().await?;
        if let Some(link) = &socket_link {
            std::os::unix::fs::symlink(vm.socket_path(), link)
                .map_err(|e| SmartVmError::Io { context: format!("cannot link {}", link.display()), source: e })?;
        }
        match &metadata {
            // A guest that already ended needs no metadata any more.
            Some(doc) => match vm.set_metadata(doc).await {
                Err(_) if vm.exit_info().is_some() => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    };
    let outcome = supervise(&vm, args.timeout, start).await;
    let cleaned = smartvm.cleanup().await;
    if let Some(link) = &socket_link {
        // Only the link this run made: a symlink to the VM's socket.
        if std::fs::read_link(link).is_ok_and(|target| target == vm.socket_path()) {
            let _ = std::fs::remove_file(link);
        }
    }
    if let Some(log) = log {
        let _ = log.await;
    }
    let exit = outcome?;
    cleaned?;
    Ok(exit)
}

/// Runs `launch` (start or restore), streams the console to stdout and waits for the VM to end,
/// the timeout, or Ctrl-C/SIGTERM (then stops it). The caller cleans up.
pub async fn supervise(
    vm: &smartvm::MicroVm,
    timeout: Option<u64>,
    launch: impl std::future::Future<Output = smartvm::Result<()>>,
) -> Result<Exit, CliError> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::new(Exit::Failure, e))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::new(Exit::Failure, e))?;
    let launched = std::time::Instant::now();
    // A start blocked on any step ends at Ctrl-C/SIGTERM: dropping it unwinds what it created.
    tokio::select! {
        started = launch => started.map_err(start_error)?,
        _ = interrupt.recv() => return Ok(Exit::Interrupted),
        _ = terminate.recv() => return Ok(Exit::Interrupted),
    }
    let started = std::time::Instant::now();
    announce_start(vm).await;
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    let first_output = std::sync::Arc::new(std::sync::OnceLock::new());
    let printer = tokio::spawn(print_console(vm.console(), closed_tx, first_output.clone()));
    let wait = async {
        match timeout {
            Some(secs) => vm.wait_for_exit(Duration::from_secs(secs)).await.map_or(End::TimedOut, End::Exited),
            None => loop {
                if let Some(info) = vm.wait_for_exit(Duration::from_secs(3600)).await {
                    break End::Exited(info);
                }
            },
        }
    };
    let end = tokio::select! {
        end = wait => end,
        _ = interrupt.recv() => End::Interrupted,
        _ = terminate.recv() => End::Interrupted,
        Ok(()) = closed => End::StdoutClosed,
    };
    let ran = started.elapsed();
    let boot = first_output
        .get()
        .map_or(String::new(), |t| format!("; first output {} ms after the start", (*t - launched).as_millis()));
    conclude(vm, end, timeout, printer, format!("after {:.1} s{boot}", ran.as_secs_f64())).await
}

/// How a supervised run ended.
enum End {
    Exited(smartvm::process::ExitInfo),
    TimedOut,
    Interrupted,
    StdoutClosed,
}

/// Stops the VM unless it ended by itself, says how it ended (`timing`: how long it ran, when
/// its first output came) and picks the exit status.
async fn conclude(
    vm: &smartvm::MicroVm,
    end: End,
    timeout: Option<u64>,
    printer: tokio::task::JoinHandle<()>,
    timing: String,
) -> Result<Exit, CliError> {
    if let End::Exited(info) = end {
        let _ = printer.await;
        crate::exit::notice(format_args!("smartvm: VM {} exited ({}) {timing}", vm.id(), crate::exit::describe(info)));
        let lines = vm.console().lines();
        let reported = smartvm::guest::protocol::reported_exit(lines.iter().map(String::as_str));
        return if let (true, Some(status)) = (info.success(), reported) {
            // The guest reported its workload's status (smartvm-guest as PID 1, probe.exit).
            Ok(if status == 0 { Exit::Success } else { Exit::Command(status) })
        } else if info.success() {
            Ok(Exit::Success)
        } else {
            let ended = SmartVmError::from(smartvm::process::ProcessError::Ended { exit: info });
            Err(CliError::new(Exit::GuestFailed, ended))
        };
    }
    // Interrupted, timed out or unread: stop in order (the caller cleans up).
    let how = match end {
        End::TimedOut => format!("timed out after {} s", timeout.unwrap_or_default()),
        End::StdoutClosed => "its console is no longer read (stdout closed)".into(),
        _ => "interrupted".into(),
    };
    let mut stopped = String::new();
    if matches!(vm.state(), smartvm::VmState::Running | smartvm::VmState::Paused) {
        stopped = format!("; stopped ({:?})", vm.stop().await?.step);
    }
    printer.abort();
    crate::exit::notice(format_args!("smartvm: VM {} {how}{stopped} {timing}", vm.id()));
    // A guest that ended its workload on the stop (smartvm-guest forwards it SIGTERM) reported
    // the workload's status: that is the run's, as a supervisor forwarding SIGTERM expects.
    let lines = vm.console().lines();
    if let (End::Interrupted, Some(status)) =
        (&end, smartvm::guest::protocol::reported_exit(lines.iter().map(String::as_str)))
    {
        return Ok(if status == 0 { Exit::Success } else { Exit::Command(status) });
    }
    Ok(match end {
        End::TimedOut => Exit::TimedOut,
        End::StdoutClosed => Exit::BrokenPipe,
        _ => Exit::Interrupted,
    })
}

/// A start Firecracker refused (e.g. a kernel that is not an ELF image) is Firecracker ending
/// with an error: exit 5, as documented.
fn start_error(e: SmartVmError) -> CliError {
    let refused = e.code() == smartvm::error::ErrorCode::ApiError;
    let mut error = CliError::from(e);
    if refused {
        error.exit = Exit::GuestFailed;
    }
    error
}

/// Writes the console to stdout until it ends, noting when the first line came; says on
/// `closed` when nobody reads it any more (`| head`), so that the VM is ended.
async fn print_console(
    console: smartvm::process::Console,
    closed: tokio::sync::oneshot::Sender<()>,
    first_output: std::sync::Arc<std::sync::OnceLock<std::time::Instant>>,
) {
    use futures_util::StreamExt;
    let mut lines = std::pin::pin!(console.stream(true));
    while let Some(line) = lines.next().await {
        first_output.get_or_init(std::time::Instant::now);
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            let _ = closed.send(());
            return;
        }
    }
}

/// One line on stderr (stdout is the guest's console): what runs.
async fn announce_start(vm: &smartvm::MicroVm) {
    let c = vm.config();
    let net =
        vm.tap_devices().await.first().map(|t| format!(", net {} via {}", t.guest_ip, t.name)).unwrap_or_default();
    crate::exit::notice(format_args!(
        "smartvm: started VM {} (kernel {}, {} vCPU, {} MiB{net}; {:?} boot)",
        vm.id(),
        c.boot_source.kernel_image_path.display(),
        c.machine_config.vcpu_count,
        c.machine_config.mem_size_mib,
        vm.boot_path()
    ));
}
