//! Refilling a pool: how many VMs to start making now ([`plan`], a plain function) and the
//! background task that does it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{watch_exit, Shared};

/// A pool's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// The size it refills to.
    pub size: usize,
    /// VMs ready.
    pub ready: usize,
    /// VMs being made.
    pub warming: usize,
    /// At most this many made at once.
    pub concurrency: usize,
    /// Checkouts booting their VM now.
    pub booting: usize,
}

/// How many VMs to start making: up to the size, counting those being made, within the
/// concurrency budget; none while checkouts boot and some VMs are still ready (a refill would
/// take CPU from the boots that callers wait for; measured with `smartvm bench --pools`).
pub fn plan(c: Counts) -> usize {
    if c.booting > 0 && c.ready > 0 {
        return 0;
    }
    let missing = c.size.saturating_sub(c.ready + c.warming);
    missing.min(c.concurrency.saturating_sub(c.warming))
}

/// How long to wait before trying again after `failures` VMs in a row could not be made
/// (a missing kernel must not turn the refill into a busy loop): 100 ms doubling to 10 s.
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_millis(100u64.saturating_mul(1 << (n - 1).min(7))).min(Duration::from_secs(10)),
    }
}

/// The refiller: drops VMs whose process ended, starts what [`plan`] says, and sleeps until
/// something changes. Runs until the pool aborts it (on close or drop).
pub(super) async fn run(shared: Arc<Shared>) {
    let mut failures_in_row = 0u32;
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        discard_ended(&shared);
        // Forget the makers that finished.
        while shared.lock_makers().try_join_next().is_some() {}
        let counts = Counts {
            size: shared.spec.size,
            ready: shared.lock_ready().len(),
            warming: shared.warming.load(Ordering::SeqCst),
            concurrency: shared.spec.refill_concurrency,
            booting: shared.booting.load(Ordering::SeqCst),
        };
        for _ in 0..plan(counts) {
            shared.warming.fetch_add(1, Ordering::SeqCst);
            shared.lock_makers().spawn(make_one(shared.clone(), Arc::downgrade(&shared)));
        }
        shared.publish();
        let failed_before = shared.failed.load(Ordering::SeqCst);
        shared.wake.notified().await;
        if shared.failed.load(Ordering::SeqCst) > failed_before {
            failures_in_row += 1;
            tokio::time::sleep(backoff(failures_in_row)).await;
        } else if shared.lock_ready().len() > counts.ready {
            failures_in_row = 0;
        }
    }
}

/// Makes one VM and adds it to the ready ones (or drops it when the pool closed meanwhile).
async fn make_one(shared: Arc<Shared>, pool: Weak<Shared>) {
    match shared.make().await {
        Ok(vm) => {
            watch_exit(&vm, pool);
            if shared.closed.load(Ordering::SeqCst) {
                vm.destroy_now();
            } else {
                shared.lock_ready().push_back(vm);
            }
        }
        Err(e) => {
            tracing::warn!(pool = %shared.spec.name, error = %e, "could not make a pooled VM");
            shared.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
    shared.warming.fetch_sub(1, Ordering::SeqCst);
    shared.changed();
}

/// Destroys ready VMs whose process ended (killed while waiting).
fn discard_ended(shared: &Shared) {
    let ended: Vec<_> = {
        let mut ready = shared.lock_ready();
        let (ended, alive): (Vec<_>, Vec<_>) = ready.drain(..).partition(|vm| vm.exit_info().is_some());
        ready.extend(alive);
        ended
    };
    for vm in ended {
        tracing::warn!(pool = %shared.spec.name, vm = %vm.id(), "a ready VM's process ended; destroyed");
        shared.discarded.fetch_add(1, Ordering::SeqCst);
        vm.destroy_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(size: usize, ready: usize, warming: usize, concurrency: usize) -> Counts {
        Counts { size, ready, warming, concurrency, booting: 0 }
    }

    #[test]
    fn refills_up_to_the_size_within_the_budget() {
        assert_eq!(plan(counts(10, 0, 0, 2)), 2, "an empty pool starts as many as the budget allows");
        assert_eq!(plan(counts(10, 0, 2, 2)), 0, "the budget is spent");
        assert_eq!(plan(counts(10, 0, 1, 2)), 1);
        assert_eq!(plan(counts(10, 9, 0, 4)), 1, "only what is missing");
        assert_eq!(plan(counts(10, 9, 1, 4)), 0, "the one being made fills it");
        assert_eq!(plan(counts(3, 5, 0, 1)), 0, "never more than the size");
    }

    #[test]
    fn refills_wait_for_booting_checkouts_while_some_vms_are_ready() {
        let booting = |ready, booting| Counts { booting, ..counts(10, ready, 0, 2) };
        assert_eq!(plan(booting(5, 1)), 0, "the boot a caller waits for goes first");
        assert_eq!(plan(booting(0, 3)), 2, "an empty pool refills even during a rush");
        assert_eq!(plan(booting(5, 0)), 2);
    }

    #[test]
    fn failures_back_off_up_to_ten_seconds() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(8), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }
}
