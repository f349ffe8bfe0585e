//! A process the guest agent runs for a task — its OCI process (as the task's init) or an exec —
//! with containerd's FIFOs as its stdio: output relayed as it comes, stdin as the agent's window
//! allows, its exit kept for `Wait`/`State`, resize and signals passed on.

use std::sync::Mutex;

use smartvm::guest::protocol::{ExecRequest, ExitStatus, WindowSize};
use smartvm::guest::{ExecEvent, ExecHandle, ExecStdin, Execution, GuestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};

/// The FIFOs containerd gave a process (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessIo {
    /// Its stdin.
    pub stdin: String,
    /// Its stdout (with a terminal: all its output).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// How a process ended, as the agent told or as the shim saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// The agent reported this status.
    Exited(ExitStatus),
    /// The connection to the agent ended first (the VM stopped): the status is unknown.
    Lost,
}

impl ProcessEnd {
    /// containerd's exit status: the code, 128 + the signal, or 255 when unknown.
    pub fn status(self) -> u32 {
        match self {
            ProcessEnd::Exited(status) => status.shell_code() as u32,
            ProcessEnd::Lost => 255,
        }
    }
}

/// A running (or ended) process in the guest.
#[derive(Debug)]
pub struct GuestProcess {
    pid: u32,
    handle: ExecHandle,
    close_stdin: Mutex<Option<oneshot::Sender<()>>>,
    ended: watch::Receiver<Option<ProcessEnd>>,
}

impl GuestProcess {
    /// Starts `request` through `client` and relays its stdio to `io`'s FIFOs. The request
    /// gets stdin exactly when `io` has a stdin FIFO.
    pub async fn start(client: &GuestClient, mut request: ExecRequest, io: ProcessIo) -> smartvm::Result<Self> {
        request.stdin = !io.stdin.is_empty();
        let mut execution = client.exec(request).await?;
        let (close_tx, close_rx) = oneshot::channel();
        if let Some(stdin) = execution.take_stdin() {
            tokio::spawn(relay_stdin(io.stdin.clone(), stdin, close_rx));
        }
        let (ended_tx, ended) = watch::channel(None);
        let (pid, handle) = (execution.pid(), execution.handle());
        tokio::spawn(async move {
            let end = relay_output(&mut execution, &io).await;
            ended_tx.send_replace(Some(end));
        });
        Ok(GuestProcess { pid, handle, close_stdin: Mutex::new(Some(close_tx)), ended })
    }

    /// Its pid in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its end, once known.
    pub fn ended(&self) -> Option<ProcessEnd> {
        *self.ended.borrow()
    }

    /// Waits for its end.
    pub async fn wait(&self) -> ProcessEnd {
        let mut ended = self.ended.clone();
        let end = match ended.wait_for(Option::is_some).await {
            Ok(end) => end.unwrap_or(ProcessEnd::Lost),
            Err(_) => ProcessEnd::Lost,
        };
        end
    }

    /// Sends a signal to its process group.
    pub fn signal(&self, signal: i32) -> smartvm::Result<()> {
        self.handle.signal(signal)
    }

    /// Sets its terminal's size.
    pub fn resize(&self, rows: u16, cols: u16) -> smartvm::Result<()> {
        self.handle.resize(WindowSize { rows, cols })
    }

    /// Ends its stdin (containerd's `CloseIO`): it reads end-of-file.
    pub fn close_stdin(&self) {
        if let Some(close) = self.close_stdin.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = close.send(());
        }
    }
}

async fn open_writer(path: &str) -> Option<pipe::Sender> {
    (!path.is_empty()).then(|| pipe::OpenOptions::new().open_sender(path).ok()).flatten()
}

/// Writes `bytes` to `pipe`; a reader that went away stops that stream, not the process.
async fn write_to(pipe: &mut Option<pipe::Sender>, bytes: &[u8]) {
    if let Some(p) = pipe.as_mut() {
        if p.write_all(bytes).await.is_err() {
            *pipe = None;
        }
    }
}

async fn relay_output(execution: &mut Execution, io: &ProcessIo) -> ProcessEnd {
    let mut stdout = open_writer(&io.stdout).await;
    let mut stderr = open_writer(&io.stderr).await;
    while let Some(event) = execution.next().await {
        match event {
            Ok(ExecEvent::Stdout(bytes)) => write_to(&mut stdout, &bytes).await,
            Ok(ExecEvent::Stderr(bytes)) => write_to(&mut stderr, &bytes).await,
            Ok(ExecEvent::Exited(status)) => return ProcessEnd::Exited(status),
            Err(e) => {
                log::warn!("process {}: {e}", execution.pid());
                break;
            }
        }
    }
    ProcessEnd::Lost
}

/// Copies the stdin FIFO to the process until its end-of-file or `CloseIO`, which passes on
/// what the FIFO already holds before the end. The FIFO is opened blocking (off the async
/// threads) so that a writer that has not opened it yet is waited for, not mistaken for an
/// empty stdin.
async fn relay_stdin(path: String, mut stdin: ExecStdin, mut close: oneshot::Receiver<()>) {
    let mut opening = tokio::task::spawn_blocking({
        let path = path.clone();
        move || std::fs::File::open(path)
    });
    let (file, closed) = tokio::select! {
        opened = &mut opening => (opened, false),
        _ = &mut close => {
            // Release the blocked open (a writer that comes and goes), then drain what is there.
            let _release = pipe::OpenOptions::new().open_sender(&path);
            (opening.await, true)
        }
    };
    let Ok(Ok(file)) = file else { return };
    let Ok(mut fifo) = pipe::Receiver::from_file(file) else { return };
    let mut buf = vec![0u8; 32 * 1024];
    if !closed {
        loop {
            tokio::select! {
                _ = &mut close => break,
                read = fifo.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return stdin.close(),
                    Ok(n) => {
                        if stdin.write(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    }
    // What the FIFO holds now, read directly: the reactor may not have seen it become readable.
    while let Ok(n @ 1..) = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fifo), &mut buf) {
        if stdin.write(&buf[..n]).await.is_err() {
            return;
        }
    }
    stdin.close();
}
