use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arbiter_events::{
    AgentRegistered, AgentStatus, AgentStatusChanged, Alternative, Attributes, Baseline, Collector,
    Complexity, Config, ConstitutionalValidation, Cursor, Custom, EvaluationOutcome, Event, Export,
    ExportRequest, JudgmentRecorded, KeyRotation, MinimalityEvaluated, OutcomeStatus, Overflow,
    RlTrainingMetrics, RoutingDecision, RoutingStrategy, Severity, Stats, StorageStats,
    TaskCompleted, TaskOutcome, TaskStarted, ThinkingBudgetAllocated, ThinkingBudgetUsed,
    Violation,
};
use fastrand::Rng;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{CliResult, Out, default_data_dir};

/// How long the final flush and shutdown may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Agents in the simulated registry.
const AGENTS: usize = 8;
/// The misbehaving agents: one with slow spells, one on a failing streak, one that
/// overspends its thinking budget.
const SLOW_AGENT: usize = 5;
const FAILING_AGENT: usize = 6;
const OVERSPENDING_AGENT: usize = 7;
/// The alert rules the demo watches when its configuration names none: one per
/// misbehaviour, per agent.
const DEFAULT_ALERTS: &str = r#"
[[alerts]]
name = "slow-agent"
kind = "latency_spike"
scope = "per_agent"
window_secs = 300
threshold = 2000.0
min_samples = 20
cooldown_secs = 600

[[alerts]]
name = "failing-agent"
kind = "error_rate"
scope = "per_agent"
window_secs = 300
threshold = 0.5
min_samples = 20
cooldown_secs = 600

[[alerts]]
name = "overspending-agent"
kind = "token_overuse"
scope = "per_agent"
window_secs = 300
max_share = 0.5
min_samples = 20
cooldown_secs = 600
"#;
/// How long the demo waits for the live stage to evaluate its rules after the last task.
const ALERT_WAIT: Duration = Duration::from_secs(5);
const CAPABILITIES: [&str; 5] = [
    "code-review",
    "refactor",
    "test-writing",
    "documentation",
    "triage",
];

/// The most producer threads `demo` starts.
pub(crate) const MAX_THREADS: u64 = 256;
/// Run folders tried in one second before giving up (`run-<secs>-seed<seed>-<n>`).
const MAX_RUN_DIRS_PER_SECOND: u32 = 1000;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tasks to simulate (each records about ten events).
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// Producer threads, 1 to 256.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS))]
    threads: u64,
    /// Seed of the simulation: the same seed records the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The data directory: records, the key and the exports live here; runs accumulate
    /// [default: the config file's storage.data_dir, else ./arbiter-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file; flags given here override it, and it overrides the
    /// defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// How often the simulated RL pipeline pulls an increment, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pull_interval_ms: u64,
    /// What producers do when the queue is full [default: the config file's
    /// queue.overflow, else block]. The simulation records far faster than an arbiter
    /// does, so it blocks unless told otherwise; `drop-newest` (the library's default)
    /// shows drops being counted instead.
    #[arg(long, value_enum)]
    overflow: Option<OverflowArg>,
    /// Start a new key when the data directory's key file is missing or holds another
    /// key than its segments were made under (new pseudonyms will not link to the old).
    #[arg(long)]
    rotate_key: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OverflowArg {
    Block,
    DropNewest,
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Flag,
    File,
    Default,
}

/// A setting of the run and where it came from, for the summary.
#[derive(Debug)]
struct Setting {
    name: &'static str,
    value: String,
    origin: Origin,
    /// What the file said, when a flag overrode another value.
    overridden: Option<String>,
}

impl Setting {
    fn describe(&self, file: Option<&Path>) -> String {
        let from = match (self.origin, file) {
            (Origin::Flag, _) => format!("--{}", self.name.replace('_', "-")),
            (Origin::File, Some(f)) => f.display().to_string(),
            (Origin::File, None) | (Origin::Default, _) => "the demo's default".to_owned(),
        };
        let mut text = format!("{} = {} (from {from}", self.name, self.value);
        if let Some(was) = &self.overridden {
            text.push_str(&format!("; the config file says {was}"));
        }
        text.push(')');
        text
    }
}

