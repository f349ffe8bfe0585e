//! VM lifecycle states and the one table of what each operation may do in each state.
//!
//! | operation | allowed in | while running | on success | on failure |
//! |---|---|---|---|---|
//! | `Start` (boot) | Created | Configuring | Running | Error |
//! | `Restore { resume }` | Created | Configuring | Running if `resume`, else Paused | Error |
//! | `Pause` | Running | — | Paused | unchanged |
//! | `Resume` | Paused | — | Running | unchanged |
//! | `Stop` | Running, Paused | — | Stopped | unchanged |
//! | `Update` (MMDS, drives, NICs, balloon, metrics) | Running, Paused | — | unchanged | unchanged |
//! | `Snapshot` | Paused | — | unchanged | unchanged |
//! | `Cleanup` | any | — | Stopped from Running, Paused or Configuring; else unchanged | same |
//!
//! Besides, a VM whose process ended by itself reads as Stopped (exit code 0) or Error.

use crate::error::{Result, SmartVmError};
pub use crate::lifecycle::VmState;

/// The operations whose validity depends on the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `start()`.
    Start,
    /// `restore()` / `restore_snapshot()`.
    Restore {
        /// The VM resumes once loaded.
        resume: bool,
    },
    /// `pause()`.
    Pause,
    /// `resume()`.
    Resume,
    /// `stop()`.
    Stop,
    /// MMDS, hot updates, balloon, metrics flush.
    Update,
    /// `create_snapshot()` / `snapshot()`.
    Snapshot,
    /// `cleanup()`.
    Cleanup,
}

/// What an allowed operation does to the state (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state while the operation runs, if it has one of its own.
    pub during: Option<VmState>,
    /// The state after success.
    pub on_success: VmState,
    /// The state after failure.
    pub on_failure: VmState,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Restore { .. } => "restore",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Stop => "stop",
            Operation::Update => "update",
            Operation::Snapshot => "snapshot",
            Operation::Cleanup => "clean up",
        }
    }

    /// The table: the transition for this operation from `from`, or `None` when not allowed.
    pub fn transition(self, from: VmState) -> Option<Transition> {
        use VmState::*;
        let stay = |s| Some(Transition { during: None, on_success: s, on_failure: s });
        let to = |ok| Some(Transition { during: None, on_success: ok, on_failure: from });
        match (self, from) {
            (Operation::Start, Created) => {
                Some(Transition { during: Some(Configuring), on_success: Running, on_failure: Error })
            }
            (Operation::Restore { resume }, Created) => Some(Transition {
                during: Some(Configuring),
                on_success: if resume { Running } else { Paused },
                on_failure: Error,
            }),
            (Operation::Pause, Running) => to(Paused),
            (Operation::Resume, Paused) => to(Running),
            (Operation::Stop, Running | Paused) => to(Stopped),
            (Operation::Update, Running | Paused) | (Operation::Snapshot, Paused) => stay(from),
            (Operation::Cleanup, Running | Paused | Configuring) => stay(Stopped),
            (Operation::Cleanup, _) => stay(from),
            _ => None,
        }
    }

    /// The transition, or `INVALID_STATE` (nothing changes).
    pub fn check(self, state: VmState) -> Result<Transition> {
        self.transition(state).ok_or(SmartVmError::InvalidState { operation: self.name(), state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use VmState::*;
        let all = [Created, Configuring, Running, Paused, Stopped, Error];
        let allowed = [
            (Operation::Start, vec![Created]),
            (Operation::Restore { resume: false }, vec![Created]),
            (Operation::Pause, vec![Running]),
            (Operation::Resume, vec![Paused]),
            (Operation::Stop, vec![Running, Paused]),
            (Operation::Update, vec![Running, Paused]),
            (Operation::Snapshot, vec![Paused]),
            (Operation::Cleanup, all.to_vec()),
        ];
        for (op, ok) in allowed {
            for s in all {
                assert_eq!(op.check(s).is_ok(), ok.contains(&s), "{op:?} in {s}");
            }
        }
        let t = |op: Operation, s| op.transition(s).unwrap();
        assert_eq!(t(Operation::Start, Created).on_failure, Error);
        assert_eq!(t(Operation::Restore { resume: false }, Created).on_success, Paused);
        assert_eq!(t(Operation::Restore { resume: true }, Created).on_success, Running);
        assert_eq!(t(Operation::Pause, Running).on_failure, Running, "a failed pause changes nothing");
        assert_eq!(t(Operation::Cleanup, Configuring).on_success, Stopped);
        assert_eq!(t(Operation::Cleanup, Error).on_success, Error);
        assert_eq!(Operation::Pause.check(Stopped).unwrap_err().code(), "INVALID_STATE");
    }
}
