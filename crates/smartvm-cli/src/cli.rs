//! Command-line definition and dispatch.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::{report, CliError, Exit};

/// Run Firecracker microVMs.
#[derive(Debug, Parser)]
#[command(name = "smartvm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More detail on stderr: -v the library's debug log (per-VM cost breakdown), -vv trace
    /// (`SMARTVM_LOG` wins when set).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No notices on stderr (what started, how it ended); errors and data are still printed.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a VM and stream its serial console to stdout (the built-in probe guest when no
    /// kernel is given). Ctrl-C stops it and cleans up.
    Run(Box<crate::run::RunArgs>),
    /// Check this host: KVM, Firecracker, runtime dir, cgroups, networking tools; boots the probe.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Measure boot paths (raw Firecracker vs smartvm, concurrency, snapshot restore).
    Bench(crate::bench::BenchArgs),
    /// Firecracker binaries.
    #[command(subcommand)]
    Binary(crate::images::BinaryCommand),
    /// Base-image bundles (kernel + rootfs).
    #[command(subcommand)]
    Image(crate::images::ImageCommand),
    /// Snapshot bundles: take one of a running VM, or restore one.
    #[command(subcommand)]
    Snapshot(crate::snapshot::SnapshotCommand),
    /// Warm pools in the host agent: VMs kept ready for `run --pool` (create, ls, rm).
    #[command(subcommand)]
    Pool(crate::pools::PoolCommand),
    /// Run the host agent: it owns VMs started with `run -d` until they are removed.
    Serve(crate::serve::ServeArgs),
    /// List the agent's VMs.
    Ps(crate::vms::PsArgs),
    /// Print (or follow) a VM's console output.
    Logs(crate::vms::LogsArgs),
    /// Stop a VM held by the agent (in order: Ctrl-Alt-Del, SIGTERM, SIGKILL).
    Stop(crate::vms::StopArgs),
    /// Remove a VM held by the agent and everything it holds on the host.
    Rm(crate::vms::RmArgs),
    /// A VM's details as JSON (config, state, pid, TAPs, guest IP, socket, uptime).
    Inspect(crate::vms::IdArg),
    /// Connect to a VM's serial console: its output to stdout, stdin to the guest; Ctrl-] or
    /// the end of stdin detaches and leaves it running.
    Attach(crate::vms::IdArg),
    /// Run a command in a VM's guest agent (`smartvm-guest`); its exit status is smartvm's.
    Exec(crate::guest::ExecArgs),
    /// A shell on a terminal in a VM's guest (Ctrl-] ends it).
    Shell(crate::guest::ShellArgs),
    /// Copy files or directories into or out of a guest: `cp SRC ID:/path`, `cp ID:/path DST`.
    Cp(crate::guest::CpArgs),
    /// Forward host TCP ports to ports in a guest until Ctrl-C.
    PortForward(crate::guest::PortForwardArgs),
    /// Who answers inside a guest (agent name, version, capabilities) and one round trip's time.
    Ping(crate::guest::PingArgs),
    /// Pause a VM held by the agent.
    Pause(crate::vms::IdArg),
    /// Resume a paused VM held by the agent.
    Resume(crate::vms::IdArg),
    /// Remove runtime dirs left behind by crashed programs.
    Gc {
        /// `{"reclaimed": [ids], "rejected": [{path, reason}], "failures": [..], "network": [..]}`.
        #[arg(long)]
        json: bool,
    },
    /// Print smartvm's and Firecracker's versions.
    Version {
        /// `{"smartvm": "x.y.z", "firecracker": {"version", "path"} | null}`.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `smartvm man > /usr/local/share/man/man1/smartvm.1`.
    Man,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { Exit::Usage } else { Exit::Success };
            let _ = e.print();
            return code.into();
        }
    };
    // Colour only for a person at a terminal (and never with NO_COLOR).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    crate::exit::set_quiet(cli.quiet);
    let level = match cli.verbose {
        0 => "warn",
        1 => "smartvm=debug,warn",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SMARTVM_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            report(&CliError::new(Exit::Failure, e));
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            // `run` stops its VM in order on a signal itself.
            Command::Run(args) => crate::run::run(*args).await,
            Command::Doctor { json } => interruptible(crate::doctor::doctor(json)).await,
            Command::Bench(args) => interruptible(crate::bench::bench(args)).await,
            Command::Binary(cmd) => interruptible(crate::images::binary(cmd)).await,
            Command::Image(cmd) => interruptible(crate::images::image(cmd)).await,
            Command::Snapshot(cmd) => interruptible(crate::snapshot::snapshot(cmd)).await,
            Command::Serve(args) => crate::serve::serve(args).await,
            Command::Pool(cmd) => interruptible(crate::pools::pool(cmd)).await,
            Command::Ps(args) => interruptible(crate::vms::ps(args)).await,
            Command::Logs(args) => interruptible(crate::vms::logs(args)).await,
            Command::Stop(args) => interruptible(crate::vms::stop(args)).await,
            Command::Rm(args) => interruptible(crate::vms::rm(args)).await,
            Command::Inspect(args) => interruptible(crate::vms::inspect(args)).await,
            Command::Attach(args) => interruptible(crate::vms::attach(args)).await,
            Command::Exec(args) => interruptible(crate::guest::exec(args)).await,
            Command::Shell(args) => interruptible(crate::guest::shell(args)).await,
            Command::Cp(args) => interruptible(crate::guest::cp(args)).await,
            Command::PortForward(args) => interruptible(crate::guest::port_forward(args)).await,
            Command::Ping(args) => interruptible(crate::guest::ping(args)).await,
            Command::Pause(args) => interruptible(crate::vms::pause(args)).await,
            Command::Resume(args) => interruptible(crate::vms::resume(args)).await,
            Command::Gc { json } => interruptible(crate::maintenance::gc(json)).await,
            Command::Version { json } => crate::maintenance::version(json),
            Command::Completions { shell } => {
                // Into a buffer first: the generator panics on a closed stdout (`| head`).
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "smartvm", &mut script);
                let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
                Ok(Exit::Success)
            }
            Command::Man => man(),
        }
    });
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            report(&e);
            e.exit.into()
        }
    }
}

/// Runs `command` until it ends or SIGINT/SIGTERM arrives: then the command is dropped, which
/// cleans up what it holds (VMs are torn down, temporary dirs removed, spawned processes killed)
/// and the exit status is 130.
async fn interruptible(command: impl std::future::Future<Output = Result<Exit, CliError>>) -> Result<Exit, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return command.await;
    };
    tokio::select! {
        result = command => result,
        _ = interrupt.recv() => Ok(Exit::Interrupted),
        _ = terminate.recv() => Ok(Exit::Interrupted),
    }
}

fn man() -> Result<Exit, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut page)
        .map_err(|e| CliError::new(Exit::Failure, e))?;
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
    Ok(Exit::Success)
}
