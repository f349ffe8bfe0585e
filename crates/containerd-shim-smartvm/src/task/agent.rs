//! The guest agent behind a task's VM: waited for while the guest boots, then running the
//! task's own process (agent mode) and its execs.

use std::time::{Duration, Instant};

use smartvm::guest::protocol::Capability;
use smartvm::guest::GuestClient;
use smartvm::MicroVm;

/// How long a booting guest has until its agent answers (agent mode's `Start`).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a running guest's agent has to answer before an exec fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a booting guest is asked again.
const RETRY_EVERY: Duration = Duration::from_millis(10);

/// Why no agent serves a task.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The VM has no vsock device.
    #[error("the task's VM has no way to its guest agent")]
    NoDevice(#[source] smartvm::SmartVmError),
    /// Nothing answered in time.
    #[error("no guest agent answered in the task's VM within {waited:?} (boot the guest with the agent as init: io.smartvm.init=agent, or run smartvm-guest as a service)")]
    NotAnswering {
        /// How long the shim waited.
        waited: Duration,
        /// The last attempt's error.
        #[source]
        last: smartvm::SmartVmError,
    },
    /// The agent that answered cannot run processes.
    #[error("the guest's agent ({name}) cannot run processes")]
    NoExec {
        /// Who answered.
        name: String,
    },
    /// The VM ended while the shim waited.
    #[error("the task's VM ended before its guest agent answered")]
    VmEnded,
}

/// Waits until the agent behind `vm`'s vsock device answers `hello` (able to exec), asking
/// again as the guest boots, for at most `limit`.
pub async fn ready(vm: &MicroVm, limit: Duration) -> Result<GuestClient, AgentError> {
    let started = Instant::now();
    let client = vm.guest().map_err(AgentError::NoDevice)?;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match client.clone().with_timeout(left.min(ANSWER_TIMEOUT)).hello().await {
            Ok(welcome) if welcome.supports(Capability::Exec) => return Ok(client),
            Ok(welcome) => return Err(AgentError::NoExec { name: welcome.name }),
            Err(_) if vm.exit_info().is_some() => return Err(AgentError::VmEnded),
            Err(last) if started.elapsed() >= limit => {
                return Err(AgentError::NotAnswering { waited: started.elapsed(), last })
            }
            Err(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    }
}

/// Ends a VM whose task process ended: the agent is asked to power off (a guest's own clean
/// shutdown), then the VM is stopped as smartvm stops any VM (which returns at once when the
/// guest already went).
pub async fn power_off(vm: &MicroVm, client: &GuestClient) {
    if vm.exit_info().is_none() {
        let _ = client.clone().with_timeout(ANSWER_TIMEOUT).shutdown().await;
    }
    if let Err(e) = vm.stop().await {
        log::warn!("stopping VM {}: {e}", vm.id());
    }
}
