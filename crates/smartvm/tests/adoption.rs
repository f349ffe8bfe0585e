//! Taking over detached VMs after their program died: a VM that can be taken over is, and one
//! that cannot is killed and unwound, so that no VM runs that nothing answers for.

mod common;

use smartvm::vm::VmPolicy;
use smartvm::{SmartVm, SmartVmOptions};

fn detached(env: &common::TestEnv) -> SmartVmOptions {
    let options = env.smartvm.options().clone();
    SmartVmOptions { vm_policy: VmPolicy { detached: true, ..options.vm_policy.clone() }, ..options }
}

#[tokio::test]
async fn a_vm_that_cannot_be_taken_over_is_reclaimed_not_left_invisible() {
    let Some(env) = common::env() else { return };
    let first = SmartVm::new(detached(&env));
    let kept = first.create_vm(&env.probe_config("kept", "probe.count=100000")).unwrap();
    let lost = first.create_vm(&env.probe_config("lost", "probe.count=100000")).unwrap();
    kept.start().await.unwrap();
    lost.start().await.unwrap();
    let (kept_pid, lost_pid) = (kept.pid().await.unwrap(), lost.pid().await.unwrap());
    let _guard = common::KillOnDrop(vec![kept_pid, lost_pid]);
    let lost_dir = lost.runtime_dir().to_path_buf();
    // The program "dies": it lets go of its VMs (detached: they keep running).
    drop((kept, lost));
    first.forget_vm("kept");
    first.forget_vm("lost");
    drop(first);
    assert!(common::pid_alive(kept_pid) && common::pid_alive(lost_pid));
    // One of them can no longer be reached through its API.
    std::fs::remove_file(lost_dir.join("firecracker.sock")).unwrap();

    let before_adoption = std::time::SystemTime::now();
    let next = SmartVm::new(detached(&env));
    let outcome = next.adopt_detached().await.unwrap();
    assert_eq!(outcome.adopted, ["kept"]);
    let since = next.vm("kept").unwrap().running_since().unwrap();
    assert!(since <= before_adoption, "its uptime counts from its process's start, not from the adoption");
    assert_eq!(outcome.failed.len(), 1, "{:?}", outcome.failed);
    assert_eq!(outcome.reclaimed, ["lost"]);
    assert!(common::wait_gone(lost_pid), "the VM nothing answers for is killed");
    assert!(!lost_dir.exists(), "and unwound");
    assert!(common::pid_alive(kept_pid));
    next.cleanup().await.unwrap();
    assert!(common::wait_gone(kept_pid));
}
