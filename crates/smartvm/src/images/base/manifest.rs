//! Hosted base-image manifests (schema v1): parsing and strict validation (pure).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::{check_file_name, is_sha256_hex, ImageError};

/// A kernel or rootfs artifact of a hosted manifest: a URL (sha256 required) or a local path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostedArtifact {
    /// `http(s)://` location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Local path (relative paths are relative to the manifest file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File name in the cache (default: the last segment of `url`/`path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Lowercase or uppercase hex SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Exact size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// A project-owned bundle description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostedManifest {
    /// Must be 1.
    pub schema_version: u32,
    /// Cache key, `[A-Za-z0-9._-]`.
    pub bundle_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// Firecracker version the bundle was validated with.
    pub firecracker_version: String,
    /// `ext4` or `squashfs`.
    pub rootfs_type: String,
    /// Mount the rootfs read-only (required for squashfs).
    pub rootfs_is_read_only: bool,
    /// Kernel command line.
    pub boot_args: String,
    /// The kernel.
    pub kernel: HostedArtifact,
    /// The root filesystem.
    pub rootfs: HostedArtifact,
    /// The rootfs carries smartvm's guest agent (see `smartvm image inject-agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_agent: Option<GuestAgent>,
}

/// A guest agent a bundle's rootfs carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestAgent {
    /// Its absolute path in the rootfs.
    #[serde(default = "GuestAgent::default_path")]
    pub path: String,
    /// The vsock port it listens on.
    #[serde(default = "GuestAgent::default_port")]
    pub vsock_port: u32,
    /// Whether it is the image's init (`boot_args` then carry `init=<path>`).
    #[serde(default)]
    pub init: bool,
}

impl GuestAgent {
    fn default_path() -> String {
        "/sbin/smartvm-guest".into()
    }

    fn default_port() -> u32 {
        smartvm_guest_protocol::DEFAULT_VSOCK_PORT
    }

    /// Checks the declaration (pure).
    pub fn validate(&self, boot_args: &str) -> Result<(), ImageError> {
        if !self.path.starts_with('/') || self.path.contains(char::is_whitespace) {
            return Err(ImageError::manifest("guestAgent.path", format!("{:?} must be an absolute path", self.path)));
        }
        if self.vsock_port == 0 || self.vsock_port == u32::MAX {
            return Err(ImageError::manifest("guestAgent.vsockPort", "must be a port number (1 to 2^32-2)"));
        }
        let init = format!("init={}", self.path);
        if self.init && !boot_args.split_whitespace().any(|arg| arg == init) {
            return Err(ImageError::manifest("guestAgent.init", format!("bootArgs must contain {init}")));
        }
        Ok(())
    }
}

/// Where a validated artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactLocation {
    /// Download it.
    Url(String),
    /// Copy it.
    Path(PathBuf),
}

/// A validated artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedArtifact {
    /// Source.
    pub location: ArtifactLocation,
    /// Name in the cache.
    pub file_name: String,
    /// Expected SHA-256 (lowercase).
    pub sha256: Option<String>,
    /// Expected size.
    pub size: Option<u64>,
}

