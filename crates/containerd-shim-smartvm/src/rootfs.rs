//! The task's root filesystem (containerd's snapshot, given as mounts) as an ext4 image the VM
//! boots from: `mkfs.ext4 -d` of the tree, kept under smartvm's data dir. The VM writes to its
//! own staged copy (smartvm's ephemeral drives), never to the kept image, so one image serves
//! many tasks:
//! - a fresh container on the overlay snapshotter (its upper dir still empty) is its image's
//!   read-only layers alone: one image per set of layers, shared by every container of that
//!   image, kept until containerd removes the layers (swept at the next create);
//! - anything else (the native snapshotter's private copy, an upper dir with changes) is the
//!   task's own, keyed by the mounts' identity and removed with the task.

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
    /// The thread making it ended without an answer.
    #[error("the image maker's thread failed")]
    Worker(#[source] tokio::task::JoinError),
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

/// Where a task's image comes from (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An image's read-only layers, topmost first (overlay's `lowerdir` order).
    Layers(Vec<PathBuf>),
    /// The task's own snapshot.
    Own,
}

impl Source {
    /// The file name stem of its image in the cache.
    pub fn key(&self, mounts: &[Mount]) -> String {
        match self {
            Source::Layers(lowers) => {
                let mut hash = Sha256::new();
                for lower in lowers {
                    hash.update(lower.as_os_str().as_encoded_bytes());
                    hash.update([0]);
                }
                format!("layers-{}", hex::encode(&hash.finalize()[..16]))
            }
            Source::Own => cache_key(mounts),
        }
    }
}

/// Plans where the image comes from (pure but for `is_empty_dir`, which looks at the upper dir).
pub fn plan(mounts: &[Mount], is_empty_dir: impl Fn(&Path) -> bool) -> Source {
    let [m] = mounts else { return Source::Own };
    if m.type_ != "overlay" {
        return Source::Own;
    }
    let option = |name: &str| m.options.iter().find_map(|o| o.strip_prefix(name).and_then(|v| v.strip_prefix('=')));
    match (option("lowerdir"), option("upperdir")) {
        (Some(lowers), Some(upper)) if is_empty_dir(Path::new(upper)) => {
            Source::Layers(lowers.split(':').filter(|l| !l.is_empty()).map(PathBuf::from).collect())
        }
        (Some(lowers), None) => Source::Layers(lowers.split(':').map(PathBuf::from).collect()),
        _ => Source::Own,
    }
}

/// Shared images whose layers are gone (pure): `(image, its layers)` pairs in, images out.
pub fn stale(shared: &[(PathBuf, Vec<PathBuf>)], exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    shared
        .iter()
        .filter(|(_, lowers)| lowers.is_empty() || !lowers.iter().all(|l| exists(l)))
        .map(|(i, _)| i.clone())
        .collect()
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

/// The image for `mounts` in `cache` (made now if it is not there yet), with `agent` installed
/// as `/sbin/smartvm-guest` when given; `None` without mounts.
pub async fn ensure(
    mounts: &[Mount],
    bundle: &Path,
    cache: &Path,
    agent: Option<&Path>,
) -> Result<Option<PathBuf>, RootfsError> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let source = plan(mounts, |dir| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()));
    let key = match agent {
        Some(agent) => format!("{}-agent-{}", source.key(mounts), agent_key(agent).map_err(cache_error(cache))?),
        None => source.key(mounts),
    };
    let image = cache.join(format!("{key}.ext4"));
    if image.exists() {
        return Ok(Some(image));
    }
    let cache_error = &cache_error(cache);
    std::fs::create_dir_all(cache).map_err(cache_error)?;
    sweep(cache);
    // One tree as it is (a bind mount, a single layer); anything else is mounted at the
    // bundle's rootfs for the copy, then unmounted.
    let (tree, mounted) = match (&source, mounts) {
        (Source::Layers(lowers), _) if lowers.len() == 1 => (lowers[0].clone(), false),
        (Source::Layers(lowers), _) => (mount_all(&[read_only_layers(lowers)], &bundle.join("rootfs")).await?, true),
        (Source::Own, [m]) if m.type_ == "bind" => (PathBuf::from(&m.source), false),
        (Source::Own, _) => (mount_all(mounts, &bundle.join("rootfs")).await?, true),
    };
    let partial = cache.join(format!(".{key}.{}.tmp", std::process::id()));
    let mut made = make_image(&partial, &tree).await;
    if mounted {
        let _ = nix::mount::umount2(&tree, nix::mount::MntFlags::MNT_DETACH);
    }
    if let (Ok(()), Some(agent)) = (&made, agent) {
        made = install_agent(&partial, agent).await;
    }
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    if let Source::Layers(lowers) = &source {
        let listed: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        std::fs::write(cache.join(format!("{key}.layers")), listed.join("\n")).map_err(cache_error)?;
    }
    std::fs::rename(&partial, &image).map_err(cache_error)?;
    Ok(Some(image))
}

