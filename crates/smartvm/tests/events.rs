//! A VM publishes its own changes: every state change once, in order, each start step, and an
//! end nobody asked for with its exit status.

mod common;

use std::time::Duration;

use smartvm::vm::{start_steps, VmEvent};
use smartvm::VmState;
use tokio::sync::broadcast::Receiver;

/// Events until one in `until` arrives (bounded by a deadline), that one included.
async fn events_until(rx: &mut Receiver<VmEvent>, until: VmState) -> Vec<VmEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        seen.push(event);
        if event.state == until {
            return seen;
        }
    }
    panic!("no {until} event; seen: {seen:?}");
}

fn states(events: &[VmEvent]) -> Vec<VmState> {
    events.iter().filter(|e| e.step.is_none()).map(|e| e.state).collect()
}

#[tokio::test]
async fn subscribers_see_every_change_once_in_order() {
    let Some(env) = common::env() else { return };
    let vm = env.smartvm.create_vm(&env.probe_config("watched", "probe.halt")).unwrap();
    let (mut first, mut second) = (vm.events(), vm.events());
    vm.start().await.unwrap();
    vm.pause().await.unwrap();
    vm.stop().await.unwrap();
    let seen = events_until(&mut first, VmState::Stopped).await;
    use VmState::*;
    assert_eq!(states(&seen), [Configuring, Running, Paused, Stopped], "{seen:?}");
    let steps: Vec<_> = seen.iter().filter_map(|e| e.step).collect();
    assert_eq!(steps, start_steps(vm.boot_path()), "each start step once, in order");
    assert!(seen.iter().all(|e| e.step.is_none() || e.state == Configuring));
    assert_eq!(events_until(&mut second, Stopped).await, seen, "every subscriber sees the same");
    vm.cleanup().await.unwrap();
    assert!(first.try_recv().is_err(), "cleanup of a stopped VM changes nothing: no event");
}

#[tokio::test]
async fn a_guest_that_ends_by_itself_is_published_with_its_exit() {
    let Some(env) = common::env() else { return };
    // The probe resets after its report: Firecracker exits 0 while the VM runs.
    let vm = env.smartvm.create_vm(&env.probe_config("ends", "")).unwrap();
    let mut rx = vm.events();
    vm.start().await.unwrap();
    let seen = events_until(&mut rx, VmState::Stopped).await;
    let last = seen.last().unwrap();
    assert_eq!(last.exit.map(|e| e.code), Some(Some(0)), "{seen:?}");
    assert_eq!(states(&seen).iter().filter(|s| **s == VmState::Stopped).count(), 1);
    vm.cleanup().await.unwrap();
    assert!(rx.try_recv().is_err(), "the end was published once: {:?}", rx.try_recv());
}
