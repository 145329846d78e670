//! Time-bucketed, grouped aggregates of the record stream: a pure data structure (no
//! threads, no I/O), folded one record at a time in O(1) (amortized; O(log agents) for
//! the recency order) and read by reports in O(buckets × groups), except by-agent
//! reports over the whole retained window, which read each agent's span (below) and its
//! newest bucket row: O(agents).
//!
//! **An agent's span is the left fold (`Tally::merge`, oldest first) of its rows in every
//! closed bucket** (all but the newest): exactly what a report merging those buckets
//! computes, bit for bit. It grows by one merge when a bucket closes, and is merged
//! again from the buckets kept when a bucket it has a row in is dropped (once per
//! bucket width, on the folding thread), because the fold cannot be undone: min, max
//! and the first 32 rule names are not subtractable, a distribution of a few values is
//! kept exactly, and a difference of float sums would not equal their fold.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use super::sketch::{DEFAULT_RELATIVE_ERROR, Mapping};
use super::tally::Tally;
use super::view::EventView;
use crate::contract::analytics::AnalyticsConfig;
use crate::contract::event::{Event, EventKind, RoutingStrategy};
use crate::contract::key::IdKind;

/// Strategies in report order.
pub(crate) const STRATEGIES: [(RoutingStrategy, &str); 4] = [
    (RoutingStrategy::MultiArmedBandit, "multi_armed_bandit"),
    (RoutingStrategy::CapabilityMatch, "capability_match"),
    (RoutingStrategy::LoadBalance, "load_balance"),
    (RoutingStrategy::Random, "random"),
];

fn strategy_index(s: RoutingStrategy) -> usize {
    match s {
        RoutingStrategy::MultiArmedBandit => 0,
        RoutingStrategy::CapabilityMatch => 1,
        RoutingStrategy::LoadBalance => 2,
        RoutingStrategy::Random => 3,
    }
}

/// How identifiers appear in reports: as the pseudonyms the store holds (the worker's
/// anonymizer), or as they are (records read back from an export or the disk, which are
/// already anonymized per the policy they were made under).
pub(crate) trait IdView {
    /// Calls `f` with `id` as reports show it.
    fn view<R>(&mut self, kind: IdKind, id: &str, f: impl FnOnce(&str) -> R) -> R;
}

/// Identifiers as they are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verbatim;

impl IdView for Verbatim {
    fn view<R>(&mut self, _: IdKind, id: &str, f: impl FnOnce(&str) -> R) -> R {
        f(id)
    }
}

/// One bucket: `[start, start + width)` of record time.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub(crate) start: i64,
    /// One tally per event kind; the overall row is their merge.
    pub(crate) kinds: Vec<Tally>,
    /// Tracked agents' rows, by agent slot.
    pub(crate) agents: HashMap<u32, Tally, FixedState>,
    /// Agents no longer tracked, folded together.
    pub(crate) other: Tally,
    /// One row per routing strategy, for tasks routed with it.
    pub(crate) strategies: Vec<Tally>,
}

impl Bucket {
    fn new(start: i64) -> Bucket {
        Bucket {
            start,
            kinds: vec![Tally::default(); EventKind::COUNT],
            agents: HashMap::default(),
            other: Tally::default(),
            strategies: vec![Tally::default(); STRATEGIES.len()],
        }
    }

    /// Merges the per-kind rows into `into`: the bucket's overall row.
    pub(crate) fn overall_into(&self, into: &mut Tally) {
        for t in &self.kinds {
            into.merge(t);
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Bucket>()
            + self.kinds.iter().map(Tally::bytes).sum::<usize>()
            + self.strategies.iter().map(Tally::bytes).sum::<usize>()
            + self.other.bytes()
            + self
                .agents
                .values()
                .map(|t| t.bytes() + std::mem::size_of::<u32>())
                .sum::<usize>()
    }
}

/// A tracked agent.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub(crate) name: Box<str>,
    hash: u64,
    /// The key of `recency`: when it became active in its latest bucket.
    last: u64,
    /// The start of the latest bucket it was active in.
    last_bucket: i64,
    /// Its rows in the closed buckets, merged oldest first.
    pub(crate) span: Tally,
}

/// What is known of a task from its routing decision or start, so that events that name
/// only the task (budgets, judgments, evaluations, minimality) count for its agent and
/// strategy.
#[derive(Debug, Clone, Copy, Default)]
struct TaskContext {
    agent: Option<u64>,
    strategy: Option<RoutingStrategy>,
}

/// Tasks remembered per generation; two generations are kept, so the last
/// `TASK_MEMORY` to `2 × TASK_MEMORY` tasks are attributed.
const TASK_MEMORY: usize = 65_536;

