//! The puller: a durable JetStream pull consumer that writes each pull as one merged
//! export, atomically, acks only once the file is on disk, and drops what it already
//! wrote by (source, seq).
//!
//! A pull file is a version 2 export of several sources ([`ExportMerger`]): each record
//! tagged with its `source`, the header's `sources` giving each source's range
//! (`after`, `next_cursor`, count, gaps), and, when the puller has the fleet's MAC key,
//! a MAC over the whole file. [`read_export`](crate::read_export) reads it, and so does
//! the Python package's `read_export`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{
    Backoff, HEADER_LAST_SEQ, HEADER_SOURCE, RelayConfig, RelayError, connect, ensure_stream,
    jetstream_context, write_atomic,
};
use crate::{ExportHeader, ExportMerger, MacKey};

/// Default `ack_wait` of a consumer the puller creates: a message delivered but not
/// acked (the puller died before its file was on disk) comes back after this.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default messages taken per pull at most.
pub const DEFAULT_PULL_MESSAGES: usize = 256;
/// How long a pull waits for messages when none are ready.
pub const DEFAULT_PULL_WAIT: Duration = Duration::from_millis(500);
/// A message delivered this many times that still does not follow what was written
/// (its predecessor never comes back) is refused with an error, not waited for.
const MAX_HOLE_DELIVERIES: i64 = 20;

/// What the puller has written, per source; kept in its state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullerState {
    /// Per source, the last seq written to a pull file.
    pub cursors: BTreeMap<String, u64>,
    /// A file being written: if it exists whole, its cursors hold (the puller died
    /// between writing it and saving this state); otherwise the ones above do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// A pull file in the making, in [`PullerState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pending {
    /// The file.
    pub path: PathBuf,
    /// The cursors once it is written.
    pub cursors: BTreeMap<String, u64>,
}

/// What one [`Puller::pull`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullOutcome {
    /// The file written (`None` when nothing new came).
    pub file: Option<PathBuf>,
    /// Messages taken into the file.
    pub messages: u64,
    /// Records in the file.
    pub records: u64,
    /// Messages dropped as already written (re-deliveries), then acked.
    pub duplicates: u64,
    /// Messages that do not follow what was written yet (their predecessor is due for
    /// re-delivery): handed back for later.
    pub deferred: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// A durable pull consumer of the relay's stream that writes pull files.
///
/// ```no_run
/// use arbiter_events::RelayConfig;
/// use arbiter_events::relay::Puller;
/// let mut puller = Puller::new(RelayConfig::default(), "rl", "./pulls/rl.state.json")?;
/// let outcome = puller.pull("./pulls/0001.pull".as_ref())?;
/// println!("{} records", outcome.records);
/// # Ok::<(), arbiter_events::RelayError>(())
/// ```
#[derive(Debug)]
pub struct Puller {
    config: RelayConfig,
    consumer: String,
    state_path: PathBuf,
    state: PullerState,
    runtime: tokio::runtime::Runtime,
    session: Option<PullSession>,
    /// Messages per pull at most.
    pub max_messages: usize,
    /// How long a pull waits when nothing is ready.
    pub wait: Duration,
    /// `ack_wait` of the consumer, when the puller creates it.
    pub ack_wait: Duration,
    /// The fleet's MAC key (`arbiter-events key mac` of the key every source shares;
    /// read from `relay.mac_key_file` when set): with it each message's MAC is verified
    /// before it is taken, and each pull file is signed; without it messages are checked
    /// by checksum only and files carry no MAC.
    pub mac_key: Option<MacKey>,
}

/// One pull's settings.
struct Knobs<'a> {
    max_messages: usize,
    wait: Duration,
    ack_wait: Duration,
    mac_key: Option<&'a MacKey>,
    /// Ack at the end (false only to test a crash before the acks).
    ack: bool,
}

struct PullSession {
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
}

impl std::fmt::Debug for PullSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullSession(..)")
    }
}

