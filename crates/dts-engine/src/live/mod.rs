//! Live logs: the output of items while they run (`dts logs`,
//! `GET /v1/tasks/{id}/items/{index}/log`).
//!
//! The worker side is a [`LiveRegistry`]: every running item's output is
//! also copied into a bounded [`Ring`] (`executor.live-log-bytes`), and each
//! chunk is handed on only when someone watches — to followers in this
//! process, or to a [`Relay`] that publishes to the store for followers in
//! other processes. The reading side is [`LiveLogs`]: the registry itself
//! in embedded mode, where the API and the worker share a process, and
//! [`redis::RedisLiveLogs`] in distributed mode (docs/design-notes.md, "Live
//! logs").
//!
//! Every chunk carries its offset in the item run's whole output, so a
//! reader that gets a ring's tail and then new chunks (or a tail published
//! twice) drops exactly the bytes it has already seen ([`Seen`]).

pub mod redis;
mod ring;

pub use ring::{Ring, TailChunk};

use async_trait::async_trait;
use dts_executor::{OutputStream, OutputTap};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};

/// How many pieces a local follower may fall behind before it skips some.
const FOLLOW_BACKLOG: usize = 4096;

/// What a follower of a task receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// Output of item `index`, in order.
    Log {
        /// The item's index in the task's input list.
        index: u64,
        /// Which stream.
        stream: OutputStream,
        /// The bytes, exactly as written (the API shows them as lossy UTF-8).
        bytes: Vec<u8>,
    },
    /// Item `index` ended: it writes nothing more (its result is recorded
    /// soon after).
    End {
        /// The item's index.
        index: u64,
    },
}

/// What one running item's live log said, as the registry and the relay
/// pass it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The task.
    pub task: Arc<str>,
    /// This run of the item, unique within its worker (a retried item
    /// starts a new run).
    pub run: u64,
    /// The item's index.
    pub index: u64,
    /// Where `bytes` start in the run's whole output.
    pub offset: u64,
    /// Output, or the end of the run.
    pub kind: PieceKind,
}

/// Output or the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceKind {
    /// Bytes of one stream.
    Output(OutputStream, Vec<u8>),
    /// The run ended.
    End,
}

/// Why live logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveLogError {
    /// The store (Redis, in distributed mode) failed.
    #[error("could not read live logs: {0}")]
    Store(#[from] dts_store::StoreError),
}

/// Reads the live logs of running items, wherever they run.
#[async_trait]
pub trait LiveLogs: Send + Sync + 'static {
    /// The buffered tail of item `index` of `task` while it runs, or `None`
    /// when no running item by that index is known (not started, ended, or,
    /// in distributed mode, not seen within a short wait).
    async fn tail(&self, task: &str, index: u64) -> Result<Option<Vec<TailChunk>>, LiveLogError> {
        Ok(self
            .tails(task)
            .await?
            .into_iter()
            .find(|(at, _)| *at == index)
            .map(|(_, tail)| tail))
    }

    /// The buffered tails of every running item of `task` known, by index
    /// (ascending).
    async fn tails(&self, task: &str) -> Result<Vec<(u64, Vec<TailChunk>)>, LiveLogError>;

    /// Every item of `task` from now on: the tails of the running ones
    /// first, then each chunk as it is written, and an [`LogEvent::End`]
    /// per item that ends; items that start later included. Events flow
    /// until the receiver is dropped (the caller decides when the task has
    /// ended). A follower that falls far behind skips chunks rather than
    /// slowing items down.
    async fn follow(&self, task: &str) -> Result<mpsc::Receiver<LogEvent>, LiveLogError>;
}

/// A shared [`LiveLogs`].
pub type DynLiveLogs = Arc<dyn LiveLogs>;

/// Hands pieces on to another process (through the store). The worker's
/// registry asks it, per task, whether anyone watches; it must answer from
/// memory, since it is asked on every item start.
pub trait Relay: Send + Sync + 'static {
    /// Whether a follower watches `task` (as last checked).
    fn watched(&self, task: &str) -> bool;
    /// Publishes `piece`; never blocks (drops it when far behind).
    fn send(&self, piece: Piece);
}

/// The live logs of the items running in this process.
///
/// Cheap to clone (clones share everything). With a cap of 0 it is off:
/// items get no tap at all.
#[derive(Clone)]
pub struct LiveRegistry {
    inner: Arc<Registry>,
}

