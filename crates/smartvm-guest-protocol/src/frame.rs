//! Frame encoding and decoding: pure functions over byte slices (no I/O), so a fuzzer and unit
//! tests drive them directly.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::MAX_FRAME_LEN;

const KIND_MESSAGE: u8 = 0x01;
const KIND_DATA: u8 = 0x02;
const HEADER_LEN: usize = 5;

/// A byte stream inside a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stream {
    /// The command's standard input (host → guest).
    Stdin = 0,
    /// The command's standard output (guest → host); with a PTY, all terminal output.
    Stdout = 1,
    /// The command's standard error (guest → host).
    Stderr = 2,
    /// A tar archive (`copy_in`: host → guest, `copy_out`: guest → host).
    Archive = 3,
}

impl Stream {
    fn from_byte(byte: u8) -> Option<Stream> {
        Some(match byte {
            0 => Stream::Stdin,
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            3 => Stream::Archive,
            _ => return None,
        })
    }
}

/// One decoded frame, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON message body.
    Message(&'a [u8]),
    /// Bytes of one stream; empty means the stream ended.
    Data {
        /// Which stream.
        stream: Stream,
        /// Its bytes.
        bytes: &'a [u8],
    },
}

/// One decoded frame, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedFrame {
    /// A JSON message body.
    Message(Vec<u8>),
    /// Bytes of one stream; empty means the stream ended.
    Data {
        /// Which stream.
        stream: Stream,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

impl From<Frame<'_>> for OwnedFrame {
    fn from(frame: Frame<'_>) -> OwnedFrame {
        match frame {
            Frame::Message(body) => OwnedFrame::Message(body.to_vec()),
            Frame::Data { stream, bytes } => OwnedFrame::Data { stream, bytes: bytes.to_vec() },
        }
    }
}

/// Why bytes are not a frame (or a frame not the expected message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is 0.
    #[error("a frame of length 0")]
    Empty,
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("a frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge {
        /// The announced length.
        len: u32,
    },
    /// The kind byte is neither message nor data.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A data frame without its stream byte.
    #[error("a data frame without a stream byte")]
    MissingStream,
    /// A data frame naming no known stream.
    #[error("unknown stream {0}")]
    UnknownStream(u8),
    /// A message body that is not the expected JSON message.
    #[error("a message that is not a valid {expected}: {reason}")]
    BadMessage {
        /// The message type expected at this point.
        expected: &'static str,
        /// What the JSON parser said.
        reason: String,
    },
}

/// Decodes the first frame of `buf`: `Ok(None)` while `buf` holds only part of one, else the frame
/// and how many bytes of `buf` it used. Rejects a bad header before its body has arrived.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(header) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    if let Some(&kind) = buf.get(4) {
        check_kind(kind)?;
    }
    let total = 4 + len as usize;
    let Some(frame) = buf.get(4..total) else { return Ok(None) };
    Ok(Some((parse_body(frame[0], &frame[1..])?, total)))
}

/// The two kinds of frame.
pub(crate) enum FrameKind {
    Message,
    Data,
}

pub(crate) fn check_kind(kind: u8) -> Result<FrameKind, FrameError> {
    match kind {
        KIND_MESSAGE => Ok(FrameKind::Message),
        KIND_DATA => Ok(FrameKind::Data),
        other => Err(FrameError::UnknownKind(other)),
    }
}

pub(crate) fn stream_of(byte: u8) -> Result<Stream, FrameError> {
    Stream::from_byte(byte).ok_or(FrameError::UnknownStream(byte))
}

/// Interprets a frame's kind byte and body.
fn parse_body(kind: u8, body: &[u8]) -> Result<Frame<'_>, FrameError> {
    match check_kind(kind)? {
        FrameKind::Message => Ok(Frame::Message(body)),
        FrameKind::Data => {
            let (&stream, bytes) = body.split_first().ok_or(FrameError::MissingStream)?;
            Ok(Frame::Data { stream: stream_of(stream)?, bytes })
        }
    }
}

/// Checks a header's length field (shared by [`decode`] and the async reader).
pub(crate) fn check_len(len: u32) -> Result<(), FrameError> {
    match len {
        0 => Err(FrameError::Empty),
        len if len > MAX_FRAME_LEN => Err(FrameError::TooLarge { len }),
        _ => Ok(()),
    }
}

/// Encodes a message frame.
pub fn message_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0; HEADER_LEN];
    serde_json::to_writer(&mut out, message)
        .map_err(|e| FrameError::BadMessage { expected: "serializable message", reason: e.to_string() })?;
    finish(out, KIND_MESSAGE)
}

/// Encodes a data frame; empty `bytes` ends the stream.
pub fn data_frame(stream: Stream, bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + bytes.len());
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(stream as u8);
    out.extend_from_slice(bytes);
    finish(out, KIND_DATA)
}

fn finish(mut out: Vec<u8>, kind: u8) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    check_len(len)?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4] = kind;
    Ok(out)
}

/// Parses a message body as `T`.
pub fn parse_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::BadMessage {
        expected: std::any::type_name::<T>().rsplit("::").next().unwrap_or("message"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
