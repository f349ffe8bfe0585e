//! The snapshot routes. They name host paths the agent (often root) reads and writes, so only
//! peers with the agent's own privileges may use them.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::answer::{Answer, JsonBody};
use super::peer::{same_privileges, Peer};
use super::store::summary;
use super::Shared;
use crate::agent::wire::{RestoreRequest, SnapshotRequest, SnapshotSummary, VmSummary};

pub(super) async fn snapshot(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<SnapshotRequest>,
) -> Answer<Json<SnapshotSummary>> {
    same_privileges(&peer)?;
    agent.live(&id)?;
    agent.smartvm().snapshot_vm(&id, &request.dir, request.keep_paused).await?;
    Ok(Json(SnapshotSummary { bundle: request.dir.join(crate::snapshot::SNAPSHOT_FILE) }))
}

pub(super) async fn restore(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    JsonBody(request): JsonBody<RestoreRequest>,
) -> Answer<(StatusCode, Json<Vec<VmSummary>>)> {
    same_privileges(&peer)?;
    let count = request.count.unwrap_or(1);
    let resume = request.resume.unwrap_or(true);
    let vms = agent.smartvm().restore_bundle(&request.dir, request.id, count, resume).await?;
    let mut out = Vec::new();
    for vm in &vms {
        agent.watch(vm);
        out.push(summary(vm).await);
    }
    Ok((StatusCode::CREATED, Json(out)))
}
