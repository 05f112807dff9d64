//! Live logs through Redis: the few raw operations the engine's
//! `live::redis` builds distributed live logs on (docs/design-notes.md,
//! "Live logs"). Nothing here is written unless a follower watches.
//!
//! - `P:live:{id}:watch` (string, short TTL): a follower of task `id` is
//!   there; set by the server on every follow request and refreshed while
//!   it streams.
//! - `P:live:{id}` (stream, capped, TTL refreshed on each write): the
//!   chunks workers published while the task was watched.

use super::RedisStore;
use crate::{StoreError, StoreResult};
use std::time::Duration;

/// What one stream entry says: a chunk of an item's output, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    /// The worker that ran the item.
    pub worker: String,
    /// The worker's number for this run of the item.
    pub run: u64,
    /// The item's index.
    pub index: u64,
    /// Where `bytes` start in the run's output.
    pub offset: u64,
    /// `o` stdout, `e` stderr, `x` the run ended.
    pub kind: u8,
    /// The output (empty for an end).
    pub bytes: Vec<u8>,
}

/// A raw stream entry: its id and its field/value pairs, flattened.
type RawEntry = (String, Vec<Vec<u8>>);

impl RedisStore {
    /// Marks task `id` as watched for `ttl`; true when it already was
    /// (workers are publishing it), false when this starts the watch.
    pub async fn live_watch(&self, id: &str, ttl: Duration) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let before: Option<String> = self
            .run(
                &format!("mark the live log of task {id} as watched"),
                ::redis::cmd("SET")
                    .arg(self.keys.live_watch(id))
                    .arg(1)
                    .arg("PX")
                    .arg(crate::lease_millis(ttl))
                    .arg("GET")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(before.is_some())
    }

    /// Which of `ids` are watched now, in order: one round trip.
    pub async fn live_watched(&self, ids: &[&str]) -> StoreResult<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.exists(self.keys.live_watch(id));
        }
        let mut conn = self.conn.clone();
        self.run(
            "check which live logs are watched",
            pipe.query_async::<Vec<bool>>(&mut conn),
        )
        .await
    }

    /// Appends `entries` to task `id`'s live stream, capped at about
    /// `max_entries`, and keeps the stream for `ttl` after this write.
    pub async fn live_append(
        &self,
        id: &str,
        entries: &[LiveEntry],
        max_entries: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.keys.live(id);
        let mut pipe = ::redis::pipe();
        for entry in entries {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_entries)
                .arg("*")
                .arg("w")
                .arg(&entry.worker)
                .arg("r")
                .arg(entry.run)
                .arg("i")
                .arg(entry.index)
                .arg("o")
                .arg(entry.offset)
                .arg("k")
                .arg(&[entry.kind][..])
                .arg("b")
                .arg(&entry.bytes[..])
                .ignore();
        }
        pipe.pexpire(&key, crate::lease_millis(ttl) as i64).ignore();
        let mut conn = self.conn.clone();
        self.run(
            &format!("publish the live log of task {id}"),
            pipe.query_async::<()>(&mut conn),
        )
        .await
    }

    /// Entries of task `id`'s live stream after entry `after` (from the
    /// start when `None`), at most `count`, each with its id.
    pub async fn live_read(
        &self,
        id: &str,
        after: Option<&str>,
        count: usize,
    ) -> StoreResult<Vec<(String, LiveEntry)>> {
        let start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let mut conn = self.conn.clone();
        let raw: Vec<RawEntry> = self
            .run(
                &format!("read the live log of task {id}"),
                ::redis::cmd("XRANGE")
                    .arg(self.keys.live(id))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        raw.into_iter()
            .map(|(entry_id, fields)| Ok((entry_id, decode(id, &fields)?)))
            .collect()
    }
}

fn decode(id: &str, fields: &[Vec<u8>]) -> StoreResult<LiveEntry> {
    let mut entry = LiveEntry {
        worker: String::new(),
        run: 0,
        index: 0,
        offset: 0,
        kind: 0,
        bytes: Vec::new(),
    };
    let bad = |what: &str| {
        StoreError::corrupt(
            format!("live log of task {id}"),
            format!("an entry has a bad {what}"),
        )
    };
    let number = |value: &[u8], what: &str| {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| bad(what))
    };
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return Err(bad("field list"));
        };
        match name.as_slice() {
            b"w" => entry.worker = String::from_utf8_lossy(value).into_owned(),
            b"r" => entry.run = number(value, "run")?,
            b"i" => entry.index = number(value, "index")?,
            b"o" => entry.offset = number(value, "offset")?,
            b"k" => entry.kind = *value.first().ok_or_else(|| bad("kind"))?,
            b"b" => entry.bytes = value.clone(),
            _ => {}
        }
    }
    Ok(entry)
}
