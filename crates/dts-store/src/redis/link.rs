//! [`Link`]: the one connection every Redis call of a [`super::RedisStore`]
//! goes through, either straight to one server or to whichever server the
//! Sentinels name as the primary of a master name.
//!
//! With Sentinel, the primary is found by asking each sentinel in turn
//! (`SENTINEL get-master-addr-by-name`) and then asking the server itself
//! (`ROLE`): a sentinel may answer with the old primary for a moment after a
//! switch, and a server that calls itself a replica would refuse every
//! write. A call that fails because the connection broke, or because the
//! server turned read-only (the old primary came back as a replica), fails
//! as usual (the store makes it [`crate::StoreError::Unavailable`], which
//! callers retry) and drops the connection, so the next call resolves the
//! primary again.
//!
//! A failover on request (`SENTINEL FAILOVER`) leaves the old primary
//! running, and a primary, for a while: its connections keep working, and
//! writes to it would be lost when the sentinels finally turn it into a
//! replica. So a watcher ([`watch`]) asks a sentinel every
//! [`WATCH_INTERVAL`] which server is the primary, and drops the connection
//! when the answer changes.

use ::redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline,
    RedisError, RedisFuture, RedisResult, Value,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Where the primary is and how to reach it.
#[derive(Clone)]
pub(super) enum Link {
    /// One server; the manager reconnects to it in the background.
    Direct(ConnectionManager),
    /// The primary the sentinels name, found again after a failover.
    Sentinel(Arc<Follower>),
}

/// How often the watcher asks a sentinel whether the primary moved: the
/// longest dts keeps writing to a primary the sentinels replaced.
pub(super) const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Follows the primary of one master name through its sentinels.
pub(super) struct Follower {
    /// The master name the sentinels monitor.
    master: String,
    /// `host:port` of each sentinel, asked in this order.
    sentinels: Vec<(String, u16)>,
    /// Password and database of the store URL, used on the primary.
    redis: ::redis::RedisConnectionInfo,
    /// Connection and response timeouts of every connection opened here.
    config: AsyncConnectionConfig,
    /// The current primary's connection; `None` until the next call
    /// resolves it again.
    current: Mutex<Option<Current>>,
    /// Numbers the connections, so an error on an old one does not drop a
    /// newer one.
    generation: std::sync::atomic::AtomicU64,
    /// Serializes resolving, so a failover does not make every call in
    /// flight ask the sentinels at once.
    resolving: tokio::sync::Mutex<()>,
    /// The primary this follower last used, to tell a failover (another
    /// address) from a reconnect to the same server.
    last_primary: Mutex<Option<String>>,
    /// How many times the primary changed since connecting.
    failovers: std::sync::atomic::AtomicU64,
}