fn last_segment(s: &str) -> &str {
    s.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

impl HostedManifest {
    /// Parses manifest JSON; a schema error names the field.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        // The version first: a newer schema is named as such, not as its first unknown field.
        let version =
            serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| v.get("schemaVersion").cloned());
        if let Some(v) = version.filter(|v| v.as_u64() != Some(1)) {
            return Err(ImageError::manifest("schemaVersion", format!("unsupported schemaVersion {v} (supported: 1)")));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ImageError::manifest(if field == "." { "<root>".to_string() } else { field }, e.into_inner().to_string())
        })
    }

    /// Checks every rule of schema v1 for `host_arch`. `base_dir` is the directory of a local
    /// manifest: its `path` artifacts must lie below it (relative, or absolute inside it, never
    /// climbing with `..`). A manifest that did not come from a local file (`None`) may not
    /// name local paths at all: a remote manifest must not make smartvm copy host files.
    pub fn validate(
        &self,
        host_arch: &str,
        base_dir: Option<&Path>,
    ) -> Result<(ResolvedArtifact, ResolvedArtifact), ImageError> {
        if self.schema_version != 1 {
            return Err(ImageError::manifest(
                "schemaVersion",
                format!("unsupported version {} (expected 1)", self.schema_version),
            ));
        }
        let id = &self.bundle_id;
        if id.is_empty()
            || id == "."
            || id == ".."
            || id.len() > 128
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ImageError::manifest(
                "bundleId",
                format!("{id:?} must be 1-128 characters of [A-Za-z0-9._-], not . or .."),
            ));
        }
        if !["x86_64", "aarch64"].contains(&self.arch.as_str()) {
            return Err(ImageError::manifest("arch", format!("{:?} must be x86_64 or aarch64", self.arch)));
        }
        if self.arch != host_arch {
            return Err(ImageError::manifest("arch", format!("bundle is for {}, this host is {host_arch}", self.arch)));
        }
        if self.firecracker_version.parse::<crate::version::FirecrackerVersion>().is_err() {
            return Err(ImageError::manifest(
                "firecrackerVersion",
                format!("{:?} is not a version", self.firecracker_version),
            ));
        }
        match self.rootfs_type.as_str() {
            "ext4" => {}
            "squashfs" if !self.rootfs_is_read_only => {
                return Err(ImageError::manifest("rootfsIsReadOnly", "must be true for a squashfs rootfs"))
            }
            "squashfs" => {}
            other => return Err(ImageError::manifest("rootfsType", format!("{other:?} must be ext4 or squashfs"))),
        }
        if self.boot_args.trim().is_empty() {
            return Err(ImageError::manifest("bootArgs", "must not be empty"));
        }
        if let Some(agent) = &self.guest_agent {
            agent.validate(&self.boot_args)?;
        }
        let kernel = Self::artifact("kernel", &self.kernel, base_dir)?;
        let rootfs = Self::artifact("rootfs", &self.rootfs, base_dir)?;
        if kernel.file_name == rootfs.file_name {
            return Err(ImageError::manifest("rootfs.fileName", "must differ from kernel.fileName"));
        }
        Ok((kernel, rootfs))
    }

    fn artifact(field: &str, a: &HostedArtifact, base_dir: Option<&Path>) -> Result<ResolvedArtifact, ImageError> {
        let f = |name: &str| format!("{field}.{name}");
        let location = match (&a.url, &a.path) {
            (Some(_), Some(_)) => return Err(ImageError::manifest(field, "give either url or path, not both")),
            (None, None) => return Err(ImageError::manifest(field, "needs a url or a path")),
            (Some(url), None) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ImageError::manifest(f("url"), format!("{url:?} must be an http(s) URL")));
                }
                if a.sha256.is_none() {
                    return Err(ImageError::manifest(f("sha256"), "is required for URL artifacts"));
                }
                ArtifactLocation::Url(url.clone())
            }
            (None, Some(path)) => {
                if path.is_empty() {
                    return Err(ImageError::manifest(f("path"), "must not be empty"));
                }
                let Some(dir) = base_dir else {
                    return Err(ImageError::manifest(
                        f("path"),
                        "only a manifest read from a local file may name local paths (use url + sha256)",
                    ));
                };
                let p = dir.join(path);
                if crate::trust::confine::relative_beneath(dir, &p).is_none() {
                    return Err(ImageError::manifest(f("path"), format!("{path:?} must lie below {}", dir.display())));
                }
                ArtifactLocation::Path(p)
            }
        };
        if let Some(sha) = &a.sha256 {
            if !is_sha256_hex(sha) {
                return Err(ImageError::manifest(f("sha256"), "must be 64 hex digits"));
            }
        }
        if a.size_bytes == Some(0) {
            return Err(ImageError::manifest(f("sizeBytes"), "must be greater than 0"));
        }
        let file_name = match &a.file_name {
            Some(n) => n.clone(),
            None => last_segment(a.url.as_deref().or(a.path.as_deref()).unwrap_or("")).to_string(),
        };
        check_file_name(&file_name).map_err(|e| ImageError::manifest(f("fileName"), e.to_string()))?;
        Ok(ResolvedArtifact {
            location,
            file_name,
            sha256: a.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            size: a.size_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn base() -> Value {
        json!({
            "schemaVersion": 1, "bundleId": "smartvm-minimal-v1-x86_64", "name": "minimal", "arch": "x86_64",
            "firecrackerVersion": "v1.12.1", "rootfsType": "squashfs", "rootfsIsReadOnly": true,
            "bootArgs": "console=ttyS0 ro",
            "kernel": {"url": "https://h/vmlinux", "sha256": "a".repeat(64), "sizeBytes": 10},
            "rootfs": {"path": "rootfs.squashfs", "fileName": "root.sqfs"}
        })
    }

    fn check(mutate: impl Fn(&mut Value)) -> Result<(ResolvedArtifact, ResolvedArtifact), ImageError> {
        let mut v = base();
        mutate(&mut v);
        HostedManifest::parse(&v.to_string())?.validate("x86_64", Some(Path::new("/manifests")))
    }

    #[test]
    fn valid_manifest_resolves() {
        let (k, r) = check(|_| {}).unwrap();
        assert_eq!(k.location, ArtifactLocation::Url("https://h/vmlinux".into()));
        assert_eq!((k.file_name.as_str(), k.size), ("vmlinux", Some(10)));
        assert_eq!(r.location, ArtifactLocation::Path("/manifests/rootfs.squashfs".into()));
        assert_eq!(r.file_name, "root.sqfs");
    }

    #[test]
    fn a_declared_guest_agent_has_defaults_and_may_be_init() {
        let mut v = base();
        v["guestAgent"] = json!({});
        let agent = HostedManifest::parse(&v.to_string()).unwrap().guest_agent.unwrap();
        assert_eq!((agent.path.as_str(), agent.vsock_port, agent.init), ("/sbin/smartvm-guest", 10700, false));
        check(|v| {
            v["guestAgent"] = json!({"init": true});
            v["bootArgs"] = json!("console=ttyS0 ro init=/sbin/smartvm-guest");
        })
        .unwrap();
    }

    #[test]
    fn remote_manifests_may_not_name_local_paths() {
        let v = base();
        let err = HostedManifest::parse(&v.to_string()).unwrap().validate("x86_64", None).unwrap_err();
        let ImageError::InvalidManifest { field, .. } = &err else { panic!("{err}") };
        assert_eq!(field, "rootfs.path");
        let mut inside = base();
        inside["rootfs"]["path"] = json!("/manifests/sub/r.img");
        let (_, r) = HostedManifest::parse(&inside.to_string())
            .unwrap()
            .validate("x86_64", Some(Path::new("/manifests")))
            .unwrap();
        assert_eq!(r.location, ArtifactLocation::Path("/manifests/sub/r.img".into()));
    }

    #[test]
    fn every_rule_names_its_field() {
        type Case = (&'static str, fn(&mut Value));
        let cases: Vec<Case> = vec![
            ("schemaVersion", |v| v["schemaVersion"] = json!(2)),
            ("bundleId", |v| v["bundleId"] = json!("../escape")),
            ("bundleId", |v| v["bundleId"] = json!("..")),
            ("bundleId", |v| v["bundleId"] = json!("a b")),
            ("arch", |v| v["arch"] = json!("riscv64")),
            ("arch", |v| v["arch"] = json!("aarch64")),
            ("firecrackerVersion", |v| v["firecrackerVersion"] = json!("latest")),
            ("rootfsType", |v| v["rootfsType"] = json!("btrfs")),
            ("rootfsIsReadOnly", |v| v["rootfsIsReadOnly"] = json!(false)),
            ("bootArgs", |v| v["bootArgs"] = json!(" ")),
            ("guestAgent.path", |v| v["guestAgent"] = json!({"path": "sbin/agent"})),
            ("guestAgent.vsockPort", |v| v["guestAgent"] = json!({"vsockPort": 0})),
            ("guestAgent.init", |v| v["guestAgent"] = json!({"init": true})),
            ("kernel", |v| v["kernel"]["path"] = json!("/k")),
            ("rootfs", |v| v["rootfs"] = json!({"fileName": "x"})),
            ("kernel.url", |v| v["kernel"]["url"] = json!("ftp://h/k")),
            ("kernel.sha256", |v| v["kernel"].as_object_mut().unwrap().retain(|k, _| k != "sha256")),
            ("kernel.sha256", |v| v["kernel"]["sha256"] = json!("xyz")),
            ("kernel.sizeBytes", |v| v["kernel"]["sizeBytes"] = json!(0)),
            ("kernel.fileName", |v| v["kernel"]["fileName"] = json!("../vmlinux")),
            ("kernel.fileName", |v| v["kernel"]["fileName"] = json!("a/b")),
            ("rootfs.fileName", |v| v["rootfs"]["fileName"] = json!("vmlinux")),
            ("rootfs.path", |v| v["rootfs"]["path"] = json!("")),
            ("rootfs.path", |v| v["rootfs"]["path"] = json!("/etc/shadow")),
            ("rootfs.path", |v| v["rootfs"]["path"] = json!("../etc/shadow")),
            ("rootfs.path", |v| v["rootfs"]["path"] = json!("a/../../x")),
            ("kernel.colour", |v| v["kernel"]["colour"] = json!(1)),
            ("extra", |v| v["extra"] = json!(1)),
            ("bootArgs", |v| v.as_object_mut().unwrap().retain(|k, _| k != "bootArgs")),
            ("schemaVersion", |v| v["schemaVersion"] = json!("1")),
        ];
        for (field, mutate) in cases {
            let err = check(mutate).unwrap_err();
            assert_eq!(err.code(), "INVALID_BASE_IMAGE_MANIFEST");
            let ImageError::InvalidManifest { field: got, message } = &err else { unreachable!() };
            let leaf = field.rsplit('.').next().unwrap();
            let names_it =
                got == field || ((got == "<root>" || field.starts_with(got.as_str())) && message.contains(leaf));
            assert!(names_it, "expected {field}, got {got}: {message}");
        }
    }
}
