//! Start-up recovery for embedded mode.
//!
//! The embedded bus lives in memory, so a `dts up` killed with SIGKILL loses
//! every message in flight. The store does not: on start-up every task that
//! has not ended is published to the task topic again. Planning is idempotent
//! (an existing plan is reused, its unfinished shards still ready or
//! claimable in the store) and workers skip items that already have a result, so this
//! finishes every task without running or counting anything twice.

use crate::EngineError;
use crate::submit::Submitter;
use dts_store::DynStore;
use tracing::info;

/// Republishes every unfinished task. Returns how many.
pub async fn republish_unfinished(
    store: &DynStore,
    submitter: &Submitter,
) -> Result<usize, EngineError> {
    let ids = store.unfinished_task_ids().await?;
    if !ids.is_empty() {
        info!(tasks = ids.len(), "resuming unfinished tasks");
    }
    for id in &ids {
        submitter.publish_with_retries(id).await;
    }
    Ok(ids.len())
}
