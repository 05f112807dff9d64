//! A reader for Java `.properties` files, so the seed's
//! `application.properties` loads unchanged.
//!
//! Follows `java.util.Properties.load`: `key=value`, `key = value`,
//! `key: value` and `key value`; `#` and `!` comment lines; blank lines;
//! a trailing backslash continues the line (leading whitespace of the next
//! line is dropped); escapes `\t \n \r \f \\ \uXXXX`, and `\` before any other
//! character stands for that character (`\=`, `\:`, `\ `, `\#`). Leading
//! whitespace of a value is dropped here; trailing whitespace is kept and
//! trimmed later, before typed parsing. A `#` after a value is part of the
//! value, as in Java.

use crate::file::{FileEntry, SyntaxError};
use crate::layers::RawValue;

/// Whitespace as the properties format defines it (space, tab, form feed).
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Parse a whole properties document into entries in file order (a later
/// duplicate key overrides an earlier one when applied).
pub(crate) fn parse(text: &str) -> Result<Vec<FileEntry>, SyntaxError> {
    let lines = natural_lines(text);
    let mut entries = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let line_number = next + 1;
        let first = lines[next].trim_start_matches(is_blank);
        next += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::new();
        let mut current = first;
        loop {
            if ends_in_continuation(current) {
                logical.push_str(&current[..current.len() - 1]);
                match lines.get(next) {
                    Some(following) => {
                        current = following.trim_start_matches(is_blank);
                        next += 1;
                    }
                    None => break,
                }
            } else {
                logical.push_str(current);
                break;
            }
        }
        let (raw_key, raw_value) = split_key_value(&logical);
        let at = |message: String| SyntaxError {
            line: Some(line_number),
            message,
        };
        entries.push(FileEntry {
            key: unescape(raw_key).map_err(at)?,
            value: RawValue::Text(unescape(raw_value).map_err(at)?),
            line: line_number,
        });
    }
    Ok(entries)
}

/// Split on `\r\n`, `\n` or `\r`, as Java does.
fn natural_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            Some(end) => {
                lines.push(&rest[..end]);
                let skip = if rest[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
            }
            None => {
                lines.push(rest);
                rest = "";
            }
        }
    }
    lines
}

/// A line continues when it ends in an odd number of backslashes (an even
/// number is escaped backslashes).
fn ends_in_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// The key ends at the first unescaped `=`, `:` or whitespace; then
/// whitespace, at most one `=` or `:`, and more whitespace separate it from
/// the value.
fn split_key_value(logical: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = logical.len();
    for (i, c) in logical.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_blank(c) {
            key_end = i;
            break;
        }
    }
    let mut rest = logical[key_end..].trim_start_matches(is_blank);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches(is_blank);
    }
    (&logical[..key_end], rest)
}

/// Resolve escapes; `\uXXXX` surrogate pairs combine into one character.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let unit = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&unit) {
                    let low = match (chars.next(), chars.next()) {
                        (Some('\\'), Some('u')) => hex4(&mut chars)?,
                        _ => return Err(format!("\\u{unit:04X} is half a surrogate pair")),
                    };
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(format!("\\u{unit:04X} is half a surrogate pair"));
                    }
                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    unit
                };
                match char::from_u32(code) {
                    Some(decoded) => out.push(decoded),
                    None => return Err(format!("\\u{code:04X} is not a character")),
                }
            }
            Some(other) => out.push(other),
            // Only reachable when the file ends in a continuation backslash.
            None => {}
        }
    }
    Ok(out)
}

/// Exactly four hex digits after `\u`.
fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, String> {
    let digits: String = chars.by_ref().take(4).collect();
    let valid = digits.len() == 4 && digits.chars().all(|c| c.is_ascii_hexdigit());
    match u32::from_str_radix(&digits, 16) {
        Ok(value) if valid => Ok(value),
        _ => Err(format!(
            "malformed \\uXXXX escape \\u{digits} (expected four hex digits)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String, usize)> {
        parse(text)
            .expect("valid properties")
            .into_iter()
            .map(|entry| match entry.value {
                RawValue::Text(value) => (entry.key, value, entry.line),
                RawValue::List(_) => panic!("properties never produce lists"),
            })
            .collect()
    }

    fn pair(key: &str, value: &str, line: usize) -> (String, String, usize) {
        (key.to_string(), value.to_string(), line)
    }

    #[test]
    fn all_four_separator_styles_give_the_same_key_and_value() {
        let text = "a=1\nb = 2\nc: 3\nd 4\ne\t=\t5\nf:=6\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("a", "1", 1),
                pair("b", "2", 2),
                pair("c", "3", 3),
                pair("d", "4", 4),
                pair("e", "5", 5),
                pair("f", "=6", 6),
            ]
        );
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_but_a_hash_after_a_value_is_part_of_it() {
        let text = "# comment\n   ! also a comment\n\n  \t \nkey = value # not a comment\n";
        assert_eq!(pairs(text), vec![pair("key", "value # not a comment", 5)]);
    }

    #[test]
    fn a_trailing_backslash_continues_the_value_on_the_next_line_without_its_indent() {
        let text = "list = a,\\\n       b,\\\n       c\nnext=1\n";
        assert_eq!(
            pairs(text),
            vec![pair("list", "a,b,c", 1), pair("next", "1", 4)]
        );
    }

    #[test]
    fn an_escaped_backslash_at_the_end_does_not_continue_the_line() {
        assert_eq!(
            pairs("path=C:\\\\dir\\\\\nother=x"),
            vec![pair("path", "C:\\dir\\", 1), pair("other", "x", 2)]
        );
    }

    #[test]
    fn a_backslash_on_the_last_line_of_the_file_is_dropped() {
        assert_eq!(pairs("key=value\\"), vec![pair("key", "value", 1)]);
    }

    #[test]
    fn escapes_decode_including_unicode_and_surrogate_pairs() {
        assert_eq!(
            pairs(r"k=tab\there\nnl \\ \u00e9 \uD83D\uDE00 \q"),
            vec![pair("k", "tab\there\nnl \\ é 😀 q", 1)]
        );
    }

    #[test]
    fn escaped_separators_belong_to_the_key() {
        assert_eq!(pairs(r"a\=b\:c\ d = v"), vec![pair("a=b:c d", "v", 1)]);
    }

    #[test]
    fn leading_value_whitespace_is_removed_and_trailing_whitespace_kept_for_later() {
        assert_eq!(
            pairs("server.port=   30000  "),
            vec![pair("server.port", "30000  ", 1)]
        );
    }

    #[test]
    fn a_key_without_a_value_has_an_empty_value() {
        assert_eq!(
            pairs("worker.id\nworker.id2 =\n"),
            vec![pair("worker.id", "", 1), pair("worker.id2", "", 2)]
        );
    }

    #[test]
    fn windows_and_old_mac_line_endings_both_count_as_line_breaks() {
        assert_eq!(
            pairs("a=1\r\nb=2\rc=3"),
            vec![pair("a", "1", 1), pair("b", "2", 2), pair("c", "3", 3)]
        );
    }

    #[test]
    fn a_malformed_unicode_escape_is_a_syntax_error_with_its_line() {
        let error = parse("ok=1\nbad=\\u12G4\n").expect_err("syntax error");
        assert_eq!(error.line, Some(2));
        assert!(
            error.message.contains("malformed \\uXXXX escape"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_lone_surrogate_is_a_syntax_error() {
        let error = parse("bad=\\uD83Dx\n").expect_err("syntax error");
        assert!(error.message.contains("surrogate"), "{}", error.message);
    }
}
