//! Download progress on stderr: a bar when stderr is a terminal and not CI, nothing otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use smartvm::images::{NoProgress, Progress};

/// Renders library progress events with indicatif.
pub struct TerminalProgress {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for TerminalProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(label.to_string());
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

/// A progress sink for this process: bars only on an interactive stderr outside CI.
pub fn for_terminal() -> Box<dyn Progress> {
    let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    if interactive {
        Box::new(TerminalProgress { bar: Mutex::new(None) })
    } else {
        Box::new(NoProgress)
    }
}
