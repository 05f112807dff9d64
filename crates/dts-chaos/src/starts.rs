//! The items' own record: the start lines every item appends to the shared
//! log before it does anything else (`task,index,attempt,worker,start_ms,pid`).

use crate::ChaosError;
use std::path::Path;

/// One start of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// `DTS_TASK_ID`.
    pub task: String,
    /// `DTS_ITEM_INDEX`.
    pub index: u64,
    /// `DTS_ATTEMPT`.
    pub attempt: u32,
    /// `DTS_WORKER_ID`.
    pub worker: String,
    /// When it started, ms since the epoch.
    pub start_ms: u64,
    /// The item's process id.
    pub pid: i32,
}

/// Parses one line; `None` for a line that is not six fields (an item
/// killed in the middle of its write cannot leave one: the line is a
/// single `write`, but a line that fails to parse is reported).
pub fn parse(line: &str) -> Option<Start> {
    let mut fields = line.split(',');
    let start = Start {
        task: fields.next()?.to_string(),
        index: fields.next()?.parse().ok()?,
        attempt: fields.next()?.parse().ok()?,
        worker: fields.next()?.to_string(),
        start_ms: fields.next()?.parse().ok()?,
        pid: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(start)
}

/// Every start in the log, and the lines that were not starts.
pub fn read(path: &Path) -> Result<(Vec<Start>, Vec<String>), ChaosError> {
    let text = std::fs::read_to_string(path).map_err(|source| ChaosError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut starts = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        match parse(line) {
            Some(start) => starts.push(start),
            None => bad.push(line.to_string()),
        }
    }
    Ok((starts, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_line_has_six_fields_and_anything_else_is_not_one() {
        assert_eq!(
            parse("t-1,7,2,worker-3,1700000000123,4242"),
            Some(Start {
                task: "t-1".into(),
                index: 7,
                attempt: 2,
                worker: "worker-3".into(),
                start_ms: 1_700_000_000_123,
                pid: 4242,
            })
        );
        assert_eq!(parse("t-1,7,2,worker-3,1700000000123"), None);
        assert_eq!(parse("t-1,7,2,worker-3,1700000000123,4242,x"), None);
        assert_eq!(parse("t-1,seven,2,worker-3,1700000000123,4242"), None);
    }
}
