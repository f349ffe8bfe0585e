//! `exec`: run a command, relay its streams with back-pressure, deliver signals and resizes,
//! and report how it ended after all its output.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use smartvm_guest_protocol::{
    parse_message, ExecControl, ExecRequest, ExitStatus, GuestErrorCode, OwnedFrame, Reply, Stream, DATA_CHUNK,
    STDIN_WINDOW,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::agent::Agent;
use crate::op::{send, OpError, Reader, Writer};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What goes out to the client, from the output pumps and the stdin feeder.
enum Outgoing {
    Data(Stream, Vec<u8>),
    End(Stream),
    Credit(u32),
}

/// What comes in from the client, other than stdin bytes.
enum Incoming {
    Control(ExecControl),
    Gone,
    Broken(OpError),
}

/// A started command.
struct Running {
    pid: i32,
    stdin: Option<pipe::Sender>,
    outputs: Vec<(Stream, pipe::Receiver)>,
    terminal: Option<OwnedFd>,
    exit: oneshot::Receiver<ExitStatus>,
}

/// Runs `request` for this connection.
pub async fn run(agent: &Agent, request: ExecRequest, reader: Reader, writer: &mut Writer) -> Result<(), OpError> {
    let running = start(agent, &request)?;
    let Running { pid, stdin, outputs, terminal, mut exit } = running;
    let window = if stdin.is_some() { STDIN_WINDOW } else { 0 };
    send(writer, &Reply::Started { pid: pid as u32, stdin_window: window }).await?;

    let (out_tx, mut out_rx) = mpsc::channel(8);
    let open_outputs = outputs.len();
    for (stream, source) in outputs {
        tokio::spawn(pump(source, stream, out_tx.clone()));
    }
    let granted = Arc::new(AtomicU64::new(u64::from(window)));
    let mut feeder = None;
    let stdin_tx = stdin.map(|sink| {
        let (tx, rx) = mpsc::unbounded_channel();
        feeder = Some(tokio::spawn(feed(sink, rx, out_tx.clone(), granted.clone(), terminal.is_none())));
        tx
    });
    drop(out_tx);
    let (in_tx, mut in_rx) = mpsc::channel(4);
    let input = tokio::spawn(read_input(reader, stdin_tx, in_tx, granted));

    let group = Pid::from_raw(pid);
    let mut ended = 0;
    let mut status = None;
    let outcome = loop {
        if ended == open_outputs && status.is_some() {
            break Ok(());
        }
        tokio::select! {
            item = out_rx.recv(), if ended < open_outputs => {
                let Some(item) = item else { break Ok(()) };
                if matches!(item, Outgoing::End(_)) {
                    ended += 1;
                }
                if write_outgoing(writer, item).await.is_err() {
                    break Err(None);
                }
            }
            exited = &mut exit, if status.is_none() => {
                status = Some(exited.unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32)));
            }
            incoming = in_rx.recv() => match incoming.unwrap_or(Incoming::Gone) {
                Incoming::Control(control) => apply(control, group, terminal.as_ref()),
                Incoming::Gone => break Err(None),
                Incoming::Broken(error) => break Err(Some(error)),
            },
        }
    };
    input.abort();
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    match outcome {
        Ok(()) => send(writer, &Reply::Exited { status: status.unwrap_or(ExitStatus::Code(0)) }).await,
        Err(error) => {
            // The client left or broke the protocol: nobody will read the command's output.
            let _ = killpg(group, Signal::SIGKILL);
            error.map_or(Ok(()), Err)
        }
    }
}

fn start(agent: &Agent, request: &ExecRequest) -> Result<Running, OpError> {
    let program = request.argv.first().ok_or_else(|| OpError::new(GuestErrorCode::InvalidArgument, "empty argv"))?;
    let mut command = Command::new(program);
    command.args(&request.argv[1..]).current_dir(crate::op::absolute(request.cwd.as_deref().unwrap_or("/"))?);
    if std::env::var_os("PATH").is_none() {
        command.env("PATH", DEFAULT_PATH);
    }
    for pair in &request.env {
        let (name, value) = pair.split_once('=').filter(|(name, _)| !name.is_empty()).ok_or_else(|| {
            OpError::new(GuestErrorCode::InvalidArgument, format!("env entry {pair:?} is not NAME=value"))
        })?;
        command.env(name, value);
    }
    if let Some(uid) = request.uid {
        command.uid(uid);
    }
    if let Some(gid) = request.gid {
        command.gid(gid);
    }
    let spawn_error = |e: std::io::Error| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            GuestErrorCode::NotFound
        } else {
            GuestErrorCode::SpawnFailed
        };
        OpError::new(code, format!("cannot run {program:?}: {e}"))
    };
    match request.tty {
        Some(size) => start_on_terminal(agent, command, size).map_err(spawn_error),
        None => start_with_pipes(agent, command, request.stdin).map_err(spawn_error),
    }
}

