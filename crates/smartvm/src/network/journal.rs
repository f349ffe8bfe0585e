//! What a [`NetworkManager`](super::NetworkManager) created on the host (bridge, NAT table),
//! journaled before it is created, so that `smartvm gc` can remove them once the program that
//! made them is gone and no VM needs them any more.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One bridge's record: `<state dir>/<bridge>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkJournal {
    /// Bridge name.
    pub bridge: String,
    /// smartvm created the bridge (a pre-existing one is never removed).
    pub bridge_created: bool,
    /// smartvm's NAT table for it.
    pub nat_table: Option<String>,
    /// The program that created them, and its start time.
    pub owner_pid: Option<i32>,
    /// See `owner_pid`.
    pub owner_start_time: Option<u64>,
}

impl NetworkJournal {
    /// The journal file of `bridge` in `dir`.
    pub fn path(dir: &Path, bridge: &str) -> PathBuf {
        dir.join(format!("{bridge}.json"))
    }

    /// Writes it durably (`0600`, fsync, rename), creating `dir` (`0700`) if needed.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let path = Self::path(dir, &self.bridge);
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a journal after the [trust check](crate::trust).
    pub fn read(path: &Path) -> std::io::Result<Self> {
        crate::trust::check(path, crate::trust::Expect::File).map_err(std::io::Error::other)?;
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// True while the creating program runs.
    pub fn owner_alive(&self) -> bool {
        match self.owner_pid {
            Some(pid) => crate::host::process_start_time(pid).is_some_and(|t| Some(t) == self.owner_start_time),
            None => false,
        }
    }
}
