//! Worker labels (`worker.labels`, `--label`): `name=value` pairs a worker
//! announces in its heartbeats.
//!
//! The rules are strict so that a label reads the same in every form it can
//! be written in (a comma-separated property, a TOML array or table, one
//! `--label` flag each) and can later be matched against exactly.

use dts_model::scheduling::{self, LabelError};
use std::collections::BTreeMap;

/// Most labels one worker may have: they travel in every heartbeat. (A task
/// may require fewer, [`scheduling::MAX_REQUIRED_LABELS`].)
pub const MAX_LABELS: usize = 32;

/// What is wrong with one label; the loader adds the key, the label and the
/// source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelProblem {
    /// No `=` between name and value.
    #[error("a label is written name=value")]
    NoEquals,
    /// The name or value breaks the rule labels share with a task's
    /// `requires` ([`scheduling::check_label`]).
    #[error(transparent)]
    Rule(#[from] LabelError),
    /// The label's name was already given another value in the same layer
    /// (two `--label`s, two lines of one file).
    #[error("the same name was already given the value {first:?}")]
    Conflict {
        /// The value given first.
        first: String,
    },
    /// One label more than [`MAX_LABELS`].
    #[error("a worker has at most {MAX_LABELS} labels; this would be one more")]
    TooMany,
}

/// Parses one `name=value` label. Blanks around the name and the value are
/// dropped, so `gpu = a100` is `gpu=a100`; the value may be empty.
pub fn parse_label(text: &str) -> Result<(String, String), LabelProblem> {
    let (name, value) = text.split_once('=').ok_or(LabelProblem::NoEquals)?;
    let (name, value) = (name.trim(), value.trim());
    scheduling::check_label(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

/// Labels as the one-line form writes them: `gpu=a100,zone=eu`, by name.
pub fn render(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str, value: &str) -> Result<(String, String), LabelProblem> {
        Ok((name.to_string(), value.to_string()))
    }

    #[test]
    fn a_label_is_a_name_an_equals_sign_and_a_value_that_may_be_empty() {
        assert_eq!(parse_label("gpu=a100"), ok("gpu", "a100"));
        assert_eq!(parse_label(" gpu = a100 "), ok("gpu", "a100"));
        assert_eq!(parse_label("ssd="), ok("ssd", ""));
        assert_eq!(
            parse_label("example.com/rack-1_b=A 100=x"),
            ok("example.com/rack-1_b", "A 100=x")
        );
        assert_eq!(parse_label("zone=é"), ok("zone", "é"));
        assert_eq!(parse_label("gpu"), Err(LabelProblem::NoEquals));
    }

    /// The rule itself is tested in `dts_model::scheduling`; these show a
    /// worker label is held to it.
    #[test]
    fn names_and_values_follow_the_rule_a_task_s_requires_follows() {
        let rule = |e| Err(LabelProblem::Rule(e));
        let longest = "n".repeat(scheduling::MAX_LABEL_NAME_CHARS);
        assert_eq!(parse_label(&format!("{longest}=v")), ok(&longest, "v"));
        assert_eq!(
            parse_label(&format!("{longest}n=v")),
            rule(LabelError::NameLength(64))
        );
        assert_eq!(parse_label("=v"), rule(LabelError::NameLength(0)));
        assert_eq!(
            parse_label("two words=v"),
            rule(LabelError::NameCharacter(' '))
        );
        assert_eq!(parse_label("ü=v"), rule(LabelError::NameCharacter('ü')));
        let longest = "é".repeat(scheduling::MAX_LABEL_VALUE_CHARS);
        assert_eq!(parse_label(&format!("v={longest}")), ok("v", &longest));
        assert_eq!(
            parse_label(&format!("v={longest}é")),
            rule(LabelError::ValueLength(64))
        );
        assert_eq!(
            parse_label("v=a\u{1b}[31m"),
            rule(LabelError::ValueCharacter('\u{1b}'))
        );
        assert_eq!(parse_label("v=a,b"), rule(LabelError::ValueCharacter(',')));
    }

    #[test]
    fn labels_render_by_name_in_the_one_line_form() {
        let labels = BTreeMap::from([
            ("zone".to_string(), "eu".to_string()),
            ("gpu".to_string(), "a100".to_string()),
        ]);
        assert_eq!(render(&labels), "gpu=a100,zone=eu");
        assert_eq!(render(&BTreeMap::new()), "");
    }
}
