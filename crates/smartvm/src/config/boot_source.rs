//! `PUT /boot-source`: kernel, command line and initrd.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::resource::{FirecrackerResource, Validate};

/// The guest kernel and how to boot it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all(serialize = "snake_case", deserialize = "camelCase"), deny_unknown_fields)]
pub struct BootSourceConfig {
    /// Uncompressed kernel (ELF vmlinux on x86_64).
    #[serde(alias = "kernel_image_path")]
    pub kernel_image_path: PathBuf,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "boot_args")]
    pub boot_args: Option<String>,
    /// Optional initial ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "initrd_path")]
    pub initrd_path: Option<PathBuf>,
}

/// Firecracker limits the command line to 2048 bytes including what it appends itself.
pub const MAX_BOOT_ARGS: usize = 2048;

impl BootSourceConfig {
    /// Boot `kernel` with no extra arguments.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self { kernel_image_path: kernel.into(), boot_args: None, initrd_path: None }
    }

    /// Sets the kernel command line.
    pub fn with_boot_args(mut self, args: impl Into<String>) -> Self {
        self.boot_args = Some(args.into());
        self
    }
}

impl FirecrackerResource for BootSourceConfig {
    const API_PATH: &'static str = "/boot-source";
    const REFUSED_AS: &'static str = "BootSource";
}

impl Validate for BootSourceConfig {
    fn validate(&self, at: &str, p: &mut Problems) {
        let kernel = format!("{at}.kernelImagePath");
        p.check_path(&kernel, &self.kernel_image_path, true);
        p.check_regular_file(&kernel, &self.kernel_image_path);
        if let Some(initrd) = &self.initrd_path {
            let field = format!("{at}.initrdPath");
            p.check_path(&field, initrd, true);
            p.check_regular_file(&field, initrd);
        }
        if let Some(args) = &self.boot_args {
            if args.len() >= MAX_BOOT_ARGS {
                p.push(format!("{at}.bootArgs"), format!("is {} bytes; the limit is {MAX_BOOT_ARGS}", args.len()));
            }
            // Firecracker aborts (it cannot make a C string of it) instead of refusing the config.
            if args.contains('\0') {
                p.push(format!("{at}.bootArgs"), "contains a NUL byte");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn golden_payload() {
        let b = BootSourceConfig::new("/k").with_boot_args("console=ttyS0");
        assert_eq!(serde_json::to_value(&b).unwrap(), json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0"}));
        let full: BootSourceConfig =
            serde_json::from_value(json!({"kernelImagePath": "/k", "initrdPath": "/i"})).unwrap();
        assert_eq!(serde_json::to_value(&full).unwrap(), json!({"kernel_image_path": "/k", "initrd_path": "/i"}));
    }

    #[test]
    fn validation() {
        let mut p = Problems::default();
        BootSourceConfig {
            kernel_image_path: "rel/k".into(),
            boot_args: Some("x".repeat(3000)),
            initrd_path: Some("/nope/i".into()),
        }
        .validate("bootSource", &mut p);
        let fields: Vec<_> = p.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["bootSource.kernelImagePath", "bootSource.initrdPath", "bootSource.bootArgs"]);
        let mut p = Problems::default();
        BootSourceConfig::new("/").with_boot_args("console=ttyS0\0 panic=1").validate("bootSource", &mut p);
        assert!(p.0.iter().any(|x| x.field == "bootSource.bootArgs" && x.message.contains("NUL")), "{:?}", p.0);
    }
}
