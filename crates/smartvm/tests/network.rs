#![cfg(feature = "network")]
//! Host networking, applied inside network namespaces these tests create and delete (never the
//! host's own interfaces).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::netns::Netns;
use smartvm::config::NetworkInterfaceConfig;
use smartvm::network::{tap_name_for, NetworkManager, NetworkOptions};

fn require_root_tools() -> bool {
    let ok = std::process::Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success())
        && std::path::Path::new("/dev/net/tun").exists();
    if !ok {
        assert!(std::env::var("SMARTVM_REQUIRE_KVM").is_err(), "nft or /dev/net/tun missing in CI");
        common::skipped("needs nft and /dev/net/tun");
    }
    ok
}

/// The test environment's orchestrator, on its own bridge and subnet.
fn smartvm_on(env: &common::TestEnv, bridge: &str, subnet: &str) -> smartvm::SmartVm {
    let mut options = env.smartvm.options().clone();
    options.bridge_name = bridge.into();
    options.subnet = subnet.into();
    smartvm::SmartVm::new(options)
}

fn manager(bridge: &str, subnet: &str) -> Arc<NetworkManager> {
    Arc::new(
        NetworkManager::new(NetworkOptions {
            bridge_name: bridge.into(),
            subnet: subnet.into(),
            ..NetworkOptions::default()
        })
        .unwrap(),
    )
}

