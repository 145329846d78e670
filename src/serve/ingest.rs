//! `POST /v1/events`: a batch decoded event by event and recorded through `record()`.

use std::time::Duration;

use serde::Serialize;

use crate::wire::value_len;
use crate::{Collector, Event, RecordError, Rule};

/// How a batch is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// One JSON event a line (`application/x-ndjson`).
    Ndjson,
    /// A MessagePack array of events (`application/msgpack`).
    Msgpack,
}

impl Encoding {
    /// The encoding a `Content-Type` names (parameters such as `charset` are ignored).
    pub(crate) fn of(content_type: &str) -> Option<Encoding> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Encoding::Ndjson)
            }
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(Encoding::Msgpack)
            }
            _ => None,
        }
    }
}

/// One item of a batch: an event, or why it could not be decoded.
pub(crate) type Item = Result<Event, String>;

/// A batch could not be split into items at all.
#[derive(Debug)]
pub(crate) enum SplitError {
    /// More items than the per-request limit.
    TooMany {
        /// Items counted (for MessagePack, the array's announced length).
        count: u64,
    },
    /// The body is not a MessagePack array.
    NotAnArray(String),
}

/// Splits `body` into at most `max` items, each decoded on its own: a malformed item
/// does not stop the others. Counts first, so an over-limit batch decodes nothing.
pub(crate) fn split(body: &[u8], encoding: Encoding, max: usize) -> Result<Vec<Item>, SplitError> {
    match encoding {
        Encoding::Ndjson => split_ndjson(body, max),
        Encoding::Msgpack => split_msgpack(body, max),
    }
}

fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

fn split_ndjson(body: &[u8], max: usize) -> Result<Vec<Item>, SplitError> {
    let count = lines(body).count();
    if count > max {
        return Err(SplitError::TooMany {
            count: count as u64,
        });
    }
    Ok(lines(body)
        .map(|line| serde_json::from_slice::<Event>(line).map_err(|e| e.to_string()))
        .collect())
}

fn split_msgpack(body: &[u8], max: usize) -> Result<Vec<Item>, SplitError> {
    let mut rest = body;
    let len = rmp::decode::read_array_len(&mut rest).map_err(|e| {
        SplitError::NotAnArray(format!("a msgpack body must be one array of events: {e}"))
    })?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(SplitError::TooMany { count: len as u64 });
    }
    let mut items = Vec::with_capacity(len);
    for index in 0..len {
        let Some(size) = value_len(rest) else {
            let reason = format!(
                "the msgpack array ends or breaks inside item {index} of {len}: item cannot be delimited"
            );
            items.extend((index..len).map(|_| Err(reason.clone())));
            return Ok(items);
        };
        let (value, tail) = rest.split_at(size);
        rest = tail;
        items.push(rmp_serde::from_slice::<Event>(value).map_err(|e| e.to_string()));
    }
    if !rest.is_empty() {
        return Err(SplitError::NotAnArray(format!(
            "{} bytes follow the msgpack array of {len} events",
            rest.len()
        )));
    }
    Ok(items)
}

/// One event of a batch that was not stored because it is invalid or malformed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rejected {
    pub(crate) index: usize,
    pub(crate) error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<&'static str>,
    pub(crate) message: String,
}

/// What recording a batch did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Outcome {
    pub(crate) accepted: u64,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) dropped: u64,
    /// Where the client resumes after a full queue: the index of the first event not
    /// taken (set only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_from: Option<usize>,
    /// Items that did not decode (a subset of `rejected`; never submitted to the
    /// collector).
    #[serde(skip)]
    pub(crate) malformed: u64,
    /// The collector stopped taking events (shutting down) at this index.
    #[serde(skip)]
    pub(crate) shut_down: bool,
}

/// The name of `rule` on the wire: snake_case, as in `fixtures/events/bad_events.jsonl`.
pub(crate) fn rule_name(rule: &Rule) -> &'static str {
    match rule {
        Rule::NotFinite => "not_finite",
        Rule::OutOfRange { .. } => "out_of_range",
        Rule::Negative { .. } => "negative",
        Rule::Empty => "empty",
        Rule::TooLong { .. } => "too_long",
        Rule::ControlCharacter { .. } => "control_character",
        Rule::TooMany { .. } => "too_many",
        Rule::TooDeep { .. } => "too_deep",
        Rule::OutsideSkewWindow { .. } => "outside_skew_window",
        Rule::Generated => "generated",
    }
}

/// Records `items` in order through [`Collector::record`]. Stops at the first event
/// the full queue refuses (`retry_from`), or when the collector shuts down.
pub(crate) fn record(collector: &Collector, items: Vec<Item>) -> Outcome {
    let mut out = Outcome::default();
    for (index, item) in items.into_iter().enumerate() {
        let event = match item {
            Ok(event) => event,
            Err(message) => {
                out.malformed += 1;
                out.rejected.push(Rejected {
                    index,
                    error: "malformed",
                    field: None,
                    rule: None,
                    message: format!("event {index} does not decode: {message}"),
                });
                continue;
            }
        };
        match collector.record(event) {
            Ok(()) => out.accepted += 1,
            Err(RecordError::Invalid(e)) => out.rejected.push(Rejected {
                index,
                error: "invalid",
                field: Some(e.field().to_owned()),
                rule: Some(rule_name(e.rule())),
                message: format!("event {index}: {e}"),
            }),
            Err(RecordError::QueueFull | RecordError::Timeout(_)) => {
                out.dropped += 1;
                out.retry_from = Some(index);
                return out;
            }
            Err(RecordError::ShutDown) => {
                out.dropped += 1;
                out.shut_down = true;
                return out;
            }
            // Paused or disabled: counted by the collector, and so here.
            Err(_) => out.dropped += 1,
        }
    }
    out
}

/// How long an ingest request waits for its events to be synced.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn mp<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    #[test]
    fn ndjson_lines_decode_alone() {
        let body = b"{\"type\":\"thinking_budget_used\",\"task_id\":\"t\",\"tokens_used\":1,\"tokens_allocated\":2}\n\nnot json\r\n{\"type\":\"nope\"}\n";
        let items = split(body, Encoding::Ndjson, 10).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        assert!(items[2].is_err());
        assert!(matches!(
            split(body, Encoding::Ndjson, 2),
            Err(SplitError::TooMany { count: 3 })
        ));
    }

    #[test]
    fn msgpack_items_decode_alone() {
        let good = serde_json::json!({"type":"thinking_budget_used","task_id":"t","tokens_used":1,"tokens_allocated":2});
        let bad = serde_json::json!({"type":"thinking_budget_used","task_id":7});
        let body = mp(&vec![good.clone(), bad, good]);
        let items = split(&body, Encoding::Msgpack, 10).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
        let cut = &body[..body.len() - 3];
        let items = split(cut, Encoding::Msgpack, 10).unwrap();
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_err());
        assert!(matches!(
            split(b"\x01", Encoding::Msgpack, 10),
            Err(SplitError::NotAnArray(_))
        ));
    }
}