impl Puller {
    /// A puller for the durable consumer `consumer`, its state in `state_path` (read
    /// now, finishing a pull that died between its file and its state).
    ///
    /// # Errors
    /// [`RelayError::Config`] for a bad config or consumer name, [`RelayError::Io`]
    /// when the state cannot be read, [`RelayError::Export`] when `relay.mac_key_file`
    /// cannot be read or holds no key, [`RelayError::Runtime`].
    pub fn new(
        config: RelayConfig,
        consumer: &str,
        state_path: impl AsRef<Path>,
    ) -> Result<Puller, RelayError> {
        config.validate()?;
        if consumer.is_empty()
            || consumer.len() > 64
            || !consumer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(RelayError::Config {
                field: "consumer",
                reason: format!("{consumer:?} must be 1 to 64 ASCII letters, digits, `-` or `_`"),
            });
        }
        let mac_key = config
            .mac_key_file
            .as_ref()
            .map(MacKey::from_file)
            .transpose()?;
        let state_path = state_path.as_ref().to_owned();
        let state = load_state(&state_path)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RelayError::Runtime)?;
        Ok(Puller {
            config,
            consumer: consumer.to_owned(),
            state_path,
            state,
            runtime,
            session: None,
            max_messages: DEFAULT_PULL_MESSAGES,
            wait: DEFAULT_PULL_WAIT,
            ack_wait: DEFAULT_ACK_WAIT,
            mac_key,
        })
    }

    /// What has been written, per source.
    pub fn state(&self) -> &PullerState {
        &self.state
    }

    /// Pulls once: takes up to `max_messages` (waiting up to `wait` when none are
    /// ready), drops what was written before by (source, seq), writes the rest to
    /// `out` (temporary file, fsync, rename), saves the state, and only then acks.
    /// A crash anywhere re-delivers the messages, which the next pull drops or takes.
    /// When the broker is down it retries with capped exponential backoff, at most
    /// for `relay.request_timeout_ms` times ten.
    ///
    /// # Errors
    /// [`RelayError::Broker`] when the broker stays unreachable, [`RelayError::Io`]
    /// when `out` or the state cannot be written, [`RelayError::Export`] for a message
    /// that is not a valid export, [`RelayError::ForeignMessage`] for a message that
    /// overlaps what was written or whose predecessor never comes.
    pub fn pull(&mut self, out: &Path) -> Result<PullOutcome, RelayError> {
        self.pull_inner(out, true)
    }

    /// Pulls as [`Puller::pull`] does but stops before the acks and drops the
    /// connection, as a process killed right after writing its file would: the
    /// messages come back after `ack_wait`. For tests of that crash.
    #[doc(hidden)]
    pub fn pull_and_die_before_ack(&mut self, out: &Path) -> Result<PullOutcome, RelayError> {
        let outcome = self.pull_inner(out, false);
        self.session = None;
        outcome
    }

    fn pull_inner(&mut self, out: &Path, ack: bool) -> Result<PullOutcome, RelayError> {
        let mut backoff = Backoff::new(&self.config);
        let deadline = std::time::Instant::now() + self.config.request_timeout() * 10;
        loop {
            let runtime = &self.runtime;
            let result = runtime.block_on(Self::pull_async(
                &self.config,
                &self.consumer,
                &mut self.session,
                &mut self.state,
                &self.state_path,
                out,
                Knobs {
                    max_messages: self.max_messages,
                    wait: self.wait,
                    ack_wait: self.ack_wait,
                    mac_key: self.mac_key.as_ref(),
                    ack,
                },
            ));
            match result {
                Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                    self.session = None;
                    std::thread::sleep(backoff.next_wait());
                }
                other => return other,
            }
        }
    }

    async fn pull_async(
        config: &RelayConfig,
        name: &str,
        session: &mut Option<PullSession>,
        state: &mut PullerState,
        state_path: &Path,
        out: &Path,
        knobs: Knobs<'_>,
    ) -> Result<PullOutcome, RelayError> {
        let Knobs {
            max_messages,
            wait,
            ack_wait,
            mac_key,
            ack,
        } = knobs;
        let url = config.url.as_str();
        let s = match session {
            Some(s) => s,
            None => {
                let client = connect(config, "pull").await?;
                let js = jetstream_context(config, client);
                let stream = ensure_stream(config, &js).await?;
                let consumer = stream
                    .get_or_create_consumer(
                        name,
                        jetstream::consumer::pull::Config {
                            durable_name: Some(name.to_owned()),
                            description: Some("arbiter-events puller".to_owned()),
                            filter_subject: config.stream_subjects(),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ack_wait,
                            deliver_policy: jetstream::consumer::DeliverPolicy::All,
                            max_ack_pending: 100_000,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| RelayError::broker("create consumer", url, e))?;
                session.insert(PullSession { consumer })
            }
        };
        // What is ready, at once; when nothing is, wait for the first message only,
        // then take what is ready with it.
        let mut messages = take(&s.consumer, max_messages, None, url).await?;
        if messages.is_empty() {
            messages = take(&s.consumer, 1, Some(wait), url).await?;
            if !messages.is_empty() && max_messages > 1 {
                messages.extend(take(&s.consumer, max_messages - 1, None, url).await?);
            }
        }
        let mut merger = ExportMerger::new(state.cursors.clone());
        if let Some(key) = mac_key {
            merger = merger.verify_with(key.clone());
        }
        let mut taken: Vec<jetstream::Message> = Vec::new();
        let mut done: Vec<jetstream::Message> = Vec::new();
        let mut outcome = PullOutcome::default();
        for message in messages {
            let header = part_header(&message)?;
            let source = header.source.as_deref().unwrap_or_default();
            let cursor = merger.cursor(source);
            let other_key = merger
                .key_id()
                .is_some_and(|key_id| key_id != header.key_id.as_deref());
            if header.next_cursor <= cursor {
                outcome.duplicates += 1;
                done.push(message);
            } else if header.after == cursor && !other_key {
                merger
                    .push(&message.payload)
                    .map_err(|e| foreign(&message, e.to_string()))?;
                outcome.messages += 1;
                outcome.records += header.count;
                taken.push(message);
            } else if header.after >= cursor {
                // An earlier message of this source is due for re-delivery, or this one
                // is under another key than the file's (a key rotation): it goes into
                // the next file.
                let delivered = message.info().map_or(0, |i| i.delivered);
                if delivered >= MAX_HOLE_DELIVERIES && !other_key {
                    return Err(foreign(
                        &message,
                        format!(
                            "seqs {}..={} never came (the stream may have dropped them)",
                            cursor + 1,
                            header.after
                        ),
                    ));
                }
                outcome.deferred += 1;
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(100))))
                    .await
                    .map_err(|e| RelayError::broker("nak", url, e))?;
            } else {
                return Err(foreign(
                    &message,
                    format!(
                        "range {}..={} overlaps seqs already written through {cursor}",
                        header.after + 1,
                        header.next_cursor
                    ),
                ));
            }
        }
        if !taken.is_empty() {
            let export = merger.finish();
            let cursors: BTreeMap<String, u64> = state
                .cursors
                .clone()
                .into_iter()
                .chain(
                    export
                        .header()
                        .sources
                        .iter()
                        .flatten()
                        .map(|(source, range)| (source.clone(), range.next_cursor)),
                )
                .collect();
            let bytes = export.to_msgpack();
            outcome.bytes = bytes.len() as u64;
            // Two steps, so a crash between the file and the state is told apart
            // from one before the file: the pending cursors hold only if it exists.
            state.pending = Some(Pending {
                path: out.to_owned(),
                cursors: cursors.clone(),
            });
            save_state(state_path, state)?;
            write_atomic(out, &bytes, true)?;
            state.cursors = cursors;
            state.pending = None;
            save_state(state_path, state)?;
            outcome.file = Some(out.to_owned());
        }
        if !ack {
            return Ok(outcome);
        }
        for message in taken.iter().chain(&done) {
            message
                .ack()
                .await
                .map_err(|e| RelayError::broker("ack", url, e))?;
        }
        Ok(outcome)
    }
}

