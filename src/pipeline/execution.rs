//! Task executions as guards: complete them, or dropping them records an abandonment.

use std::fmt;
use std::time::Duration;

use crate::contract::event::{Event, TaskAbandoned, TaskCompleted, TaskOutcome};
use crate::pipeline::collector::Collector;
use crate::pipeline::error::{CompleteError, RecordError};

/// An open execution from [`Collector::start_task`].
///
/// [`complete`](Self::complete) consumes it, so it cannot complete twice. Dropping it
/// unfinished records [`TaskAbandoned`], waiting for room in the queue at most
/// [`ABANDON_MAX_WAIT`](crate::ABANDON_MAX_WAIT) (and not at all under `DropNewest`).
#[must_use = "dropping an execution records it as abandoned; call `complete`"]
pub struct TaskExecution {
    collector: Collector,
    execution_id: String,
    task_id: String,
    agent_id: String,
    started: Duration,
    open: bool,
}

impl fmt::Debug for TaskExecution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskExecution")
            .field("execution_id", &self.execution_id)
            .field("task_id", &self.task_id)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl TaskExecution {
    pub(crate) fn new(
        collector: Collector,
        execution_id: String,
        task_id: String,
        agent_id: String,
        started: Duration,
    ) -> TaskExecution {
        TaskExecution {
            collector,
            execution_id,
            task_id,
            agent_id,
            started,
            open: true,
        }
    }

    /// This execution's id (as given to the collector, before pseudonymization).
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Monotonic time since the execution started.
    pub fn elapsed(&self) -> Duration {
        self.collector.monotonic().saturating_sub(self.started)
    }

    fn duration_ms(&self) -> f64 {
        self.elapsed().as_secs_f64() * 1000.0
    }

    /// Records [`TaskCompleted`] with `outcome` and the elapsed time.
    ///
    /// # Errors
    /// [`CompleteError::Invalid`] hands the execution back when `outcome` breaks a rule
    /// (nothing is recorded); [`CompleteError::Dropped`] when the completion was dropped
    /// (and counted) — the execution is then closed without an abandonment.
    pub fn complete(mut self, outcome: TaskOutcome) -> Result<(), CompleteError> {
        let event = Event::TaskCompleted(TaskCompleted {
            execution_id: self.execution_id.clone(),
            task_id: self.task_id.clone(),
            agent_id: self.agent_id.clone(),
            outcome,
            duration_ms: self.duration_ms(),
        });
        if let Err(error) = self.collector.validate(&event) {
            return Err(CompleteError::Invalid {
                error,
                execution: Box::new(self),
            });
        }
        self.open = false;
        self.collector.record(event).map_err(CompleteError::Dropped)
    }

    /// Records [`TaskAbandoned`] now, following the overflow policy (dropping the
    /// execution does the same, waiting for room at most
    /// [`ABANDON_MAX_WAIT`](crate::ABANDON_MAX_WAIT)).
    ///
    /// # Errors
    /// As [`Collector::record`].
    pub fn abandon(mut self) -> Result<(), RecordError> {
        self.open = false;
        let event = self.abandoned();
        self.collector.record(event)
    }

    fn abandoned(&mut self) -> Event {
        Event::TaskAbandoned(TaskAbandoned {
            duration_ms: self.duration_ms(),
            execution_id: std::mem::take(&mut self.execution_id),
            task_id: std::mem::take(&mut self.task_id),
            agent_id: std::mem::take(&mut self.agent_id),
        })
    }
}

impl Drop for TaskExecution {
    fn drop(&mut self) {
        if self.open {
            let event = self.abandoned();
            // Counted by the collector if it fails; a drop never blocks for long.
            let _ = self.collector.record_from_drop(event);
        }
    }
}
