//! `dts up`: the whole system on one machine — API, scheduler consumers and
//! a local worker over the embedded bus and a SQLite store, served over
//! HTTP.

use crate::NodeError;
use crate::data_dir::{self, DataDirLock};
use crate::embedded::{EmbeddedNode, Role};
use crate::node::{self, Api};
use crate::wiring::Inherited;
use dts_config::Settings;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A started `dts up`: its API is bound, its engine runs; [`UpNode::run`]
/// serves requests until [`UpNode::shutdown_token`] is cancelled.
pub struct UpNode {
    engine: EmbeddedNode,
    api: Api,
    _lock: Option<DataDirLock>,
}

impl UpNode {
    /// Checks the API's exposure, opens the store (`store.*`), starts the
    /// engine and binds the API. `inherited` is what items get back of the
    /// process's start-up state.
    pub async fn start(settings: &Settings, inherited: Inherited) -> Result<UpNode, NodeError> {
        node::check_exposure(settings)?;
        let (store, lock) = data_dir::open_store(settings).await?;
        let engine = EmbeddedNode::start(settings, store, Role::Up, inherited).await?;
        info!(worker = %engine.worker_id(), "dts up: API, scheduler and worker running");
        let state = node::app_state(
            settings,
            engine.store.clone(),
            engine.submitter.clone(),
            std::sync::Arc::new(engine.live_logs.clone()),
        );
        match Api::bind(settings, state).await {
            Ok(api) => Ok(UpNode {
                engine,
                api,
                _lock: lock,
            }),
            Err(e) => {
                engine.stop().await;
                Err(e)
            }
        }
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.api.local_addr()
    }

    /// The id of the local worker.
    pub fn worker_id(&self) -> &str {
        self.engine.worker_id()
    }

    /// Cancel it to stop the node: no new requests, running items may
    /// finish within `worker.drain-grace`.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.engine.shutdown.clone()
    }

    /// Serves the API until the node is told to stop (or serving fails),
    /// then stops every part and releases the data directory.
    pub async fn run(self) -> Result<(), NodeError> {
        let served = self.api.serve(self.engine.shutdown.clone()).await;
        self.engine.stop().await;
        info!("dts stopped");
        served
    }
}