/// The configuration for this run: flags over the file, the file over the defaults.
fn settle(args: &Args) -> Result<(Config, Vec<Setting>), Box<dyn std::error::Error + Send + Sync>> {
    let (mut config, table) = match &args.config {
        Some(path) => {
            let config = Config::from_file(path)?;
            // Which keys the file sets, to tell its values from the defaults.
            let table: toml::Table = fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .parse()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (config, Some(table))
        }
        None => (Config::default(), None),
    };
    let in_file = |section: &str, key: &str| {
        table
            .as_ref()
            .and_then(|t| t.get(section))
            .and_then(|s| s.get(key))
            .is_some()
    };
    let file_dir = config
        .storage
        .data_dir
        .clone()
        .filter(|_| in_file("storage", "data_dir"));
    let (dir, origin) = match (&args.data_dir, &file_dir) {
        (Some(d), _) => (d.clone(), Origin::Flag),
        (None, Some(d)) => (d.clone(), Origin::File),
        (None, None) => (default_data_dir(), Origin::Default),
    };
    let dir_setting = Setting {
        name: "data_dir",
        value: dir.display().to_string(),
        origin,
        overridden: file_dir
            .filter(|f| origin == Origin::Flag && *f != dir)
            .map(|f| f.display().to_string()),
    };
    config.storage.data_dir = Some(dir);
    if config.alerts.is_empty() && config.analytics.enabled {
        config.alerts = Config::from_toml_str(DEFAULT_ALERTS)?.alerts;
    }
    let file_overflow = in_file("queue", "overflow").then_some(config.queue.overflow);
    let (overflow, origin) = match (args.overflow, file_overflow) {
        (Some(OverflowArg::Block), _) => (Overflow::Block, Origin::Flag),
        (Some(OverflowArg::DropNewest), _) => (Overflow::DropNewest, Origin::Flag),
        (None, Some(o)) => (o, Origin::File),
        (None, None) => (Overflow::Block, Origin::Default),
    };
    let overflow_setting = Setting {
        name: "overflow",
        value: wire_name(&overflow),
        origin,
        overridden: file_overflow
            .filter(|f| origin == Origin::Flag && *f != overflow)
            .map(|f| wire_name(&f)),
    };
    config.queue.overflow = overflow;
    Ok((config, vec![dir_setting, overflow_setting]))
}

/// Makes a run folder no earlier run used, even one in the same second.
fn new_run_dir(
    exports: &Path,
    seed: u64,
) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    fs::create_dir_all(exports).map_err(|e| format!("cannot create {}: {e}", exports.display()))?;
    let secs = unix_seconds();
    for n in 1..=MAX_RUN_DIRS_PER_SECOND {
        let name = if n == 1 {
            format!("run-{secs}-seed{seed}")
        } else {
            format!("run-{secs}-seed{seed}-{n}")
        };
        let dir = exports.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display()).into()),
        }
    }
    Err(format!(
        "cannot create a new run folder in {}: {MAX_RUN_DIRS_PER_SECOND} runs already started this second",
        exports.display()
    )
    .into())
}

pub(crate) fn run(args: Args) -> CliResult {
    let (config, settings) = settle(&args)?;
    let data_dir = config
        .storage
        .data_dir
        .clone()
        .unwrap_or_else(default_data_dir);
    let rotation = if args.rotate_key {
        KeyRotation::Rotate
    } else {
        KeyRotation::Refuse
    };
    let collector = Collector::builder()
        .config(config)
        .key_rotation(rotation)
        .build()?;
    // This run's increments start after what earlier runs left in the directory.
    let first_cursor = Cursor::after_seq(collector.stats().last_seq.unwrap_or(0));
    let run_dir = new_run_dir(&data_dir.join("exports"), args.seed)?;

    let mut out = Out::stdout();
    writeln!(
        out,
        "arbiter-events demo: {} tasks on {} threads (seed {}), exports to {}",
        args.tasks,
        args.threads,
        args.seed,
        run_dir.display()
    )?;
    let file = args.config.as_deref();
    let described: Vec<String> = settings.iter().map(|s| s.describe(file)).collect();
    writeln!(out, "settings: {}", described.join(", "))?;
    if let Some(f) = file {
        writeln!(out, "every other setting from {}", f.display())?;
    }
    let progress = ProgressBar::new(args.tasks);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks ({per_sec})",
        )
        .map_err(|e| e.to_string())?,
    );

    register_agents(&collector, args.seed);
    let recording = Arc::new(AtomicBool::new(true));
    let puller = {
        let (collector, recording, dir) =
            (collector.clone(), Arc::clone(&recording), run_dir.clone());
        let interval = Duration::from_millis(args.pull_interval_ms.max(1));
        thread::spawn(move || pull_while(&collector, &recording, &dir, interval, first_cursor))
    };

    let started = Instant::now();
    let producers: Vec<_> = (0..args.threads)
        .map(|t| {
            let (collector, progress) = (collector.clone(), progress.clone());
            let share = args.tasks / args.threads + u64::from(t < args.tasks % args.threads);
            let seed = args
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(t);
            thread::spawn(move || simulate(&collector, &progress, seed, t as usize, share))
        })
        .collect();
    for p in producers {
        p.join().map_err(|_| "a producer thread panicked")?;
    }
    let recorded_in = started.elapsed();
    collector.flush(DRAIN_TIMEOUT)?;
    let stored_in = started.elapsed();
    settle_alerts(&collector)?;
    progress.finish_and_clear();

    recording.store(false, Ordering::SeqCst);
    let mut pulled = puller.join().map_err(|_| "the export thread panicked")??;
    pulled.pull(&collector, &run_dir)?;
    let stats = collector.stats();
    fs::write(
        run_dir.join("stats.json"),
        serde_json::to_vec_pretty(&stats)?,
    )?;
    collector.shutdown(DRAIN_TIMEOUT)?;
    // Printed last: a reader that went away (`| head`) ends the command here, cleanly.
    let mut text = Vec::new();
    report(&mut text, &stats, recorded_in, stored_in, &pulled, &run_dir)?;
    alert_summary(&mut text, &collector, &data_dir)?;
    out.write_all(&text)?;
    out.flush()?;
    Ok(())
}

