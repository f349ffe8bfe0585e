#![cfg(feature = "agent")]
//! The host agent's server embedded in a program of its own (as `examples/embed_agent.rs`
//! does): every route of the table is served, and the event stream carries what the VMs
//! publish, each change once and in order.

mod common;

use std::time::Duration;

use smartvm::agent::server::{bind, AgentServer};
use smartvm::agent::wire::{EventState, VmEvent};
use smartvm::agent::{AgentClient, Route};
use smartvm::api::ApiClient;

struct Served {
    socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<smartvm::Result<()>>,
}

async fn serve(env: &common::TestEnv) -> Served {
    let options = env.smartvm.options().clone();
    let socket = env.dir.path().join("embedded-agent.sock");
    let listener = bind(&socket).await.unwrap();
    let server = AgentServer::new(options);
    let report = server.adopt().await.unwrap();
    assert!(report.adopted.is_empty() && report.failed.is_empty(), "{report:?}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Served { socket, stop: Some(stop), task }
}

impl Served {
    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

#[tokio::test]
async fn every_route_of_the_table_is_served() {
    let Some(env) = common::env() else { return };
    let served = serve(&env).await;
    let raw = ApiClient::new(&served.socket);
    for route in Route::ALL.into_iter().filter(|r| *r != Route::Events) {
        let answer = raw.request(route.method(), &route.path("nope"), None).await.unwrap();
        let routed =
            answer.ok || serde_json::from_str::<serde_json::Value>(&answer.body).is_ok_and(|b| b["code"].is_string());
        assert!(routed, "{route:?} answered {} {}", answer.status_code, answer.body);
    }
    // A path outside the table is not served (the check above can fail).
    let unknown = raw.request(smartvm::api::Method::GET, "/v1/nothing", None).await.unwrap();
    assert_eq!(unknown.status_code, 404);
    assert!(!unknown.body.contains("code"));
    served.shut_down().await;
}

#[tokio::test]
async fn the_event_stream_carries_what_the_vms_publish() {
    let Some(env) = common::env() else { return };
    let served = serve(&env).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<VmEvent>();
    let socket = served.socket.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = runtime.block_on(AgentClient::new(&socket).events(|e| tx.send(e).is_ok()));
    });
    let client = AgentClient::new(&served.socket);
    client.info().await.unwrap();
    let vm = client.create(&env.probe_config("streamed", "console=ttyS0 probe.halt")).await.unwrap();
    assert_eq!(vm.state, smartvm::VmState::Running);
    client.pause("streamed").await.unwrap();
    client.resume("streamed").await.unwrap();
    client.stop("streamed", None).await.unwrap();
    client.remove("streamed", false).await.unwrap();
    let mut states = Vec::new();
    while states.last() != Some(&EventState::Removed) {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(event.id, "streamed");
        if event.step.is_none() {
            states.push(event.state);
        }
    }
    use EventState::*;
    // The stream opens with each VM's current state: depending on when it connected, the VM's
    // first changes are that head (the same state twice at the seam at most).
    if states.len() > 1 && states[0] == states[1] {
        states.remove(0);
    }
    let all = [Created, Configuring, Running, Paused, Running, Stopped, Removed];
    assert!(states.len() >= 5 && all.ends_with(&states), "each change once, in order: {states:?}");
    served.shut_down().await;
    assert!(env.smartvm.vm_ids().is_empty());
}
