//! `exec`: a running command's streams as an [`Execution`], and [`Output`] for run-to-end.

use std::sync::Arc;

use smartvm_guest_protocol::{
    ExecControl, ExecRequest, ExitStatus, FrameReader, FrameWriter, OwnedFrame, Reply, Stream, WindowSize, DATA_CHUNK,
};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::{protocol, reply_of, unexpected, GuestClient, GuestConnection, Session};
use crate::error::{GuestError, Result};

/// Output events buffered before the reader stops reading (and the guest's command blocks).
const EVENTS_IN_FLIGHT: usize = 16;

/// Something a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes on its stdout (with a terminal: all its output).
    Stdout(Vec<u8>),
    /// Bytes on its stderr.
    Stderr(Vec<u8>),
    /// It ended; nothing follows.
    Exited(ExitStatus),
}

/// A finished command's status and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// `self` if the command exited 0, else [`GuestError::ExecFailed`] (`EXEC_FAILED`).
    pub fn checked(self, command: &str) -> Result<Output> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(GuestError::ExecFailed { command: command.to_owned(), status: self.status }.into())
        }
    }
}

enum Outbound {
    Stdin(Vec<u8>),
    EndStdin,
    Control(ExecControl),
}

/// A command running in the guest. Dropping it before the command ends closes the connection,
/// and the agent kills the command's process group.
#[derive(Debug)]
pub struct Execution {
    pid: u32,
    events: mpsc::Receiver<Result<ExecEvent>>,
    outbound: mpsc::UnboundedSender<Outbound>,
    stdin: Option<ExecStdin>,
    reader: JoinHandle<()>,
}

/// Resizes and signals a running command from anywhere: a clone of the [`Execution`]'s
/// control line, for when the execution itself is busy relaying output.
#[derive(Debug, Clone)]
pub struct ExecHandle {
    outbound: mpsc::UnboundedSender<Outbound>,
}

impl ExecHandle {
    /// Sets the terminal's size (commands started with a terminal).
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        self.send(Outbound::Control(ExecControl::Resize(size)))
    }

    /// Sends a signal (a Linux signal number) to the command's process group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.send(Outbound::Control(ExecControl::Signal { signal }))
    }

    fn send(&self, message: Outbound) -> Result<()> {
        self.outbound.send(message).map_err(|_| protocol("exec", "the command's connection is closed".into()))
    }
}

/// The command's stdin. Writes wait while the agent has not yet passed on earlier bytes (its
/// window), so memory stays bounded on both sides however fast the writer is.
#[derive(Debug)]
pub struct ExecStdin {
    outbound: mpsc::UnboundedSender<Outbound>,
    credit: Arc<Semaphore>,
}

impl GuestClient {
    /// Starts a command. With `request.stdin`, [`Execution::take_stdin`] gives its input.
    pub async fn exec(&self, request: ExecRequest) -> Result<Execution> {
        let wants_stdin = request.stdin || request.tty.is_some();
        let mut session = Session::open(self, &smartvm_guest_protocol::Request::Exec(request), "exec").await?;
        let (pid, window) = match session.reply().await? {
            Reply::Started { pid, stdin_window } => (pid, stdin_window),
            other => return Err(unexpected("exec", &other)),
        };
        let credit = Arc::new(Semaphore::new(window as usize));
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(EVENTS_IN_FLIGHT);
        tokio::spawn(write_outbound(session.writer, outbound_rx));
        let reader = tokio::spawn(read_events(session.reader, events_tx, credit.clone()));
        let stdin = wants_stdin.then(|| ExecStdin { outbound: outbound.clone(), credit });
        Ok(Execution { pid, events, outbound, stdin, reader })
    }

    /// Runs `argv` to its end and collects its output (a non-zero exit is not an error here:
    /// see [`Output::checked`]).
    pub async fn output(&self, argv: &[&str]) -> Result<Output> {
        let request = ExecRequest { argv: argv.iter().map(|a| (*a).to_owned()).collect(), ..Default::default() };
        self.exec(request).await?.wait_with_output().await
    }
}