/// Waits (at most [`ALERT_WAIT`]) until the live stage has folded every record and
/// evaluated the rules once more, then stores the alerts that fired.
fn settle_alerts(collector: &Collector) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if collector.config().alerts.is_empty() || !collector.analytics().enabled {
        return Ok(());
    }
    let deadline = Instant::now() + ALERT_WAIT;
    let stored = collector.stats().stored;
    while collector.analytics().folded + collector.analytics().skipped < stored
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(5));
    }
    let evaluations = collector.analytics().evaluations;
    while collector.analytics().evaluations <= evaluations && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    collector.flush(DRAIN_TIMEOUT)?;
    Ok(())
}

/// The closing lines on alerts: how many fired, by rule, and where to look.
fn alert_summary(w: &mut impl Write, collector: &Collector, dir: &Path) -> std::io::Result<()> {
    let a = collector.analytics();
    let rules: Vec<String> = collector
        .config()
        .alerts
        .iter()
        .map(|r| r.name.clone())
        .collect();
    writeln!(
        w,
        "alerts: {} fired (rules: {}); list them with `arbiter-events alerts --data-dir {}`, \
         see the figures with `arbiter-events report --data-dir {} --by agent`",
        a.fired,
        if rules.is_empty() {
            "none".to_owned()
        } else {
            rules.join(", ")
        },
        dir.display(),
        dir.display()
    )
}

/// The simulated RL pipeline: pulls increments from a cursor and writes each to a file.
#[derive(Debug, Default)]
struct Pulled {
    cursor: Cursor,
    files: u64,
    records: u64,
    gaps: u64,
}

impl Pulled {
    fn pull(
        &mut self,
        collector: &Collector,
        dir: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let export = collector.export(&ExportRequest::after(self.cursor))?;
        if export.is_empty() && export.gap().is_none() {
            return Ok(());
        }
        self.files += 1;
        self.records += export.len();
        self.gaps += export.gap().map_or(0, |g| g.len());
        write_atomically(
            &export,
            &dir.join(format!("increment-{:04}.msgpack", self.files)),
        )?;
        self.cursor = export.next_cursor();
        Ok(())
    }
}

