//! Stopping a Firecracker process as an ordered list of steps with per-step timeouts.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{ExitInfo, FirecrackerProcess, ProcessError};
use crate::api::{ActionType, ApiClient, PutAction};

/// One way of ending the process (in JSON: `already_exited`, `ctrl_alt_del`, `sigterm`, `sigkill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopStep {
    /// The process had already ended.
    AlreadyExited,
    /// `SendCtrlAltDel` through the API (x86 guests that handle it shut down cleanly).
    CtrlAltDel,
    /// SIGTERM.
    Sigterm,
    /// SIGKILL.
    Sigkill,
}

impl StopStep {
    /// Every step, in the order a stop tries them.
    pub const ALL: [StopStep; 4] =
        [StopStep::AlreadyExited, StopStep::CtrlAltDel, StopStep::Sigterm, StopStep::Sigkill];
}

impl std::fmt::Display for StopStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopStep::AlreadyExited => "already_exited",
            StopStep::CtrlAltDel => "ctrl_alt_del",
            StopStep::Sigterm => "sigterm",
            StopStep::Sigkill => "sigkill",
        })
    }
}

/// The steps to try, each with how long to wait for the exit afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPlan {
    /// Steps in order.
    pub steps: Vec<(StopStep, Duration)>,
}

impl Default for StopPlan {
    /// Ctrl-Alt-Del (x86 only) 2 s → SIGTERM 2 s → SIGKILL 2 s.
    fn default() -> Self {
        let mut steps = Vec::new();
        if cfg!(target_arch = "x86_64") {
            steps.push((StopStep::CtrlAltDel, Duration::from_secs(2)));
        }
        steps.push((StopStep::Sigterm, Duration::from_secs(2)));
        steps.push((StopStep::Sigkill, Duration::from_secs(2)));
        Self { steps }
    }
}

impl StopPlan {
    /// SIGKILL only: for cleanup after a failure, where nothing in the guest is worth saving.
    pub fn kill() -> Self {
        Self { steps: vec![(StopStep::Sigkill, Duration::from_secs(5))] }
    }

    /// The default plan with a different Ctrl-Alt-Del grace period.
    pub fn with_grace(grace: Duration) -> Self {
        let mut p = Self::default();
        for (step, t) in &mut p.steps {
            if *step == StopStep::CtrlAltDel {
                *t = grace;
            }
        }
        p
    }
}

/// What stopping did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopOutcome {
    /// The step after which the process was gone.
    pub step: StopStep,
    /// How it ended.
    pub exit: ExitInfo,
}

impl FirecrackerProcess {
    /// Runs `plan` until the process has exited. `api` is used for the Ctrl-Alt-Del step (skipped
    /// without one, or when the API refuses it, e.g. before the guest booted).
    pub async fn stop(&self, api: Option<&ApiClient>, plan: &StopPlan) -> Result<StopOutcome, ProcessError> {
        if let Some(exit) = self.exit_info() {
            return Ok(StopOutcome { step: StopStep::AlreadyExited, exit });
        }
        for (step, timeout) in &plan.steps {
            let attempted = match step {
                StopStep::AlreadyExited => true,
                StopStep::CtrlAltDel => match api {
                    Some(api) => api.send(&PutAction::new(ActionType::SendCtrlAltDel)).await.is_ok(),
                    None => false,
                },
                StopStep::Sigterm => self.signal(Signal::SIGTERM).map(|_| true)?,
                StopStep::Sigkill => self.signal(Signal::SIGKILL).map(|_| true)?,
            };
            if !attempted {
                continue;
            }
            if let Some(exit) = self.wait(*timeout).await {
                return Ok(StopOutcome { step: *step, exit });
            }
        }
        match self.exit_info() {
            Some(exit) => Ok(StopOutcome { step: StopStep::Sigkill, exit }),
            None => Err(ProcessError::Unkillable { pid: self.pid() }),
        }
    }
}
