//! Typed descriptions of Firecracker's API endpoints: one struct per endpoint holding its body,
//! with method, path and response type. [`ApiClient::send`](super::ApiClient::send) is the only
//! code that performs requests.

use serde::{Deserialize, Serialize};

use super::{Endpoint, Method};
use crate::config::{
    BalloonStatsUpdate, BalloonUpdate, DriveUpdate, FirecrackerResource, NetworkInterfaceUpdate, SnapshotCreateParams,
    SnapshotLoadPayload,
};

macro_rules! endpoint {
    ($(#[$doc:meta])* $name:ident($body:ty) => $method:ident, |$b:ident| $path:expr, $resp:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(pub $body);
        impl Endpoint for $name {
            type Response = $resp;
            const METHOD: Method = Method::$method;
            fn path(&self) -> String {
                let $b = &self.0;
                $path
            }
            fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
                serde_json::to_vec(&self.0).map(Some)
            }
        }
    };
    ($(#[$doc:meta])* $name:ident => $method:ident, $path:expr, $resp:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name;
        impl Endpoint for $name {
            type Response = $resp;
            const METHOD: Method = Method::$method;
            fn path(&self) -> String {
                $path.to_string()
            }
            fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
                Ok(None)
            }
        }
    };
}

endpoint!(/// `PATCH /drives/{id}`
    PatchDrive(DriveUpdate) => PATCH, |b| format!("/drives/{}", b.drive_id), ());
endpoint!(/// `PATCH /network-interfaces/{id}`
    PatchNetworkInterface(NetworkInterfaceUpdate) => PATCH, |b| format!("/network-interfaces/{}", b.iface_id), ());
endpoint!(/// `PATCH /balloon`
    PatchBalloon(BalloonUpdate) => PATCH, |_b| "/balloon".into(), ());
endpoint!(/// `PATCH /balloon/statistics`
    PatchBalloonStatistics(BalloonStatsUpdate) => PATCH, |_b| "/balloon/statistics".into(), ());
endpoint!(/// `PUT /mmds`: replace the metadata document (any JSON the caller chooses).
    PutMmds(serde_json::Value) => PUT, |_b| "/mmds".into(), ());
endpoint!(/// `PATCH /mmds`: JSON merge-patch of the metadata document.
    PatchMmds(serde_json::Value) => PATCH, |_b| "/mmds".into(), ());
endpoint!(/// `PUT /actions`
    PutAction(ActionBody) => PUT, |_b| "/actions".into(), ());
endpoint!(/// `PATCH /vm`: pause or resume.
    PatchVmState(VmStateBody) => PATCH, |_b| "/vm".into(), ());
endpoint!(/// `PUT /snapshot/create`
    PutSnapshotCreate(SnapshotCreateParams) => PUT, |_b| "/snapshot/create".into(), ());
endpoint!(/// `PUT /snapshot/load`
    PutSnapshotLoad(SnapshotLoadPayload) => PUT, |_b| "/snapshot/load".into(), ());
endpoint!(/// `GET /`
    GetInstanceInfo => GET, "/", InstanceInfo);
endpoint!(/// `GET /version`
    GetVersion => GET, "/version", VersionInfo);
endpoint!(/// `GET /vm/config`: the whole configuration as Firecracker reports it.
    GetVmConfig => GET, "/vm/config", serde_json::Value);
endpoint!(/// `GET /mmds`
    GetMmds => GET, "/mmds", serde_json::Value);
endpoint!(/// `GET /balloon/statistics`
    GetBalloonStatistics => GET, "/balloon/statistics", BalloonStatistics);

/// `PUT` of one pre-boot resource (its path and body, encoded once when the plan is made), so a
/// plan of requests of different kinds is one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResource {
    path: String,
    body: Vec<u8>,
}

impl PutResource {
    /// The `PUT` that configures `resource`.
    pub fn of<R: FirecrackerResource>(resource: &R) -> Result<Self, serde_json::Error> {
        Ok(Self { path: resource.api_path(), body: serde_json::to_vec(resource)? })
    }

    /// The body as JSON (for logs and tests).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Endpoint for PutResource {
    type Response = ();
    const METHOD: Method = Method::PUT;
    fn path(&self) -> String {
        self.path.clone()
    }
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        Ok(Some(self.body.clone()))
    }
}

/// `PUT /actions` action types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum ActionType {
    InstanceStart,
    FlushMetrics,
    SendCtrlAltDel,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ActionBody {
    /// The action.
    pub action_type: ActionType,
}

impl PutAction {
    /// `PUT /actions` with `action`.
    pub fn new(action: ActionType) -> Self {
        PutAction(ActionBody { action_type: action })
    }
}

/// `PATCH /vm` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum VmStateRequest {
    Paused,
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmStateBody {
    /// Target state.
    pub state: VmStateRequest,
}

/// `GET /` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct InstanceInfo {
    /// `Firecracker`.
    pub app_name: String,
    /// The `--id` given to Firecracker.
    pub id: String,
    /// `Not started`, `Running` or `Paused`.
    pub state: String,
    /// Firecracker's version.
    pub vmm_version: String,
}

/// `GET /version` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct VersionInfo {
    /// e.g. `1.12.1`.
    pub firecracker_version: String,
}

/// `GET /balloon/statistics` answer (fields the guest driver reports; absent ones are `None`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct BalloonStatistics {
    /// Target balloon size in pages.
    pub target_pages: u64,
    /// Actual balloon size in pages.
    pub actual_pages: u64,
    /// Target balloon size in MiB.
    pub target_mib: u64,
    /// Actual balloon size in MiB.
    pub actual_mib: u64,
    /// Guest free memory in bytes.
    #[serde(default)]
    pub free_memory: Option<u64>,
    /// Guest total memory in bytes.
    #[serde(default)]
    pub total_memory: Option<u64>,
    /// Guest available memory in bytes.
    #[serde(default)]
    pub available_memory: Option<u64>,
}
