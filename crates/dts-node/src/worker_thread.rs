//! Running a [`Worker`] on a runtime of its own: one thread that spawns the
//! items' processes and watches their pipes and exits.
//!
//! On the node's multi-threaded runtime, each item's wake-ups hopped between
//! threads (context switches and CPU migrations per item) and the cores sat
//! idle between short items; on one thread of its own the worker starts the
//! next item sooner (BENCHMARKS.md has dts's throughput against xargs). The
//! API and scheduler keep the multi-threaded runtime.

use crate::NodeError;
use dts_engine::worker::Worker;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A worker running on its own thread.
pub struct WorkerThread {
    /// The worker's id, as in its heartbeats and results.
    pub id: String,
    /// The worker itself (clones share it), to ask how many items run or
    /// to kill them.
    pub worker: Worker,
    done: oneshot::Receiver<()>,
}

impl WorkerThread {
    /// Starts `worker` (its first heartbeat and subscription) on a new
    /// thread and returns once it is running; it stops with `shutdown`.
    pub async fn start(
        worker: Worker,
        shutdown: CancellationToken,
    ) -> Result<WorkerThread, NodeError> {
        let id = worker.id().to_string();
        let handle = worker.clone();
        let (started_tx, started_rx) = oneshot::channel::<Result<(), NodeError>>();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("dts-worker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(source) => {
                        let _ = started_tx.send(Err(NodeError::WorkerThread {
                            what: "runtime",
                            source,
                        }));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let tracker = TaskTracker::new();
                    let started =
                        worker
                            .start(&tracker, shutdown)
                            .await
                            .map_err(|source| NodeError::Start {
                                part: "worker",
                                source,
                            });
                    let ok = started.is_ok();
                    let _ = started_tx.send(started);
                    if ok {
                        tracker.close();
                        tracker.wait().await;
                    }
                });
                let _ = done_tx.send(());
            })
            .map_err(|source| NodeError::WorkerThread {
                what: "thread",
                source,
            })?;
        started_rx
            .await
            .map_err(|_| NodeError::WorkerThreadEnded)??;
        Ok(WorkerThread {
            id,
            worker: handle,
            done: done_rx,
        })
    }

    /// Waits until the worker has stopped (after its shutdown token fired).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}
