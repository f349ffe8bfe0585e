//! What a task may name on the host: its VM id, its kernel, and the guest agent it gets.

use std::path::{Path, PathBuf};

use containerd_shim::TtrpcResult;
use containerd_shim_protos::ttrpc::Code;

use super::status;

/// The smartvm VM id of task `id` in `namespace` (`[A-Za-z0-9-]`, at most 64 bytes).
pub fn vm_id(namespace: &str, id: &str) -> String {
    let clean: String = format!("ctr-{namespace}-{id}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    clean.chars().take(64).collect()
}

/// A kernel must lie under smartvm's data dir or a dir in `SMARTVM_SHIM_KERNEL_DIRS`
/// (colon-separated): a pod spec may not name any file of the host.
pub fn allowed_kernel(path: &Path, data_dir: &Path) -> TtrpcResult<PathBuf> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("io.smartvm.kernel {}: {e}", path.display())))?;
    let extra = std::env::var_os("SMARTVM_SHIM_KERNEL_DIRS").unwrap_or_default();
    let mut allowed = vec![data_dir.to_path_buf()];
    allowed.extend(std::env::split_paths(&extra).filter(|p| p.is_absolute()));
    if allowed.iter().filter_map(|d| std::fs::canonicalize(d).ok()).any(|d| real.starts_with(d)) {
        return Ok(real);
    }
    let dirs: Vec<String> = allowed.iter().map(|d| d.display().to_string()).collect();
    Err(status(
        Code::PERMISSION_DENIED,
        format!("io.smartvm.kernel {} is outside the allowed dirs ({})", path.display(), dirs.join(", ")),
    ))
}

/// The guest agent installed as a kernel task's init: `SMARTVM_SHIM_GUEST_AGENT`, else
/// `<data_dir>/bin/smartvm-guest`. It goes into every such guest as PID 1, so it must be a
/// file no other user could have written (smartvm's trust check, as for Firecracker itself).
pub fn guest_agent(data_dir: &Path) -> TtrpcResult<PathBuf> {
    let path = std::env::var_os("SMARTVM_SHIM_GUEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("bin").join("smartvm-guest"));
    if !path.exists() {
        return Err(status(
            Code::FAILED_PRECONDITION,
            format!(
                "the guest agent {} is missing: install smartvm-guest there (or set SMARTVM_SHIM_GUEST_AGENT), \
                 or boot the image's own init with io.smartvm.init=console",
                path.display()
            ),
        ));
    }
    smartvm::trust::check(&path, smartvm::trust::Expect::Executable)
        .map_err(|e| status(Code::PERMISSION_DENIED, format!("the guest agent {}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids_are_safe_and_bounded() {
        assert_eq!(vm_id("default", "t1"), "ctr-default-t1");
        assert_eq!(vm_id("k8s.io", "a/b c"), "ctr-k8s-io-a-b-c");
        assert_eq!(vm_id("ns", &"x".repeat(100)).len(), 64);
    }

    #[test]
    fn a_kernel_outside_the_allowed_dirs_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let inside = data.path().join("vmlinux");
        std::fs::write(&inside, "k").unwrap();
        assert!(allowed_kernel(&inside, data.path()).is_ok());
        let outside = allowed_kernel(Path::new("/etc/hostname"), data.path()).unwrap_err();
        assert!(outside.to_string().contains("outside the allowed dirs"), "{outside}");
        assert!(allowed_kernel(Path::new("/no/such/kernel"), data.path()).is_err());
    }

    #[test]
    fn a_missing_guest_agent_says_where_it_was_looked_for() {
        let data = tempfile::tempdir().unwrap();
        if std::env::var_os("SMARTVM_SHIM_GUEST_AGENT").is_some() {
            return;
        }
        let missing = guest_agent(data.path()).unwrap_err().to_string();
        assert!(missing.contains("bin/smartvm-guest is missing"), "{missing}");
    }
}
