//! Worker labels (`worker.labels`, `--label`): `name=value` pairs a worker
//! announces in its heartbeats.
//!
//! The rules are strict so that a label reads the same in every form it can
//! be written in (a comma-separated property, a TOML array or table, one
//! `--label` flag each) and can later be matched against exactly.

use std::collections::BTreeMap;

/// Most labels one worker may have: they travel in every heartbeat.
pub const MAX_LABELS: usize = 32;

/// Longest label name, in characters.
pub const MAX_NAME_CHARS: usize = 63;

/// Longest label value, in characters.
pub const MAX_VALUE_CHARS: usize = 63;

/// What is wrong with one label; the loader adds the key, the label and the
/// source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelProblem {
    /// No `=` between name and value.
    #[error("a label is written name=value")]
    NoEquals,
    /// The name is empty or longer than [`MAX_NAME_CHARS`].
    #[error("a label name has 1 to {MAX_NAME_CHARS} characters, this one has {0}")]
    NameLength(usize),
    /// The name has a character outside `A-Z a-z 0-9 _ . - /`.
    #[error("a label name may only hold letters, digits, `_`, `.`, `-` and `/`, not {0:?}")]
    NameCharacter(char),
    /// The value is longer than [`MAX_VALUE_CHARS`].
    #[error("a label value has at most {MAX_VALUE_CHARS} characters, this one has {0}")]
    ValueLength(usize),
    /// The value holds a control character, or a comma (which separates
    /// labels in the one-line form).
    #[error("a label value must be printable and hold no comma, not {0:?}")]
    ValueCharacter(char),
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
    let name_chars = name.chars().count();
    if name_chars == 0 || name_chars > MAX_NAME_CHARS {
        return Err(LabelProblem::NameLength(name_chars));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(LabelProblem::NameCharacter(bad));
    }
    let value_chars = value.chars().count();
    if value_chars > MAX_VALUE_CHARS {
        return Err(LabelProblem::ValueLength(value_chars));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control() || *c == ',') {
        return Err(LabelProblem::ValueCharacter(bad));
    }
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

    #[test]
    fn names_are_one_to_sixty_three_characters_of_a_small_charset() {
        let longest = "n".repeat(MAX_NAME_CHARS);
        assert_eq!(parse_label(&format!("{longest}=v")), ok(&longest, "v"));
        assert_eq!(
            parse_label(&format!("{longest}n=v")),
            Err(LabelProblem::NameLength(64))
        );
        assert_eq!(parse_label("=v"), Err(LabelProblem::NameLength(0)));
        assert_eq!(
            parse_label("two words=v"),
            Err(LabelProblem::NameCharacter(' '))
        );
        assert_eq!(
            parse_label("gpu:0=v"),
            Err(LabelProblem::NameCharacter(':'))
        );
        assert_eq!(parse_label("ü=v"), Err(LabelProblem::NameCharacter('ü')));
    }

    #[test]
    fn values_are_at_most_sixty_three_printable_characters_without_commas() {
        let longest = "é".repeat(MAX_VALUE_CHARS);
        assert_eq!(parse_label(&format!("v={longest}")), ok("v", &longest));
        assert_eq!(
            parse_label(&format!("v={longest}é")),
            Err(LabelProblem::ValueLength(64))
        );
        assert_eq!(
            parse_label("v=a\u{1b}[31m"),
            Err(LabelProblem::ValueCharacter('\u{1b}'))
        );
        assert_eq!(parse_label("v=a,b"), Err(LabelProblem::ValueCharacter(',')));
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
