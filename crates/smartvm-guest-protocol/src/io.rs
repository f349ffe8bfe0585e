//! Frames over tokio's async byte streams.

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::frame::{
    check_kind, check_len, data_frame, message_frame, stream_of, FrameError, FrameKind, OwnedFrame, Stream,
};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The connection ended inside a frame.
    #[error("the connection ended inside a frame")]
    Truncated,
    /// The connection failed.
    #[error("reading a frame failed")]
    Io(#[source] std::io::Error),
}

/// Reads frames from a byte stream, one allocation per frame of at most its announced length.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader { inner: BufReader::with_capacity(64 * 1024, inner) }
    }

    /// The next frame; `Ok(None)` when the peer closed the stream between frames.
    pub async fn read_frame(&mut self) -> Result<Option<OwnedFrame>, ReadError> {
        let mut header = [0u8; 5];
        let first = self.inner.read(&mut header[..1]).await.map_err(ReadError::Io)?;
        if first == 0 {
            return Ok(None);
        }
        self.read_exact(&mut header[1..]).await?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        check_len(len)?;
        // Kind and stream are checked before the body is read: a bad header costs no allocation.
        let mut body_len = len as usize - 1;
        let stream = match check_kind(header[4])? {
            FrameKind::Message => None,
            FrameKind::Data => {
                let mut stream = [0u8];
                if body_len == 0 {
                    return Err(FrameError::MissingStream.into());
                }
                self.read_exact(&mut stream).await?;
                body_len -= 1;
                Some(stream_of(stream[0])?)
            }
        };
        let mut body = vec![0; body_len];
        self.read_exact(&mut body).await?;
        Ok(Some(match stream {
            None => OwnedFrame::Message(body),
            Some(stream) => OwnedFrame::Data { stream, bytes: body },
        }))
    }

    /// The stream, still holding any bytes read ahead (a `forward` turns raw after `ready`).
    pub fn into_inner(self) -> BufReader<R> {
        self.inner
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        match self.inner.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ReadError::Truncated),
            Err(e) => Err(ReadError::Io(e)),
        }
    }
}

/// Writes frames to a byte stream, each with one write.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps a stream.
    pub fn new(inner: W) -> FrameWriter<W> {
        FrameWriter { inner }
    }

    /// Sends a message.
    pub async fn message<T: Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        let frame = message_frame(message).map_err(std::io::Error::other)?;
        self.inner.write_all(&frame).await
    }

    /// Sends stream bytes, split into frames of at most [`DATA_CHUNK`](crate::DATA_CHUNK).
    pub async fn data(&mut self, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(crate::DATA_CHUNK) {
            let frame = data_frame(stream, chunk).map_err(std::io::Error::other)?;
            self.inner.write_all(&frame).await?;
        }
        Ok(())
    }

    /// Ends a stream.
    pub async fn end(&mut self, stream: Stream) -> std::io::Result<()> {
        let frame = data_frame(stream, &[]).map_err(std::io::Error::other)?;
        self.inner.write_all(&frame).await
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
