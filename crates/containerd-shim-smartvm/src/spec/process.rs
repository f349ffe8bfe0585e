//! An OCI process (`config.json`'s `process`, or an exec's spec) as the guest agent's exec
//! request (pure): args, env, cwd, user, terminal and its size.

use serde::Deserialize;
use smartvm::guest::protocol::{ExecRequest, WindowSize};

use super::{invalid, SpecError};

/// A terminal's size when the spec gives none.
const DEFAULT_SIZE: WindowSize = WindowSize { rows: 24, cols: 80 };

/// The fields of an OCI process smartvm maps.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Process {
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    cwd: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    terminal: bool,
    #[serde(default)]
    console_size: Option<ConsoleSize>,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

#[derive(Debug, Deserialize)]
struct ConsoleSize {
    height: u16,
    width: u16,
}

impl Process {
    /// The agent's request for this process (its stdin is decided by the FIFOs containerd
    /// gives, see `process::GuestProcess::start`).
    pub fn exec_request(&self, field: &str) -> Result<ExecRequest, SpecError> {
        if self.args.is_empty() {
            return Err(invalid(&format!("{field}.args"), "is empty: nothing to run"));
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return Err(invalid(&format!("{field}.env"), format!("{bad:?} is not NAME=value")));
        }
        let size = self.console_size.as_ref().map(|s| WindowSize { rows: s.height, cols: s.width });
        Ok(ExecRequest {
            argv: self.args.clone(),
            env: self.env.clone(),
            cwd: (!self.cwd.is_empty()).then(|| self.cwd.clone()),
            uid: Some(self.user.uid),
            gid: Some(self.user.gid),
            tty: self.terminal.then(|| size.filter(|s| s.rows > 0 && s.cols > 0).unwrap_or(DEFAULT_SIZE)),
            stdin: false,
        })
    }
}

/// The request of an exec's process spec (`ExecProcessRequest.spec`, an OCI process as JSON).
pub fn exec_request(process_json: &[u8]) -> Result<ExecRequest, SpecError> {
    let process: Process = serde_json::from_slice(process_json).map_err(|e| SpecError::Parse(e.to_string()))?;
    process.exec_request("exec process")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_oci_process_maps_to_the_agent_s_request() {
        let spec = json!({"args": ["sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=b=c"], "cwd": "/srv",
                          "user": {"uid": 1000, "gid": 100, "additionalGids": [5]}, "terminal": true,
                          "consoleSize": {"height": 30, "width": 100}, "noNewPrivileges": true});
        let request = exec_request(spec.to_string().as_bytes()).unwrap();
        assert_eq!(request.argv, ["sh", "-c", "echo hi"]);
        assert_eq!(request.env, ["PATH=/bin", "A=b=c"]);
        assert_eq!((request.cwd.as_deref(), request.uid, request.gid), (Some("/srv"), Some(1000), Some(100)));
        assert_eq!(request.tty, Some(WindowSize { rows: 30, cols: 100 }));
        let plain = exec_request(json!({"args": ["true"]}).to_string().as_bytes()).unwrap();
        assert_eq!((plain.cwd, plain.uid, plain.gid, plain.tty), (None, Some(0), Some(0), None));
        let sized = exec_request(json!({"args": ["sh"], "terminal": true}).to_string().as_bytes()).unwrap();
        assert_eq!(sized.tty, Some(DEFAULT_SIZE), "a terminal without a size gets 24x80");
    }

    #[test]
    fn a_process_that_cannot_run_is_refused_with_its_field() {
        let err = |v: serde_json::Value| exec_request(v.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err(json!({"args": []})), SpecError::Invalid { field, .. } if field == "exec process.args"));
        assert!(
            matches!(err(json!({"args": ["x"], "env": ["NOEQUALS"]})), SpecError::Invalid { field, .. } if field == "exec process.env")
        );
        assert!(matches!(exec_request(b"[1]"), Err(SpecError::Parse(_))));
    }
}