/// One task's running items here, by run.
type Runs = HashMap<u64, Arc<ItemLog>>;

struct Registry {
    cap: usize,
    /// Running items by task, then by run.
    items: Mutex<HashMap<Arc<str>, Runs>>,
    next_run: AtomicU64,
    /// Local followers: pieces are broadcast only while there is one.
    followers: AtomicUsize,
    events: broadcast::Sender<Piece>,
    relay: Mutex<Option<Arc<dyn Relay>>>,
}

impl std::fmt::Debug for LiveRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRegistry")
            .field("cap", &self.inner.cap)
            .finish_non_exhaustive()
    }
}

impl Default for LiveRegistry {
    fn default() -> Self {
        LiveRegistry::new(0)
    }
}

/// One running item's live log: the tap the executor writes to.
pub struct ItemLog {
    task: Arc<str>,
    index: u64,
    run: u64,
    state: Mutex<ItemState>,
    registry: Arc<Registry>,
}

struct ItemState {
    ring: Ring,
    /// Its pieces go to the relay (its task is watched from elsewhere).
    relayed: bool,
}

impl LiveRegistry {
    /// A registry keeping `cap` bytes per running item (0: off).
    pub fn new(cap: usize) -> LiveRegistry {
        LiveRegistry {
            inner: Arc::new(Registry {
                cap,
                items: Mutex::new(HashMap::new()),
                next_run: AtomicU64::new(1),
                followers: AtomicUsize::new(0),
                events: broadcast::channel(FOLLOW_BACKLOG).0,
                relay: Mutex::new(None),
            }),
        }
    }

