//! A VM's snapshots: taking them (a bundle, or Firecracker's raw files) and restoring from
//! them (into this VM, before it started).

use std::path::Path;

use super::{client, steps, MicroVm, Operation};
use crate::api::PutSnapshotCreate;
use crate::config::{SnapshotCreateParams, SnapshotLoadParams};
use crate::error::Result;

impl MicroVm {
    /// Restores the VM from a snapshot instead of booting: spawns Firecracker, loads the
    /// snapshot (the config's logger/metrics are applied first; other resources come from the
    /// snapshot) and ends `Paused`, or `Running` with `params.resume_vm`.
    pub async fn restore(&self, params: &SnapshotLoadParams) -> Result<()> {
        self.launch(Some(steps::RestoreSource::Params(params.clone()))).await
    }

    /// Restores from a [`Snapshot`](crate::snapshot::Snapshot): a Diff chain is first merged
    /// onto its Full base into this VM's runtime dir (removed at cleanup); a Full snapshot's
    /// memory file is used in place (Firecracker maps it privately, so clones can share it).
    pub async fn restore_snapshot(
        &self,
        snapshot: &crate::snapshot::Snapshot,
        resume: bool,
        track_dirty_pages: bool,
    ) -> Result<()> {
        let source = steps::RestoreSource::Snapshot { snapshot: snapshot.clone(), resume, track_dirty_pages };
        self.launch(Some(source)).await
    }

    /// Alias of [`restore`](Self::restore), under the seed's name.
    pub async fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<()> {
        self.restore(params).await
    }

    /// Takes a self-contained snapshot of a paused VM into `dir` (created; must not exist):
    /// `vm.state`, `vm.mem`, copies of the VM's ephemeral drives (reflink or sparse) and
    /// `snapshot.json`. Full without `base`, else a Diff on top of `base` (the VM must track
    /// dirty pages). Restore it with [`restore_snapshot`](Self::restore_snapshot) or
    /// [`SmartVm::clone_vms`](crate::SmartVm::clone_vms); each restored VM gets its own drive copies.
    pub async fn snapshot(
        &self,
        dir: &Path,
        base: Option<&crate::snapshot::Snapshot>,
    ) -> Result<crate::snapshot::Snapshot> {
        let inner = self.inner.lock().await;
        self.begin(Operation::Snapshot)?;
        let api = client(&inner)?;
        let staged = inner.ledger.as_ref().map(|l| l.journal().staged()).unwrap_or_default();
        let output = self.layout.snapshot_output.clone();
        crate::snapshot::write_bundle(&api, &output, dir, base, &staged, Some(&self.config)).await
    }

    /// `PUT /snapshot/create` of a paused VM.
    pub async fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<()> {
        let inner = self.inner.lock().await;
        self.begin(Operation::Snapshot)?;
        let api = client(&inner)?;
        api.send(&PutSnapshotCreate(params.clone())).await
    }
}
