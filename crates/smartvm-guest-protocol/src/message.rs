//! The typed messages: what the host asks ([`Request`], [`ExecControl`]) and what the agent
//! answers ([`Reply`]).

use serde::{Deserialize, Serialize};

/// The one request that opens a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Who is there: answered with [`Reply::Welcome`].
    Hello {
        /// The client's name and version, for the agent's log.
        client: String,
        /// The client's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        protocol: u32,
    },
    /// Liveness and load: answered with [`Reply::Health`].
    Health,
    /// Round trip: answered with [`Reply::Echo`] carrying the same text.
    Echo {
        /// Any text.
        text: String,
    },
    /// One path's metadata (not following a final symlink): [`Reply::Stat`].
    Stat {
        /// An absolute guest path.
        path: String,
    },
    /// Run a command.
    Exec(ExecRequest),
    /// Unpack the tar archive that follows into `dir`; nothing is written outside it.
    CopyIn {
        /// An absolute guest directory; it must exist.
        dir: String,
    },
    /// Send `path` (a file, or a directory with all it holds) as a tar archive with one top
    /// entry, named `name` or else the path's last component.
    CopyOut {
        /// An absolute guest path.
        path: String,
        /// The top entry's name in the archive.
        #[serde(default)]
        name: Option<String>,
    },
    /// Connect to `127.0.0.1:port` in the guest, then relay raw bytes.
    Forward {
        /// The guest's TCP port.
        port: u16,
    },
    /// Power the guest off (the agent as PID 1) or end the agent (as a service).
    Shutdown,
}

/// What `exec` runs and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments; the program is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Environment variables as `NAME=value`, added to the agent's own (`PATH` and `HOME` at
    /// least).
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory (default `/`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run as this user id (default: the agent's).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Run with this group id (default: the agent's; `uid` alone keeps the agent's group).
    #[serde(default)]
    pub gid: Option<u32>,
    /// Run on a new pseudo-terminal of this size; output then comes on `stdout` only.
    #[serde(default)]
    pub tty: Option<WindowSize>,
    /// Whether the host sends stdin; without it the command's stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Messages the host may send while an `exec` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecControl {
    /// New terminal size (PTY sessions only).
    Resize(WindowSize),
    /// Deliver a signal (a Linux signal number) to the command's process group.
    Signal {
        /// The signal number.
        signal: i32,
    },
}

/// Everything the agent says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The answer to `hello`.
    Welcome {
        /// `smartvm-guest` or `smartvm-probe`.
        name: String,
        /// The agent's own version.
        version: String,
        /// The agent's protocol version.
        protocol: u32,
        /// What it can do.
        capabilities: Vec<Capability>,
    },
    /// The answer to `health`.
    Health {
        /// Milliseconds since the agent started.
        uptime_ms: u64,
        /// Connections being served, this one included.
        sessions: u32,
        /// Whether the agent is the guest's PID 1.
        init: bool,
    },
    /// The answer to `echo`.
    Echo {
        /// The request's text.
        text: String,
    },
    /// The answer to `stat`.
    Stat(StatReply),
    /// The command runs.
    Started {
        /// Its process id in the guest.
        pid: u32,
        /// Stdin bytes the host may send before the next `stdin_credit` (0 without stdin).
        stdin_window: u32,
    },
    /// The agent passed this many stdin bytes to the command; the host may send as many more.
    StdinCredit {
        /// Bytes.
        bytes: u32,
    },
    /// The command ended; all its output was sent before this.
    Exited {
        /// How.
        status: ExitStatus,
    },
    /// `copy_in`: send the archive; `copy_out`: the archive follows; `forward`: connected, raw
    /// bytes follow.
    Ready,
    /// A copy finished.
    Done {
        /// Archive bytes moved.
        bytes: u64,
        /// Entries (files, directories, links) moved.
        entries: u64,
    },
    /// The agent is shutting the guest down.
    ShuttingDown,
    /// The request failed; the connection closes after this.
    Error(ErrorReply),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal (this number) ended it.
    Signal(i32),
}

impl ExitStatus {
    /// The status a shell reports: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }

    /// Whether the command exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// The metadata `stat` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatReply {
    /// What the path is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, socket, FIFO).
    Other,
}

/// A refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: GuestErrorCode,
    /// For people.
    pub message: String,
}

/// The agent's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestErrorCode {
    /// Bytes that are not a frame, or a message that is not the expected one.
    BadFrame,
    /// A frame longer than [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN).
    FrameTooLarge,
    /// This guest does not do that (the probe answers `exec` with it).
    Unsupported,
    /// Arguments that cannot work (an empty argv, a relative path).
    InvalidArgument,
    /// The path does not exist.
    NotFound,
    /// The guest refused access.
    PermissionDenied,
    /// The command could not be started.
    SpawnFailed,
    /// The guest port refused the connection.
    ConnectFailed,
    /// The host sent more stdin than it was granted.
    WindowExceeded,
    /// The agent serves its maximum of sessions; retry later.
    Busy,
    /// Another I/O failure in the guest.
    Io,
    /// A code from a newer agent.
    #[serde(other)]
    Unknown,
}

/// Things an agent can do; `welcome` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `hello`.
    Hello,
    /// `health`.
    Health,
    /// `echo`.
    Echo,
    /// `stat`.
    Stat,
    /// `exec` without a terminal.
    Exec,
    /// `exec` with a terminal.
    Pty,
    /// `copy_in`.
    CopyIn,
    /// `copy_out`.
    CopyOut,
    /// `forward`.
    Forward,
    /// `shutdown`.
    Shutdown,
    /// A capability of a newer agent.
    #[serde(other)]
    Unknown,
}

impl Request {
    /// The capability this request needs.
    pub fn capability(&self) -> Capability {
        match self {
            Request::Hello { .. } => Capability::Hello,
            Request::Health => Capability::Health,
            Request::Echo { .. } => Capability::Echo,
            Request::Stat { .. } => Capability::Stat,
            Request::Exec(exec) if exec.tty.is_some() => Capability::Pty,
            Request::Exec(_) => Capability::Exec,
            Request::CopyIn { .. } => Capability::CopyIn,
            Request::CopyOut { .. } => Capability::CopyOut,
            Request::Forward { .. } => Capability::Forward,
            Request::Shutdown => Capability::Shutdown,
        }
    }
}
