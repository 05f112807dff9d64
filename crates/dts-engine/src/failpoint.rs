//! Fault injection for tests: `DTS_FAILPOINT=<name>` makes the process kill
//! itself with SIGKILL when it reaches the named point, so tests can crash a
//! server exactly between two steps (after storing a task, after saving a
//! plan). Unset, a failpoint costs one comparison.

use std::sync::OnceLock;
use tracing::error;

/// Kills this process (SIGKILL, as a crash would) if `DTS_FAILPOINT` names `name`.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("DTS_FAILPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if armed.as_deref() == Some(name) {
        error!(
            failpoint = name,
            "DTS_FAILPOINT reached: killing this process"
        );
        // SAFETY: sending a signal to ourselves; it does not return.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
