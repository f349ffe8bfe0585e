//! The snapshot routes. They name host paths the agent (often root) reads and writes, so only
//! peers with the agent's own privileges may use them.

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;

use super::answer::{Answer, JsonBody, VmId};
use super::peer::Peer;
use super::store::summary;
use super::Shared;
use crate::agent::wire::{RestoreRequest, SnapshotRequest, SnapshotSummary, VmSummary};
use crate::config::ConfigErrors;
use crate::error::SmartVmError;

/// A bundle dir is absolute: the agent's working directory means nothing to its callers.
fn absolute(field: &str, dir: &std::path::Path) -> Result<(), SmartVmError> {
    match dir.is_absolute() {
        true => Ok(()),
        false => Err(ConfigErrors::single(field, format!("{} must be an absolute path", dir.display())).into()),
    }
}

pub(super) async fn snapshot(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    VmId(id): VmId,
    JsonBody(request): JsonBody<SnapshotRequest>,
) -> Answer<Json<SnapshotSummary>> {
    agent.policy.check_owner(peer.caller(), "dir")?;
    absolute("dir", &request.dir)?;
    agent.live(&id)?;
    agent.smartvm().snapshot_vm(&id, &request.dir, request.keep_paused).await?;
    Ok(Json(SnapshotSummary { bundle: request.dir.join(crate::snapshot::SNAPSHOT_FILE) }))
}

pub(super) async fn restore(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    JsonBody(request): JsonBody<RestoreRequest>,
) -> Answer<(StatusCode, Json<Vec<VmSummary>>)> {
    agent.policy.check_owner(peer.caller(), "dir")?;
    absolute("dir", &request.dir)?;
    let count = request.count.unwrap_or(1);
    if count == 0 || count > agent.policy.max_count {
        let why = format!("{count}: between 1 and {}", agent.policy.max_count);
        return Err(SmartVmError::from(ConfigErrors::single("count", why)).into());
    }
    let _turn = agent.start_turn(count).await?;
    let resume = request.resume.unwrap_or(true);
    let vms = agent.smartvm().restore_bundle(&request.dir, request.id, count, resume).await?;
    let mut out = Vec::new();
    for vm in &vms {
        agent.watch(vm);
        out.push(summary(vm).await);
    }
    Ok((StatusCode::CREATED, Json(out)))
}