fn write_atomically(
    export: &Export,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tmp = path.with_extension("msgpack.tmp");
    let file =
        fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    export.write_msgpack(std::io::BufWriter::new(file))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn pull_while(
    collector: &Collector,
    recording: &AtomicBool,
    dir: &Path,
    interval: Duration,
    cursor: Cursor,
) -> Result<Pulled, Box<dyn std::error::Error + Send + Sync>> {
    let mut pulled = Pulled {
        cursor,
        ..Pulled::default()
    };
    while recording.load(Ordering::SeqCst) {
        thread::sleep(interval);
        pulled.pull(collector, dir)?;
    }
    Ok(pulled)
}

fn agent(n: usize) -> String {
    format!("agent-{n:02}")
}

fn register_agents(collector: &Collector, seed: u64) {
    let mut rng = Rng::with_seed(seed);
    for n in 0..AGENTS {
        let capabilities = CAPABILITIES
            .iter()
            .filter(|_| rng.bool())
            .map(|c| (*c).to_owned())
            .collect();
        let _ = collector.record(Event::AgentRegistered(AgentRegistered {
            agent_id: agent(n),
            capabilities,
            baseline: Baseline {
                latency_ms: 200.0 + rng.f64() * 800.0,
                accuracy: 0.7 + rng.f64() * 0.3,
                cost_per_task: rng.f64() * 0.05,
                reliability: 0.9 + rng.f64() * 0.1,
            },
        }));
    }
}

/// One producer thread's share of tasks. Failures to record are counted by the
/// collector and shown in the report, so they are not handled here.
fn simulate(collector: &Collector, progress: &ProgressBar, seed: u64, thread: usize, tasks: u64) {
    let mut rng = Rng::with_seed(seed);
    for n in 0..tasks {
        let task_id = format!("task-{thread}-{n}");
        simulate_task(collector, &mut rng, &task_id);
        if n % 100 == 99 {
            let _ = collector.record(Event::RlTrainingMetrics(RlTrainingMetrics {
                trajectories_processed: 100,
                average_reward: rng.f64() * 2.0 - 0.5,
                policy_loss: rng.f64() * 0.2 - 0.1,
                value_loss: rng.f64() * 0.5,
                kl_divergence: rng.f64() * 0.02,
                training_time_ms: 50.0 + rng.f64() * 200.0,
            }));
        }
        if n % 250 == 0 {
            let status = [
                AgentStatus::Available,
                AgentStatus::Busy,
                AgentStatus::Maintenance,
            ][rng.usize(..3)];
            let _ = collector.record(Event::AgentStatusChanged(AgentStatusChanged {
                agent_id: agent(rng.usize(..AGENTS)),
                status,
                previous: Some(AgentStatus::Available),
                reason: Some("load rebalanced".into()),
            }));
        }
        progress.inc(1);
    }
}

/// A task of the slow agent in a slow spell: started, budget used and completed, with a
/// duration of seconds.
fn slow_task(
    collector: &Collector,
    rng: &mut Rng,
    task_id: &str,
    allocated: u64,
    used: u64,
    context: Attributes,
) {
    let execution_id = format!("slow-{task_id}");
    let _ = collector.record(Event::TaskStarted(TaskStarted {
        execution_id: execution_id.clone(),
        task_id: task_id.into(),
        agent_id: agent(SLOW_AGENT),
        context,
    }));
    let _ = collector.record(Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: task_id.into(),
        tokens_used: used,
        tokens_allocated: allocated,
    }));
    let _ = collector.record(Event::TaskCompleted(TaskCompleted {
        execution_id,
        task_id: task_id.into(),
        agent_id: agent(SLOW_AGENT),
        outcome: TaskOutcome {
            status: OutcomeStatus::Succeeded,
            quality_score: 0.6 + rng.f64() * 0.4,
            efficiency_score: rng.f64() * 0.3,
            tokens_consumed: used,
        },
        duration_ms: 2500.0 + rng.f64() * 4000.0,
    }));
}

