//! A task's process through the guest agent, relayed to containerd-style FIFOs: against a real
//! `smartvm-guest` on a Unix socket (a Linux guest's agent speaks the same protocol over vsock).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_smartvm::process::{GuestProcess, ProcessEnd, ProcessIo};
use smartvm::guest::protocol::{ExecRequest, ExitStatus, WindowSize};
use smartvm::guest::{GuestAddress, GuestClient};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-smartvm-v2");

/// The agent built beside the shim (`cargo test --workspace` builds both; alone, the test
/// builds it).
fn guest_binary() -> PathBuf {
    let path = Path::new(SHIM).with_file_name("smartvm-guest");
    if !path.exists() {
        let status = Command::new(env!("CARGO")).args(["build", "-p", "smartvm-guest"]).status().unwrap();
        assert!(status.success(), "building smartvm-guest failed");
    }
    path
}

struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("guest.sock");
        let child = Command::new(guest_binary())
            .args(["--listen", &format!("unix:{}", socket.display())])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the guest agent did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, dir }
    }

    fn client(&self) -> GuestClient {
        GuestClient::new(GuestAddress::Unix(self.dir.path().join("guest.sock")))
    }

    /// A FIFO in the agent's dir, as containerd makes them.
    fn fifo(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path.display().to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest { argv: vec!["sh".into(), "-c".into(), script.into()], ..Default::default() }
}

/// A FIFO's read side as containerd holds it: open before the process starts, and not at its
/// end until the reader lets go of its own write end (after the process ended, when the shim's
/// writer has come and gone).
struct FifoReader {
    thread: std::thread::JoinHandle<String>,
    keep_open: std::fs::File,
}

impl FifoReader {
    fn open(path: &str) -> FifoReader {
        use std::os::unix::fs::OpenOptionsExt;
        let nonblocking = nix::libc::O_NONBLOCK;
        let read = std::fs::OpenOptions::new().read(true).custom_flags(nonblocking).open(path).unwrap();
        let keep_open = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let mut read = blocking(read);
        let thread = std::thread::spawn(move || {
            let mut text = String::new();
            read.read_to_string(&mut text).unwrap();
            text
        });
        FifoReader { thread, keep_open }
    }

    /// Everything written, once the process has ended.
    fn finish(self) -> String {
        drop(self.keep_open);
        self.thread.join().unwrap()
    }
}

fn blocking(file: std::fs::File) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(blocking)).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn the_process_streams_reach_their_fifos_and_its_exit_status_is_kept() {
    let agent = Agent::start();
    let io = ProcessIo { stdin: agent.fifo("stdin"), stdout: agent.fifo("stdout"), stderr: agent.fifo("stderr") };
    let (stdout, stderr) = (FifoReader::open(&io.stdout), FifoReader::open(&io.stderr));
    let stdin_path = io.stdin.clone();
    let process = GuestProcess::start(&agent.client(), sh("read line; echo \"out:$line\"; echo err >&2; exit 7"), io)
        .await
        .unwrap();
    assert!(process.pid() > 0);
    // The writer comes after the start (the relay waits for it rather than reading an empty stdin).
    std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(stdin_path).unwrap().write_all(b"hi\n"));
    let end = process.wait().await;
    assert_eq!(end, ProcessEnd::Exited(ExitStatus::Code(7)));
    assert_eq!(end.status(), 7);
    assert_eq!(process.ended(), Some(end));
    assert_eq!(stdout.finish(), "out:hi\n");
    assert_eq!(stderr.finish(), "err\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_ends_the_process_with_128_plus_its_number() {
    let agent = Agent::start();
    let process = GuestProcess::start(&agent.client(), sh("exec sleep 100"), ProcessIo::default()).await.unwrap();
    process.signal(15).unwrap();
    let end = process.wait().await;
    assert_eq!(end, ProcessEnd::Exited(ExitStatus::Signal(15)));
    assert_eq!(end.status(), 143);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_is_resized() {
    let agent = Agent::start();
    let io = ProcessIo { stdin: agent.fifo("stdin"), stdout: agent.fifo("stdout"), stderr: String::new() };
    let stdout = FifoReader::open(&io.stdout);
    let stdin_path = io.stdin.clone();
    let writer = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(stdin_path).unwrap());
    let request = ExecRequest { tty: Some(WindowSize { rows: 24, cols: 80 }), ..sh("stty -echo; read go; stty size") };
    let process = GuestProcess::start(&agent.client(), request, io).await.unwrap();
    let mut stdin = writer.join().unwrap();
    // Resize and stdin travel in order on one connection: the size is set before `go` arrives.
    process.resize(30, 100).unwrap();
    stdin.write_all(b"go\n").unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), process.wait()).await.expect("the shell ended");
    assert_eq!(end, ProcessEnd::Exited(ExitStatus::Code(0)));
    let output = stdout.finish();
    assert!(output.contains("30 100"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn close_io_ends_stdin_while_its_writer_stays_open() {
    let agent = Agent::start();
    let io = ProcessIo { stdin: agent.fifo("stdin"), stdout: agent.fifo("stdout"), stderr: String::new() };
    let stdout = FifoReader::open(&io.stdout);
    let stdin_path = io.stdin.clone();
    let writer = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(stdin_path).unwrap());
    let process = GuestProcess::start(&agent.client(), sh("cat"), io).await.unwrap();
    let mut stdin = writer.join().unwrap();
    // CloseIO right after the write: what the FIFO holds still reaches the process first.
    stdin.write_all(b"abc").unwrap();
    process.close_stdin();
    let end = tokio::time::timeout(Duration::from_secs(20), process.wait()).await.expect("cat saw end-of-file");
    assert_eq!(end, ProcessEnd::Exited(ExitStatus::Code(0)));
    drop(stdin);
    assert_eq!(stdout.finish(), "abc");
}
