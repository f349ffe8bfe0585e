//! Collecting every validation problem of a config at once.

use std::fmt;
use std::path::Path;

/// One problem with one field, e.g. `drives[1].driveId: must match [A-Za-z0-9_]+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Path of the field in the camelCase input shape (`machineConfig.vcpuCount`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems found in a config; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors {
    /// The problems, in the order the fields were checked.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigErrors {
    /// True when a problem names exactly this field.
    pub fn has_field(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
    /// A single-problem error.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut p = Problems::default();
        p.push(field, message);
        ConfigErrors { problems: p.0 }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        write!(f, "{} problem(s): {}", list.len(), list.join("; "))
    }
}

impl std::error::Error for ConfigErrors {}

/// Accumulator used by the per-resource `validate` functions.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem { field: field.into(), message: message.into() });
    }

    /// Firecracker resource ids: non-empty, at most 64 bytes, `[A-Za-z0-9_]`.
    pub(crate) fn check_id(&mut self, field: &str, id: &str) {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            self.push(field, format!("{id:?} must be 1-64 characters of [A-Za-z0-9_]"));
        }
    }

    /// Paths Firecracker opens itself: absolute, and existing when `must_exist`.
    pub(crate) fn check_path(&mut self, field: &str, path: &Path, must_exist: bool) {
        use std::os::unix::ffi::OsStrExt;
        if path.as_os_str().as_bytes().contains(&0) {
            // No OS call takes it; Firecracker would fail on it instead of refusing it.
            self.push(field, "contains a NUL byte");
        } else if path.as_os_str().is_empty() {
            self.push(field, "is required");
        } else if !path.is_absolute() {
            self.push(
                field,
                format!("{} must be an absolute path (the library resolves no relative paths)", path.display()),
            );
        } else if must_exist && !path.exists() {
            self.push(field, format!("{} does not exist", path.display()));
        }
    }

    /// An existing `path` Firecracker reads whole (kernel, initrd) is a regular file: a FIFO
    /// would block the start, a device or `/proc` file is no image.
    pub(crate) fn check_regular_file(&mut self, field: &str, path: &Path) {
        use std::os::unix::fs::FileTypeExt;
        let Ok(meta) = std::fs::metadata(path) else { return };
        let t = meta.file_type();
        let kind = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if std::fs::canonicalize(path).is_ok_and(|real| real.starts_with("/proc") || real.starts_with("/sys")) {
            "a kernel interface file"
        } else {
            return;
        };
        self.push(field, format!("{} is {kind}: it must be a regular file", path.display()));
    }

    pub(crate) fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors { problems: self.0 })
        }
    }
}

/// A field the running Firecracker is too old for (found when the payload for its version is
/// built, which [`VmConfig`](super::VmConfig) validation does at `create_vm`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} needs Firecracker v{}.{} or newer (running {running})", needs.0, needs.1)]
pub struct NeedsNewerFirecracker {
    /// The field, relative to its resource (e.g. `mtu`).
    pub field: &'static str,
    /// The first (major, minor) that accepts it.
    pub needs: (u32, u32),
    /// The version in use.
    pub running: crate::version::FirecrackerVersion,
}

impl NeedsNewerFirecracker {
    /// `Err` unless `running` is at least `needs`.
    pub(crate) fn gate(
        used: bool,
        field: &'static str,
        needs: (u32, u32),
        running: crate::version::FirecrackerVersion,
    ) -> Result<(), Self> {
        if used && !running.at_least(needs.0, needs.1) {
            Err(Self { field, needs, running })
        } else {
            Ok(())
        }
    }

    /// As a config problem of the resource at `resource` (e.g. `networkInterfaces[0]`).
    pub fn at(&self, resource: &str) -> ConfigErrors {
        ConfigErrors::single(format!("{resource}.{}", self.field), self.to_string())
    }
}
