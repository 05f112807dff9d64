//! A task's scheduling fields (`priority`, `weight`, `maxConcurrency`,
//! `requires`, `speculation`), their bounds, and the rule for labels.

use std::collections::BTreeMap;

/// The lowest `priority` a task may have.
pub const MIN_PRIORITY: i32 = -1000;
/// The highest `priority` a task may have.
pub const MAX_PRIORITY: i32 = 1000;
/// The largest `weight` a task may have.
pub const MAX_WEIGHT: u32 = 1000;
/// The largest `maxConcurrency` a task may ask for (more is unlimited in
/// practice; the bound keeps products of counts far from overflow).
pub const MAX_CONCURRENCY: u32 = 1_000_000;
/// The most labels a task may require.
pub const MAX_REQUIRED_LABELS: usize = 16;
/// The longest label name, in characters.
pub const MAX_LABEL_NAME_CHARS: usize = 63;
/// The longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 63;

/// A task's scheduling fields, as submitted (`priority`, `weight`,
/// `maxConcurrency`, `requires`, `speculation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduling {
    /// Higher runs first; 0 by default.
    pub priority: i32,
    /// The task's share of slots against tasks of the same priority; 1 by
    /// default.
    pub weight: u32,
    /// At most this many items of the task run at once across the cluster;
    /// `None` for no limit.
    pub max_concurrency: Option<u32>,
    /// Labels (name → value) a worker must have to run the task.
    pub requires: BTreeMap<String, String>,
    /// Whether a straggling item may be run a second time on another slot;
    /// off for scripts with side effects.
    pub speculation: bool,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            priority: 0,
            weight: 1,
            max_concurrency: None,
            requires: BTreeMap::new(),
            speculation: true,
        }
    }
}

/// Why a label cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The name is empty, too long, or has a character outside
    /// `A-Z a-z 0-9 _ . - /`.
    #[error(
        "label name {name:?} must be 1 to {MAX_LABEL_NAME_CHARS} characters of A-Z, a-z, 0-9, `_`, `.`, `-` and `/`"
    )]
    Name {
        /// The name as given.
        name: String,
    },
    /// The value is too long or has a control character.
    #[error(
        "the value of label {name} must be at most {MAX_LABEL_VALUE_CHARS} printable characters"
    )]
    Value {
        /// The label whose value is bad.
        name: String,
    },
}

/// Checks one label: names are restricted so they read the same in a
/// `--label name=value` flag, a config file and a JSON key; values may be
/// any printable text, empty included.
pub fn check_label(name: &str, value: &str) -> Result<(), LabelError> {
    let name_ok = (1..=MAX_LABEL_NAME_CHARS).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if !name_ok {
        return Err(LabelError::Name {
            name: name.to_string(),
        });
    }
    if value.chars().count() > MAX_LABEL_VALUE_CHARS || value.chars().any(char::is_control) {
        return Err(LabelError::Value {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_restricted_and_values_only_printable() {
        for name in [
            "gpu",
            "zone.eu",
            "example.com/rack-2",
            "A_9",
            &"n".repeat(63),
        ] {
            assert_eq!(check_label(name, "v"), Ok(()), "{name}");
        }
        for name in ["", "has space", "é", "a=b", "a:b", &"n".repeat(64)] {
            assert!(
                matches!(check_label(name, "v"), Err(LabelError::Name { .. })),
                "{name:?}"
            );
        }
        for value in ["", "a100", "with space", "é→", &"v".repeat(63)] {
            assert_eq!(check_label("k", value), Ok(()), "{value:?}");
        }
        for value in ["tab\there", "nl\n", "\u{0}", &"v".repeat(64)] {
            assert_eq!(
                check_label("k", value),
                Err(LabelError::Value { name: "k".into() }),
                "{value:?}"
            );
        }
    }
}
