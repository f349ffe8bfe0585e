//! The agent's snapshot routes. They name host paths the agent (often root) reads and writes,
//! so only peers with the agent's own privileges may use them: root or the agent's user, not
//! the members of the `smartvm` group the other routes admit.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use smartvm::agent::wire::{RestoreRequest, SnapshotRequest, SnapshotSummary, VmSummary};
use smartvm::SmartVmError;

use super::routes::{Answer, Failure, Shared};
use super::Peer;

/// Refuses peers without the agent's own privileges.
fn same_privileges(peer: &Peer) -> Result<(), Failure> {
    let own = nix::unistd::geteuid().as_raw();
    match &peer.0 {
        Some(cred) if cred.uid() == 0 || cred.uid() == own => Ok(()),
        _ => Err(Failure::forbidden("snapshots name host paths: root or the agent's own user only")),
    }
}

pub(super) async fn snapshot(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> Answer<Json<SnapshotSummary>> {
    same_privileges(&peer)?;
    if agent.smartvm.vm(&id).is_none() {
        return Err(SmartVmError::VmNotFound { id }.into());
    }
    agent.smartvm.snapshot_vm(&id, &request.dir, request.keep_paused).await?;
    Ok(Json(SnapshotSummary { bundle: request.dir.join(smartvm::snapshot::SNAPSHOT_FILE) }))
}

pub(super) async fn restore(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(request): Json<RestoreRequest>,
) -> Answer<(StatusCode, Json<Vec<VmSummary>>)> {
    same_privileges(&peer)?;
    let count = request.count.unwrap_or(1);
    let vms = agent.smartvm.restore_bundle(&request.dir, request.id, count, request.resume.unwrap_or(true)).await?;
    let mut out = Vec::new();
    for vm in &vms {
        agent.watch(vm.clone());
        out.push(agent.summary(vm).await);
    }
    Ok((StatusCode::CREATED, Json(out)))
}
