//! VM lifecycle states and which operations each allows.

use std::fmt;

use crate::error::{Result, SmartVmError};

/// Lifecycle state of a [`MicroVm`](super::MicroVm).
///
/// `Created → Configuring → Running ⇄ Paused → Stopped`, and `Error` after a failed start or
/// when the Firecracker process died on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmState {
    /// Registered, nothing spawned yet.
    Created,
    /// Firecracker is running and receiving its pre-boot configuration.
    Configuring,
    /// The guest runs.
    Running,
    /// The guest's vCPUs are paused.
    Paused,
    /// The process has ended (stopped by smartvm or the guest shut down cleanly).
    Stopped,
    /// Start failed, or the process died with an error.
    Error,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Created => "created",
            VmState::Configuring => "configuring",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        })
    }
}

/// The operations whose validity depends on the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `start()` / `restore()`.
    Start,
    /// `pause()`.
    Pause,
    /// `resume()`.
    Resume,
    /// `stop()`.
    Stop,
    /// MMDS, hot updates, balloon, metrics flush.
    Update,
    /// `create_snapshot()`.
    Snapshot,
}

impl Operation {
    /// The states in which the operation is allowed.
    pub fn allowed_in(self) -> &'static [VmState] {
        use VmState::*;
        match self {
            Operation::Start => &[Created],
            Operation::Pause => &[Running],
            Operation::Resume => &[Paused],
            Operation::Stop => &[Running, Paused],
            Operation::Update => &[Running, Paused],
            Operation::Snapshot => &[Paused],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Stop => "stop",
            Operation::Update => "update",
            Operation::Snapshot => "snapshot",
        }
    }

    /// `Ok` when allowed in `state`, else `INVALID_STATE`.
    pub fn check(self, state: VmState) -> Result<()> {
        if self.allowed_in().contains(&state) {
            Ok(())
        } else {
            Err(SmartVmError::InvalidState { operation: self.name(), state })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use VmState::*;
        let all = [Created, Configuring, Running, Paused, Stopped, Error];
        let expect = [
            (Operation::Start, vec![Created]),
            (Operation::Pause, vec![Running]),
            (Operation::Resume, vec![Paused]),
            (Operation::Stop, vec![Running, Paused]),
            (Operation::Snapshot, vec![Paused]),
        ];
        for (op, ok) in expect {
            for s in all {
                assert_eq!(op.check(s).is_ok(), ok.contains(&s), "{op:?} in {s}");
            }
        }
        assert_eq!(Operation::Pause.check(Stopped).unwrap_err().code(), "INVALID_STATE");
    }
}
