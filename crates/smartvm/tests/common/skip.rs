//! Shared by the integration tests of both crates (the CLI's include it by path).

/// Reports a test that cannot run here: on stderr, and as one line (`<test>: <why>`) in the file
/// `SMARTVM_SKIP_LOG` names, which `scripts/test.sh` prints as the summary of skipped tests.
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
    if let Some(log) = std::env::var_os("SMARTVM_SKIP_LOG") {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let line = format!("{test}: {why}\n");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log);
        let _ = file.and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }
}
