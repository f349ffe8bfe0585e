//! `exec` against a real `smartvm-guest` on a Unix socket: streams, exit codes, signals, stdin
//! with back-pressure, terminals, concurrency, and a client that leaves.

mod common;

use std::time::Duration;

use common::{wait_until, Agent};
use sha2::{Digest, Sha256};
use smartvm::error::ErrorCode;
use smartvm::guest::protocol::{Capability, ExecRequest, ExitStatus, GuestErrorCode, WindowSize};
use smartvm::guest::ExecEvent;

fn argv(args: &[&str]) -> ExecRequest {
    ExecRequest { argv: args.iter().map(|a| a.to_string()).collect(), ..Default::default() }
}

#[tokio::test]
async fn hello_health_echo_and_stat_answer() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let welcome = client.hello().await.unwrap();
    assert_eq!(welcome.name, "smartvm-guest");
    assert!(welcome.supports(Capability::Exec) && welcome.supports(Capability::Forward));
    let health = client.health().await.unwrap();
    assert_eq!((health.sessions, health.init), (1, false));
    assert_eq!(client.echo("ping ü").await.unwrap(), "ping ü");
    let stat = client.stat(agent.socket.to_str().unwrap()).await.unwrap();
    assert_eq!(stat.mode, 0o600, "the agent's socket is for its own user alone");
    let missing = client.stat("/no/such/path").await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::GuestRefused);
    assert!(matches!(missing, smartvm::SmartVmError::Guest(ref g) if g.guest_code() == Some(GuestErrorCode::NotFound)));
}

#[tokio::test]
async fn stdout_stderr_and_exit_codes_come_back_separately() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let out = client.output(&["sh", "-c", "echo out; echo err >&2; exit 3"]).await.unwrap();
    assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    assert_eq!(out.status, ExitStatus::Code(3));
    let failed = out.checked("sh").unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ExecFailed);
    let mut env = argv(&["sh", "-c", "echo $GREETING $(pwd)"]);
    env.env = vec!["GREETING=hi".into()];
    env.cwd = Some("/usr".into());
    let out = client.exec(env).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"hi /usr\n");
    let killed = client.output(&["sh", "-c", "kill -KILL $$"]).await.unwrap();
    assert_eq!(killed.status, ExitStatus::Signal(9));
    assert_eq!(killed.status.shell_code(), 137);
}

#[tokio::test]
async fn a_command_runs_as_the_user_and_group_asked_for() {
    let agent = Agent::start(&[]).await;
    let mut request = argv(&["sh", "-c", "id -u; id -g; id -G"]);
    request.uid = Some(65534);
    request.gid = Some(65533);
    let out = agent.client().exec(request).await.unwrap().wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["65534", "65533", "65533"], "uid, gid, and no supplementary groups of the agent's");
}

#[tokio::test]
async fn bad_commands_are_refused_with_their_reason() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let missing = client.output(&["/no/such/program"]).await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::GuestRefused);
    assert!(missing.to_string().contains("/no/such/program"), "{missing}");
    let empty = client.output(&[]).await.unwrap_err();
    assert!(
        matches!(empty, smartvm::SmartVmError::Guest(ref g) if g.guest_code() == Some(GuestErrorCode::InvalidArgument))
    );
    let mut relative = argv(&["true"]);
    relative.cwd = Some("relative".into());
    assert!(client.exec(relative).await.is_err());
    let mut bad_env = argv(&["true"]);
    bad_env.env = vec!["=x".into()];
    assert!(client.exec(bad_env).await.is_err());
    // The agent is unharmed.
    assert!(client.output(&["true"]).await.unwrap().status.success());
}

#[tokio::test]
async fn a_signal_reaches_the_command_and_its_children() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let mut run = client.exec(argv(&["sh", "-c", "echo ready; sleep 1000"])).await.unwrap();
    assert_eq!(run.next().await.unwrap().unwrap(), ExecEvent::Stdout(b"ready\n".to_vec()));
    run.signal(15).unwrap();
    let out = run.wait_with_output().await.unwrap();
    assert_eq!(out.status, ExitStatus::Signal(15));
}

#[tokio::test]
async fn a_gibibyte_of_stdin_streams_through_cat_with_bounded_memory() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let mut request = argv(&["cat"]);
    request.stdin = true;
    let mut run = client.exec(request).await.unwrap();
    let mut stdin = run.take_stdin().unwrap();
    const TOTAL: usize = 1 << 30;
    let writer = tokio::spawn(async move {
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut sent = Sha256::new();
        for _ in 0..TOTAL / block.len() {
            stdin.write(&block).await.unwrap();
            sent.update(&block);
        }
        sent.finalize()
    });
    let (mut received, mut count) = (Sha256::new(), 0usize);
    let status = loop {
        match run.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(bytes) => {
                count += bytes.len();
                received.update(&bytes);
            }
            ExecEvent::Stderr(bytes) => panic!("stderr: {}", String::from_utf8_lossy(&bytes)),
            ExecEvent::Exited(status) => break status,
        }
    };
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(count, TOTAL);
    assert_eq!(received.finalize(), writer.await.unwrap());
    let peak = agent.peak_rss_kib();
    assert!(peak < 32 * 1024, "the agent peaked at {peak} KiB relaying 1 GiB");
}

#[tokio::test]
async fn a_terminal_reports_its_size_and_follows_a_resize() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let mut request = argv(&["sh", "-c", "stty size; read line; stty size; exit 4"]);
    request.tty = Some(WindowSize { rows: 24, cols: 80 });
    let mut run = client.exec(request).await.unwrap();
    let mut stdin = run.take_stdin().unwrap();
    let mut screen = String::new();
    while !screen.contains("24 80") {
        match run.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(bytes) => screen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("before the first size: {other:?}"),
        }
    }
    run.resize(WindowSize { rows: 40, cols: 100 }).unwrap();
    stdin.write(b"go\n").await.unwrap();
    let out = run.wait_with_output().await.unwrap();
    let rest = String::from_utf8_lossy(&out.stdout);
    assert!(rest.contains("40 100"), "after the resize: {rest:?}");
    assert!(out.stderr.is_empty(), "a terminal has one output");
    assert_eq!(out.status, ExitStatus::Code(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_commands_run_at_once() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let runs = (0..100).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.output(&["sh", "-c", &format!("sleep 0.2; echo {i}")]).await })
    });
    let outputs = futures_join(runs).await;
    for (i, out) in outputs.into_iter().enumerate() {
        let out = out.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
        assert!(out.status.success());
    }
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_ends_its_command() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let mut run = client.exec(argv(&["sh", "-c", "while :; do echo tick; sleep 0.01; done"])).await.unwrap();
    let pid = run.pid();
    assert!(matches!(run.next().await.unwrap().unwrap(), ExecEvent::Stdout(_)));
    drop(run);
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    wait_until(Duration::from_secs(10), "the command is killed and reaped", || !proc.exists()).await;
    assert!(client.output(&["true"]).await.unwrap().status.success(), "the agent still serves");
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_told_busy() {
    let agent = Agent::start(&["--max-sessions", "2"]).await;
    let client = agent.client();
    let first = client.exec(argv(&["sleep", "1000"])).await.unwrap();
    let second = client.exec(argv(&["sleep", "1000"])).await.unwrap();
    let busy = client.hello().await.unwrap_err();
    assert!(
        matches!(busy, smartvm::SmartVmError::Guest(ref g) if g.guest_code() == Some(GuestErrorCode::Busy)),
        "{busy}"
    );
    drop((first, second));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.hello().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "sessions were not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
