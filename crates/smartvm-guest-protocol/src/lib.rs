//! The wire protocol between smartvm (the host) and `smartvm-guest` (the agent inside a guest).
//!
//! # Transport
//! One stream connection per operation: a Unix socket, or AF_VSOCK inside a guest. On the host a
//! Firecracker vsock device is reached through its Unix socket with the `CONNECT <port>\n` /
//! `OK <host port>\n` handshake first; the agent listens on [`DEFAULT_VSOCK_PORT`] unless told
//! otherwise. A connection carries exactly one [`Request`], so an operation costs one round trip
//! and its back-pressure is the connection's own.
//!
//! # Frames
//! ```text
//! +-------------------+---------+--------------------------+
//! | length: u32 (BE)  | kind u8 | body: length - 1 bytes   |
//! +-------------------+---------+--------------------------+
//! ```
//! `length` counts the kind byte and the body and is at most [`MAX_FRAME_LEN`].
//! - kind `0x01`, **message**: the body is one JSON object — a [`Request`] or [`ExecControl`]
//!   from the host, a [`Reply`] from the agent.
//! - kind `0x02`, **data**: the body's first byte names a [`Stream`], the rest are that stream's
//!   bytes (at most [`DATA_CHUNK`] from a well-behaved peer). A data frame with no bytes after the
//!   stream byte ends that stream.
//!
//! Anything else (length 0, too long, unknown kind or stream, a message that is not the expected
//! JSON) is answered with a [`Reply::Error`] and the connection is closed; it never harms the
//! agent or its other sessions.
//!
//! # Operations
//! | request | agent's replies, in order |
//! |---|---|
//! | `hello` | `welcome` |
//! | `health` | `health` |
//! | `echo` | `echo` (same text) |
//! | `stat` | `stat` |
//! | `exec` | `started`, then `stdout`/`stderr` data and `stdin_credit`, then `exited` |
//! | `copy_in` | `ready`; the host sends the `archive` stream (a tar), ending it; then `done` |
//! | `copy_out` | `ready`, the `archive` stream (a tar) ending with an empty frame, then `done` |
//! | `forward` | `ready`; from then on the connection is raw bytes to and from the guest port |
//! | `shutdown` | `shutting_down`, then the guest powers off (or the agent exits) |
//!
//! During an `exec` the host may send [`ExecControl`] messages (resize, signal) and `stdin` data,
//! never more unacknowledged stdin bytes than the agent granted (`started.stdin_window` plus each
//! `stdin_credit`). Closing the connection before `exited` kills the command's process group.

mod frame;
mod message;

#[cfg(feature = "archive")]
pub mod archive;
#[cfg(feature = "tokio")]
mod io;

pub use frame::{data_frame, decode, message_frame, parse_message, Frame, FrameError, OwnedFrame, Stream};
#[cfg(feature = "tokio")]
pub use io::{FrameReader, FrameWriter, ReadError};
pub use message::{
    Capability, ErrorReply, ExecControl, ExecRequest, ExitStatus, FileKind, GuestErrorCode, Reply, Request, StatReply,
    WindowSize,
};

/// The protocol version this crate speaks; `hello` and `welcome` carry it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The AF_VSOCK port `smartvm-guest` listens on unless given `--listen vsock:PORT`.
pub const DEFAULT_VSOCK_PORT: u32 = 10700;

/// The largest frame, counting the kind byte and the body.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// The most bytes a sender puts into one data frame.
pub const DATA_CHUNK: usize = 64 * 1024;

/// The stdin bytes an `exec` may have in flight before the agent grants more.
pub const STDIN_WINDOW: u32 = 256 * 1024;

/// The name the agent reports in `welcome`.
pub const AGENT_NAME: &str = "smartvm-guest";

/// The console line `smartvm-guest` prints as PID 1 before it powers off: this prefix, then the
/// workload's exit status (`smartvm-guest exit=3`).
pub const EXIT_REPORT: &str = "smartvm-guest exit=";

/// The probe guest's equivalent (`probe.exit=N`): `smartvm-probe exit code=3`.
pub const PROBE_EXIT_REPORT: &str = "smartvm-probe exit code=";

/// The exit status a guest reported on its console (the last report wins), if it reported one.
pub fn reported_exit<'a>(console: impl IntoIterator<Item = &'a str>) -> Option<u8> {
    console
        .into_iter()
        .filter_map(|line| {
            let line = line.trim_end();
            let value = line.strip_prefix(EXIT_REPORT).or_else(|| line.strip_prefix(PROBE_EXIT_REPORT))?;
            value.parse::<u8>().ok()
        })
        .last()
}

/// The name the probe guest reports in `welcome`.
pub const PROBE_NAME: &str = "smartvm-probe";