fn cache_error(cache: &Path) -> impl Fn(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Cache { dir: cache.to_path_buf(), source }
}

/// The identity of an agent binary (its content's hash): a new agent, new images.
fn agent_key(agent: &Path) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    std::io::copy(&mut std::fs::File::open(agent)?, &mut hash)?;
    Ok(hex::encode(&hash.finalize()[..8]))
}

/// Installs the guest agent in the image being made, off the async threads.
async fn install_agent(partial: &Path, agent: &Path) -> Result<(), RootfsError> {
    let (partial, agent) = (partial.to_path_buf(), agent.to_path_buf());
    let runtime = tokio::runtime::Handle::current();
    let installed = tokio::task::spawn_blocking(move || {
        smartvm::images::inject_guest_agent_with(&partial, &agent, |tool| runtime.block_on(run_reaped(tool)))
    })
    .await;
    match installed {
        Ok(result) => result.map(drop).map_err(RootfsError::Image),
        Err(e) => Err(RootfsError::Worker(e)),
    }
}

/// `mkfs.ext4 -d tree` into `partial`, off the async threads.
async fn make_image(partial: &Path, tree: &Path) -> Result<(), RootfsError> {
    let (partial, tree) = (partial.to_path_buf(), tree.to_path_buf());
    let runtime = tokio::runtime::Handle::current();
    let made = tokio::task::spawn_blocking(move || {
        smartvm::images::create_from_dir_with(&partial, &tree, 64, |tool| runtime.block_on(run_reaped(tool)).map(drop))
    })
    .await;
    match made {
        Ok(result) => result.map_err(RootfsError::Image),
        Err(e) => Err(RootfsError::Worker(e)),
    }
}

/// A read-only overlay of several layers.
fn read_only_layers(lowers: &[PathBuf]) -> Mount {
    let joined: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    Mount {
        type_: "overlay".into(),
        source: "overlay".into(),
        options: vec![format!("lowerdir={}", joined.join(":")), "ro".into()],
        ..Default::default()
    }
}

/// Removes shared images whose layers containerd has removed.
fn sweep(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let shared: Vec<(PathBuf, Vec<PathBuf>)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "layers"))
        .map(|p| {
            let lowers = std::fs::read_to_string(&p).unwrap_or_default().lines().map(PathBuf::from).collect();
            (p.with_extension("ext4"), lowers)
        })
        .collect();
    for image in stale(&shared, Path::exists) {
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_file(image.with_extension("layers"));
    }
}

