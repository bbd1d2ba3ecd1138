//! Decoding Redis replies (RESP2 and RESP3 shapes) into stream entries.

use std::collections::HashMap;

use ::redis::Value;
use chrono::{DateTime, Utc};
use dronedelivery_actors::ports::StoreResult;

use crate::adapters::redis::{bad_reply, text};

/// An entry as read: its partition, id, fields, the PEL's delivery counter.
pub(super) struct RawEntry {
    pub(super) partition: u32,
    pub(super) id: String,
    pub(super) fields: HashMap<String, String>,
    pub(super) times_delivered: u64,
}

/// The time part of an entry id (`<ms>-<seq>`).
pub(super) fn entry_time(id: &str) -> Option<DateTime<Utc>> {
    let ms = id.split_once('-')?.0.parse::<i64>().ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// A flat `[field, value, …]` array (or a map) as a field map.
pub(super) fn field_map(v: &Value) -> HashMap<String, String> {
    let mut map = HashMap::new();
    match v {
        Value::Array(items) => {
            for pair in items.chunks_exact(2) {
                if let (Some(k), Some(val)) = (text(&pair[0]), text(&pair[1])) {
                    map.insert(k, val);
                }
            }
        }
        Value::Map(pairs) => {
            for (k, val) in pairs {
                if let (Some(k), Some(val)) = (text(k), text(val)) {
                    map.insert(k, val);
                }
            }
        }
        _ => {}
    }
    map
}

/// The receive script's `{{cursor or '', …}, {{id, fields, n, i}, …}}`:
/// the next cursor of each stream scanned (`None`: not scanned this poll)
/// and the entries, each with its partition (`partitions[i - 1]`).
pub(super) fn parse_poll_reply(
    v: Value,
    partitions: &[u32],
) -> StoreResult<(Vec<Option<String>>, Vec<RawEntry>)> {
    let Value::Array(mut parts) = v else {
        return Err(bad_reply("receive script", &v));
    };
    let entries = match parts.pop() {
        Some(Value::Array(items)) => items,
        Some(Value::Nil) | None => Vec::new(),
        Some(other) => return Err(bad_reply("receive script", &other)),
    };
    let cursors = match parts.pop() {
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| text(c).filter(|c| !c.is_empty()))
            .collect(),
        _ => Vec::new(),
    };
    Ok((cursors, parse_script_entries(&entries, partitions)?))
}

/// The receive script's entries, `{{id, fields, n, i}, …}`.
fn parse_script_entries(items: &[Value], partitions: &[u32]) -> StoreResult<Vec<RawEntry>> {
    let int = |v: &Value| match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other).and_then(|t| t.parse().ok()),
    };
    items
        .iter()
        .map(|item| match item {
            Value::Array(parts) if parts.len() == 4 => {
                let id = text(&parts[0]).ok_or_else(|| bad_reply("entry id", item))?;
                let times_delivered = int(&parts[2]).unwrap_or(1).max(1);
                let partition = int(&parts[3])
                    .and_then(|i| usize::try_from(i).ok()?.checked_sub(1))
                    .and_then(|i| partitions.get(i).copied())
                    .ok_or_else(|| bad_reply("entry stream index", item))?;
                Ok(RawEntry {
                    partition,
                    id,
                    fields: field_map(&parts[1]),
                    times_delivered,
                })
            }
            other => Err(bad_reply("receive script entry", other)),
        })
        .collect()
}

/// `XREADGROUP`'s reply (nil on timeout): `[[stream, [[id, [f, v, …]], …]]]`
/// (RESP2) or `{stream: [[id, [f, v, …]], …]}` (RESP3). First read: the
/// delivery counter is 1. `partition_of` names the partition of a stream
/// key; entries of a stream it does not know are an error.
pub(super) fn parse_read_reply(
    v: Value,
    partition_of: impl Fn(&str) -> Option<u32>,
) -> StoreResult<Vec<RawEntry>> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    Some((kv.pop()?, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs,
        other => return Err(bad_reply("XREADGROUP", &other)),
    };
    let mut out = Vec::new();
    for (name, entries) in streams {
        let partition = text(&name)
            .and_then(|n| partition_of(&n))
            .ok_or_else(|| bad_reply("XREADGROUP stream", &name))?;
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = &entry else {
                return Err(bad_reply("XREADGROUP entry", &entry));
            };
            let (Some(id), Some(fields)) = (parts.first().and_then(text), parts.get(1)) else {
                return Err(bad_reply("XREADGROUP entry", &entry));
            };
            out.push(RawEntry {
                partition,
                id,
                fields: field_map(fields),
                times_delivered: 1,
            });
        }
    }
    Ok(out)
}
