//! What all sessions of the agent share: its start time, the session limit, whether it runs
//! as PID 1, the reaper of every process it spawns, and the shutdown signal.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, Semaphore};

use crate::options::Options;
use crate::reaper::Reaper;

/// What all sessions share.
pub struct Agent {
    pub(crate) started: Instant,
    pub(crate) sessions: Arc<Semaphore>,
    pub(crate) max_sessions: u32,
    pub(crate) pid1: bool,
    /// Spawns and reaps every process.
    pub reaper: Reaper,
    /// Signalled by a `shutdown` request.
    pub shutdown: Notify,
}

impl Agent {
    pub fn new(options: &Options, pid1: bool) -> std::io::Result<Agent> {
        let max_sessions = options.max_sessions.max(1);
        Ok(Agent {
            started: Instant::now(),
            sessions: Arc::new(Semaphore::new(max_sessions as usize)),
            max_sessions,
            pid1,
            reaper: Reaper::start()?,
            shutdown: Notify::new(),
        })
    }
}
