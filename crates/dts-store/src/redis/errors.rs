//! Redis errors to [`StoreError`]s: whether a retry can help, and messages
//! that name the operation and the server.

use crate::StoreError;
use ::redis::{ErrorKind, RedisError};

/// Turns a Redis error into a [`StoreError`] naming `op` and `address`.
///
/// Connection, I/O and timeout errors, and the replies of a server that is
/// starting (`LOADING`), busy with a script (`BUSY`) or failing over, may
/// succeed later: [`StoreError::Unavailable`]. Anything else (a script bug, a
/// key of the wrong type, a refused password) will not: [`StoreError::Backend`].
pub(super) fn classify(op: &str, address: &str, e: &RedisError) -> StoreError {
    let message = format!("redis {op} at {address}: {e}");
    if is_transient(e) {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
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
    ) || matches!(e.code(), Some("BUSY" | "LOADING" | "MASTERDOWN"))
}

/// A call that got no answer within `secs` seconds: a hung or overloaded server.
pub(super) fn timed_out(op: &str, address: &str, secs: u64) -> StoreError {
    StoreError::Unavailable(format!(
        "redis {op} at {address}: no answer within {secs} s"
    ))
}

/// A reply the scripts never give: the stored data or the script is not what
/// this code expects.
pub(super) fn unexpected(op: &str, reply: &[String]) -> StoreError {
    let head: Vec<&str> = reply.iter().take(3).map(String::as_str).collect();
    StoreError::Backend(format!("redis {op}: unexpected reply {head:?}"))
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
            let err = classify("read task t", "127.0.0.1:7000", &e);
            assert!(err.is_retryable(), "{err}");
            let text = err.to_string();
            assert!(text.contains("read task t"), "{text}");
            assert!(text.contains("127.0.0.1:7000"), "{text}");
        }
    }

    #[test]
    fn a_loading_or_busy_server_is_worth_retrying() {
        let loading = RedisError::from((ErrorKind::BusyLoadingError, "loading"));
        assert!(classify("op", "a:1", &loading).is_retryable());
        // As the parser reports `-BUSY Redis is busy running a script`.
        let busy = ::redis::make_extension_error(
            "BUSY".to_string(),
            Some("Redis is busy running a script".to_string()),
        );
        assert!(classify("op", "a:1", &busy).is_retryable());
    }

    #[test]
    fn other_errors_are_not_worth_retrying() {
        let wrong_type = RedisError::from((ErrorKind::ResponseError, "WRONGTYPE"));
        let err = classify("op", "a:1", &wrong_type);
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
        assert!(!err.is_retryable());
    }
}
