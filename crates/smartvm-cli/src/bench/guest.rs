//! `smartvm bench --guest`: the guest agent's costs beside the raw socket round trips they ride
//! on, each interleaved with its floor:
//! - over a Unix socket to a `smartvm-guest` on this host: a raw connect + 1-byte echo, then
//!   `hello`, `exec true`, and copying 64 MiB in and out;
//! - over Firecracker's vsock to a probe VM (`probe.vsock=`): the raw `CONNECT`/`OK` handshake,
//!   then `hello` and `echo` through [`GuestClient`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smartvm::config::VsockConfig;
use smartvm::guest::protocol::DEFAULT_VSOCK_PORT;
use smartvm::guest::{GuestAddress, GuestClient};
use smartvm::probe::ProbeArgs;
use smartvm::{SmartVm, SmartVmError, VmConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::bench_error;
use super::report::Scenario;
use super::stats::load_average;
use crate::exit::CliError;

const COPY_BYTES: usize = 64 << 20;

fn scenario(name: &str, title: &str, raw: Option<&str>) -> Scenario {
    Scenario {
        name: name.into(),
        title: title.into(),
        samples: Vec::new(),
        raw: raw.map(Into::into),
        load: (load_average(), None),
        cpu_ms_per_vm: None,
        vmm_cpu_ms_per_vm: None,
        rss_kib_per_vm: None,
        pss_kib_per_vm: None,
        floor: None,
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// A `smartvm-guest` on a Unix socket, killed when dropped.
struct LocalAgent(Child);

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary: `--guest-agent`, else `smartvm-guest` beside this program.
pub fn agent_binary(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let path = match given {
        Some(path) => path,
        None => {
            std::env::current_exe().map_err(|e| bench_error("find this program", e))?.with_file_name("smartvm-guest")
        }
    };
    smartvm::trust::check(&path, smartvm::trust::Expect::Executable).map_err(SmartVmError::from)?;
    Ok(path)
}

/// The Unix-socket scenarios, `runs` samples each, interleaved.
pub async fn unix(work: &Path, agent: &Path, runs: u32) -> Result<Vec<Scenario>, CliError> {
    let socket = work.join("guest.sock");
    let child = Command::new(agent)
        .args(["--listen", &format!("unix:{}", socket.display())])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| bench_error("start smartvm-guest", e))?;
    let _agent = LocalAgent(child);
    let client = GuestClient::new(GuestAddress::Unix(socket));
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.hello().await.is_err() {
        if Instant::now() > deadline {
            return Err(bench_error("reach smartvm-guest", std::io::Error::other("no hello within 10 s")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let echo = work.join("echo.sock");
    spawn_echo_server(&echo)?;
    let raw = "guest.unix.socket-round-trip";
    let mut out = vec![
        scenario(raw, "Unix socket: connect + 1-byte echo (raw)", None),
        scenario("guest.unix.hello", "Unix socket: hello", Some(raw)),
        scenario("guest.unix.exec-true", "Unix socket: exec `true` to its exit", Some(raw)),
    ];
    // One round first, unmeasured: the first connection of each kind pays for cold caches.
    for round in 0..=runs {
        if round == 1 {
            out.iter_mut().for_each(|s| s.samples.clear());
        }
        let t = Instant::now();
        raw_round_trip(&echo)?;
        out[0].samples.push(ms(t));
        let t = Instant::now();
        client.hello().await?;
        out[1].samples.push(ms(t));
        let t = Instant::now();
        client.output(&["true"]).await?;
        out[2].samples.push(ms(t));
    }
    out.extend(copies(work, &client, runs.min(5)).await?);
    for s in &mut out {
        s.load.1 = load_average();
    }
    Ok(out)
}

/// Copies of 64 MiB in and out (ms each; 64 MiB / the time is the throughput).
async fn copies(work: &Path, client: &GuestClient, runs: u32) -> Result<Vec<Scenario>, CliError> {
    let source = work.join("copy-source");
    let data: Vec<u8> = (0..COPY_BYTES).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect();
    std::fs::write(&source, data).map_err(|e| bench_error("write the copy source", e))?;
    let (into, back) = (work.join("copy-in"), work.join("copy-out"));
    for dir in [&into, &back] {
        std::fs::create_dir_all(dir).map_err(|e| bench_error("create a copy dir", e))?;
    }
    let mut copy_in = scenario("guest.unix.copy-in-64mib", "Unix socket: copy 64 MiB in", None);
    let mut copy_out = scenario("guest.unix.copy-out-64mib", "Unix socket: copy 64 MiB out", None);
    let into_text = into.to_string_lossy().into_owned();
    for _ in 0..runs {
        let t = Instant::now();
        client.copy_in(&source, &into_text, None).await?;
        copy_in.samples.push(ms(t));
        let t = Instant::now();
        client.copy_out(&format!("{into_text}/copy-source"), &back, None).await?;
        copy_out.samples.push(ms(t));
    }
    Ok(vec![copy_in, copy_out])
}

fn spawn_echo_server(path: &Path) -> Result<(), CliError> {
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| bench_error("bind the echo socket", e))?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut byte = [0u8];
            if conn.read_exact(&mut byte).is_ok() {
                let _ = conn.write_all(&byte);
            }
        }
    });
    Ok(())
}

fn raw_round_trip(path: &Path) -> Result<(), CliError> {
    let mut conn = std::os::unix::net::UnixStream::connect(path).map_err(|e| bench_error("connect", e))?;
    let mut byte = [7u8];
    conn.write_all(&byte).and_then(|_| conn.read_exact(&mut byte)).map_err(|e| bench_error("echo", e))
}

/// The vsock scenarios against one probe VM, `runs` samples each, interleaved.
pub async fn vsock(smartvm: &SmartVm, kernel: &Path, work: &Path, runs: u32) -> Result<Vec<Scenario>, CliError> {
    let uds = work.join("probe.vsock");
    let args = ProbeArgs::new().vsock(DEFAULT_VSOCK_PORT).to_boot_args();
    let cfg = VmConfig::new(kernel)
        .with_id("bench-guest")
        .with_machine(1, 16)
        .with_boot_args(format!("console=ttyS0 {args}"))
        .with_vsock(VsockConfig::new(3, &uds));
    let vm = smartvm.create_vm(&cfg)?;
    vm.start().await?;
    let listening = vm.console().wait_for_line(Duration::from_secs(20), |l| l.contains("status=listening")).await;
    if listening.is_none() {
        return Err(bench_error("boot the probe with vsock", std::io::Error::other("it never listened")));
    }
    let client = vm.guest()?;
    let raw = "guest.vsock.handshake";
    let mut out = vec![
        scenario(raw, "vsock: connect + CONNECT/OK handshake (raw)", None),
        scenario("guest.vsock.hello", "vsock: hello (probe)", Some(raw)),
        scenario("guest.vsock.echo", "vsock: echo (probe)", Some(raw)),
    ];
    for round in 0..=runs {
        if round == 1 {
            out.iter_mut().for_each(|s| s.samples.clear());
        }
        let t = Instant::now();
        handshake(&uds).await?;
        out[0].samples.push(ms(t));
        let t = Instant::now();
        client.hello().await?;
        out[1].samples.push(ms(t));
        let t = Instant::now();
        client.echo("bench").await?;
        out[2].samples.push(ms(t));
    }
    vm.stop().await?;
    smartvm.remove_vm("bench-guest").await?;
    for s in &mut out {
        s.load.1 = load_average();
    }
    Ok(out)
}

async fn handshake(uds: &Path) -> Result<(), CliError> {
    let mut conn = tokio::net::UnixStream::connect(uds).await.map_err(|e| bench_error("connect the vsock", e))?;
    conn.write_all(format!("CONNECT {DEFAULT_VSOCK_PORT}\n").as_bytes())
        .await
        .map_err(|e| bench_error("CONNECT", e))?;
    let mut line = String::new();
    tokio::io::BufReader::new(conn).read_line(&mut line).await.map_err(|e| bench_error("OK", e))?;
    if line.starts_with("OK ") {
        Ok(())
    } else {
        Err(bench_error("the vsock handshake", std::io::Error::other(line)))
    }
}
