//! The shim's own lifecycle (start, delete, wait) around one task service.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;

use crate::task::TaskService;

/// One shim process: it serves the tasks containerd groups onto it (one per container).
pub struct SmartvmShim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
}

#[async_trait]
impl Shim for SmartvmShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        SmartvmShim { exit: Arc::new(ExitSignal::default()), namespace: args.namespace.clone(), id: args.id.clone() }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // One shim per CRI pod (its sandbox id from the bundle, the cwd containerd gives), else
        // per task; a second start of a group finds the first shim's socket and answers it.
        let config = std::fs::read_to_string("config.json").unwrap_or_default();
        let grouping = crate::spec::grouping(&config, &opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // The bundle's `address` file is how a restarted containerd finds this shim again.
        containerd_shim::asynchronous::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    /// After the shim died: containerd asks the binary to clean up what the task left.
    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        crate::task::reclaim(&self.namespace, &self.id).await;
        let mut response = DeleteResponse::new();
        response.set_exit_status(137);
        Ok(response)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        TaskService::new(self.namespace.clone(), publisher, self.exit.clone())
    }
}