    /// Also hand pieces of watched tasks to `relay` (distributed mode).
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        *lock(&self.inner.relay) = Some(relay);
    }

    /// The bytes kept per running item.
    pub fn cap(&self) -> usize {
        self.inner.cap
    }

    /// Item `index` of `task` starts: its live log, to pass to the executor
    /// as its tap, or `None` when live logs are off. The item's log ends
    /// when the returned handle is dropped.
    pub fn start(&self, task: &str, index: u64) -> Option<ItemLogGuard> {
        if self.inner.cap == 0 {
            return None;
        }
        let relay = lock(&self.inner.relay).clone();
        let relayed = relay.is_some_and(|relay| relay.watched(task));
        let mut items = lock(&self.inner.items);
        let task: Arc<str> = match items.get_key_value(task) {
            Some((key, _)) => key.clone(),
            None => Arc::from(task),
        };
        let item = Arc::new(ItemLog {
            task: task.clone(),
            index,
            run: self.inner.next_run.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(ItemState {
                // Grows with what the item writes, up to the cap.
                ring: Ring::new(self.inner.cap),
                relayed,
            }),
            registry: self.inner.clone(),
        });
        items
            .entry(task)
            .or_default()
            .insert(item.run, item.clone());
        Some(ItemLogGuard(item))
    }

    /// Tasks with items running here now.
    pub fn running_tasks(&self) -> Vec<Arc<str>> {
        lock(&self.inner.items).keys().cloned().collect()
    }

    /// Starts or stops relaying `task`'s items. Starting publishes each
    /// running item's tail first, under the item's lock, so the relay gets
    /// every byte once from then on.
    pub fn set_relayed(&self, task: &str, on: bool) {
        let Some(relay) = lock(&self.inner.relay).clone() else {
            return;
        };
        for item in self.items_of(task) {
            let mut state = lock(&item.state);
            if on && !state.relayed {
                for chunk in state.ring.tail() {
                    relay.send(
                        item.piece(chunk.offset, PieceKind::Output(chunk.stream, chunk.bytes)),
                    );
                }
            }
            state.relayed = on;
        }
    }

    fn items_of(&self, task: &str) -> Vec<Arc<ItemLog>> {
        lock(&self.inner.items)
            .get(task)
            .map(|items| items.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Keeps an item's live log open; dropping it ends the log.
pub struct ItemLogGuard(Arc<ItemLog>);

impl ItemLogGuard {
    /// The tap to hand the executor.
    pub fn tap(&self) -> &dyn OutputTap {
        &*self.0
    }
}

impl Drop for ItemLogGuard {
    fn drop(&mut self) {
        let item = &self.0;
        let registry = &item.registry;
        {
            let mut items = lock(&registry.items);
            if let Some(runs) = items.get_mut(&item.task) {
                runs.remove(&item.run);
                if runs.is_empty() {
                    items.remove(&item.task);
                }
            }
        }
        let state = lock(&item.state);
        let end = item.piece(state.ring.written(), PieceKind::End);
        item.hand_on(&state, end);
    }
}

impl ItemLog {
    fn piece(&self, offset: u64, kind: PieceKind) -> Piece {
        Piece {
            task: self.task.clone(),
            run: self.run,
            index: self.index,
            offset,
            kind,
        }
    }

    /// Gives `piece` to local followers and the relay, if there are any.
    fn hand_on(&self, state: &ItemState, piece: Piece) {
        if state.relayed {
            if let Some(relay) = lock(&self.registry.relay).as_ref() {
                relay.send(piece.clone());
            }
        }
        if self.registry.followers.load(Ordering::Relaxed) > 0 {
            // No receiver left is not an error: the follower just went.
            let _ = self.registry.events.send(piece);
        }
    }
}

impl OutputTap for ItemLog {
    fn write(&self, stream: OutputStream, bytes: &[u8]) {
        let mut state = lock(&self.state);
        let offset = state.ring.push(stream, bytes);
        if state.relayed || self.registry.followers.load(Ordering::Relaxed) > 0 {
            let piece = self.piece(offset, PieceKind::Output(stream, bytes.to_vec()));
            self.hand_on(&state, piece);
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere: every critical section
/// here leaves its data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts a local follower for as long as it lives.
struct Following(Arc<Registry>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl LiveLogs for LiveRegistry {
    async fn tails(&self, task: &str) -> Result<Vec<(u64, Vec<TailChunk>)>, LiveLogError> {
        // The newest run of each item (a retry is a new run).
        let mut newest: std::collections::BTreeMap<u64, Arc<ItemLog>> = Default::default();
        for item in self.items_of(task) {
            let slot = newest.entry(item.index).or_insert_with(|| item.clone());
            if item.run > slot.run {
                *slot = item;
            }
        }
        Ok(newest
            .into_iter()
            .map(|(index, item)| (index, lock(&item.state).ring.tail()))
            .collect())
    }

    async fn follow(&self, task: &str) -> Result<mpsc::Receiver<LogEvent>, LiveLogError> {
        self.inner.followers.fetch_add(1, Ordering::Relaxed);
        let following = Following(self.inner.clone());
        let mut pieces = self.inner.events.subscribe();
        // Subscribed first, then the tails: a chunk written in between is
        // in both, and `Seen` drops the second copy.
        let mut first = Vec::new();
        for item in self.items_of(task) {
            for chunk in lock(&item.state).ring.tail() {
                first.push(item.piece(chunk.offset, PieceKind::Output(chunk.stream, chunk.bytes)));
            }
        }
        let (events, receiver) = mpsc::channel(256);
        let task: Arc<str> = Arc::from(task);
        tokio::spawn(async move {
            let _following = following;
            let mut seen = Seen::default();
            for piece in first {
                if let Some(event) = seen.admit("", &piece) {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
            // ends: when the follower drops its receiver or the registry goes.
            loop {
                let piece = tokio::select! {
                    _ = events.closed() => return,
                    piece = pieces.recv() => piece,
                };
                let piece = match piece {
                    Ok(piece) => piece,
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::debug!(
                            skipped,
                            "a live log follower fell behind; skipping chunks"
                        );
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if piece.task != task {
                    continue;
                }
                if let Some(event) = seen.admit("", &piece) {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }
}

/// Per run of an item, how far its output has been passed on: what makes
/// overlapping tails and chunks come out once.
#[derive(Debug, Default)]
pub struct Seen {
    /// (worker, run) → offset just past the last byte passed on.
    until: HashMap<(String, u64), u64>,
}

impl Seen {
    /// The event for `piece` from `worker`, without bytes already passed
    /// on; `None` when nothing of it is new.
    pub fn admit(&mut self, worker: &str, piece: &Piece) -> Option<LogEvent> {
        let key = (worker.to_owned(), piece.run);
        let until = self.until.get(&key).copied().unwrap_or(0);
        match &piece.kind {
            PieceKind::End => {
                self.until.insert(key, u64::MAX);
                (until != u64::MAX).then_some(LogEvent::End { index: piece.index })
            }
            PieceKind::Output(stream, bytes) => {
                let end = piece.offset + bytes.len() as u64;
                if end <= until {
                    return None;
                }
                let skip = until.saturating_sub(piece.offset) as usize;
                self.until.insert(key, end);
                Some(LogEvent::Log {
                    index: piece.index,
                    stream: *stream,
                    bytes: bytes[skip..].to_vec(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutputStream::{Stderr, Stdout};
    use std::time::Duration;

    fn log(index: u64, stream: OutputStream, bytes: &[u8]) -> LogEvent {
        LogEvent::Log {
            index,
            stream,
            bytes: bytes.to_vec(),
        }
    }

    async fn next(receiver: &mut mpsc::Receiver<LogEvent>) -> Option<LogEvent> {
        tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("a live log event within 5 s")
    }

    #[test]
    fn an_off_registry_gives_items_no_tap() {
        assert!(LiveRegistry::new(0).start("t", 0).is_none());
    }

    #[tokio::test]
    async fn the_tail_of_a_running_item_is_its_last_bytes_and_goes_when_it_ends() {
        let registry = LiveRegistry::new(4);
        let item = registry.start("t", 7).unwrap();
        item.tap().write(Stdout, b"hello");
        assert_eq!(
            registry.tail("t", 7).await.unwrap(),
            Some(vec![TailChunk {
                stream: Stdout,
                offset: 1,
                bytes: b"ello".to_vec()
            }])
        );
        assert_eq!(registry.tail("t", 8).await.unwrap(), None);
        drop(item);
        assert_eq!(registry.tail("t", 7).await.unwrap(), None);
        assert_eq!(registry.running_tasks(), Vec::<Arc<str>>::new());
    }

    #[tokio::test]
    async fn a_follower_gets_the_tails_then_new_chunks_then_the_end_of_its_task_only() {
        let registry = LiveRegistry::new(100);
        let a = registry.start("t", 0).unwrap();
        let other = registry.start("u", 0).unwrap();
        a.tap().write(Stdout, b"one\n");
        let mut follower = registry.follow("t").await.unwrap();
        other.tap().write(Stdout, b"not ours\n");
        a.tap().write(Stderr, b"two\n");
        let b = registry.start("t", 1).unwrap();
        b.tap().write(Stdout, b"b\n");
        drop(a);
        assert_eq!(next(&mut follower).await, Some(log(0, Stdout, b"one\n")));
        assert_eq!(next(&mut follower).await, Some(log(0, Stderr, b"two\n")));
        assert_eq!(next(&mut follower).await, Some(log(1, Stdout, b"b\n")));
        assert_eq!(next(&mut follower).await, Some(LogEvent::End { index: 0 }));
    }

    #[tokio::test]
    async fn nothing_is_broadcast_while_nobody_follows() {
        let registry = LiveRegistry::new(100);
        let mut spy = registry.inner.events.subscribe();
        let a = registry.start("t", 0).unwrap();
        a.tap().write(Stdout, b"x");
        drop(a);
        assert!(matches!(
            spy.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
    }

    #[test]
    fn seen_drops_bytes_already_passed_on_and_a_second_end() {
        let mut seen = Seen::default();
        let piece = |offset, bytes: &[u8]| Piece {
            task: Arc::from("t"),
            run: 1,
            index: 3,
            offset,
            kind: PieceKind::Output(Stdout, bytes.to_vec()),
        };
        assert_eq!(
            seen.admit("w", &piece(0, b"abcd")),
            Some(log(3, Stdout, b"abcd"))
        );
        assert_eq!(
            seen.admit("w", &piece(2, b"cdef")),
            Some(log(3, Stdout, b"ef"))
        );
        assert_eq!(seen.admit("w", &piece(0, b"abcdef")), None);
        assert_eq!(
            seen.admit("v", &piece(0, b"ab")),
            Some(log(3, Stdout, b"ab"))
        );
        let end = Piece {
            kind: PieceKind::End,
            ..piece(6, b"")
        };
        assert_eq!(seen.admit("w", &end), Some(LogEvent::End { index: 3 }));
        assert_eq!(seen.admit("w", &end), None);
    }
}
