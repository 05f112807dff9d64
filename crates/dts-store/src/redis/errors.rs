//! Redis errors to [`StoreError`]s: whether a retry can help, and messages
//! that name the operation and the server. The Redis error itself stays
//! attached as the source.

use crate::StoreError;
use ::redis::{ErrorKind, RedisError};
use std::time::Duration;

/// Turns a Redis error into a [`StoreError`] naming `op` and `address`.
///
/// Connection, I/O and timeout errors, and the replies of a server that is
/// starting (`LOADING`), busy with a script (`BUSY`) or failing over, may
/// succeed later: [`StoreError::Unavailable`]. A server out of memory
/// (`OOM`) or unable to persist (`MISCONF`, a full disk) is
/// [`StoreError::Full`]. Anything else (a script bug, a key of the wrong
/// type, a refused password) will not: [`StoreError::Backend`].
pub(super) fn classify(op: &str, address: &str, e: RedisError) -> StoreError {
    let op = format!("redis {op} at {address}");
    if matches!(e.code(), Some("OOM" | "MISCONF")) {
        StoreError::Full {
            op,
            source: e.into(),
        }
    } else if is_transient(&e) {
        StoreError::Unavailable {
            op,
            source: e.into(),
        }
    } else {
        StoreError::Backend {
            op,
            source: e.into(),
        }
    }
}

fn is_transient(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    matches!(
        e.kind(),
        ErrorKind::BusyLoadingError
            | ErrorKind::TryAgain
            | ErrorKind::ClusterDown
            | ErrorKind::MasterDown
            | ErrorKind::ReadOnly
    ) || matches!(
        e.code(),
        Some("BUSY" | "LOADING" | "MASTERDOWN" | "READONLY" | "NOREPLICAS")
    )
}

/// A call that got no answer within `after`: a hung or overloaded server.
pub(super) fn timed_out(op: &str, address: &str, after: Duration) -> StoreError {
    StoreError::TimedOut {
        op: format!("redis {op} at {address}"),
        after,
    }
}

/// A reply the scripts never give: the stored data or the script is not what
/// this code expects.
pub(super) fn unexpected(op: &str, reply: &[String]) -> StoreError {
    StoreError::UnexpectedReply {
        op: format!("redis {op}"),
        reply: reply.iter().take(3).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn connection_errors_are_worth_retrying_and_name_the_server() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::TimedOut,
        ] {
            let e = RedisError::from(io::Error::new(kind, "gone"));
            let err = classify("read task t", "127.0.0.1:7000", e);
            assert!(err.is_retryable(), "{err}");
            match &err {
                StoreError::Unavailable { op, source } => {
                    assert_eq!(op, "redis read task t at 127.0.0.1:7000");
                    assert!(source.downcast_ref::<RedisError>().is_some(), "{source:?}");
                }
                other => panic!("{kind:?}: expected unavailable, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_loading_or_busy_server_is_worth_retrying() {
        let loading = RedisError::from((ErrorKind::BusyLoadingError, "loading"));
        assert!(classify("op", "a:1", loading).is_retryable());
        // As the parser reports `-BUSY Redis is busy running a script`.
        let busy = ::redis::make_extension_error(
            "BUSY".to_string(),
            Some("Redis is busy running a script".to_string()),
        );
        assert!(classify("op", "a:1", busy).is_retryable());
    }

    #[test]
    fn other_errors_are_not_worth_retrying() {
        let wrong_type = RedisError::from((ErrorKind::ResponseError, "WRONGTYPE"));
        let err = classify("op", "a:1", wrong_type);
        assert!(
            matches!(&err, StoreError::Backend { source, .. } if source.is::<RedisError>()),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_call_without_an_answer_is_worth_retrying() {
        let err = timed_out("read task t", "a:1", Duration::from_secs(5));
        assert!(matches!(err, StoreError::TimedOut { .. }), "{err:?}");
        assert!(err.is_retryable());
    }
}
