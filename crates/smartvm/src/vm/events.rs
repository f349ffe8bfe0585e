//! [`VmEvent`]: every state change of a VM, and each step of its start, published as it happens
//! to any number of subscribers ([`MicroVm::events`](super::MicroVm::events)).
//!
//! A change is published once: the same state (and step) twice in a row is one event. A process
//! that ends by itself while the VM runs is published as `Stopped` (exit code 0) or `Error` with
//! its [`ExitInfo`]; an end that `stop()` or `cleanup()` caused is published by them instead, so
//! a stop is one `Stopped`, never an `Error` followed by `Stopped`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::lifecycle::{ExitInfo, Step, VmState};

/// Events a subscriber may fall behind by before it misses some (it is then told how many).
pub const EVENT_BUFFER: usize = 64;

/// One change of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmEvent {
    /// The state entered (`Configuring` for every start step).
    pub state: VmState,
    /// The start or restore step that begins, while `Configuring`.
    pub step: Option<Step>,
    /// How the process ended, with `Stopped` or `Error` once it has.
    pub exit: Option<ExitInfo>,
}

/// The publishing side, shared by a VM and the task that watches its process.
#[derive(Debug)]
pub(super) struct Events {
    tx: broadcast::Sender<VmEvent>,
    last: Mutex<(VmState, Option<Step>)>,
    /// A stop or cleanup is ending the process: its exit is theirs to publish.
    exit_expected: AtomicBool,
}

impl Events {
    pub(super) fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Self { tx, last: Mutex::new((VmState::Created, None)), exit_expected: AtomicBool::new(false) }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.tx.subscribe()
    }

    /// Publishes `event` unless it repeats the last state and step.
    pub(super) fn publish(&self, event: VmEvent) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == (event.state, event.step) {
            return;
        }
        *last = (event.state, event.step);
        let _ = self.tx.send(event); // no subscriber: nothing to tell
    }

    /// A stop or cleanup is about to end the process (or, `false`, did not after all).
    pub(super) fn expect_exit(&self, expected: bool) {
        self.exit_expected.store(expected, Ordering::SeqCst);
    }

    /// The process ended: published when the VM ran and nobody was stopping it.
    pub(super) fn process_ended(&self, exit: ExitInfo) {
        let running =
            matches!(self.last.lock().unwrap_or_else(|p| p.into_inner()).0, VmState::Running | VmState::Paused);
        if running && !self.exit_expected.load(Ordering::SeqCst) {
            let state = if exit.success() { VmState::Stopped } else { VmState::Error };
            self.publish(VmEvent { state, step: None, exit: Some(exit) });
        }
    }
}
