//! Live logs in distributed mode, through Redis (docs/design-notes.md,
//! "Live logs").
//!
//! A server that is asked for a task's live log marks the task watched
//! (`P:live:{id}:watch`, [`WATCH_TTL`]) and reads the task's live stream.
//! Each worker's [`RedisRelay`] checks, once per [`CHECK_EVERY`] and only
//! while items run on it, which of its running tasks are watched; for a
//! watched task it publishes each running item's tail and then every chunk
//! (`XADD`, capped at [`MAX_ENTRIES`], expiring [`STREAM_TTL`] after the
//! last write). An unwatched task costs Redis nothing but that check.

use super::Ring;
use super::{
    LiveLogError, LiveLogs, LiveRegistry, LogEvent, Piece, PieceKind, Relay, Seen, TailChunk,
};
use async_trait::async_trait;
use dts_executor::OutputStream;
use dts_store::redis::{LiveEntry, RedisStore};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a follow request keeps a task watched; a follower refreshes
/// it every third of this.
pub const WATCH_TTL: Duration = Duration::from_secs(10);
/// How often a worker with running items checks which tasks are watched.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// About how many entries a task's live stream keeps.
pub const MAX_ENTRIES: usize = 1000;
/// How long a task's live stream stays after its last write.
pub const STREAM_TTL: Duration = Duration::from_secs(60);
/// Pieces waiting to be published before more are dropped.
const BACKLOG: usize = 4096;
/// How often a follower reads the stream when it found nothing new.
const READ_EVERY: Duration = Duration::from_millis(200);
/// How long after a new watch every worker has published its tails.
const FIRST_PUBLISH: Duration = Duration::from_millis(1500);
/// How long a tail request waits for a worker to publish the item's tail
/// (its next check, plus a round trip).
const TAIL_WAIT: Duration = Duration::from_millis(2500);

/// A worker's publisher: pieces of watched tasks go to Redis.
pub struct RedisRelay {
    watched: Mutex<HashSet<Arc<str>>>,
    pieces: mpsc::Sender<Piece>,
}

impl RedisRelay {
    /// Connects `registry` to Redis through `store` for worker `worker`,
    /// until `stop`: one task publishes pieces, another checks every
    /// [`CHECK_EVERY`] which running tasks are watched.
    pub fn start(
        registry: &LiveRegistry,
        store: RedisStore,
        worker: String,
        stop: CancellationToken,
    ) -> Arc<RedisRelay> {
        let (pieces, receiver) = mpsc::channel(BACKLOG);
        let relay = Arc::new(RedisRelay {
            watched: Mutex::new(HashSet::new()),
            pieces,
        });
        registry.set_relay(relay.clone());
        tokio::spawn(publish(store.clone(), worker, receiver, stop.clone()));
        tokio::spawn(check_watches(registry.clone(), relay.clone(), store, stop));
        relay
    }
}

impl Relay for RedisRelay {
    fn watched(&self, task: &str) -> bool {
        super::lock(&self.watched).contains(task)
    }

    fn send(&self, piece: Piece) {
        if self.pieces.try_send(piece).is_err() {
            tracing::debug!("live log relay behind; dropping a chunk");
        }
    }
}

/// Publishes pieces as they come, batched by what is waiting.
async fn publish(
    store: RedisStore,
    worker: String,
    mut pieces: mpsc::Receiver<Piece>,
    stop: CancellationToken,
) {
    // ends: when the worker stops or every sender is gone.
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            piece = pieces.recv() => match piece { Some(piece) => piece, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match pieces.try_recv() {
                Ok(piece) => batch.push(piece),
                Err(_) => break,
            }
        }
        let mut start = 0;
        while start < batch.len() {
            let task = batch[start].task.clone();
            let end = batch[start..]
                .iter()
                .position(|piece| piece.task != task)
                .map_or(batch.len(), |n| start + n);
            let entries: Vec<LiveEntry> = batch[start..end]
                .iter()
                .map(|piece| entry(&worker, piece))
                .collect();
            if let Err(e) = store
                .live_append(&task, &entries, MAX_ENTRIES, STREAM_TTL)
                .await
            {
                tracing::debug!(task = %task, error = %crate::with_causes(&e), "could not publish a live log");
            }
            start = end;
        }
    }
}

/// Every [`CHECK_EVERY`], while items run here, asks Redis which of their
/// tasks are watched and starts or stops relaying them.
async fn check_watches(
    registry: LiveRegistry,
    relay: Arc<RedisRelay>,
    store: RedisStore,
    stop: CancellationToken,
) {
    // ends: when the worker stops.
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let running = registry.running_tasks();
        let names: Vec<&str> = running.iter().map(|task| &**task).collect();
        let watched = match store.live_watched(&names).await {
            Ok(watched) => watched,
            Err(e) => {
                tracing::debug!(error = %crate::with_causes(&e), "could not check live log watches");
                continue;
            }
        };
        let now: HashSet<Arc<str>> = running
            .iter()
            .zip(watched)
            .filter(|(_, watched)| *watched)
            .map(|(task, _)| task.clone())
            .collect();
        let before = std::mem::replace(&mut *super::lock(&relay.watched), now.clone());
        for task in now.difference(&before) {
            registry.set_relayed(task, true);
        }
        for task in before.difference(&now) {
            registry.set_relayed(task, false);
        }
    }
}