/// The aggregates.
#[derive(Debug, Clone)]
pub(crate) struct Aggregates {
    pub(crate) width: i64,
    capacity: usize,
    max_agents: usize,
    pub(crate) mapping: Mapping,
    pub(crate) buckets: VecDeque<Bucket>,
    slots: HashMap<u64, u32, FixedState>,
    pub(crate) agents: Vec<Option<Agent>>,
    free: Vec<u32>,
    recency: BTreeMap<u64, u32>,
    tick: u64,
    tasks: [HashMap<u64, TaskContext, FixedState>; 2],
    hasher: FixedState,
    /// Agents folded into the `other` row because more than `max_agents` were active.
    pub(crate) folded_agents: u64,
    /// Records folded in.
    pub(crate) records: u64,
}

impl Aggregates {
    pub(crate) fn new(config: &AnalyticsConfig) -> Aggregates {
        Aggregates {
            width: config.bucket_nanos(),
            capacity: config.buckets,
            max_agents: config.max_agents,
            mapping: Mapping::new(DEFAULT_RELATIVE_ERROR),
            buckets: VecDeque::with_capacity(config.buckets),
            slots: HashMap::default(),
            agents: Vec::new(),
            free: Vec::new(),
            recency: BTreeMap::new(),
            tick: 0,
            tasks: [HashMap::default(), HashMap::default()],
            hasher: FixedState::with_seed(0x6172_6269_7465_7221),
            folded_agents: 0,
            records: 0,
        }
    }

    /// The bucket start `time` falls in.
    pub(crate) fn bucket_start(&self, time: i64) -> i64 {
        time.div_euclid(self.width) * self.width
    }

    /// Folds one record in. `time` is the record's time (unix nanoseconds), non-decreasing
    /// from one call to the next; a record older than the newest bucket is counted in it.
    pub(crate) fn add(&mut self, time: i64, event: &Event, ids: &mut impl IdView) {
        self.add_view(time, &EventView::from(event), ids);
    }

    /// As [`add`](Self::add), for an event as the aggregates read it.
    pub(crate) fn add_view(&mut self, time: i64, event: &EventView<'_>, ids: &mut impl IdView) {
        self.records += 1;
        let at = self.bucket_for(time);
        let bucket_start = self.buckets.get(at).map_or(i64::MIN, |b| b.start);
        let (agent_id, task_id) = (event.agent, event.task);
        // Identifiers are hashed as given: the view (a keyed pseudonym) is only needed
        // for the name of an agent that gets a row, once per agent.
        let task = task_id.map(|t| self.hasher.hash_one(t));
        let known = task.map(|t| self.recall(t)).unwrap_or_default();
        // The agent as (hash, tracked slot): named by the event, or known from its task.
        let agent = match agent_id {
            Some(a) => {
                let hash = self.hasher.hash_one(a);
                Some((hash, self.touch(hash, a, ids, bucket_start)))
            }
            None => known
                .agent
                .map(|hash| (hash, self.touch_known(hash, bucket_start))),
        };
        let strategy = event.strategy().or(known.strategy);
        if let (Some(task), EventKind::RoutingDecision | EventKind::TaskStarted) =
            (task, event.kind)
        {
            let agent = agent.map(|(hash, _)| hash);
            self.remember(task, TaskContext { agent, strategy });
        }
        let mapping = self.mapping;
        let Some(bucket) = self.buckets.get_mut(at) else {
            return;
        };
        bucket.kinds[event.kind.index()].add(&mapping, event);
        match agent {
            Some((_, Some(slot))) => bucket.agents.entry(slot).or_default().add(&mapping, event),
            Some((_, None)) => bucket.other.add(&mapping, event),
            None => {}
        }
        if let Some(s) = strategy {
            bucket.strategies[strategy_index(s)].add(&mapping, event);
        }
    }