fn simulate_task(collector: &Collector, rng: &mut Rng, task_id: &str) {
    let complexity = [
        Complexity::Trivial,
        Complexity::Standard,
        Complexity::Complex,
    ][rng.usize(..3)];
    let allocated = match complexity {
        Complexity::Trivial => 512,
        Complexity::Standard => 4096,
        Complexity::Complex => 16_384,
    };
    let _ = collector.record(Event::ThinkingBudgetAllocated(ThinkingBudgetAllocated {
        task_id: task_id.into(),
        allocated_tokens: allocated,
        complexity,
        confidence: 0.5 + rng.f64() * 0.5,
    }));
    let selected = rng.usize(..AGENTS);
    let alternatives = (1..=rng.usize(1..4))
        .map(|k| Alternative {
            agent_id: agent((selected + k) % AGENTS),
            score: rng.f64() * 0.8,
            reason: "lower capability match".into(),
        })
        .collect();
    let strategy = [
        RoutingStrategy::MultiArmedBandit,
        RoutingStrategy::CapabilityMatch,
        RoutingStrategy::LoadBalance,
        RoutingStrategy::Random,
    ][rng.usize(..4)];
    let _ = collector.record(Event::RoutingDecision(RoutingDecision {
        task_id: task_id.into(),
        selected_agent: agent(selected),
        strategy,
        confidence: 0.6 + rng.f64() * 0.4,
        alternatives,
        rationale: format!("{} scored highest for {task_id}", agent(selected)),
    }));
    let context = Attributes::new()
        .with("task_type", CAPABILITIES[rng.usize(..CAPABILITIES.len())])
        .with("priority", i64::from(rng.u8(1..=5)));
    let used = if selected == OVERSPENDING_AGENT {
        allocated + rng.u64(allocated / 10..=allocated / 2)
    } else {
        rng.u64(allocated / 4..=allocated)
    };
    if selected == SLOW_AGENT && rng.f64() < 0.6 {
        // A slow spell: the task takes seconds (recorded with its duration, not timed).
        slow_task(collector, rng, task_id, allocated, used, context);
        return;
    }
    let Ok(execution) = collector.start_task(task_id, agent(selected), context) else {
        return;
    };
    let _ = collector.record(Event::ThinkingBudgetUsed(ThinkingBudgetUsed {
        task_id: task_id.into(),
        tokens_used: used,
        tokens_allocated: allocated,
    }));
    let violations: Vec<Violation> = (0..rng.usize(..3))
        .map(|_| Violation {
            severity: [
                Severity::Low,
                Severity::Medium,
                Severity::High,
                Severity::Critical,
            ][rng.usize(..4)],
            message: "scope exceeded the change budget".into(),
            rule: Some(format!("CAWS-{}", rng.u8(1..=20))),
        })
        .collect();
    let _ = collector.record(Event::ConstitutionalValidation(ConstitutionalValidation {
        task_id: task_id.into(),
        agent_id: agent(selected),
        valid: violations.iter().all(|v| v.severity < Severity::High),
        compliance_score: 1.0 - violations.len() as f64 * 0.2,
        violations,
        processing_time_ms: rng.f64() * 20.0,
        rule_count: 20,
    }));
    let _ = collector.record(Event::MinimalityEvaluated(MinimalityEvaluated {
        task_id: task_id.into(),
        minimality_factor: rng.f64(),
        ast_similarity: rng.f64(),
        scaffolding_penalty: rng.f64() * 0.3,
        lines_changed: rng.u64(1..400),
        quality_assessment: "focused change".into(),
    }));
    let roll = rng.f64();
    if roll < 0.05 {
        drop(execution); // abandoned: the guard records TaskAbandoned
        return;
    }
    let status = match roll {
        // A failing streak: most of its tasks fail.
        _ if selected == FAILING_AGENT && rng.f64() < 0.85 => OutcomeStatus::Failed,
        r if r < 0.75 => OutcomeStatus::Succeeded,
        r if r < 0.90 => OutcomeStatus::Failed,
        r if r < 0.97 => OutcomeStatus::TimedOut,
        _ => OutcomeStatus::Cancelled,
    };
    let quality = if status == OutcomeStatus::Succeeded {
        0.6 + rng.f64() * 0.4
    } else {
        rng.f64() * 0.5
    };
    let _ = execution.complete(TaskOutcome {
        status,
        quality_score: quality,
        efficiency_score: rng.f64(),
        tokens_consumed: used + rng.u64(..2000),
    });
    let criteria: BTreeMap<String, f64> = ["correctness", "minimality", "style"]
        .iter()
        .map(|c| ((*c).to_owned(), rng.f64()))
        .collect();
    let _ = collector.record(Event::JudgmentRecorded(JudgmentRecorded {
        task_id: task_id.into(),
        overall_score: quality,
        overall_confidence: 0.5 + rng.f64() * 0.5,
        all_criteria_pass: criteria.values().all(|s| *s >= 0.5),
        criteria_scores: criteria,
        evaluation_time_ms: rng.f64() * 100.0,
    }));
    let rubric: BTreeMap<String, f64> = ["tests_pass", "requirements_met"]
        .iter()
        .map(|c| ((*c).to_owned(), rng.f64()))
        .collect();
    let _ = collector.record(Event::EvaluationOutcome(EvaluationOutcome {
        task_id: task_id.into(),
        passed: status == OutcomeStatus::Succeeded,
        score: quality,
        rubric_scores: rubric,
        feedback: (rng.f64() < 0.3).then(|| "consider smaller commits".to_owned()),
    }));
    if rng.f64() < 0.01 {
        let _ = collector.record(Event::Custom(Custom {
            name: "cache_eviction".into(),
            attributes: Attributes::new().with("entries", i64::from(rng.u16(..1000))),
        }));
    }
}

