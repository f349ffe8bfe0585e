//! Builds the probe guest (`probe/`) with the same rustc that builds this crate: a freestanding
//! x86_64 ELF linked at 2 MiB, embedded by `smartvm::probe`. No extra target or download needed.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let probe = manifest.join("probe");
    for file in ["main.rs", "boot.rs", "console.rs", "virtio.rs", "vsock.rs", "probe.ld"] {
        println!("cargo:rerun-if-changed=probe/{file}");
    }
    let image = out.join("smartvm-probe.elf");
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_arch != "x86_64" {
        // The probe is an x86_64 guest; other hosts embed an empty image and report it missing.
        std::fs::write(&image, []).expect("write empty probe image");
        return;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let linker_script = probe.join("probe.ld");
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "bin", "--crate-name", "smartvm_probe"])
        .args(["-C", "panic=abort", "-C", "relocation-model=static", "-C", "opt-level=2"])
        .args(["-C", "debuginfo=0", "-C", "strip=symbols", "-C", "target-cpu=x86-64"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
        .args(["-C", "link-arg=-no-pie", "-C", "link-arg=-Wl,--build-id=none"])
        .arg("-C")
        .arg(format!("link-arg=-T{}", linker_script.display()))
        .arg("-o")
        .arg(&image)
        .arg(probe.join("main.rs"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("PROBE_VERSION", env::var("CARGO_PKG_VERSION").unwrap_or_default())
        .status()
        .expect("run rustc for the probe guest");
    assert!(status.success(), "building the probe guest failed");
}