    /// The index of the bucket for `time`, opening it (and dropping the oldest) when
    /// `time` is past the newest.
    fn bucket_for(&mut self, time: i64) -> usize {
        let start = self.bucket_start(time);
        match self.buckets.back() {
            Some(last) if last.start >= start => return self.buckets.len() - 1,
            _ => {}
        }
        self.close_newest();
        self.buckets.push_back(Bucket::new(start));
        let span = self.width.saturating_mul(self.capacity as i64 - 1);
        let oldest_kept = start.saturating_sub(span);
        let mut stale: Vec<u32> = Vec::new();
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start < oldest_kept || self.buckets.len() > self.capacity)
        {
            if let Some(dropped) = self.buckets.pop_front() {
                stale.extend(dropped.agents.keys());
            }
        }
        self.respan(stale);
        self.buckets.len() - 1
    }

    /// Merges the newest bucket's agent rows into the agents' spans: it is about to be
    /// closed by a newer one.
    fn close_newest(&mut self) {
        let Some(newest) = self.buckets.back() else {
            return;
        };
        for (slot, row) in &newest.agents {
            if let Some(Some(agent)) = self.agents.get_mut(*slot as usize) {
                agent.span.merge(row);
            }
        }
    }

    /// Merges again, from the closed buckets kept, the spans of the agents in `slots`
    /// (whose rows in a dropped bucket are still in their spans).
    fn respan(&mut self, mut slots: Vec<u32>) {
        if slots.is_empty() {
            return;
        }
        slots.sort_unstable();
        slots.dedup();
        for slot in &slots {
            if let Some(Some(agent)) = self.agents.get_mut(*slot as usize) {
                agent.span = Tally::default();
            }
        }
        let closed = self.buckets.len().saturating_sub(1);
        // Bucket by bucket, oldest first, so that each span is the same left fold a
        // report merging the buckets computes.
        for bucket in self.buckets.iter().take(closed) {
            for slot in &slots {
                let (Some(row), Some(Some(agent))) =
                    (bucket.agents.get(slot), self.agents.get_mut(*slot as usize))
                else {
                    continue;
                };
                agent.span.merge(row);
            }
        }
    }

    fn remember(&mut self, task: u64, ctx: TaskContext) {
        if self.tasks[0].len() >= TASK_MEMORY && !self.tasks[0].contains_key(&task) {
            self.tasks.swap(0, 1);
            self.tasks[0].clear();
        }
        self.tasks[0].insert(task, ctx);
    }

    fn recall(&self, task: u64) -> TaskContext {
        self.tasks[0]
            .get(&task)
            .or_else(|| self.tasks[1].get(&task))
            .copied()
            .unwrap_or_default()
    }

    /// Marks the agent active and returns its slot, tracking it if it is new; when more
    /// than `max_agents` are tracked the least recently active (by bucket) is folded into
    /// `other`.
    fn touch(&mut self, hash: u64, id: &str, ids: &mut impl IdView, bucket: i64) -> Option<u32> {
        if self.max_agents == 0 {
            return None;
        }
        if let Some(slot) = self.touch_known(hash, bucket) {
            return Some(slot);
        }
        self.tick += 1;
        let tick = self.tick;
        if self.slots.len() >= self.max_agents {
            self.fold_least_recent();
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.agents.push(None);
                u32::try_from(self.agents.len() - 1).ok()?
            }
        };
        if let Some(entry) = self.agents.get_mut(slot as usize) {
            *entry = Some(Agent {
                name: ids.view(IdKind::Agent, id, |s| Box::<str>::from(s)),
                hash,
                last: tick,
                last_bucket: bucket,
                span: Tally::default(),
            });
        }
        self.slots.insert(hash, slot);
        self.recency.insert(tick, slot);
        Some(slot)
    }

    /// Marks a tracked agent active in `bucket`. Recency is kept per bucket: the order
    /// changes once per agent and bucket, not on every event.
    fn touch_known(&mut self, hash: u64, bucket: i64) -> Option<u32> {
        let slot = *self.slots.get(&hash)?;
        let agent = self.agents.get_mut(slot as usize)?.as_mut()?;
        if agent.last_bucket == bucket {
            return Some(slot);
        }
        agent.last_bucket = bucket;
        self.tick += 1;
        self.recency.remove(&agent.last);
        agent.last = self.tick;
        self.recency.insert(self.tick, slot);
        Some(slot)
    }

    fn fold_least_recent(&mut self) {
        let Some((_, slot)) = self.recency.pop_first() else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(slot as usize).and_then(Option::take) {
            self.slots.remove(&agent.hash);
        }
        for bucket in &mut self.buckets {
            if let Some(row) = bucket.agents.remove(&slot) {
                bucket.other.merge(&row);
            }
        }
        self.free.push(slot);
        self.folded_agents += 1;
    }

    /// The agent tracked in `slot`.
    pub(crate) fn agent(&self, slot: u32) -> Option<&Agent> {
        self.agents.get(slot as usize)?.as_ref()
    }

    /// The name of the agent tracked in `slot`.
    pub(crate) fn agent_name(&self, slot: u32) -> Option<&str> {
        Some(&self.agents.get(slot as usize)?.as_ref()?.name)
    }

    /// The slots of the agents tracked now, in slot order.
    pub(crate) fn tracked_slots(&self) -> impl Iterator<Item = u32> + '_ {
        let mut slots: Vec<u32> = self.slots.values().copied().collect();
        slots.sort_unstable();
        slots.into_iter()
    }

    /// Agents tracked now.
    pub(crate) fn tracked_agents(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held by the buckets and the agent and task tables.
    pub(crate) fn bytes(&self) -> usize {
        let agents: usize = self
            .agents
            .iter()
            .flatten()
            .map(|a| {
                std::mem::size_of::<Agent>() + a.name.len() + 48 + a.span.bytes()
                    - std::mem::size_of::<Tally>()
            })
            .sum();
        let tasks: usize = self
            .tasks
            .iter()
            .map(|t| t.capacity() * (std::mem::size_of::<(u64, TaskContext)>() + 1))
            .sum();
        self.buckets.iter().map(Bucket::bytes).sum::<usize>() + agents + tasks
    }
}
