//! The task's root filesystem (containerd's snapshot, given as mounts) as an ext4 image the VM
//! boots from: `mkfs.ext4 -d` of the mounted tree, kept under smartvm's data dir by the mounts'
//! identity, so a task created again on the same snapshot reuses it. The VM writes to its own
//! staged copy (smartvm's ephemeral drives), never to the cached image.

use std::path::{Path, PathBuf};

use std::process::Stdio;

use containerd_shim_protos::api::Mount;
use sha2::{Digest, Sha256};
use smartvm::images::{HostTool, HostToolError, HOST_TOOL_TIMEOUT};

/// Why the root filesystem could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Mounting the snapshot failed.
    #[error("cannot mount the rootfs ({kind} {source_path})")]
    Mount {
        /// The mount type.
        kind: String,
        /// Its source.
        source_path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Making the image failed.
    #[error("cannot make the rootfs image")]
    Image(#[source] smartvm::images::ImageError),
    /// Keeping it failed.
    #[error("cannot keep the rootfs image in {}", dir.display())]
    Cache {
        /// The cache dir.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The identity of a snapshot's mounts (pure): equal mounts, equal image.
pub fn cache_key(mounts: &[Mount]) -> String {
    let mut hash = Sha256::new();
    for m in mounts {
        for part in [&m.type_, &m.source, &m.target].into_iter().chain(&m.options) {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update([1]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// The image for `mounts` in `cache` (made now if it is not there yet); `None` without mounts.
pub async fn ensure(mounts: &[Mount], bundle: &Path, cache: &Path) -> Result<Option<PathBuf>, RootfsError> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let image = cache.join(format!("{}.ext4", cache_key(mounts)));
    if image.exists() {
        return Ok(Some(image));
    }
    let cache_error = |source| RootfsError::Cache { dir: cache.to_path_buf(), source };
    std::fs::create_dir_all(cache).map_err(cache_error)?;
    // A single bind mount (the native snapshotter) is its source tree; anything else (overlay)
    // is mounted at the bundle's rootfs for the copy, then unmounted.
    let (tree, mounted) = match mounts {
        [m] if m.type_ == "bind" => (PathBuf::from(&m.source), false),
        _ => (mount_all(mounts, &bundle.join("rootfs")).await?, true),
    };
    let partial = cache.join(format!(".{}.{}.tmp", cache_key(mounts), std::process::id()));
    let made = {
        let (partial, tree) = (partial.clone(), tree.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            smartvm::images::create_from_dir_with(&partial, &tree, 64, |tool| runtime.block_on(run_reaped(tool)))
        })
        .await
    };
    if mounted {
        let _ = nix::mount::umount2(&tree, nix::mount::MntFlags::MNT_DETACH);
    }
    match made {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RootfsError::Image(e)),
        Err(e) => return Err(cache_error(std::io::Error::other(e))),
    }
    std::fs::rename(&partial, &image).map_err(cache_error)?;
    Ok(Some(image))
}

/// Runs a host tool and learns its exit from the shim's reaper (which collects every child of
/// this process), subscribing before the spawn so the exit cannot be missed.
async fn run_reaped(tool: &HostTool) -> Result<(), HostToolError> {
    use containerd_shim::asynchronous::monitor::{monitor_subscribe, monitor_unsubscribe};
    use containerd_shim::monitor::{Subject, Topic};
    let program = tool.command().get_program().to_string_lossy().into_owned();
    let spawn_error = |source| HostToolError::Spawn { program: program.clone(), source };
    let mut exits =
        monitor_subscribe(Topic::Pid).await.map_err(|e| spawn_error(std::io::Error::other(e.to_string())))?;
    let spawned = tool.command().stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let outcome = match spawned {
        Ok(child) => {
            let pid = child.id() as i32;
            let waited = tokio::time::timeout(HOST_TOOL_TIMEOUT, async {
                while let Some(exit) = exits.rx.recv().await {
                    if matches!(exit.subject, Subject::Pid(p) if p == pid) {
                        return Some(exit.exit_code);
                    }
                }
                None
            });
            match waited.await {
                Ok(Some(0)) => Ok(()),
                Ok(Some(code)) => Err(HostToolError::Failed {
                    program: program.clone(),
                    status: std::os::unix::process::ExitStatusExt::from_raw(code << 8),
                    stderr: String::new(),
                }),
                Ok(None) | Err(_) => Err(HostToolError::TimedOut { program: program.clone() }),
            }
        }
        Err(e) => Err(spawn_error(e)),
    };
    let _ = monitor_unsubscribe(exits.id).await;
    outcome
}

async fn mount_all(mounts: &[Mount], target: &Path) -> Result<PathBuf, RootfsError> {
    std::fs::create_dir_all(target).map_err(|source| RootfsError::Cache { dir: target.to_path_buf(), source })?;
    for m in mounts {
        containerd_shim::asynchronous::util::mount_rootfs(m, target).await.map_err(|e| RootfsError::Mount {
            kind: m.type_.clone(),
            source_path: m.source.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(target.to_path_buf())
}

/// Removes the image of `mounts` (a task's own snapshot is not reused after its delete).
pub fn forget(mounts: &[Mount], cache: &Path) {
    let _ = std::fs::remove_file(cache.join(format!("{}.ext4", cache_key(mounts))));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(source: &str) -> Mount {
        Mount {
            type_: "bind".into(),
            source: source.into(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        }
    }

    #[test]
    fn equal_mounts_share_a_key_and_different_ones_do_not() {
        assert_eq!(cache_key(&[mount("/s/1/fs")]), cache_key(&[mount("/s/1/fs")]));
        assert_ne!(cache_key(&[mount("/s/1/fs")]), cache_key(&[mount("/s/2/fs")]));
        assert_eq!(cache_key(&[mount("/a")]).len(), 32);
    }
}
