//! What every operation of a session works with: the connection's frame reader and writer,
//! the error an operation answers with, and sending a reply.

use std::path::Path;

use smartvm_guest_protocol::{FrameError, FrameReader, FrameWriter, GuestErrorCode, ReadError, Reply};
use tokio::io::{ReadHalf, WriteHalf};

use crate::listen::BoxedConnection;

/// Frames from the client.
pub type Reader = FrameReader<ReadHalf<BoxedConnection>>;
/// Frames to the client.
pub type Writer = FrameWriter<WriteHalf<BoxedConnection>>;

/// A failed operation, sent to the client as [`Reply::Error`].
#[derive(Debug)]
pub struct OpError {
    /// The code.
    pub code: GuestErrorCode,
    /// For people.
    pub message: String,
}

impl OpError {
    /// A failure with this code.
    pub fn new(code: GuestErrorCode, message: impl Into<String>) -> OpError {
        OpError { code, message: message.into() }
    }

    /// An I/O failure about `what`, coded by its kind.
    pub fn io(error: std::io::Error, what: impl std::fmt::Display) -> OpError {
        let code = match error.kind() {
            std::io::ErrorKind::NotFound => GuestErrorCode::NotFound,
            std::io::ErrorKind::PermissionDenied => GuestErrorCode::PermissionDenied,
            _ => GuestErrorCode::Io,
        };
        OpError::new(code, format!("{what}: {error}"))
    }

    /// A frame that broke the protocol.
    pub fn frame(error: &FrameError) -> OpError {
        let code = match error {
            FrameError::TooLarge { .. } => GuestErrorCode::FrameTooLarge,
            _ => GuestErrorCode::BadFrame,
        };
        OpError::new(code, error.to_string())
    }

    /// A frame that could not be read.
    pub fn read(error: &ReadError) -> OpError {
        match error {
            ReadError::Frame(frame) => OpError::frame(frame),
            other => OpError::new(GuestErrorCode::BadFrame, other.to_string()),
        }
    }
}

/// `path` if it is absolute.
pub fn absolute(path: &str) -> Result<&Path, OpError> {
    let path = Path::new(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(OpError::new(GuestErrorCode::InvalidArgument, format!("{} is not an absolute path", path.display())))
    }
}

/// Sends one reply; a failure means the client is gone.
pub async fn send(writer: &mut Writer, reply: &Reply) -> Result<(), OpError> {
    writer.message(reply).await.map_err(|e| OpError::new(GuestErrorCode::Io, format!("the client is gone: {e}")))
}
