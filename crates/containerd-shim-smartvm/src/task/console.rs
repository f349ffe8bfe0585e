//! The VM's serial console as the task's stdout.

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::entry::TaskEntry;

/// Copies the console (from its first line) into the task's stdout FIFO until the console
/// ends; a reader that goes away stops the copy, not the VM.
pub async fn relay(task: &TaskEntry) {
    let Some(vm) = task.vm() else { return };
    let mut lines = Box::pin(vm.console().stream(true));
    let mut stdout = match task.io.stdout.as_str() {
        "" => None,
        path => tokio::net::unix::pipe::OpenOptions::new().open_sender(path).ok(),
    };
    while let Some(line) = lines.next().await {
        if let Some(pipe) = stdout.as_mut() {
            if pipe.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                stdout = None;
            }
        }
    }
}