/// Up to `max` messages: those ready now (`wait` `None`), or within `wait`.
async fn take(
    consumer: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    max: usize,
    wait: Option<Duration>,
    url: &str,
) -> Result<Vec<jetstream::Message>, RelayError> {
    let pull = |e: &dyn std::fmt::Display| RelayError::broker("pull", url, e);
    let mut out = Vec::new();
    // A request sent while the connection is down may never be answered: bound it.
    let expires = wait.unwrap_or(Duration::from_millis(200));
    let bound = expires + Duration::from_secs(2);
    let fetched = tokio::time::timeout(bound, async {
        let mut batch = match wait {
            None => {
                consumer
                    .fetch()
                    .max_messages(max)
                    .expires(expires)
                    .messages()
                    .await
            }
            Some(wait) => {
                consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
            }
        }
        .map_err(|e| pull(&e))?;
        while let Some(message) = batch.next().await {
            out.push(message.map_err(|e| pull(&e))?);
        }
        Ok::<(), RelayError>(())
    })
    .await;
    match fetched {
        Ok(result) => result?,
        // Keep what came; the rest stays with the broker for the next pull.
        Err(_) if !out.is_empty() => {}
        Err(_) => return Err(pull(&"no answer to a pull request")),
    }
    Ok(out)
}