impl Execution {
    /// The command's process id in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its stdin (once), when the request asked for stdin or a terminal.
    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    /// The next output, or the exit; `None` after the exit.
    pub async fn next(&mut self) -> Option<Result<ExecEvent>> {
        self.events.recv().await
    }

    /// Sets the terminal's size (commands started with a terminal).
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        self.handle().resize(size)
    }

    /// Sends a signal (a Linux signal number) to the command's process group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.handle().signal(signal)
    }

    /// A handle that resizes and signals the command while this execution relays its output.
    pub fn handle(&self) -> ExecHandle {
        ExecHandle { outbound: self.outbound.clone() }
    }

    /// Waits for the end, collecting all output. Ends stdin first if it was never taken.
    pub async fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.events.recv().await {
            match event? {
                ExecEvent::Stdout(bytes) => stdout.extend_from_slice(&bytes),
                ExecEvent::Stderr(bytes) => stderr.extend_from_slice(&bytes),
                ExecEvent::Exited(status) => return Ok(Output { status, stdout, stderr }),
            }
        }
        Err(protocol("exec", "the connection ended without an exit status".into()))
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl ExecStdin {
    /// Sends `bytes`, waiting for the agent's window where needed.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        for chunk in bytes.chunks(DATA_CHUNK) {
            let permits = self
                .credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| protocol("exec", "the command ended; its stdin is closed".into()))?;
            permits.forget();
            self.outbound
                .send(Outbound::Stdin(chunk.to_vec()))
                .map_err(|_| protocol("exec", "the command's connection is closed".into()))?;
        }
        Ok(())
    }

    /// Ends the input (the command reads end-of-file).
    pub fn close(self) {
        // Dropping sends the end.
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        let _ = self.outbound.send(Outbound::EndStdin);
    }
}

async fn write_outbound(
    mut writer: FrameWriter<WriteHalf<GuestConnection>>,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
) {
    while let Some(message) = outbound.recv().await {
        let written = match message {
            Outbound::Stdin(bytes) => writer.data(Stream::Stdin, &bytes).await,
            Outbound::EndStdin => writer.end(Stream::Stdin).await,
            Outbound::Control(control) => writer.message(&control).await,
        };
        if written.is_err() {
            return;
        }
    }
}

async fn read_events(
    mut reader: FrameReader<ReadHalf<GuestConnection>>,
    events: mpsc::Sender<Result<ExecEvent>>,
    credit: Arc<Semaphore>,
) {
    let last = loop {
        let event = match reader.read_frame().await {
            Ok(Some(OwnedFrame::Data { bytes, .. })) if bytes.is_empty() => continue,
            Ok(Some(OwnedFrame::Data { stream: Stream::Stdout, bytes })) => ExecEvent::Stdout(bytes),
            Ok(Some(OwnedFrame::Data { stream: Stream::Stderr, bytes })) => ExecEvent::Stderr(bytes),
            Ok(Some(OwnedFrame::Data { stream, .. })) => break Err(protocol("exec", format!("{stream:?} data"))),
            Ok(Some(OwnedFrame::Message(body))) => match reply_of("exec", &body) {
                Ok(Reply::StdinCredit { bytes }) => {
                    credit.add_permits(bytes as usize);
                    continue;
                }
                Ok(Reply::Exited { status }) => break Ok(ExecEvent::Exited(status)),
                Ok(other) => break Err(unexpected("exec", &other)),
                Err(e) => break Err(e),
            },
            Ok(None) => break Err(protocol("exec", "the connection closed before the command ended".into())),
            Err(e) => break Err(protocol("exec", e.to_string())),
        };
        if events.send(Ok(event)).await.is_err() {
            return;
        }
    };
    credit.close();
    let _ = events.send(last).await;
}
