//! A reader for TOML configuration files (`*.toml`), flattened to the same
//! dotted keys as the properties format.
//!
//! `[server] port = 30000`, `server.port = 30000` and `"server.port" = 30000`
//! all become `server.port`; `[pubsub.task-shard] topic = "x"` becomes
//! `pubsub.task-shard.topic`. Scalars become text (so `port = "30000"` and
//! `port = 30000` both work) and are parsed by the key's type later; arrays of
//! scalars become lists. Line numbers come from the parser's spans.

use toml::de::{DeTable, DeValue};

use crate::file::{FileEntry, SyntaxError};
use crate::keys::{self, Kind};
use crate::layers::RawValue;
use dts_model::scheduling::LabelError;

/// Parse a TOML document into flattened entries ordered by line.
pub(crate) fn parse(text: &str) -> Result<Vec<FileEntry>, SyntaxError> {
    let document = DeTable::parse(text).map_err(|error| SyntaxError {
        line: error.span().map(|span| line_of(text, span.start)),
        message: error.message().trim_end().to_string(),
    })?;
    let mut entries = Vec::new();
    flatten("", document.get_ref(), text, &mut entries)?;
    entries.sort_by_key(|entry| entry.line);
    Ok(entries)
}

fn flatten(
    prefix: &str,
    table: &DeTable<'_>,
    text: &str,
    out: &mut Vec<FileEntry>,
) -> Result<(), SyntaxError> {
    for (name, value) in table.iter() {
        let key = if prefix.is_empty() {
            name.get_ref().to_string()
        } else {
            format!("{prefix}.{}", name.get_ref())
        };
        let line = line_of(text, name.span().start);
        match value.get_ref() {
            DeValue::Table(inner) if is_labels(&key) => {
                out.push(labels_table(&key, inner, line)?);
            }
            DeValue::Table(inner) => flatten(&key, inner, text, out)?,
            DeValue::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for item in items {
                    match scalar_text(item.get_ref()) {
                        Some(text) => list.push(text),
                        None => {
                            return Err(SyntaxError {
                                line: Some(line),
                                message: format!(
                                    "`{key}` must be a list of strings, not of tables or lists"
                                ),
                            });
                        }
                    }
                }
                out.push(FileEntry {
                    key,
                    value: RawValue::List(list),
                    line,
                });
            }
            scalar => {
                // Tables and arrays are handled above, so this always matches.
                if let Some(text) = scalar_text(scalar) {
                    out.push(FileEntry {
                        key,
                        value: RawValue::Text(text),
                        line,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether `key` holds labels, which TOML may also write as a table
/// (`[worker.labels]` with `gpu = "a100"`).
fn is_labels(key: &str) -> bool {
    keys::spec(key).is_some_and(|spec| spec.kind == Kind::Labels)
}

/// A labels table as the list of `name=value` the other forms give.
fn labels_table(key: &str, table: &DeTable<'_>, line: usize) -> Result<FileEntry, SyntaxError> {
    let mut list = Vec::with_capacity(table.len());
    for (name, value) in table.iter() {
        let Some(value) = scalar_text(value.get_ref()) else {
            return Err(SyntaxError {
                line: Some(line),
                message: format!(
                    "label {:?} in `{key}` must be a string, not a table or list",
                    name.get_ref()
                ),
            });
        };
        let name = name.get_ref();
        // `name=value` would split at the name's own `=`: refuse it here.
        if name.contains('=') {
            return Err(SyntaxError {
                line: Some(line),
                message: format!(
                    "label {name:?} in `{key}`: {}",
                    LabelError::NameCharacter('=')
                ),
            });
        }
        list.push(format!("{name}={value}"));
    }
    Ok(FileEntry {
        key: key.to_string(),
        value: RawValue::List(list),
        line,
    })
}

/// The text of a scalar as a properties file would spell it; `None` for
/// tables and arrays.
fn scalar_text(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(text) => Some(text.to_string()),
        DeValue::Integer(integer) => Some(
            i128::from_str_radix(integer.as_str(), integer.radix())
                .map(|n| n.to_string())
                .unwrap_or_else(|_| integer.to_string()),
        ),
        DeValue::Float(float) => Some(float.as_str().to_string()),
        DeValue::Boolean(flag) => Some(flag.to_string()),
        DeValue::Datetime(datetime) => Some(datetime.to_string()),
        DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, RawValue, usize)> {
        parse(text)
            .expect("valid toml")
            .into_iter()
            .map(|entry| (entry.key, entry.value, entry.line))
            .collect()
    }

    fn text(key: &str, value: &str, line: usize) -> (String, RawValue, usize) {
        (key.to_string(), RawValue::Text(value.to_string()), line)
    }

    #[test]
    fn tables_dotted_keys_and_quoted_dotted_keys_all_flatten_to_dotted_keys() {
        let toml = r#"
"server.bind" = "0.0.0.0"
worker.cores = 4

[server]
port = 30000

[pubsub.task-shard]
topic = "shards"
"#;
        assert_eq!(
            entries(toml),
            vec![
                text("server.bind", "0.0.0.0", 2),
                text("worker.cores", "4", 3),
                text("server.port", "30000", 6),
                text("pubsub.task-shard.topic", "shards", 9),
            ]
        );
    }

    #[test]
    fn integers_booleans_and_strings_become_text_in_properties_spelling() {
        let toml = "a = 0x10\nb = 1_000\nc = true\nd = \"yes\"\n";
        assert_eq!(
            entries(toml),
            vec![
                text("a", "16", 1),
                text("b", "1000", 2),
                text("c", "true", 3),
                text("d", "yes", 4)
            ]
        );
    }

    #[test]
    fn arrays_of_strings_become_lists() {
        assert_eq!(
            entries("[executor]\nenv-allow = [\"PATH\", \"HOME\"]\n"),
            vec![(
                "executor.env-allow".to_string(),
                RawValue::List(vec!["PATH".to_string(), "HOME".to_string()]),
                2
            )]
        );
    }

    #[test]
    fn a_labels_table_becomes_the_same_list_an_array_of_name_value_gives() {
        let list = |line| {
            (
                "worker.labels".to_string(),
                RawValue::List(vec!["gpu=a100".to_string(), "zone=eu".to_string()]),
                line,
            )
        };
        assert_eq!(
            entries("[worker.labels]\ngpu = \"a100\"\nzone = \"eu\"\n"),
            vec![list(1)]
        );
        assert_eq!(
            entries("[worker]\nlabels = { gpu = \"a100\", zone = \"eu\" }\n"),
            vec![list(2)]
        );
        assert_eq!(
            entries("[worker]\nlabels = [\"gpu=a100\", \"zone=eu\"]\n"),
            vec![list(2)]
        );
    }

    #[test]
    fn a_labels_table_with_a_nested_table_or_an_equals_sign_in_a_name_is_refused() {
        let nested = parse("[worker.labels.gpu]\nmodel = \"a100\"\n").expect_err("nested table");
        assert!(
            nested.message.contains("\"gpu\"") && nested.message.contains("worker.labels"),
            "{}",
            nested.message
        );
        let equals = parse("[worker.labels]\n\"a=b\" = \"c\"\n").expect_err("= in a name");
        assert!(
            equals.message.contains("\"a=b\"") && equals.message.contains("worker.labels"),
            "{}",
            equals.message
        );
    }

    #[test]
    fn kafka_keys_with_dots_survive_as_quoted_keys() {
        assert_eq!(
            entries("[pubsub.kafka]\n\"security.protocol\" = \"SSL\"\n"),
            vec![text("pubsub.kafka.security.protocol", "SSL", 2)]
        );
    }

    #[test]
    fn arrays_of_tables_are_a_syntax_error_naming_the_key() {
        let error = parse("[[executor.env-allow]]\nname = \"PATH\"\n").expect_err("syntax error");
        assert!(
            error.message.contains("executor.env-allow"),
            "{}",
            error.message
        );
    }

    #[test]
    fn broken_toml_is_a_syntax_error_with_a_line() {
        let error = parse("[server]\nport = = 1\n").expect_err("syntax error");
        assert_eq!(error.line, Some(2));
    }
}