/// Runs a host tool and learns its exit from the shim's reaper (which collects every child of
/// this process), subscribing before the spawn so the exit cannot be missed; returns its
/// (stdout, stderr), read on threads of their own so a full pipe never stalls it.
async fn run_reaped(tool: &HostTool) -> Result<(String, String), HostToolError> {
    use containerd_shim::asynchronous::monitor::{monitor_subscribe, monitor_unsubscribe};
    let program = tool.command().get_program().to_string_lossy().into_owned();
    let spawn_error = |source| HostToolError::Spawn { program: program.clone(), source };
    let mut exits =
        monitor_subscribe(Topic::Pid).await.map_err(|e| spawn_error(std::io::Error::other(e.to_string())))?;
    let spawned = tool.command().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let outcome = match spawned {
        Ok(mut child) => {
            let (stdout, stderr) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
            let pid = child.id() as i32;
            let waited = tokio::time::timeout(HOST_TOOL_TIMEOUT, async {
                while let Some(exit) = exits.rx.recv().await {
                    if matches!(exit.subject, Subject::Pid(p) if p == pid) {
                        return Some(exit.exit_code);
                    }
                }
                None
            });
            let code = waited.await;
            let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
            match code {
                Ok(Some(0)) => Ok((stdout, stderr)),
                Ok(Some(code)) => Err(HostToolError::Failed {
                    program: program.clone(),
                    status: std::os::unix::process::ExitStatusExt::from_raw(code << 8),
                    stderr,
                }),
                Ok(None) | Err(_) => Err(HostToolError::TimedOut { program: program.clone() }),
            }
        }
        Err(e) => Err(spawn_error(e)),
    };
    let _ = monitor_unsubscribe(exits.id).await;
    outcome
}

use containerd_shim::monitor::{Subject, Topic};

/// Reads a child's pipe to its end on a thread of its own.
fn read_all(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
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

/// Removes the image of a task's own snapshot (not reused after its delete); shared images stay
/// for the image's next container.
pub fn forget(mounts: &[Mount], cache: &Path) {
    if plan(mounts, |_| false) == Source::Own {
        let _ = std::fs::remove_file(cache.join(format!("{}.ext4", cache_key(mounts))));
    }
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

    fn overlay(options: &[&str]) -> Mount {
        Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_overlay_container_is_its_layers_and_shares_their_image() {
        let fresh = |upper: &str| {
            overlay(&["index=off", "workdir=/s/9/work", &format!("upperdir={upper}"), "lowerdir=/s/2/fs:/s/1/fs"])
        };
        let empty = |p: &Path| p.starts_with("/s/9");
        let a = plan(&[fresh("/s/9/fs")], empty);
        assert_eq!(a, Source::Layers(vec!["/s/2/fs".into(), "/s/1/fs".into()]));
        let other_container = fresh("/s/9/fs2");
        assert_eq!(
            a.key(&[fresh("/s/9/fs")]),
            plan(std::slice::from_ref(&other_container), |_| true).key(&[other_container])
        );
        assert!(a.key(&[]).starts_with("layers-"));
        // An upper dir with changes, the native snapshotter, no mounts: the task's own.
        assert_eq!(plan(&[fresh("/s/8/fs")], empty), Source::Own);
        assert_eq!(plan(&[mount("/s/1/fs")], |_| true), Source::Own);
        assert_eq!(plan(&[], |_| true), Source::Own);
        // A view (no upper dir): the layers.
        assert_eq!(plan(&[overlay(&["lowerdir=/s/1/fs"])], |_| false), Source::Layers(vec!["/s/1/fs".into()]));
    }

    #[test]
    fn shared_images_go_when_any_of_their_layers_is_gone() {
        let shared = vec![
            (PathBuf::from("/c/a.ext4"), vec![PathBuf::from("/s/1/fs")]),
            (PathBuf::from("/c/b.ext4"), vec![PathBuf::from("/s/2/fs"), PathBuf::from("/s/1/fs")]),
            (PathBuf::from("/c/c.ext4"), vec![]),
        ];
        let stale = stale(&shared, |p| p == Path::new("/s/1/fs"));
        assert_eq!(stale, vec![PathBuf::from("/c/b.ext4"), PathBuf::from("/c/c.ext4")]);
    }

    #[test]
    fn equal_mounts_share_a_key_and_different_ones_do_not() {
        assert_eq!(cache_key(&[mount("/s/1/fs")]), cache_key(&[mount("/s/1/fs")]));
        assert_ne!(cache_key(&[mount("/s/1/fs")]), cache_key(&[mount("/s/2/fs")]));
        assert_eq!(cache_key(&[mount("/a")]).len(), 32);
    }
}
