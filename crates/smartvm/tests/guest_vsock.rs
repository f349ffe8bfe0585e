//! The guest protocol through Firecracker's real vsock device: probe VMs serving `hello`,
//! `echo`, `health` and `exec` (of its built-in programs) with `probe.vsock=PORT`, one VM and twenty at once, and the clear
//! failures (no vsock device, nothing listening, a capability the probe lacks).

mod common;

use std::time::{Duration, Instant};

use common::env;
use smartvm::config::VsockConfig;
use smartvm::error::ErrorCode;
use smartvm::guest::protocol::{Capability, GuestErrorCode, DEFAULT_VSOCK_PORT, PROBE_NAME};
use smartvm::probe::ProbeArgs;
use smartvm::MicroVm;

async fn listening(vm: &MicroVm) {
    let line = vm.console().wait_for_line(Duration::from_secs(20), |l| l.contains("vsock port=")).await;
    let line = line.unwrap_or_else(|| panic!("no vsock line; console:\n{}", vm.console().lines().join("\n")));
    assert!(line.ends_with("status=listening"), "{line}");
}

#[tokio::test]
async fn a_probe_vm_answers_hello_echo_and_health_over_vsock() {
    let Some(env) = env() else { return };
    let args = ProbeArgs::new().vsock(DEFAULT_VSOCK_PORT).to_boot_args();
    let cfg = env.probe_config("vsock1", &args).with_vsock(VsockConfig::new(3, env.dir.path().join("vsock1.sock")));
    let vm = env.smartvm.create_vm(&cfg).unwrap();
    vm.start().await.unwrap();
    listening(&vm).await;
    let guest = vm.guest().unwrap();
    let welcome = match guest.hello().await {
        Ok(w) => w,
        Err(e) => {
            panic!("{e}\nconsole:\n{}\nstderr:\n{}", vm.console().lines().join("\n"), vm.stderr().lines().join("\n"))
        }
    };
    assert_eq!(welcome.name, PROBE_NAME);
    assert_eq!(welcome.version, env!("CARGO_PKG_VERSION"));
    assert!(welcome.supports(Capability::Echo) && welcome.supports(Capability::Exec));
    assert!(!welcome.supports(Capability::Stat));
    assert_eq!(guest.echo("through \"vsock\" ü").await.unwrap(), "through \"vsock\" ü");
    assert!(guest.health().await.unwrap().init);
    // The probe's built-in programs stand in for processes: output, exit codes, an unknown one.
    let echoed = guest.output(&["echo", "hello", "from", "exec"]).await.unwrap();
    assert_eq!((echoed.status.shell_code(), echoed.stdout.as_slice()), (0, &b"hello from exec\n"[..]));
    let exited = guest.output(&["exit", "5"]).await.unwrap();
    assert_eq!(exited.status.shell_code(), 5);
    let (a, b) = (guest.output(&["exit", "0"]).await.unwrap(), guest.exec(Default::default()).await.unwrap());
    assert_ne!(b.pid(), 0, "every exec gets its own pid");
    drop((a, b));
    let unknown = guest.output(&["uname", "-a"]).await.unwrap();
    assert_eq!(unknown.status.shell_code(), 127);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("uname: not a probe program"), "{unknown:?}");
    let stat = guest.stat("/").await.unwrap_err();
    assert_eq!(stat.code(), ErrorCode::GuestRefused);
    assert!(matches!(&stat, smartvm::SmartVmError::Guest(g) if g.guest_code() == Some(GuestErrorCode::Unsupported)));
    assert!(stat.to_string().contains("not supported by this guest"), "{stat}");
    vm.stop().await.unwrap();
    vm.cleanup().await.unwrap();
}

#[tokio::test]
async fn twenty_probe_vms_answer_at_once() {
    let Some(env) = env() else { return };
    let args = ProbeArgs::new().vsock(DEFAULT_VSOCK_PORT).to_boot_args();
    let mut vms = Vec::new();
    for i in 0..20 {
        let sock = env.dir.path().join(format!("v{i}.sock"));
        let cfg = env.probe_config(&format!("many{i}"), &args).with_vsock(VsockConfig::new(3 + i, sock));
        vms.push(env.smartvm.create_vm(&cfg).unwrap());
    }
    let starts = vms.iter().map(|vm| vm.start());
    for started in futures_util::future::join_all(starts).await {
        started.unwrap();
    }
    let asks = vms.iter().enumerate().map(|(i, vm)| async move {
        listening(vm).await;
        vm.guest().unwrap().echo(&format!("vm {i}")).await
    });
    let answers = futures_util::future::join_all(asks).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), format!("vm {i}"));
    }
    for vm in &vms {
        vm.stop().await.unwrap();
        vm.cleanup().await.unwrap();
    }
}

#[tokio::test]
async fn without_a_vsock_device_or_a_listener_the_guest_is_unavailable_fast() {
    let Some(env) = env() else { return };
    let args = ProbeArgs::new().count(1000).to_boot_args();
    let bare = env.smartvm.create_vm(&env.probe_config("bare", &args)).unwrap();
    bare.start().await.unwrap();
    let started = Instant::now();
    let none = bare.guest().unwrap_err();
    assert_eq!(none.code(), ErrorCode::GuestUnavailable);
    assert!(started.elapsed() < Duration::from_millis(100));

    let cfg = env.probe_config("deaf", &args).with_vsock(VsockConfig::new(3, env.dir.path().join("deaf.sock")));
    let deaf = env.smartvm.create_vm(&cfg).unwrap();
    deaf.start().await.unwrap();
    let started = Instant::now();
    let error = deaf.guest().unwrap().with_timeout(Duration::from_secs(1)).hello().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::GuestUnavailable, "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    for vm in [bare, deaf] {
        vm.stop().await.unwrap();
        vm.cleanup().await.unwrap();
    }
}