fn entry(worker: &str, piece: &Piece) -> LiveEntry {
    let (kind, bytes) = match &piece.kind {
        PieceKind::Output(OutputStream::Stdout, bytes) => (b'o', bytes.clone()),
        PieceKind::Output(OutputStream::Stderr, bytes) => (b'e', bytes.clone()),
        PieceKind::End => (b'x', Vec::new()),
    };
    LiveEntry {
        worker: worker.to_owned(),
        run: piece.run,
        index: piece.index,
        offset: piece.offset,
        kind,
        bytes,
    }
}

fn piece(task: &Arc<str>, entry: LiveEntry) -> (String, Piece) {
    let kind = match entry.kind {
        b'o' => PieceKind::Output(OutputStream::Stdout, entry.bytes),
        b'e' => PieceKind::Output(OutputStream::Stderr, entry.bytes),
        _ => PieceKind::End,
    };
    (
        entry.worker,
        Piece {
            task: task.clone(),
            run: entry.run,
            index: entry.index,
            offset: entry.offset,
            kind,
        },
    )
}

/// A server's reader of the live logs workers publish to Redis.
#[derive(Clone)]
pub struct RedisLiveLogs {
    store: RedisStore,
    /// The tail a request gets is cut to this many bytes, as a worker's
    /// own ring would be.
    cap: usize,
}

impl RedisLiveLogs {
    /// Reads through `store`, with tails of at most `cap` bytes.
    pub fn new(store: RedisStore, cap: usize) -> RedisLiveLogs {
        RedisLiveLogs { store, cap }
    }
}

#[async_trait]
impl LiveLogs for RedisLiveLogs {
    async fn tails(&self, task: &str) -> Result<Vec<(u64, Vec<TailChunk>)>, LiveLogError> {
        let watched = self.store.live_watch(task, WATCH_TTL).await?;
        let name: Arc<str> = Arc::from(task);
        let deadline = Instant::now() + TAIL_WAIT;
        // A new watch: workers publish their running items' tails at their
        // next check, so what the stream holds before that may be stale.
        let settled = Instant::now()
            + if watched {
                Duration::ZERO
            } else {
                FIRST_PUBLISH
            };
        let mut after: Option<String> = None;
        // Per item, its newest run seen: (worker, run), its tail, ended.
        let mut items: BTreeMap<u64, ((String, u64), Ring, bool)> = BTreeMap::new();
        // ends: at the deadline, or once the stream has been read to its end
        // after something was found.
        loop {
            let entries = self.store.live_read(task, after.as_deref(), 1000).await?;
            let found = !entries.is_empty();
            for (id, entry) in entries {
                after = Some(id);
                let index = entry.index;
                let (worker, piece) = piece(&name, entry);
                let key = (worker, piece.run);
                let item = items
                    .entry(index)
                    .or_insert_with(|| (key.clone(), Ring::new(self.cap), false));
                if item.0 != key {
                    *item = (key, Ring::new(self.cap), false);
                }
                match piece.kind {
                    PieceKind::Output(stream, bytes) => {
                        // A tail published again overlaps what is held.
                        let skip = item.1.written().saturating_sub(piece.offset) as usize;
                        if skip < bytes.len() {
                            item.1.push(stream, &bytes[skip..]);
                        }
                    }
                    PieceKind::End => item.2 = true,
                }
            }
            let now = Instant::now();
            let done = (!items.is_empty() && !found && now >= settled) || now >= deadline;
            if done {
                return Ok(items
                    .into_iter()
                    .filter(|(_, (_, _, ended))| !ended)
                    .map(|(index, (_, ring, _))| (index, ring.tail()))
                    .collect());
            }
            if !found {
                tokio::time::sleep(READ_EVERY).await;
            }
        }
    }

    async fn follow(&self, task: &str) -> Result<mpsc::Receiver<LogEvent>, LiveLogError> {
        self.store.live_watch(task, WATCH_TTL).await?;
        let (events, receiver) = mpsc::channel(256);
        let store = self.store.clone();
        let name: Arc<str> = Arc::from(task);
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut after: Option<String> = None;
            let mut watched_at = Instant::now();
            // ends: when the follower drops its receiver.
            loop {
                if watched_at.elapsed() >= WATCH_TTL / 3 {
                    if let Err(e) = store.live_watch(&name, WATCH_TTL).await {
                        tracing::debug!(error = %crate::with_causes(&e), "could not keep a live log watched");
                    }
                    watched_at = Instant::now();
                }
                let entries = match store.live_read(&name, after.as_deref(), 500).await {
                    Ok(entries) => entries,
                    Err(e) => {
                        tracing::debug!(error = %crate::with_causes(&e), "could not read a live log");
                        Vec::new()
                    }
                };
                let idle = entries.is_empty();
                for (id, entry) in entries {
                    after = Some(id);
                    let (worker, piece) = piece(&name, entry);
                    if let Some(event) = seen.admit(&worker, &piece) {
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                if idle {
                    tokio::select! {
                        _ = events.closed() => return,
                        _ = tokio::time::sleep(READ_EVERY) => {}
                    }
                }
            }
        });
        Ok(receiver)
    }
}
