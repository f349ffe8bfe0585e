//! The pool routes: create, list, inspect and remove warm pools, and check a VM out of one.
//! Pools are recorded in the [`PoolBook`](super::pool_book::PoolBook) so that a restarted agent
//! makes them again. Creating and removing a pool is the agent owner's (a pool holds VMs for
//! as long as it exists); a checkout is a start like any other.

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::answer::{require_json, Answer, JsonBody, PoolName, RawBody};
use super::peer::Peer;
use super::store::summary;
use super::Shared;
use crate::agent::wire::{CheckoutRequest, PoolRequest, VmSummary};
use crate::config::ConfigErrors;
use crate::error::SmartVmError;
use crate::pool::{PoolStats, VmPool};

fn find(agent: &Shared, name: &str) -> Result<std::sync::Arc<VmPool>, SmartVmError> {
    agent.smartvm().pool(name).ok_or_else(|| SmartVmError::PoolNotFound { name: name.into() })
}

pub(super) async fn create(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    JsonBody(request): JsonBody<PoolRequest>,
) -> Answer<(StatusCode, Json<PoolStats>)> {
    agent.policy.check_owner(peer.caller(), "pool")?;
    let spec = request.to_spec()?;
    agent.room_for(spec.size)?;
    let pool = agent.smartvm().create_pool(spec).await?;
    if let Err(e) = agent.pool_book.save(&request) {
        agent.smartvm().remove_pool(pool.name()).await;
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(pool.stats())))
}

pub(super) async fn list(State(agent): State<Shared>) -> Json<Vec<PoolStats>> {
    Json(agent.smartvm().pools().iter().map(|p| p.stats()).collect())
}

pub(super) async fn inspect(State(agent): State<Shared>, PoolName(name): PoolName) -> Answer<Json<PoolStats>> {
    Ok(Json(find(&agent, &name)?.stats()))
}

/// Forgets the pool first: an agent that dies during the removal does not make it again.
pub(super) async fn remove(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    PoolName(name): PoolName,
) -> Answer<StatusCode> {
    agent.policy.check_owner(peer.caller(), "pool")?;
    find(&agent, &name)?;
    agent.pool_book.forget(&name)?;
    agent.smartvm().remove_pool(&name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A VM of the pool, running, held by the agent like one it created (an empty body takes the
/// pool's config). A caller that is not the agent's owner may name only the paths the policy
/// allows.
pub(super) async fn checkout(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    PoolName(name): PoolName,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Answer<(StatusCode, Json<VmSummary>)> {
    if !body.is_empty() {
        require_json(&headers)?;
    }
    let request: CheckoutRequest = match body.is_empty() {
        true => CheckoutRequest::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| SmartVmError::from(ConfigErrors::single("<body>", e.to_string())))?,
    };
    if let Some(config) = &request.config {
        agent.policy.check_config(peer.caller(), config)?;
    }
    let pool = find(&agent, &name)?;
    let _turn = agent.start_turn(1).await?;
    let vm = agent.smartvm().checkout(&pool, request.config.as_ref()).await?;
    agent.watch(&vm);
    Ok((StatusCode::CREATED, Json(summary(&vm).await)))
}
