//! Exit codes and error reporting.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (for `run`: the guest ended normally) |
//! | 1 | failure (a VM could not be started, an API call failed, …) |
//! | 2 | bad command-line usage |
//! | 3 | invalid input (`INVALID_CONFIG`, `INVALID_BASE_IMAGE_MANIFEST`, `INVALID_SUBNET`, …) |
//! | 4 | this host cannot run VMs (no /dev/kvm, no Firecracker binary, an untrusted binary or dir, `doctor` found a blocker), or its agent refuses this user (`PERMISSION_DENIED`) |
//! | 5 | the guest or Firecracker exited with an error; a guest command could not be started (`EXEC_FAILED`) |
//! | N | `exec`, `shell`: the command's own exit status (128 + the signal when a signal ended it) |
//! | 124 | `run --timeout` expired; the VM was stopped and cleaned up |
//! | 130 | interrupted (Ctrl-C / SIGTERM); the VM was stopped and cleaned up |
//! | 141 | `run`'s stdout was closed (e.g. `| head`); the VM was stopped and cleaned up |

use std::error::Error;
use std::process::ExitCode;

use smartvm::error::ErrorCode;
use smartvm::SmartVmError;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    Failure,
    Usage,
    InvalidConfig,
    HostUnfit,
    GuestFailed,
    TimedOut,
    Interrupted,
    BrokenPipe,
    /// `exec`/`shell`: the guest command's status, passed on as it is.
    Command(u8),
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::InvalidConfig => 3,
            Exit::HostUnfit => 4,
            Exit::GuestFailed => 5,
            Exit::TimedOut => 124,
            Exit::Interrupted => 130,
            Exit::BrokenPipe => 141,
            Exit::Command(code) => code,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// A command failure: what to print and which code to exit with.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub error: Box<dyn Error + Send + Sync>,
}

impl CliError {
    pub fn new(exit: Exit, error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self { exit, error: error.into() }
    }
}

impl From<SmartVmError> for CliError {
    fn from(e: SmartVmError) -> Self {
        let exit = exit_for(e.code());
        CliError { exit, error: Box::new(e) }
    }
}

/// The exit status of each error code: exhaustive, so a new code cannot go unmapped.
pub fn exit_for(code: ErrorCode) -> Exit {
    use ErrorCode::*;
    match code {
        InvalidConfig
        | InvalidBaseImageManifest
        | InvalidBaseImageCacheLimit
        | InvalidSubnet
        | InvalidInterfaceName => Exit::InvalidConfig,
        BinaryNotFound | UntrustedPath | AgentUnavailable | PermissionDenied => Exit::HostUnfit,
        InvalidState
        | VmNotFound
        | PoolNotFound
        | SocketTimeout
        | ApiTimeout
        | SocketRequestFailed
        | ApiError
        | DownloadFailed
        | VersionFetchFailed
        | BaseImageResolveFailed
        | BaseImageManifestFailed
        | BaseImagePrepareFailed
        | IpExhausted
        | BridgeSetupFailed
        | TapCreateFailed
        | RootfsCreateFailed
        | RootfsCloneFailed
        | StartFailed
        | NoClient
        | ProcessFailed
        | StagingFailed
        | IoError
        | SnapshotFailed
        | Busy
        | NoSuchRoute
        | GuestUnavailable
        | GuestProtocol
        | GuestRefused => Exit::Failure,
        ExecFailed => Exit::GuestFailed,
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: no notices.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// A notice on stderr (what started, how it ended), unless `-q`.
pub fn notice(message: std::fmt::Arguments<'_>) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{message}");
    }
}

/// Prints `error[CODE]: message` and a numbered "Caused by:" chain to stderr.
pub fn report(err: &CliError) {
    let smartvm = err.error.downcast_ref::<SmartVmError>();
    if let Some(SmartVmError::InvalidConfig(errors)) = smartvm {
        // One problem per line, each naming its field.
        eprintln!("error[INVALID_CONFIG]: invalid VM configuration ({} problem(s))", errors.problems.len());
        for p in &errors.problems {
            eprintln!("  - {}: {}", p.field, p.message);
        }
        if errors.problems.iter().any(|p| p.message.contains("must be an absolute path")) {
            eprintln!("help: on the command line, paths may be relative to the current directory");
        }
        return;
    }
    let code = smartvm.map(|e| e.code());
    match code {
        Some(c) => eprintln!("error[{c}]: {}", err.error),
        None => eprintln!("error: {}", err.error),
    }
    let mut source = err.error.source();
    if source.is_some() {
        eprintln!("\nCaused by:");
    }
    let mut i = 0;
    while let Some(s) = source {
        eprintln!("  {i}: {s}");
        source = s.source();
        i += 1;
    }
    if let Some(help) = code.and_then(help_for) {
        eprintln!("help: {help}");
    }
}

/// What usually fixes an error with this code, where one fix is known.
fn help_for(code: ErrorCode) -> Option<&'static str> {
    use ErrorCode::*;
    Some(match code {
        BinaryNotFound => "run `smartvm binary ensure` to download the pinned release, or set SMARTVM_FIRECRACKER_BIN",
        AgentUnavailable => "start the agent with `smartvm serve` (or `systemctl start smartvm`)",
        VmNotFound => "`smartvm ps -a` lists the agent's VMs",
        PoolNotFound => "`smartvm pool ls` lists the agent's pools",
        InvalidState => "`smartvm inspect ID` shows the VM's state",
        UntrustedPath => "see \"Safe on a shared host\" in the README",
        SocketTimeout => "`smartvm doctor` checks this host; SMARTVM_LOG=debug shows each start step",
        _ => return None,
    })
}

/// `code N` or `signal N`.
pub fn describe(info: smartvm::process::ExitInfo) -> String {
    match (info.code, info.signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}
