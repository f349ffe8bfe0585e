//! The agent's routes, listed once: the server's router is built from [`Route::ALL`] (a handler
//! per variant, by exhaustive match), the client calls through [`Route::path`], and a test
//! holds the OpenAPI document to the same list.

use http::Method;

/// One route of the host agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /openapi.json`: the OpenAPI document.
    OpenApi,
    /// `GET /v1/info`: about the agent (a liveness check).
    Info,
    /// `GET /v1/events`: each VM's state, then every change (NDJSON stream).
    Events,
    /// `GET /v1/vms`: every VM, live and ended.
    ListVms,
    /// `POST /v1/vms`: create and start a VM.
    CreateVm,
    /// `GET /v1/vms/{id}`.
    GetVm,
    /// `DELETE /v1/vms/{id}`.
    RemoveVm,
    /// `POST /v1/vms/{id}/pause`.
    PauseVm,
    /// `POST /v1/vms/{id}/resume`.
    ResumeVm,
    /// `POST /v1/vms/{id}/stop`.
    StopVm,
    /// `GET /v1/vms/{id}/logs`: the console (streamed with `follow`).
    VmLogs,
    /// `POST /v1/vms/{id}/console`: input to the guest's serial console.
    VmConsole,
    /// `POST /v1/vms/{id}/snapshot`.
    SnapshotVm,
    /// `POST /v1/snapshots/restore`.
    RestoreSnapshot,
    /// `GET /v1/vms/{id}/guest` with `Upgrade: smartvm-guest`: a raw connection to the VM's
    /// guest agent.
    GuestConnect,
    /// `GET /v1/pools`: every warm pool's stats.
    ListPools,
    /// `POST /v1/pools`: create a warm pool.
    CreatePool,
    /// `GET /v1/pools/{name}`.
    GetPool,
    /// `DELETE /v1/pools/{name}`: its waiting VMs are destroyed (those checked out stay).
    RemovePool,
    /// `POST /v1/pools/{name}/checkout`: a VM of the pool, running.
    CheckoutPool,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 20] = [
        Route::OpenApi,
        Route::Info,
        Route::Events,
        Route::ListVms,
        Route::CreateVm,
        Route::GetVm,
        Route::RemoveVm,
        Route::PauseVm,
        Route::ResumeVm,
        Route::StopVm,
        Route::VmLogs,
        Route::VmConsole,
        Route::SnapshotVm,
        Route::RestoreSnapshot,
        Route::GuestConnect,
        Route::ListPools,
        Route::CreatePool,
        Route::GetPool,
        Route::RemovePool,
        Route::CheckoutPool,
    ];

    /// Its HTTP method.
    pub fn method(self) -> Method {
        match self {
            Route::OpenApi
            | Route::Info
            | Route::Events
            | Route::ListVms
            | Route::GetVm
            | Route::VmLogs
            | Route::GuestConnect
            | Route::ListPools
            | Route::GetPool => Method::GET,
            Route::RemoveVm | Route::RemovePool => Method::DELETE,
            Route::CreateVm
            | Route::PauseVm
            | Route::ResumeVm
            | Route::StopVm
            | Route::VmConsole
            | Route::SnapshotVm
            | Route::RestoreSnapshot
            | Route::CreatePool
            | Route::CheckoutPool => Method::POST,
        }
    }

    /// Its path template (`{id}` for a VM id, `{name}` for a pool's).
    pub fn template(self) -> &'static str {
        match self {
            Route::OpenApi => "/openapi.json",
            Route::Info => "/v1/info",
            Route::Events => "/v1/events",
            Route::ListVms | Route::CreateVm => "/v1/vms",
            Route::GetVm | Route::RemoveVm => "/v1/vms/{id}",
            Route::PauseVm => "/v1/vms/{id}/pause",
            Route::ResumeVm => "/v1/vms/{id}/resume",
            Route::StopVm => "/v1/vms/{id}/stop",
            Route::VmLogs => "/v1/vms/{id}/logs",
            Route::VmConsole => "/v1/vms/{id}/console",
            Route::SnapshotVm => "/v1/vms/{id}/snapshot",
            Route::RestoreSnapshot => "/v1/snapshots/restore",
            Route::GuestConnect => "/v1/vms/{id}/guest",
            Route::ListPools | Route::CreatePool => "/v1/pools",
            Route::GetPool | Route::RemovePool => "/v1/pools/{name}",
            Route::CheckoutPool => "/v1/pools/{name}/checkout",
        }
    }

    /// The path for VM (or pool) `id`, percent-encoded as one segment in place of the
    /// template's parameter; ignored by routes without one.
    pub fn path(self, id: &str) -> String {
        let segment = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string();
        let parts = self.template().split('/').map(|part| if part.starts_with('{') { segment.as_str() } else { part });
        parts.collect::<Vec<_>>().join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::super::wire::OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
                documented.push((method.clone(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> =
            Route::ALL.iter().map(|r| (r.method().as_str().to_ascii_lowercase(), r.template().into())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }

    /// The document's enums are the wire's: states, steps, stop steps and error codes.
    #[test]
    fn the_openapi_enums_are_the_typed_ones() {
        use crate::agent::wire::EventState;
        let doc: serde_json::Value = serde_json::from_str(super::super::wire::OPENAPI).unwrap();
        let schemas = &doc["components"]["schemas"];
        let documented = |schema: &str, field: &str| schemas[schema]["properties"][field]["enum"].clone();
        let names = |values: Vec<serde_json::Value>| serde_json::Value::Array(values);
        fn wire<T: serde::Serialize>(value: &T) -> serde_json::Value {
            serde_json::to_value(value).unwrap()
        }
        let states: Vec<_> = crate::lifecycle::VmState::ALL.iter().map(wire).collect();
        assert_eq!(documented("VmSummary", "state"), names(states.clone()));
        let mut events = states;
        events.push(wire(&EventState::Removed));
        for state in crate::lifecycle::VmState::ALL {
            let round: EventState = serde_json::from_value(wire(&EventState::Vm(state))).unwrap();
            assert_eq!(round, EventState::Vm(state));
        }
        assert_eq!(serde_json::from_value::<EventState>(wire(&EventState::Removed)).unwrap(), EventState::Removed);
        assert_eq!(documented("VmEvent", "state"), names(events));
        let steps = crate::lifecycle::Step::ALL.iter().map(wire).collect();
        assert_eq!(documented("VmEvent", "step"), names(steps));
        let stops = crate::process::StopStep::ALL.iter().map(wire).collect();
        assert_eq!(documented("StopSummary", "step"), names(stops));
        let codes = crate::error::ErrorCode::ALL.iter().map(wire).collect();
        assert_eq!(documented("ErrorBody", "code"), names(codes));
    }

    #[test]
    fn ids_are_one_segment() {
        assert_eq!(Route::PauseVm.path("a/b c"), "/v1/vms/a%2Fb%20c/pause");
        assert_eq!(Route::ListVms.path("ignored"), "/v1/vms");
        assert_eq!(Route::CheckoutPool.path("p 1"), "/v1/pools/p%201/checkout");
    }
}
