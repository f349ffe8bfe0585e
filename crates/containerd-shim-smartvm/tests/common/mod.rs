//! A private containerd per test (own config, root, state, socket; never the host's), with the
//! shim on its PATH, and a one-layer OCI image built by the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-smartvm-v2");
pub const IMAGE: &str = "docker.io/smartvm/probe:latest";
/// The pod sandbox image under CRI (never run: the shim holds sandboxes without a VM).
pub const PAUSE_IMAGE: &str = "docker.io/smartvm/pause:test";

/// Firecracker, as the other test suites find it.
fn firecracker() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SMARTVM_FIRECRACKER_BIN") {
        return Some(p.into());
    }
    let p = smartvm::SmartVmOptions::default().data_dir.join("bin/v1.12.1/firecracker");
    p.exists().then_some(p)
}

/// Whether this host can run the tests; says why not (a failure under SMARTVM_REQUIRE_KVM=1).
pub fn usable() -> bool {
    let required = std::env::var("SMARTVM_REQUIRE_KVM").is_ok_and(|v| v == "1");
    let missing = if Command::new("containerd").arg("--version").output().is_err() {
        Some("containerd is not installed (scripts/setup.sh installs it)")
    } else if !Path::new("/dev/kvm").exists() || firecracker().is_none() {
        Some("needs /dev/kvm and Firecracker")
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(!required, "SMARTVM_REQUIRE_KVM=1 but {why}");
        skipped(why);
    }
    missing.is_none()
}

/// Says why a test did not run, on stderr and in the summary `SMARTVM_SKIP_LOG` names.
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
    if let Some(log) = std::env::var_os("SMARTVM_SKIP_LOG") {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(log) {
            let _ = writeln!(f, "{name}: {why}");
        }
    }
}

pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// containerd without its CRI plugin (what `ctr` needs).
    pub fn start() -> Containerd {
        Containerd::start_with("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n", "")
    }

    /// containerd with its CRI plugin: runtime handler `smartvm` passes `io.smartvm.*` pod and
    /// container annotations, the sandbox image is [`PAUSE_IMAGE`], no CNI (host-network pods).
    pub fn start_cri() -> Containerd {
        let cri = format!(
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  \
             stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  \
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"{{dir}}/cni/bin\"\n    conf_dir = \"{{dir}}/cni/conf\"\n  \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    snapshotter = \"native\"\n    \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n      \
             runtime_type = \"io.containerd.runc.v2\"\n    \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.smartvm]\n      \
             runtime_type = \"io.containerd.smartvm.v2\"\n      pod_annotations = [\"io.smartvm.*\"]\n      \
             container_annotations = [\"io.smartvm.*\"]\n"
        );
        Containerd::start_with("", &cri)
    }

    fn start_with(head: &str, plugins: &str) -> Containerd {
        let dir = tempfile::Builder::new().prefix("svctd").tempdir_in("/dev/shm").unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n{head}\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"{debug}\"\n{plugins}",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            debug = d.join("debug.sock").display(),
            plugins = plugins.replace("{dir}", &d.display().to_string()),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let child = spawn(d);
        let containerd = Containerd { dir, child };
        containerd.wait_ready();
        containerd
    }

    /// Stops containerd (SIGTERM: its shims and tasks stay) and starts it again on the same
    /// root, state and socket.
    pub fn restart(&mut self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        self.child.wait().unwrap();
        self.child = spawn(self.dir.path());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not answer:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command.arg("--address").arg(self.socket()).args(args);
        command
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().unwrap()
    }

    /// Builds the one-layer image and imports it as [`IMAGE`].
    pub fn import_image(&self) {
        self.import_image_as("default", IMAGE, "native");
    }

    /// Builds the one-layer image and imports it as `name` into `namespace`, unpacked for
    /// `snapshotter`.
    pub fn import_image_as(&self, namespace: &str, name: &str, snapshotter: &str) {
        let archive = self.dir.path().join(format!("image-{}.tar", name.replace(['/', ':'], "_")));
        write_image(&archive, name);
        let path = archive.to_str().unwrap();
        let out = self.ctr(&["-n", namespace, "image", "import", "--snapshotter", snapshotter, path]);
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Containerd {
    /// Processes this containerd started (they carry its dir in their environment), with their
    /// command lines.
    fn children(&self) -> Vec<(i32, String)> {
        let marker = self.dir.path().display().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if pid != self.child.id() as i32 && String::from_utf8_lossy(&environ).contains(&marker) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
        found
    }

    /// The running shims.
    pub fn shim_pids(&self) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim-smartvm-v2"))
            .map(|(p, _)| p)
            .collect()
    }

    /// The running Firecracker processes.
    pub fn firecracker_pids(&self) -> Vec<i32> {
        self.children().into_iter().filter(|(_, cmd)| cmd.contains("firecracker")).map(|(p, _)| p).collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims are daemons of their own: end any this containerd started, then containerd.
        for (pid, _) in self.children() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// containerd on the config in `dir`, with the shim on its PATH and smartvm's dirs in `dir`.
fn spawn(d: &Path) -> Child {
    let shim_dir = Path::new(SHIM).parent().unwrap();
    let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap_or_default());
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("containerd.log")).unwrap();
    Command::new("containerd")
        .arg("--config")
        .arg(d.join("config.toml"))
        .env("PATH", path)
        .env("SMARTVM_RUNTIME_DIR", d.join("run"))
        .env("SMARTVM_DATA_DIR", d.join("data"))
        .env("SMARTVM_FIRECRACKER_BIN", firecracker().unwrap())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI image layout archive: one gzipped layer holding `hello.txt`.
fn write_image(path: &Path, name: &str) {
    let mut layer_tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    layer_tar.append_data(&mut header, "hello.txt", &b"hello\n"[..]).unwrap();
    let layer_tar = layer_tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer_tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["probe.lines=1"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer_tar)]}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest),
            "size": manifest.len(), "annotations": {"io.containerd.image.name": name}}]
    })
    .to_string()
    .into_bytes();
    let mut archive = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&layer, &config, &manifest] {
        add(&format!("blobs/sha256/{}", &digest(blob)[7..]), blob);
    }
    archive.finish().unwrap();
}
