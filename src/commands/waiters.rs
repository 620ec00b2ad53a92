//! The callers waiting for the worker's answer to their command. The engine holds them
//! (the worker answers through it); the commands register and wait. A file of its own so
//! that the engine, which the commands use, needs nothing else of them.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::domain::VideoStatus;
use crate::machine::JobId;
use crate::store::EntryOutcome;

/// What the worker made of a command, for the caller waiting on it.
#[derive(Debug, Clone)]
pub(crate) enum CommandOutcome {
    Done {
        /// None: an entry processed before outcomes were recorded.
        outcome: Option<EntryOutcome>,
        /// The video's status after it (None: the video's snapshot could not be read).
        status: Option<VideoStatus>,
        job: Option<JobId>,
    },
    Rejected(String),
    VideoNotFound,
}

/// The callers waiting for the worker's answer to their command, by event id.
#[derive(Default)]
pub struct Waiters(Mutex<HashMap<Uuid, oneshot::Sender<CommandOutcome>>>);

impl Waiters {
    pub(super) fn register(&self, id: Uuid) -> oneshot::Receiver<CommandOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.0.lock() {
            w.insert(id, tx);
        }
        rx
    }

    pub(super) fn forget(&self, id: Uuid) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(&id);
        }
    }

    /// The worker's answer to a command, for its caller if it still waits here.
    pub(crate) fn answer(&self, id: Uuid, outcome: CommandOutcome) {
        let tx = self.0.lock().ok().and_then(|mut w| w.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }
}
