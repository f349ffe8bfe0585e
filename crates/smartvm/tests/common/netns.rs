//! Network namespaces created (and deleted) by a test, and running async test code inside one.

use std::future::Future;
use std::process::Command;

pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

impl Netns {
    /// `ip netns add svt-<tag>-<pid>` with `lo` up.
    pub fn create(tag: &str) -> Self {
        let name = format!("svt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &name]).stderr(std::process::Stdio::null()).status();
        let out = ip(&["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add: {}", String::from_utf8_lossy(&out.stderr));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`, asserting success.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        let out = ip(&full);
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An uplink (one end of a veth pair, both inside the namespace) carrying the IPv4 default
    /// route, as NAT's outbound interface.
    pub fn add_uplink(&self) {
        self.ip(&["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p"]);
        self.ip(&["addr", "add", "192.0.2.10/24", "dev", "uplink0"]);
        self.ip(&["link", "set", "uplink0", "up"]);
        self.ip(&["route", "add", "default", "dev", "uplink0"]);
    }

    /// Links as JSON (`ip -j link show`).
    pub fn links(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ip(&["-j", "link", "show"])).unwrap()
    }

    /// Names of all links, without the fallback tunnel devices the kernel adds to every
    /// namespace when tunnel modules are loaded.
    pub fn link_names(&self) -> Vec<String> {
        const FALLBACK: [&str; 9] =
            ["tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0", "ip6gre0"];
        let mut names: Vec<String> = self
            .links()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .filter(|n| !FALLBACK.contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }

    /// One link's JSON.
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    /// IPv4 addresses of `dev` as `a.b.c.d/p`.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&self.ip(&["-j", "-4", "addr", "show", "dev", dev])).unwrap();
        v.iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    /// `nft list ruleset` inside the namespace.
    pub fn nft_ruleset(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name, "nft", "list", "ruleset"]).output().unwrap();
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread that joined this namespace, with its own current-thread runtime:
    /// netlink sockets, TAPs, `nft` and Firecracker children all live in the namespace.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}
