//! The VM routes: create (from a config or a base image), inspect, list, pause, resume, stop,
//! remove. State changes reach `/v1/events` from the VMs themselves, not from here.

use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::answer::{require_json, Answer, QueryOf, RawBody, VmId};
use super::peer::Peer;
use super::store::summary;
use super::Shared;
use crate::agent::wire::{AgentInfo, ImageVmRequest, StopSummary, VmSummary};
use crate::config::ConfigErrors;
use crate::config::VmConfig;
use crate::error::SmartVmError;
use crate::process::StopPlan;
use crate::smartvm::SmartVm;

pub(super) async fn info(State(agent): State<Shared>) -> Json<AgentInfo> {
    Json(AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        vms: agent.smartvm().vm_count(),
    })
}

pub(super) async fn list(State(agent): State<Shared>) -> Json<Vec<VmSummary>> {
    Json(agent.list().await)
}

/// Creates and starts a VM; on any failure nothing stays registered or on the host. A caller
/// that is not the agent's owner may name only the paths the policy allows.
pub(super) async fn create(
    State(agent): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Answer<(StatusCode, Json<VmSummary>)> {
    require_json(&headers)?;
    let text =
        std::str::from_utf8(&body).map_err(|_| SmartVmError::from(ConfigErrors::single("<body>", "is not UTF-8")))?;
    let is_image = serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("image").is_some());
    let config = match is_image {
        true => image_config(agent.smartvm(), text).await?,
        false => {
            let config = VmConfig::from_json(text).map_err(SmartVmError::from)?;
            agent.policy.check_config(peer.caller(), &config)?;
            config
        }
    };
    let _turn = agent.start_turn(1).await?;
    let vm = agent.smartvm().create_vm(&config)?;
    agent.watch(&vm);
    if let Err(e) = vm.start().await {
        let _ = agent.remove(vm.id(), true).await;
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(summary(&vm).await)))
}

/// The config of a `{"image": …}` request: the bundle fetched (or cached), then the overrides.
async fn image_config(smartvm: &SmartVm, text: &str) -> Result<VmConfig, SmartVmError> {
    use crate::images::{BaseImageOptions, Preset};
    let request: ImageVmRequest =
        serde_json::from_str(text).map_err(|e| ConfigErrors::single("<body>", e.to_string()))?;
    let mut options = BaseImageOptions::default();
    if let Some(p) = &request.image.preset {
        options.preset = Some(p.parse::<Preset>().map_err(|m| ConfigErrors::single("image.preset", m))?);
    }
    if let Some(m) = request.image.manifest {
        if !m.starts_with("https://") && !m.starts_with("http://") {
            return Err(ConfigErrors::single("image.manifest", "must be an http(s) URL").into());
        }
        options.manifest_url = Some(m);
    }
    let bundle = smartvm.ensure_base_image(&options, &crate::images::NoProgress).await?;
    let mut config = bundle.vm_config();
    config.id = request.id;
    if let Some(v) = request.vcpus {
        config.machine_config.vcpu_count = v;
    }
    if let Some(m) = request.mem_mib {
        config.machine_config.mem_size_mib = m;
    }
    Ok(config)
}

pub(super) async fn inspect(State(agent): State<Shared>, VmId(id): VmId) -> Answer<Json<VmSummary>> {
    Ok(Json(agent.get(&id).await?))
}

pub(super) async fn pause(State(agent): State<Shared>, VmId(id): VmId) -> Answer<Json<VmSummary>> {
    let vm = agent.live(&id)?;
    vm.pause().await?;
    Ok(Json(summary(&vm).await))
}

pub(super) async fn resume(State(agent): State<Shared>, VmId(id): VmId) -> Answer<Json<VmSummary>> {
    let vm = agent.live(&id)?;
    vm.resume().await?;
    Ok(Json(summary(&vm).await))
}

#[derive(serde::Deserialize)]
pub(super) struct StopQuery {
    timeout_ms: Option<u64>,
}

pub(super) async fn stop(
    State(agent): State<Shared>,
    VmId(id): VmId,
    QueryOf(q): QueryOf<StopQuery>,
) -> Answer<Json<StopSummary>> {
    let vm = agent.live(&id)?;
    let outcome = match q.timeout_ms {
        Some(ms) => vm.stop_with(&StopPlan::with_grace(Duration::from_millis(ms))).await?,
        None => vm.stop().await?,
    };
    Ok(Json(StopSummary { id, step: outcome.step }))
}

#[derive(serde::Deserialize)]
pub(super) struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

pub(super) async fn remove(
    State(agent): State<Shared>,
    VmId(id): VmId,
    QueryOf(q): QueryOf<RemoveQuery>,
) -> Answer<StatusCode> {
    agent.remove(&id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}
