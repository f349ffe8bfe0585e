//! `exec`, `cp`, `port-forward` against a real `smartvm-guest` on a Unix socket
//! (`--guest-socket`), through the real `smartvm` binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

/// The guest agent built beside the CLI (`cargo test --workspace` builds both; alone, the test
/// builds it).
fn guest_binary() -> PathBuf {
    let path = Path::new(BIN).with_file_name("smartvm-guest");
    if !path.exists() {
        let status = Command::new(env!("CARGO")).args(["build", "-p", "smartvm-guest"]).status().unwrap();
        assert!(status.success(), "building smartvm-guest failed");
    }
    path
}

struct Guest {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Guest {
    fn start() -> Guest {
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
        Guest { child, socket, _dir: dir }
    }

    fn target(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn smartvm(&self, verb: &str, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args([verb, "--guest-socket", &self.target()]).args(args);
        command
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn exec_passes_streams_and_the_command_s_exit_status() {
    let guest = Guest::start();
    let out = guest.smartvm("exec", &["--", "sh", "-c", "echo out; echo err >&2; exit 7"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    assert_eq!(out.status.code(), Some(7), "the command's status is the CLI's");
    let killed = guest.smartvm("exec", &["--", "sh", "-c", "kill -TERM $$"]).output().unwrap();
    assert_eq!(killed.status.code(), Some(128 + 15));
}

#[test]
fn exec_i_feeds_stdin_and_exec_t_runs_on_a_terminal() {
    let guest = Guest::start();
    let mut cat =
        guest.smartvm("exec", &["-i", "--", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    cat.stdin.take().unwrap().write_all(b"hello through the guest\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through the guest\n");
    assert!(out.status.success());
    let tty = guest.smartvm("exec", &["-t", "--", "sh", "-c", "test -t 0 && stty size"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&tty.stdout).trim(), "24 80", "no local terminal: 24×80");
    assert!(tty.status.success());
}

#[test]
fn exec_json_and_bad_input() {
    let guest = Guest::start();
    let out = guest.smartvm("exec", &["--json", "--", "sh", "-c", "printf x; exit 2"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exitCode"], 2);
    assert_eq!(json["status"]["code"], 2);
    assert_eq!(json["stdout"], "x");
    assert_eq!(out.status.code(), Some(2));
    let missing = guest.smartvm("exec", &["--", "/no/such/program"]).output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("GUEST_REFUSED") && err.contains("/no/such/program"), "{err}");
    assert_eq!(missing.status.code(), Some(1));
    let both =
        Command::new(BIN).args(["exec", "--guest-socket", &guest.target(), "vm1", "--", "true"]).output().unwrap();
    assert_eq!(both.status.code(), Some(2), "a VM id and --guest-socket: a usage error");
    let nobody =
        Command::new(BIN).args(["exec", "--guest-socket", "unix:/nonexistent.sock", "--", "true"]).output().unwrap();
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("GUEST_UNAVAILABLE"));
}

#[test]
fn cp_copies_in_and_out_with_docker_s_naming() {
    let guest = Guest::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/file"), "content").unwrap();
    let guest_dir = work.path().join("guest");
    std::fs::create_dir(&guest_dir).unwrap();
    // Into an existing directory: the source keeps its name.
    let into = format!(":{}", guest_dir.display());
    let out = guest.smartvm("cp", &["--json", tree.to_str().unwrap(), &into]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["entries"], 3);
    assert_eq!(std::fs::read_to_string(guest_dir.join("tree/sub/file")).unwrap(), "content");
    // To a new name: it takes that name.
    let renamed = format!(":{}/renamed", guest_dir.display());
    assert!(guest.smartvm("cp", &[tree.join("sub/file").to_str().unwrap(), &renamed]).status().unwrap().success());
    assert_eq!(std::fs::read_to_string(guest_dir.join("renamed")).unwrap(), "content");
    // Out to a new local name.
    let back = work.path().join("back.txt");
    let from = format!(":{}/renamed", guest_dir.display());
    assert!(guest.smartvm("cp", &[&from, back.to_str().unwrap()]).status().unwrap().success());
    assert_eq!(std::fs::read_to_string(back).unwrap(), "content");
    let neither = guest.smartvm("cp", &["a", "b"]).output().unwrap();
    assert_eq!(neither.status.code(), Some(2));
}

#[test]
fn port_forward_relays_until_interrupted() {
    let guest = Guest::start();
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in echo.incoming() {
            let mut conn = conn.unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut forward =
        guest.smartvm("port-forward", &[&format!("0:{echo_port}")]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(forward.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let local = line.split(" -> ").next().unwrap().trim().to_owned();
    let mut conn = std::net::TcpStream::connect(&local).unwrap();
    conn.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(forward.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(forward.wait().unwrap().code(), Some(130));
}

/// `smartvm shell` on a real terminal: `script` gives it one, and types into it.
#[test]
fn shell_runs_on_a_terminal_exits_with_the_shell_s_status_and_ctrl_bracket_ends_it() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(std::env::var("SMARTVM_REQUIRE_KVM").is_err(), "script (util-linux) missing in CI");
        common::skipped("script (util-linux) is not installed");
        return;
    }
    let guest = Guest::start();
    let shell = format!("{BIN} shell --guest-socket {}", guest.target());
    let run = |input: &[u8]| {
        let mut child = Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(b"test -t 0 && echo on-a-tty-$((40+2))\nexit 5\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on-a-tty-42"), "{text}");
    assert_eq!(out.status.code(), Some(5), "the shell's status: {text}");
    let detached = run(b"\x1d");
    let text = String::from_utf8_lossy(&detached.stdout);
    assert!(text.contains("session ended"), "{text}");
    assert_eq!(detached.status.code(), Some(0));
}