impl Follower {
    pub(super) fn new(
        master: String,
        sentinels: Vec<(String, u16)>,
        redis: ::redis::RedisConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> Follower {
        Follower {
            master,
            sentinels,
            redis,
            config,
            current: Mutex::new(None),
            resolving: tokio::sync::Mutex::new(()),
            last_primary: Mutex::new(None),
            failovers: std::sync::atomic::AtomicU64::new(0),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `master via host:port,host:port`, for error messages.
    pub(super) fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect();
        format!("{} via sentinels {}", self.master, nodes.join(","))
    }

    /// How many times dts saw the primary move to another server.
    pub(super) fn failovers(&self) -> u64 {
        self.failovers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connection to the primary, resolving it first if there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.lock_current().as_ref() {
            return Ok((current.generation, current.conn.clone()));
        }
        let _one_at_a_time = self.resolving.lock().await;
        // Another call may have resolved it while this one waited.
        if let Some(current) = self.lock_current().as_ref() {
            return Ok((current.generation, current.conn.clone()));
        }
        let (address, conn) = self.resolve().await?;
        let mut last = self
            .last_primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_ref().is_some_and(|before| *before != address) {
            self.failovers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                master = %self.master,
                from = last.as_deref().unwrap_or_default(),
                to = %address,
                "Redis failed over to a new primary; following it"
            );
        }
        *last = Some(address.clone());
        drop(last);
        let generation = 1 + self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.lock_current() = Some(Current {
            address,
            conn: conn.clone(),
            generation,
        });
        Ok((generation, conn))
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks each sentinel for the primary and returns the first answer the
    /// named server confirms with `ROLE`. The error is the last one seen.
    async fn resolve(&self) -> RedisResult<(String, MultiplexedConnection)> {
        let mut last_error = None;
        for (host, port) in &self.sentinels {
            let primary = match self.ask_sentinel(host, *port).await {
                Ok(Some(primary)) => primary,
                Ok(None) => {
                    last_error = Some(RedisError::from((
                        ErrorKind::MasterDown,
                        "the sentinel does not know the master name",
                        format!("{} at sentinel {host}:{port}", self.master),
                    )));
                    continue;
                }
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            match self.connect_primary(&primary).await {
                Ok(conn) => {
                    let address = format!("{}:{}", primary.0, primary.1);
                    return Ok((address, conn));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((ErrorKind::MasterDown, "no sentinel is configured"))
        }))
    }

    /// `SENTINEL get-master-addr-by-name` at one sentinel: `None` when it
    /// does not monitor the master name.
    async fn ask_sentinel(&self, host: &str, port: u16) -> RedisResult<Option<(String, u16)>> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(host.to_string(), port),
            redis: ::redis::RedisConnectionInfo::default(),
        };
        let mut conn = Client::open(info)?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let reply: Option<(String, u16)> = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await?;
        Ok(reply)
    }

    /// Connects to `primary` with the URL's password and database, and
    /// checks that it is a primary.
    async fn connect_primary(&self, primary: &(String, u16)) -> RedisResult<MultiplexedConnection> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(primary.0.clone(), primary.1),
            redis: self.redis.clone(),
        };
        let mut conn = Client::open(info)?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let role: Vec<Value> = ::redis::cmd("ROLE").query_async(&mut conn).await?;
        match role.first() {
            Some(Value::BulkString(role)) if role.as_slice() == b"master" => Ok(conn),
            _ => Err(RedisError::from((
                ErrorKind::MasterDown,
                "the server the sentinels name as primary is not a primary (yet)",
                format!("{}:{}", primary.0, primary.1),
            ))),
        }
    }

    /// Asks a sentinel (the one `sentinel` is connected to, else the next
    /// in turn) which server is the primary, and drops the connection if it
    /// is another one than in use. Quiet when no sentinel answers: calls
    /// then find out for themselves.
    async fn check(&self, sentinel: &mut Option<MultiplexedConnection>, next: &mut usize) {
        let Some((address, generation)) = self
            .lock_current()
            .as_ref()
            .map(|current| (current.address.clone(), current.generation))
        else {
            return;
        };
        if sentinel.is_none() {
            let (host, port) = &self.sentinels[*next % self.sentinels.len()];
            *next += 1;
            let info = ConnectionInfo {
                addr: ConnectionAddr::Tcp(host.clone(), *port),
                redis: ::redis::RedisConnectionInfo::default(),
            };
            let connecting = async {
                Client::open(info)?
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
            };
            match connecting.await {
                Ok(conn) => *sentinel = Some(conn),
                Err(_) => return,
            }
        }
        let Some(conn) = sentinel.as_mut() else {
            return;
        };
        let named: RedisResult<Option<(String, u16)>> = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(conn)
            .await;
        let named = match named {
            Ok(Some((host, port))) => format!("{host}:{port}"),
            Ok(None) | Err(_) => {
                *sentinel = None;
                return;
            }
        };
        if named != address {
            self.drop_if_current(generation, &address, &named);
            // Connect now rather than on the next call; if that fails, the
            // next call tries again.
            let _ = self.connection().await;
        }
    }

    /// Drops connection `generation` if it is still the one in use.
    fn drop_if_current(&self, generation: u64, address: &str, named: &str) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::info!(
                master = %self.master,
                primary = %address,
                named = %named,
                "the sentinels name another Redis primary; switching to it"
            );
            *current = None;
        }
    }

    /// Drops the connection after an error that says it no longer reaches
    /// a writable primary, so the next call resolves again.
    fn after(&self, generation: u64, error: &RedisError) {
        if !leaves_primary(error) {
            return;
        }
        let mut current = self.lock_current();
        // Only the connection that failed: a newer one may already be there.
        if let Some(failed) = current.as_ref().filter(|c| c.generation == generation) {
            tracing::info!(
                master = %self.master,
                primary = %failed.address,
                error = %error,
                "lost the Redis primary; asking the sentinels again"
            );
            *current = None;
        }
    }
}

