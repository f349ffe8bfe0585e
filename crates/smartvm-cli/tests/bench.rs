//! `smartvm bench` end to end: every scenario in its JSON document, usage errors, Ctrl-C.

mod common;

use common::env;

#[test]
fn bench_reports_every_scenario_as_json_and_refuses_zero_runs() {
    let Some(env) = env() else { return };
    for bad in [["--runs", "0"], ["--concurrency", "0"], ["--rounds", "0"]] {
        let out = env.cmd(&["bench", bad[0], bad[1]]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?} is a usage error");
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad[0]), "{bad:?}");
    }
    let args = [
        "bench",
        "--runs",
        "2",
        "--concurrency",
        "2,3",
        "--rounds",
        "1",
        "--clones",
        "2",
        "--shuffle",
        "--api-floor",
        "--no-api",
        "--pools",
    ];
    let args = [&args[..], &["--json"]].concat();
    let out = env.cmd(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["bootPath"], "ConfigFile", "the VMs boot from a config file");
    assert_eq!(doc["order"], "shuffled");
    let scenarios = doc["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for name in [
        "boot.first-line.raw",
        "boot.first-line.smartvm",
        "boot.exit.smartvm",
        "at-once.2.smartvm",
        "at-once.3.raw",
        "boot.exit.raw-api",
        "at-once.3.raw-api",
        "boot.first-line.smartvm-no-api",
        "at-once.2.smartvm-no-api",
        "restore.smartvm",
        "clones.2.smartvm",
        "clones.pss.2.raw",
        "clones.pss.2.smartvm",
        "pool.cold.smartvm",
        "pool.configured.smartvm",
        "pool.cold-drive.smartvm",
        "pool.configured-drive.raw",
        "pool.template.smartvm",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        let (smartvm, api_floor) = (name.ends_with(".smartvm"), name.ends_with(".raw-api"));
        let api_off = name.ends_with(".smartvm-no-api");
        assert_eq!(s["ratioToRaw"].is_object(), smartvm || api_floor || api_off, "{s}");
        // Compared with the API floor: the boots that have one (not restores and clones).
        let has_floor = smartvm && (name.starts_with("boot.") || name.starts_with("at-once."));
        assert_eq!(s["ratioToApiFloor"].is_object(), has_floor, "{s}");
        assert!(s["median"].as_f64().unwrap() > 0.0 && s["min"].as_f64() <= s["max"].as_f64(), "{s}");
        assert!(s.get("loadStart").is_some() && s.get("p95").is_some(), "{s}");
    }
    let boot = scenarios.iter().find(|s| s["name"] == "boot.first-line.smartvm").unwrap();
    assert_eq!(boot["n"], 2);
    // Firecracker's own CPU where the scenario waits for the exits, and only there.
    let vmm = |name: &str| scenarios.iter().find(|s| s["name"] == name).unwrap()["vmmCpuMsPerVm"].as_f64();
    assert!(vmm("boot.exit.smartvm").unwrap() > 0.0 && vmm("at-once.3.raw").unwrap() > 0.0);
    assert_eq!(vmm("restore.smartvm"), None);
    // Each clone of the guest that wrote all 128 MiB shares it: a fraction of it is its own.
    let pss = |name: &str| scenarios.iter().find(|s| s["name"] == name).unwrap()["pssKibPerVm"].as_f64();
    let shared = pss("clones.pss.2.smartvm").expect("PSS measured");
    assert!(shared > 0.0 && shared < 8.0 * 1024.0, "{shared} KiB");
    assert!(pss("clones.pss.2.raw").is_some() && pss("clones.2.smartvm").is_none());
    assert!(env.runtime_is_empty());
}

#[test]
fn bench_guest_measures_the_agent_beside_raw_socket_round_trips() {
    let Some(env) = env() else { return };
    let agent = std::path::Path::new(common::BIN).with_file_name("smartvm-guest");
    if !agent.exists() {
        assert!(std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "smartvm-guest"])
            .status()
            .unwrap()
            .success());
    }
    let out = env.cmd(&["bench", "--guest", "--runs", "3", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = doc["scenarios"].as_array().unwrap();
    let find = |name: &str| scenarios.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {doc}"));
    for name in ["guest.unix.hello", "guest.unix.exec-true", "guest.vsock.hello", "guest.vsock.echo"] {
        assert!(find(name)["ratioToRaw"]["median"].as_f64().unwrap() > 0.0, "{name} is compared with its raw floor");
        assert_eq!(find(name)["n"], 3);
    }
    assert!(find("guest.unix.copy-in-64mib")["median"].as_f64().unwrap() > 0.0);
    assert!(find("guest.vsock.handshake")["ratioToRaw"].is_null());
    assert!(env.runtime_is_empty());
}

/// The bench work dir named on the command line of a Firecracker child of `parent`, once one runs.
fn bench_work_dir(parent: u32, deadline: std::time::Instant) -> Option<String> {
    while std::time::Instant::now() < deadline {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).unwrap_or("");
            if ppid != parent.to_string() {
                continue;
            }
            let cmd =
                String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).into_owned();
            if let Some(at) = cmd.find("/dev/shm/smartvm-bench") {
                return cmd[at..].split('/').take(4).collect::<Vec<_>>().join("/").into();
            }
        }
        std::thread::yield_now();
    }
    None
}

#[test]
fn ctrl_c_during_bench_cleans_up_and_exits_130() {
    let Some(env) = env() else { return };
    let mut bench = env
        .cmd(&["bench", "--runs", "500", "--concurrency", "5", "--clones", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let work = bench_work_dir(bench.id(), deadline).expect("the bench runs Firecracker");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(bench.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(common::wait_for_exit(bench.id() as i32, 10_000), "bench ends on SIGINT");
    assert_eq!(bench.wait().unwrap().code(), Some(130));
    assert!(!std::path::Path::new(&work).exists(), "{work} removed");
    // Killed as the bench let go of them (SIGKILL is asynchronous): gone within the deadline.
    let running = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .filter(|c| c.contains(&work))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !running().is_empty() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(running().is_empty(), "no Firecracker of the bench left: {:?}", running());
}
