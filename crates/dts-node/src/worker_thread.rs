//! Running a [`Worker`] on a runtime of its own: one thread that spawns the
//! items' processes and watches their pipes and exits.
//!
//! Measured on W1 (5,000 `echo` items on 2 cores): sharing the node's
//! multi-threaded runtime cost 7 context switches and ~1 CPU migration per
//! item and left the cores idle between items (0.82× xargs); on one thread of
//! its own the worker reaches 0.9×. The API and scheduler keep the
//! multi-threaded runtime.

use anyhow::{Context, Result, anyhow};
use dts_engine::worker::Worker;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A worker running on its own thread.
pub struct WorkerThread {
    pub id: String,
    done: oneshot::Receiver<()>,
}

impl WorkerThread {
    /// Starts `worker` (its first heartbeat and subscription) on a new
    /// thread and returns once it is running; it stops with `shutdown`.
    pub async fn start(worker: Worker, shutdown: CancellationToken) -> Result<WorkerThread> {
        let id = worker.id().to_string();
        let (started_tx, started_rx) = oneshot::channel::<Result<()>>();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("dts-worker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx
                            .send(Err(anyhow!(e).context("cannot start the worker's runtime")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let tracker = TaskTracker::new();
                    let started = worker
                        .start(&tracker, shutdown)
                        .await
                        .map_err(anyhow::Error::from);
                    let ok = started.is_ok();
                    let _ = started_tx.send(started);
                    if ok {
                        tracker.close();
                        tracker.wait().await;
                    }
                });
                let _ = done_tx.send(());
            })
            .context("cannot start the worker's thread")?;
        started_rx
            .await
            .context("the worker's thread ended before starting")??;
        Ok(WorkerThread { id, done: done_rx })
    }

    /// Waits until the worker has stopped (after its shutdown token fired).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}
