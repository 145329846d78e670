//! Executions over the network: started by one request, completed by another, and
//! recorded as abandoned when their deadline passes first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{CompleteError, TaskExecution, TaskOutcome};

/// Finished execution ids remembered, so a second completion is told apart (409) from
/// an id never seen (404).
const FINISHED_REMEMBERED: usize = 65_536;

/// Why an execution could not be completed.
#[derive(Debug)]
pub(crate) enum Finish {
    /// Recorded; the duration the server measured.
    Completed(Duration),
    /// No such execution was ever started here.
    Unknown,
    /// Already completed, or abandoned at its deadline.
    AlreadyFinished,
    /// The outcome broke a rule; the execution stays open.
    Invalid(crate::ValidationError),
    /// The completion was dropped (and counted) by the collector.
    Dropped(crate::RecordError),
}

#[derive(Debug, Default)]
struct Inner {
    open: HashMap<String, (TaskExecution, Instant)>,
    /// Ids in the order their deadlines pass (a deadline is the same for all).
    order: VecDeque<(Instant, String)>,
    finished: HashSet<String>,
    finished_order: VecDeque<String>,
}

impl Inner {
    fn remember(&mut self, id: String) {
        if self.finished.insert(id.clone()) {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > FINISHED_REMEMBERED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

/// The open executions.
#[derive(Debug)]
pub(crate) struct Executions {
    inner: Mutex<Inner>,
    deadline: Duration,
    max_open: usize,
}

impl Executions {
    pub(crate) fn new(deadline: Duration, max_open: usize) -> Executions {
        Executions {
            inner: Mutex::new(Inner::default()),
            deadline,
            max_open,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map: take it anyway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another execution may be opened.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().open.len() < self.max_open
    }

    /// How many are open.
    pub(crate) fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Keeps `execution` until it is completed or its deadline passes.
    pub(crate) fn insert(&self, execution: TaskExecution) -> String {
        let id = execution.execution_id().to_owned();
        let due = Instant::now() + self.deadline;
        let mut inner = self.lock();
        inner.order.push_back((due, id.clone()));
        inner.open.insert(id.clone(), (execution, due));
        id
    }

    /// Completes execution `id` with `outcome`.
    pub(crate) fn complete(&self, id: &str, outcome: TaskOutcome) -> Finish {
        let taken = {
            let mut inner = self.lock();
            match inner.open.remove(id) {
                Some(open) => Some(open),
                None if inner.finished.contains(id) => return Finish::AlreadyFinished,
                None => return Finish::Unknown,
            }
        };
        let Some((execution, due)) = taken else {
            return Finish::Unknown;
        };
        let elapsed = execution.elapsed();
        match execution.complete(outcome) {
            Ok(()) => {
                self.lock().remember(id.to_owned());
                Finish::Completed(elapsed)
            }
            Err(CompleteError::Invalid { error, execution }) => {
                // Still open: put it back with its deadline.
                self.lock().open.insert(id.to_owned(), (*execution, due));
                Finish::Invalid(error)
            }
            Err(CompleteError::Dropped(e)) => {
                self.lock().remember(id.to_owned());
                Finish::Dropped(e)
            }
        }
    }

    /// Records every execution whose deadline has passed as abandoned; returns how many.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let mut due = Vec::new();
        {
            let mut inner = self.lock();
            while inner.order.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, id)) = inner.order.pop_front() else {
                    break;
                };
                // Completed ones are gone from `open`; an invalid completion put back
                // keeps its deadline, so `due` matches.
                if let Some((execution, _)) = inner.open.remove(&id) {
                    inner.remember(id);
                    due.push(execution);
                }
            }
        }
        let n = due.len();
        for execution in due {
            // Counted by the collector if it fails.
            let _ = execution.abandon();
        }
        n
    }

    /// Records every open execution as abandoned (at shutdown); returns how many.
    pub(crate) fn abandon_all(&self) -> usize {
        let all: Vec<TaskExecution> = {
            let mut inner = self.lock();
            inner.order.clear();
            inner.open.drain().map(|(_, (e, _))| e).collect()
        };
        let n = all.len();
        for execution in all {
            let _ = execution.abandon();
        }
        n
    }
}