fn foreign(message: &jetstream::Message, reason: String) -> RelayError {
    RelayError::ForeignMessage {
        subject: message.subject.to_string(),
        stream_sequence: message.info().map_or(0, |i| i.stream_sequence),
        reason,
    }
}

/// A message's export header, checked against its NATS headers.
fn part_header(message: &jetstream::Message) -> Result<ExportHeader, RelayError> {
    let header: ExportHeader = rmp_serde::decode::from_read(message.payload.as_ref())
        .map_err(|e| foreign(message, format!("not an export: {e}")))?;
    let nats = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let source = header.source.as_deref();
    if source.is_none() || nats(HEADER_SOURCE).as_deref() != source {
        return Err(foreign(
            message,
            format!(
                "source {source:?} against {HEADER_SOURCE} {:?}",
                nats(HEADER_SOURCE)
            ),
        ));
    }
    if nats(HEADER_LAST_SEQ).and_then(|v| v.parse::<u64>().ok()) != Some(header.next_cursor) {
        return Err(foreign(
            message,
            format!(
                "next cursor {} against {HEADER_LAST_SEQ}",
                header.next_cursor
            ),
        ));
    }
    Ok(header)
}

fn load_state(path: &Path) -> Result<PullerState, RelayError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PullerState::default()),
        Err(source) => {
            return Err(RelayError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut state: PullerState = serde_json::from_slice(&bytes).map_err(|e| RelayError::Io {
        action: "parse",
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    if let Some(pending) = state.pending.take() {
        // Renamed into place whole, or not there at all; an older file of the same
        // name moves the sources elsewhere.
        if written(&pending) {
            state.cursors = pending.cursors;
        }
        save_state(path, &state)?;
    }
    Ok(state)
}

/// Whether the pending file is on disk: a merged export whose sources reach the
/// pending cursors.
fn written(pending: &Pending) -> bool {
    let Ok(bytes) = std::fs::read(&pending.path) else {
        return false;
    };
    let Ok(header) = rmp_serde::decode::from_read::<_, ExportHeader>(bytes.as_slice()) else {
        return false;
    };
    header.sources.is_some_and(|sources| {
        !sources.is_empty()
            && sources
                .iter()
                .all(|(source, range)| pending.cursors.get(source) == Some(&range.next_cursor))
    })
}

fn save_state(path: &Path, state: &PullerState) -> Result<(), RelayError> {
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    write_atomic(path, &bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_the_mac_key_comes_from_relay_mac_key_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let key = crate::AnonymizationKey::from_bytes([3; 32]).mac_key();
        let file = dir.path().join("mac.key");
        std::fs::write(&file, format!("{}\n", key.to_hex()))?;
        let state = dir.path().join("state.json");
        let mut config = RelayConfig::from_toml(&format!(
            "[relay]\nmac_key_file = {:?}\n",
            file.display().to_string()
        ))?;
        assert_eq!(
            Puller::new(config.clone(), "rl", &state)?.mac_key,
            Some(key)
        );
        config.mac_key_file = Some(dir.path().join("missing.key"));
        assert!(matches!(
            Puller::new(config.clone(), "rl", &state),
            Err(RelayError::Export(crate::ExportError::InvalidMacKey { .. }))
        ));
        std::fs::write(&file, "not hex\n")?;
        config.mac_key_file = Some(file);
        assert!(Puller::new(config, "rl", &state).is_err());
        config = RelayConfig::default();
        assert_eq!(Puller::new(config, "rl", &state)?.mac_key, None);
        Ok(())
    }
}