/// Starts the watcher of `follower`: it ends when the store (every clone
/// of it) is dropped.
pub(super) fn watch(follower: &Arc<Follower>) {
    let follower = Arc::downgrade(follower);
    tokio::spawn(async move {
        let mut sentinel = None;
        let mut next = 0;
        // ends: when the follower is gone (the upgrade fails).
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let Some(follower) = follower.upgrade() else {
                return;
            };
            follower.check(&mut sentinel, &mut next).await;
        }
    });
}

/// The connection to the primary in use.
struct Current {
    /// `host:port` as the sentinels named it.
    address: String,
    conn: MultiplexedConnection,
    /// Which connection of this follower it is.
    generation: u64,
}

/// Whether `error` means the connection no longer reaches a writable
/// primary: it broke, timed out, or the server became a replica.
fn leaves_primary(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(error.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "NOREPLICAS"))
        // A script's write refused on a replica comes wrapped in a script error.
        || error.to_string().contains("READONLY")
}

impl Link {
    /// The database calls go to, as the redis crate asks.
    fn db(&self) -> i64 {
        match self {
            Link::Direct(conn) => conn.get_db(),
            Link::Sentinel(follower) => follower.redis.db,
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Direct(conn) => conn.req_packed_command(cmd),
            Link::Sentinel(follower) => Box::pin(async move {
                let (generation, mut conn) = follower.connection().await?;
                let reply = conn.req_packed_command(cmd).await;
                if let Err(e) = &reply {
                    follower.after(generation, e);
                }
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Direct(conn) => conn.req_packed_commands(cmd, offset, count),
            Link::Sentinel(follower) => Box::pin(async move {
                let (generation, mut conn) = follower.connection().await?;
                let reply = conn.req_packed_commands(cmd, offset, count).await;
                if let Err(e) = &reply {
                    follower.after(generation, e);
                }
                reply
            }),
        }
    }

    fn get_db(&self) -> i64 {
        self.db()
    }
}

/// Longest wait for one connection attempt to a sentinel or a primary.
pub(super) fn connection_config(connect: Duration, response: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(connect)
        .set_response_timeout(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_refused_by_a_replica_makes_dts_look_for_the_primary_again() {
        let readonly = ::redis::make_extension_error(
            "READONLY".to_string(),
            Some("You can't write against a read only replica.".to_string()),
        );
        assert!(leaves_primary(&readonly), "{readonly:?}");
        let in_script = RedisError::from((
            ErrorKind::ResponseError,
            "Error running script",
            "READONLY You can't write against a read only replica.".to_string(),
        ));
        assert!(leaves_primary(&in_script));
        let broken = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(leaves_primary(&broken));
    }

    #[test]
    fn a_script_error_keeps_the_primary() {
        let wrong_type = RedisError::from((ErrorKind::ResponseError, "WRONGTYPE"));
        assert!(!leaves_primary(&wrong_type));
    }
}
