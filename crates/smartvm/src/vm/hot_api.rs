//! What a running VM's API offers besides its lifecycle: instance info, metadata (MMDS), hot
//! updates of drives, interfaces and the balloon, and metrics. Updates go through the VM's
//! state machine (`Operation::Update`), reads straight to the API.

use std::path::Path;
use std::sync::Arc;

use super::{MicroVm, Operation};
use crate::api::{
    ActionType, ApiClient, BalloonStatistics, GetBalloonStatistics, GetInstanceInfo, GetMmds, GetVersion, GetVmConfig,
    InstanceInfo, PatchBalloon, PatchBalloonStatistics, PatchDrive, PatchMmds, PatchNetworkInterface, PutAction,
    PutMmds, VersionInfo,
};
use crate::config::{
    BalloonStatsUpdate, BalloonUpdate, ConfigErrors, DriveUpdate, NetworkInterfaceConfig, RateLimiter,
};
use crate::error::Result;

impl MicroVm {
    /// `GET /`.
    pub async fn info(&self) -> Result<InstanceInfo> {
        self.api().await?.send(&GetInstanceInfo).await
    }
    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo> {
        self.api().await?.send(&GetVersion).await
    }
    /// `GET /vm/config`.
    pub async fn vm_config(&self) -> Result<serde_json::Value> {
        self.api().await?.send(&GetVmConfig).await
    }

    async fn api_for_update(&self) -> Result<Arc<ApiClient>> {
        let inner = self.inner.lock().await;
        self.begin(Operation::Update)?;
        super::client(&inner)
    }

    /// `PUT /mmds`: replaces the metadata document.
    pub async fn set_metadata(&self, data: &serde_json::Value) -> Result<()> {
        self.api_for_update().await?.send(&PutMmds(data.clone())).await
    }
    /// `PATCH /mmds`: merges into the metadata document.
    pub async fn patch_metadata(&self, data: &serde_json::Value) -> Result<()> {
        self.api_for_update().await?.send(&PatchMmds(data.clone())).await
    }
    /// `GET /mmds`.
    pub async fn metadata(&self) -> Result<serde_json::Value> {
        self.api_for_update().await?.send(&GetMmds).await
    }

    /// Points drive `drive_id` at another backing file (`PATCH /drives/{id}`).
    pub async fn update_drive(&self, drive_id: &str, path: &Path) -> Result<()> {
        let api = self.api_for_update().await?;
        if !self.config.drives.iter().any(|d| d.drive_id == drive_id) {
            return Err(ConfigErrors::single("driveId", format!("no drive {drive_id:?}")).into());
        }
        if !path.is_absolute() || !path.exists() {
            return Err(ConfigErrors::single(
                "pathOnHost",
                format!("{} must be an existing absolute path", path.display()),
            )
            .into());
        }
        let payload = DriveUpdate { drive_id: drive_id.into(), path_on_host: Some(path.into()), rate_limiter: None };
        api.send(&PatchDrive(payload)).await
    }

    /// New rate limiters for interface `iface_id`.
    pub async fn update_network_interface(
        &self,
        iface_id: &str,
        rx: Option<&RateLimiter>,
        tx: Option<&RateLimiter>,
    ) -> Result<()> {
        let api = self.api_for_update().await?;
        if !self.config.network_interfaces.iter().any(|n| n.iface_id == iface_id) {
            return Err(ConfigErrors::single("ifaceId", format!("no network interface {iface_id:?}")).into());
        }
        api.send(&PatchNetworkInterface(NetworkInterfaceConfig::update(iface_id, rx, tx))).await
    }

    /// New balloon target (`PATCH /balloon`).
    pub async fn update_balloon(&self, amount_mib: u64) -> Result<()> {
        self.api_for_update().await?.send(&PatchBalloon(BalloonUpdate { amount_mib })).await
    }
    /// `GET /balloon/statistics`.
    pub async fn balloon_statistics(&self) -> Result<BalloonStatistics> {
        self.api_for_update().await?.send(&GetBalloonStatistics).await
    }
    /// `PATCH /balloon/statistics`.
    pub async fn update_balloon_statistics(&self, interval_s: u32) -> Result<()> {
        let body = BalloonStatsUpdate { stats_polling_interval_s: interval_s };
        self.api_for_update().await?.send(&PatchBalloonStatistics(body)).await
    }
    /// `PUT /actions FlushMetrics`.
    pub async fn flush_metrics(&self) -> Result<()> {
        self.api_for_update().await?.send(&PutAction::new(ActionType::FlushMetrics)).await
    }
}
