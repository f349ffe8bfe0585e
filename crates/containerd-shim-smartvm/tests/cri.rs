//! The kubelet's path: a CRI client against a private containerd 1.6 whose runtime handler
//! `smartvm` is this shim. A host-network pod (its sandbox held by the shim, no VM), a
//! container of the probe stand-in: its exit code in ContainerStatus, its lines in the CRI log
//! file, one shim process for the pod, and nothing left after StopPodSandbox + RemovePodSandbox.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{usable, Containerd, IMAGE, PAUSE_IMAGE};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{self as cri, ContainerState};
use tonic::transport::{Channel, Endpoint};

/// A gRPC channel to containerd's socket (the URI is a placeholder: the connector dials the
/// socket).
async fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .unwrap()
}

fn pod_config(logs: &Path) -> cri::PodSandboxConfig {
    let namespaces = cri::NamespaceOption { network: cri::NamespaceMode::Node as i32, ..Default::default() };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "probe-pod".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "probe".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: IMAGE.into(), ..Default::default() }),
        args: args.iter().map(|a| a.to_string()).collect(),
        log_path: "probe.log".into(),
        annotations: HashMap::from([("io.smartvm.guest".to_string(), "probe".to_string())]),
        ..Default::default()
    }
}

#[test]
fn a_pod_through_cri_runs_the_probe_and_leaves_nothing() {
    if !usable() {
        return;
    }
    let containerd = Containerd::start_cri();
    containerd.import_image_as("k8s.io", IMAGE, "native");
    containerd.import_image_as("k8s.io", PAUSE_IMAGE, "native");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(pod_lifecycle(&containerd));
    assert!(containerd.firecracker_pids().is_empty(), "Firecracker left: {:?}", containerd.firecracker_pids());
    let left: Vec<_> = std::fs::read_dir(containerd.runtime_dir()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.iter().all(|p| p.file_name().unwrap().to_string_lossy().starts_with('.')), "VM dirs: {left:?}");
    let rootfs = containerd.dir.path().join("data/shim-rootfs");
    let images: Vec<_> = std::fs::read_dir(&rootfs).map(|d| d.flatten().count()).into_iter().collect();
    assert!(images.iter().all(|n| *n == 0), "root drives left in {}", rootfs.display());
    wait_for("the pod's shim to exit", || containerd.shim_pids().is_empty());
}

async fn pod_lifecycle(containerd: &Containerd) {
    let channel = channel(&containerd.socket()).await;
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec { image: IMAGE.into(), ..Default::default() }),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus: {e}\n{}", containerd.log()))
        .into_inner();
    assert!(status.image.is_some(), "the imported image is known to CRI");

    let logs = containerd.dir.path().join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = pod_config(&logs);
    let pod = runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: "smartvm".into() })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
        .into_inner()
        .pod_sandbox_id;
    let container = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(&["probe.lines=3", "probe.exit=3"])),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log()))
        .into_inner()
        .container_id;
    runtime
        .start_container(cri::StartContainerRequest { container_id: container.clone() })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));
    assert_eq!(containerd.shim_pids().len(), 1, "one shim serves the pod's sandbox and container");

    let exit_code = exited(&mut runtime, &container).await;
    assert_eq!(exit_code, 3, "ContainerStatus carries the probe's exit status");
    let log = std::fs::read_to_string(logs.join("probe.log")).unwrap();
    assert!(log.lines().any(|l| l.contains(" stdout F smartvm-probe line n=2")), "CRI log format: {log}");
    assert!(log.contains("smartvm-probe exit code=3"), "{log}");

    runtime.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    let listed = runtime.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner();
    assert!(listed.containers.is_empty(), "RemovePodSandbox removes its containers");
}

/// Waits (deadline 60 s) for the container to exit; its exit code.
async fn exited(runtime: &mut RuntimeServiceClient<Channel>, container: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = cri::ContainerStatusRequest { container_id: container.into(), verbose: false };
        let status = runtime.container_status(request).await.unwrap().into_inner().status.unwrap();
        if status.state == ContainerState::ContainerExited as i32 {
            return status.exit_code;
        }
        assert!(Instant::now() < deadline, "the container did not exit: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