#[test]
fn bridge_taps_and_nat_are_created_and_removed() {
    if !require_root_tools() {
        return;
    }
    let ns = Netns::create("net1");
    ns.add_uplink();
    let net = manager("svtbr0", "10.200.0.77/24");
    let n = net.clone();
    let (a, b) = ns.run(move || async move {
        let a = n.create_tap("vm-a", "eth0").await.unwrap();
        let b = n.create_tap("vm-b", "eth0").await.unwrap();
        (a, b)
    });
    assert_eq!(net.plan().to_string(), "10.200.0.0/24");
    assert_eq!((a.guest_ip.to_string(), b.guest_ip.to_string()), ("10.200.0.2".into(), "10.200.0.3".into()));
    assert_ne!(a.mac, b.mac);
    assert_eq!(a.guest_boot_args(), "ip=10.200.0.2::10.200.0.1:255.255.255.0::eth0:off");

    let bridge = ns.link("svtbr0").expect("bridge exists");
    assert!(bridge["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(ns.addrs("svtbr0"), ["10.200.0.1/24"]);
    for tap in [&a, &b] {
        let link = ns.link(&tap.name).expect("tap exists");
        assert_eq!(link["master"], "svtbr0");
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
    }
    let rules = ns.nft_ruleset();
    assert!(rules.contains("table ip smartvm_svtbr0"), "{rules}");
    assert!(rules.contains("ip saddr 10.200.0.0/24 oifname \"uplink0\" masquerade"), "{rules}");
    let forwarding = ns.run(|| async { std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap() });
    assert_eq!(forwarding.trim(), "1");

    // A second manager with another bridge and subnet coexists; cleaning it leaves the first.
    let other = manager("svtbr1", "10.201.0.0/30");
    let o = other.clone();
    let exhausted = ns.run(move || async move {
        o.create_tap("vm-c", "eth0").await.unwrap();
        o.create_tap("vm-d", "eth0").await.unwrap_err().code()
    });
    assert_eq!(exhausted, "IP_EXHAUSTED", "a /30 has one guest address");
    assert!(ns.nft_ruleset().contains("table ip smartvm_svtbr1"));
    let o = other.clone();
    ns.run(move || async move { o.cleanup().await.unwrap() });
    assert!(ns.link("svtbr1").is_none());
    let rules = ns.nft_ruleset();
    assert!(!rules.contains("smartvm_svtbr1") && rules.contains("smartvm_svtbr0"));

    let n = net.clone();
    ns.run(move || async move { n.cleanup().await.unwrap() });
    assert_eq!(ns.link_names(), ["lo", "uplink0", "uplink0p"], "nothing of smartvm remains");
    assert!(!ns.nft_ruleset().contains("smartvm"));
}

#[test]
fn partial_setup_is_rolled_back() {
    if !require_root_tools() {
        return;
    }
    // No default route: NAT cannot be set up, so the bridge created on the way is removed.
    let ns = Netns::create("net2");
    let net = manager("svtbr2", "10.202.0.0/24");
    let n = net.clone();
    let err = ns.run(move || async move { n.ensure_bridge().await.unwrap_err() });
    assert_eq!(err.code(), "BRIDGE_SETUP_FAILED");
    assert!(err.to_string().contains("bridge setup failed"));
    assert_eq!(ns.link_names(), ["lo"]);
    assert!(!ns.nft_ruleset().contains("smartvm"));

    // A TAP name that is already taken: TAP_CREATE_FAILED, nothing of ours left, theirs kept.
    ns.add_uplink();
    let taken = tap_name_for("vm-x", "eth0", 0);
    ns.ip(&["tuntap", "add", "dev", &taken, "mode", "tap"]);
    let n = net.clone();
    let err = ns.run(move || async move { n.create_tap("vm-x", "eth0").await.unwrap_err() });
    assert_eq!(err.code(), "TAP_CREATE_FAILED");
    assert!(ns.link(&taken).is_some(), "the foreign interface is untouched");
    let n = net.clone();
    ns.run(move || async move { n.cleanup().await.unwrap() });
    assert_eq!(ns.link_names(), ["lo", &taken, "uplink0", "uplink0p"]);
}

#[test]
fn probe_vm_gets_a_tap_and_sees_its_mac() {
    let Some(env) = common::env() else { return };
    if !require_root_tools() {
        return;
    }
    let ns = Netns::create("net3");
    ns.add_uplink();
    let smartvm = Arc::new(smartvm_on(&env, "svtbr3", "10.203.0.0/24"));
    let managed = NetworkInterfaceConfig::managed;
    let cfg = env.probe_config("netvm", "probe.count=50").with_network_interface(managed("eth0"));
    let first_tap = tap_name_for("netfail", "eth0", 0);
    let ns_name = ns.name.clone();
    let taken = tap_name_for("netfail", "eth1", 0);
    ns.ip(&["tuntap", "add", "dev", &taken, "mode", "tap"]);
    let failing =
        env.probe_config("netfail", "").with_network_interface(managed("eth0")).with_network_interface(managed("eth1"));
    let sv = smartvm.clone();
    let (report, taps, fail_code, fail_dir_gone, links_after_failure, updates) = ns.run(move || async move {
        let bad = sv.create_vm(&failing).unwrap();
        let err = bad.start().await.unwrap_err();
        let fail_dir_gone = !bad.runtime_dir().exists();
        let links = std::process::Command::new("ip").args(["-n", &ns_name, "-o", "link", "show"]).output().unwrap();
        let links_after_failure = String::from_utf8_lossy(&links.stdout).into_owned();
        let vm = sv.create_vm(&cfg).unwrap();
        vm.start().await.unwrap();
        let taps = vm.tap_devices().await;
        common::next_count(&vm, None, Duration::from_secs(5)).await.expect("guest runs");
        let lines = vm.console().lines();
        let r = smartvm::probe::ProbeReport::parse(lines.iter().map(String::as_str));
        let limiter = smartvm::config::RateLimiter {
            bandwidth: Some(smartvm::config::TokenBucket::new(1 << 20, 100)),
            ops: None,
        };
        let updated =
            vm.update_network_interface("eth0", Some(&limiter), Some(&limiter)).await.map_err(|e| e.to_string());
        let unknown = vm.update_network_interface("eth9", None, None).await.unwrap_err().code().as_str();
        (r, taps, err.root().code(), fail_dir_gone, links_after_failure, (updated, unknown))
    });
    assert_eq!(fail_code, "TAP_CREATE_FAILED");
    assert!(fail_dir_gone);
    assert!(
        !links_after_failure.contains(&first_tap),
        "the failed start removed the TAP it had made: {links_after_failure}"
    );
    assert_eq!(updates, (Ok(()), "INVALID_CONFIG"), "rate limiters hot-updated on a running VM");
    assert_eq!(taps.len(), 1);
    let nic = &report.devices_of("net")[0];
    assert_eq!(
        nic.mac.as_deref(),
        Some(smartvm::config::mac_text(taps[0].mac).as_str()),
        "the guest sees the MAC smartvm assigned"
    );
    assert_eq!(ns.link(&taps[0].name).unwrap()["master"], "svtbr3");
    let sv = smartvm.clone();
    ns.run(move || async move { sv.cleanup().await.unwrap() });
    assert_eq!(ns.link_names(), ["lo", &taken, "uplink0", "uplink0p"], "TAPs, bridge removed; the foreign TAP stays");
    assert!(!ns.nft_ruleset().contains("smartvm"));
}

#[test]
fn invalid_network_options_are_rejected_at_create_vm() {
    let Some(env) = common::env() else { return };
    let managed = NetworkInterfaceConfig::managed("eth0");
    let cfg = env.probe_config("badnet", "").with_network_interface(managed);
    for (bridge, subnet, code) in [
        ("svbr0", "10.0.0.0/31", "INVALID_SUBNET"),
        ("svbr0", "nonsense", "INVALID_SUBNET"),
        ("a-bridge-name-too-long", "10.0.0.0/24", "INVALID_INTERFACE_NAME"),
        ("bad/name", "10.0.0.0/24", "INVALID_INTERFACE_NAME"),
    ] {
        let sv = smartvm_on(&env, bridge, subnet);
        assert_eq!(sv.create_vm(&cfg).unwrap_err().code(), code, "{bridge} {subnet}");
        assert_eq!(sv.vm_count(), 0);
    }
}

#[test]
fn reclaim_removes_journaled_taps_of_dead_vms() {
    if !require_root_tools() {
        return;
    }
    let ns = Netns::create("net4");
    ns.ip(&["tuntap", "add", "dev", "sv00deadbeef", "mode", "tap"]);
    let dir = tempfile::tempdir().unwrap();
    let vm_dir = dir.path().join("crashed");
    std::fs::create_dir(&vm_dir).unwrap();
    let journal = smartvm::vm::VmJournal {
        vm_id: "crashed".into(),
        socket: vm_dir.join("firecracker.sock"),
        owner_pid: Some(i32::MAX - 1),
        resources: vec![
            smartvm::vm::Resource::RuntimeDir { path: vm_dir.clone() },
            smartvm::vm::Resource::Tap { name: "sv00deadbeef".into() },
            // Forged: the loopback device is neither smartvm's name nor a TAP.
            smartvm::vm::Resource::Tap { name: "lo".into() },
        ],
        ..smartvm::vm::VmJournal::default()
    };
    journal.write(&vm_dir).unwrap();
    let options = smartvm::SmartVmOptions {
        runtime_dir: dir.path().to_path_buf(),
        ..smartvm::SmartVmOptions::from_lookup(|_| None)
    };
    let report = ns.run(move || async move { smartvm::SmartVm::new(options).reclaim().await.unwrap() });
    assert!(report.reclaimed.is_empty(), "a journal with a refused entry is kept for the next reclaim");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(vm_dir.exists());
    assert_eq!(ns.link_names(), ["lo"], "the leftover TAP is gone, lo is untouched");
}

#[test]
fn dropping_a_networked_vm_removes_its_tap() {
    let Some(env) = common::env() else { return };
    if !require_root_tools() {
        return;
    }
    let ns = Netns::create("net5");
    ns.add_uplink();
    let sv = smartvm_on(&env, "svtbr5", "10.205.0.0/24");
    let nic = NetworkInterfaceConfig::managed("eth0");
    let cfg = env.probe_config("dropnet", "probe.count=50").with_network_interface(nic);
    let mut opts = sv.runtime_options(env.binary.clone());
    opts.network = Some(sv.network().unwrap());
    let vm = smartvm::MicroVm::new(&cfg, opts).unwrap();
    let tap = ns.run(move || async move {
        vm.start().await.unwrap();
        // Firecracker runs in the namespace of the thread that started it, whichever thread
        // of this program cloned it (spawner threads may have started in another test's).
        let pid = vm.pid().await.unwrap();
        let netns = |path: String| std::fs::read_link(path).unwrap();
        assert_eq!(netns(format!("/proc/{pid}/ns/net")), netns("/proc/thread-self/ns/net".into()));
        let tap = vm.tap_devices().await[0].name.clone();
        drop(vm);
        tap
    });
    assert!(tap.starts_with("sv"));
    assert!(ns.link(&tap).is_none(), "TAP removed when the MicroVm was dropped: {:?}", ns.link_names());
    ns.run(move || async move { sv.cleanup().await.unwrap() });
    assert_eq!(ns.link_names(), ["lo", "uplink0", "uplink0p"]);
}

/// Cycles of create/start/remove of a networked VM in one orchestrator (`SMARTVM_NET_CYCLES`,
/// default 300; 1,000 when asked): more than the subnet holds, so addresses must come back.
#[test]
fn networked_cycles_reuse_guest_addresses() {
    let Some(env) = common::env() else { return };
    if !require_root_tools() {
        return;
    }
    let cycles: usize = std::env::var("SMARTVM_NET_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let ns = Netns::create("net6");
    ns.add_uplink();
    // A /25 holds 125 guests.
    let sv = Arc::new(smartvm_on(&env, "svtbr6", "10.206.0.0/25"));
    let base = env.probe_config("cycle", "");
    let s = sv.clone();
    let seen = ns.run(move || async move {
        let mut seen = std::collections::HashSet::new();
        for i in 0..cycles {
            let cfg = smartvm::VmConfig { id: Some(format!("cycle-{i}")), ..base.clone() }
                .with_network_interface(NetworkInterfaceConfig::managed("eth0"));
            let vm = s.create_vm(&cfg).unwrap();
            vm.start().await.unwrap_or_else(|e| panic!("cycle {i}: {e:?}"));
            seen.insert(vm.tap_devices().await[0].guest_ip);
            s.remove_vm(vm.id()).await.unwrap();
        }
        s.cleanup().await.unwrap();
        seen
    });
    assert!(cycles <= 125 || seen.len() <= 125, "{} addresses for {cycles} cycles", seen.len());
    assert_eq!(ns.link_names(), ["lo", "uplink0", "uplink0p"], "nothing left");
}

/// Marks the journaled creator of `bridge` as gone (as after a SIGKILL).
fn owner_gone(dir: &std::path::Path, bridge: &str) {
    use smartvm::network::journal::NetworkJournal;
    let path = NetworkJournal::path(dir, bridge);
    let j = NetworkJournal { owner_pid: None, owner_start_time: None, ..NetworkJournal::read(&path).unwrap() };
    j.write(dir).unwrap();
}

#[test]
fn a_bridge_smartvm_created_stays_smartvms_whoever_uses_it_next() {
    if !require_root_tools() {
        return;
    }
    let ns = Netns::create("net7");
    ns.add_uplink();
    let state = tempfile::tempdir().unwrap();
    let with_state = || {
        Arc::new(
            NetworkManager::new(NetworkOptions {
                bridge_name: "svtbr7".into(),
                subnet: "10.207.0.0/24".into(),
                state_dir: Some(state.path().to_path_buf()),
                ..NetworkOptions::default()
            })
            .unwrap(),
        )
    };
    let journal = || smartvm::network::journal::NetworkJournal::read(&state.path().join("svtbr7.json")).unwrap();
    // The first program creates the bridge, then dies without cleaning up.
    let first = with_state();
    ns.run(move || async move { first.ensure_bridge().await.unwrap() });
    assert!(journal().bridge_created);
    owner_gone(state.path(), "svtbr7");
    // The next one finds the bridge there: it is still smartvm's in the journal.
    let second = with_state();
    let s = second.clone();
    ns.run(move || async move { s.ensure_bridge().await.unwrap() });
    let j = journal();
    assert!(j.bridge_created, "the next user keeps the flag: {j:?}");
    assert_eq!(j.owner_pid, Some(std::process::id() as i32));
    // It dies too: the reclaim removes the bridge and its NAT table.
    drop(second);
    owner_gone(state.path(), "svtbr7");
    let dir = state.path().to_path_buf();
    let (removed, failures) = ns.run(move || async move { smartvm::network::reclaim_journaled(&dir, false).await });
    assert!(failures.is_empty(), "{failures:?}");
    assert!(removed.iter().any(|r| r == "bridge svtbr7"), "{removed:?}");
    assert!(ns.link("svtbr7").is_none() && !ns.nft_ruleset().contains("smartvm_svtbr7"));
}