/// A setting as the configuration file spells it (`pseudonymize`, `block`, `file`).
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn report(
    w: &mut impl Write,
    stats: &Stats,
    recorded_in: Duration,
    stored_in: Duration,
    pulled: &Pulled,
    dir: &Path,
) -> std::io::Result<()> {
    writeln!(
        w,
        "recorded {} events in {:.3} s ({:.0} events/s submitted); all stored after {:.3} s ({:.0} events/s end to end)",
        stats.submitted,
        recorded_in.as_secs_f64(),
        per_sec(stats.submitted, recorded_in),
        stored_in.as_secs_f64(),
        per_sec(stats.stored, stored_in),
    )?;
    let d = &stats.dropped;
    writeln!(
        w,
        "accounting: submitted {} + generated {} = stored {} + dropped {} (queue full {}, paused {}, disabled {}, shutdown {}) + rejected {} + in flight {}",
        stats.submitted,
        stats.generated,
        stats.stored,
        d.total(),
        d.queue_full,
        d.paused,
        d.disabled,
        d.shutdown,
        stats.rejected,
        stats.in_flight
    )?;
    writeln!(
        w,
        "memory: retained {} records ({} bytes); pruned from memory {} (age {}, capacity {}, cleared {})",
        stats.retained,
        stats.retained_bytes,
        stats.pruned.total(),
        stats.pruned.age,
        stats.pruned.capacity,
        stats.pruned.cleared
    )?;
    writeln!(w, "{:<28} {:>10} {:>10}", "kind", "stored", "retained")?;
    for k in &stats.kinds {
        writeln!(
            w,
            "{:<28} {:>10} {:>10}",
            k.kind.as_str(),
            k.stored,
            k.retained
        )?;
    }
    let t = &stats.tasks.lifetime;
    writeln!(
        w,
        "tasks: {} succeeded, {} failed, {} timed out, {} cancelled, {} abandoned; success rate {}; mean duration {}",
        t.succeeded,
        t.failed,
        t.timed_out,
        t.cancelled,
        t.abandoned,
        t.success_rate
            .map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0)),
        t.mean_duration_ms
            .map_or("n/a".into(), |m| format!("{m:.3} ms")),
    )?;
    writeln!(
        w,
        "anonymization: {}, key_id {}, key from {}",
        wire_name(&stats.anonymization),
        stats.key_id.as_deref().unwrap_or("none"),
        stats
            .key_origin
            .as_ref()
            .map_or_else(|| "nowhere".to_owned(), wire_name),
    )?;
    writeln!(
        w,
        "exports: {} increments, {} records, {} records missed (gaps), next cursor {} -> {}",
        pulled.files,
        pulled.records,
        pulled.gaps,
        pulled.cursor.seq(),
        dir.display()
    )?;
    if let Some(s) = &stats.storage {
        storage_report(w, s)?;
    }
    Ok(())
}

/// The data directory's side: what is on disk, what opening it found, what failed.
fn storage_report(w: &mut impl Write, s: &StorageStats) -> std::io::Result<()> {
    let seqs = match (s.first_seq, s.records) {
        (Some(first), n) if n > 0 => format!(", seq {first}..={}", first + n - 1),
        _ => String::new(),
    };
    writeln!(
        w,
        "disk: {} records in {} segments ({} bytes{seqs}) in {}, durability {}, synced through seq {}; pruned from disk {} (age {}, capacity {}, cleared {}) in {} segments",
        s.records,
        s.segments,
        s.disk_bytes,
        s.data_dir.display(),
        wire_name(&s.durability),
        s.synced_through_seq
            .map_or_else(|| "none".to_owned(), |q| q.to_string()),
        s.pruned.total(),
        s.pruned.age,
        s.pruned.capacity,
        s.pruned.cleared,
        s.pruned_segments,
    )?;
    let r = &s.recovery;
    writeln!(
        w,
        "recovery on open: {} segments, {} records; cut {} bytes ({} frames) of an unfinished write; {} damaged spans set aside",
        r.segments,
        r.records,
        r.truncated_bytes,
        r.truncated_frames,
        r.damage.len(),
    )?;
    writeln!(
        w,
        "write errors: {}; {} records not on disk (kept in memory){}",
        s.write_errors,
        s.unpersisted,
        s.last_error
            .as_ref()
            .map_or_else(String::new, |e| format!("; last: {e}")),
    )
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