fn start_with_pipes(agent: &Agent, mut command: Command, stdin: bool) -> std::io::Result<Running> {
    command.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so a signal or a kill reaches everything it started.
    command.process_group(0);
    let (mut child, exit) = agent.reaper.spawn(&mut command)?;
    let stdin = child.stdin.take().map(|pipe| pipe::Sender::from_owned_fd(OwnedFd::from(pipe))).transpose()?;
    let mut outputs = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        outputs.push((Stream::Stdout, pipe::Receiver::from_owned_fd(OwnedFd::from(out))?));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push((Stream::Stderr, pipe::Receiver::from_owned_fd(OwnedFd::from(err))?));
    }
    Ok(Running { pid: child.id() as i32, stdin, outputs, terminal: None, exit })
}

fn start_on_terminal(
    agent: &Agent,
    mut command: Command,
    size: smartvm_guest_protocol::WindowSize,
) -> std::io::Result<Running> {
    let terminal = crate::pty::open(size)?;
    command
        .stdin(Stdio::from(terminal.slave.try_clone()?))
        .stdout(Stdio::from(terminal.slave.try_clone()?))
        .stderr(Stdio::from(terminal.slave.try_clone()?));
    // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child, exit) = agent.reaper.spawn(&mut command)?;
    // The command holds the slave now; once it and its children close it, reads give EOF (EIO).
    drop(command);
    drop(terminal.slave);
    let (read, write) = crate::pty::async_halves(&terminal.master)?;
    Ok(Running {
        pid: child.id() as i32,
        stdin: Some(write),
        outputs: vec![(Stream::Stdout, read)],
        terminal: Some(terminal.master),
        exit,
    })
}

fn apply(control: ExecControl, group: Pid, terminal: Option<&OwnedFd>) {
    match control {
        ExecControl::Resize(size) => {
            if let Some(master) = terminal {
                let _ = crate::pty::resize(master, size);
            }
        }
        ExecControl::Signal { signal } => {
            if let Ok(signal) = Signal::try_from(signal) {
                let _ = killpg(group, signal);
            }
        }
    }
}

async fn write_outgoing(writer: &mut Writer, item: Outgoing) -> std::io::Result<()> {
    match item {
        Outgoing::Data(stream, bytes) => writer.data(stream, &bytes).await,
        Outgoing::End(stream) => writer.end(stream).await,
        Outgoing::Credit(bytes) => writer.message(&Reply::StdinCredit { bytes }).await,
    }
}

/// Copies one output of the command into frames; the bounded channel is the back-pressure.
async fn pump(mut source: impl AsyncRead + Unpin, stream: Stream, out: mpsc::Sender<Outgoing>) {
    let mut buf = vec![0; DATA_CHUNK];
    loop {
        match source.read(&mut buf).await {
            // A terminal whose last slave closed reads EIO: the same end.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(Outgoing::Data(stream, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.send(Outgoing::End(stream)).await;
}

/// Writes stdin bytes to the command and grants the client as many again. When the command no
/// longer reads (its stdin closed), bytes are dropped but still granted, so no client stalls.
async fn feed(
    mut sink: impl AsyncWrite + Unpin,
    mut chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    out: mpsc::Sender<Outgoing>,
    granted: Arc<AtomicU64>,
    close_at_end: bool,
) {
    let mut open = true;
    while let Some(chunk) = chunks.recv().await {
        if open && sink.write_all(&chunk).await.is_err() {
            open = false;
        }
        let bytes = chunk.len() as u32;
        granted.fetch_add(u64::from(bytes), Ordering::SeqCst);
        if out.send(Outgoing::Credit(bytes)).await.is_err() {
            return;
        }
    }
    if !close_at_end {
        // A terminal stays open after the client's stdin ends: closing it would hang it up.
        std::future::pending::<()>().await;
    }
}

/// Reads the client's frames: stdin bytes within the granted window, controls, the end.
async fn read_input(
    mut reader: Reader,
    mut stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    events: mpsc::Sender<Incoming>,
    granted: Arc<AtomicU64>,
) {
    let mut received = 0u64;
    let event = loop {
        match reader.read_frame().await {
            Ok(Some(OwnedFrame::Data { stream: Stream::Stdin, bytes })) => {
                if bytes.is_empty() {
                    stdin = None;
                    continue;
                }
                received += bytes.len() as u64;
                if received > granted.load(Ordering::SeqCst) {
                    break Incoming::Broken(OpError::new(
                        GuestErrorCode::WindowExceeded,
                        "stdin beyond the granted window",
                    ));
                }
                if let Some(tx) = &stdin {
                    let _ = tx.send(bytes);
                }
            }
            Ok(Some(OwnedFrame::Message(body))) => match parse_message::<ExecControl>(&body) {
                Ok(control) => {
                    if events.send(Incoming::Control(control)).await.is_err() {
                        return;
                    }
                }
                Err(e) => break Incoming::Broken(OpError::frame(&e)),
            },
            Ok(Some(OwnedFrame::Data { stream, .. })) => {
                break Incoming::Broken(OpError::new(
                    GuestErrorCode::BadFrame,
                    format!("{stream:?} data from the client"),
                ))
            }
            Ok(None) => break Incoming::Gone,
            Err(e) => break Incoming::Broken(OpError::read(&e)),
        }
    };
    let _ = events.send(event).await;
}
