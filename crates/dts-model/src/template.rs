//! `{{name}}` placeholders in a task's script template.
//!
//! A placeholder is `{{`, optional spaces, a name, optional spaces, `}}`. A
//! name is letters, digits, `_`, `-` and `.`, and starts with a letter, digit
//! or `_`. Anything else between double braces is left as written, so
//! scripts that use `{{` for their own purposes (awk, jq, and Go templates
//! such as `docker ps --format '{{.ID}}'` or kubectl's
//! `go-template='{{range .items}}'`) still work.
//!
//! A literal `{{name}}` (Go's `{{end}}`, a Jinja `{{ item }}`) is written
//! with the braces doubled: `{{{{end}}}}` renders as `{{end}}` (see
//! [`escapes`]).
//!
//! Variables are pasted into the script text: they are part of the script,
//! written by whoever submits it. Inputs never go through this module.

use super::variables::Variables;

/// One `{{name}}` occurrence: the name and the byte range it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    /// The variable's name, as written between the braces.
    pub name: &'a str,
    /// Byte offset of the opening `{{`.
    pub start: usize,
    /// Byte offset just past the closing `}}`.
    pub end: usize,
}

/// Rendering failed because these placeholders have no value (each listed
/// once, in order of first appearance).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no value for {}", format_missing(.0))]
pub struct MissingVariables(pub Vec<String>);

fn format_missing(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{{{{{n}}}}}")).collect();
    format!(
        "placeholder{} {}",
        if names.len() == 1 { "" } else { "s" },
        quoted.join(", ")
    )
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// A name may not start with `.` or `-`: in Go templates `{{.ID}}` is a
/// field and `{{- x}}` trims space, text a script passes through to docker or
/// kubectl, not a variable of the task.
fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `name` could be used as a placeholder name.
pub fn is_valid_name(name: &str) -> bool {
    name.bytes().next().is_some_and(is_name_start) && name.bytes().all(is_name_byte)
}

/// Every placeholder in `template`, in order (escapes are not placeholders).
pub fn placeholders(template: &str) -> Vec<Placeholder<'_>> {
    scan(template)
        .into_iter()
        .filter_map(|(p, escaped)| (!escaped).then_some(p))
        .collect()
}

/// Every escaped placeholder in `template`, in order: `{{{{name}}}}` (with
/// optional spaces inside), which renders as `{{name}}`, braces halved.
///
/// Doubling is the escape because a template is bash: a backslash escape
/// would take text scripts do write (`printf '\\{{x}}'` is a backslash and
/// then the value, and `\\{` is how bash and regexes quote a brace), while
/// four braces in a row are not something a script writes. It is also how
/// Rust and Python format strings write a literal brace.
pub fn escapes(template: &str) -> Vec<Placeholder<'_>> {
    scan(template)
        .into_iter()
        .filter_map(|(p, escaped)| escaped.then_some(p))
        .collect()
}

/// The placeholders and escapes of `template`, in order, each with whether
/// it is an escape.
fn scan(template: &str) -> Vec<(Placeholder<'_>, bool)> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(offset) = template[pos..].find("{{") {
        let start = pos + offset;
        let escape = template[start..]
            .starts_with("{{{{")
            .then(|| braced(template, start + 4, "}}}}"))
            .flatten();
        if let Some((name, end)) = escape {
            found.push((Placeholder { name, start, end }, true));
            pos = end;
        } else if let Some((name, end)) = braced(template, start + 2, "}}") {
            found.push((Placeholder { name, start, end }, false));
            pos = end;
        } else {
            // Not a placeholder: skip one brace so `{{{x}}}` still finds `{{x}}`.
            pos = start + 1;
        }
    }
    found
}

/// The name at `from` (after optional spaces) when optional spaces and
/// `close` follow it, and the offset just past `close`.
fn braced<'t>(template: &'t str, from: usize, close: &str) -> Option<(&'t str, usize)> {
    let bytes = template.as_bytes();
    let mut i = from;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len() && is_name_byte(bytes[i]) {
        i += 1;
    }
    let name = template.get(name_start..i)?;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    (is_valid_name(name) && template[i..].starts_with(close)).then_some((name, i + close.len()))
}

/// Fills every placeholder with its variable's value.
pub fn render(template: &str, variables: &Variables) -> Result<String, MissingVariables> {
    let found = scan(template);
    let mut missing: Vec<String> = Vec::new();
    for (p, _) in found.iter().filter(|(_, escaped)| !escaped) {
        if variables.get(p.name).is_none() && !missing.iter().any(|m| m == p.name) {
            missing.push(p.name.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(MissingVariables(missing));
    }
    let mut out = String::with_capacity(template.len());
    let mut pos = 0;
    for (p, escaped) in &found {
        out.push_str(&template[pos..p.start]);
        if *escaped {
            out.push_str(&template[p.start + 2..p.end - 2]);
        } else if let Some(value) = variables.get(p.name) {
            out.push_str(&value);
        }
        pos = p.end;
    }
    out.push_str(&template[pos..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn vars(value: serde_json::Value) -> Variables {
        Variables::from_json(&value).expect("valid variables")
    }

    #[test]
    fn fills_placeholders_with_and_without_spaces() {
        let v = vars(json!({"name": "world", "n": 3, "loud": true}));
        let out = render("echo {{name}} {{ n }} {{  loud}}", &v).unwrap();
        assert_eq!(out, "echo world 3 true");
    }

    #[test]
    fn lists_every_missing_placeholder_once_in_order() {
        let v = vars(json!({"a": "1"}));
        let err = render("{{b}} {{a}} {{c}} {{b}}", &v).unwrap_err();
        assert_eq!(err.0, vec!["b".to_string(), "c".to_string()]);
        assert_eq!(err.to_string(), "no value for placeholders {{b}}, {{c}}");
    }

    #[test]
    fn unused_variables_are_fine() {
        let v = vars(json!({"unused": "x"}));
        assert_eq!(render("echo hi", &v).unwrap(), "echo hi");
    }

    #[test]
    fn braces_that_are_not_placeholders_stay_as_written() {
        let v = vars(json!({"x": "1"}));
        for text in [
            "awk '{{print $1}}'",
            "{{ }}",
            "{{}}",
            "{{a b}}",
            "{{x",
            "x}}",
        ] {
            assert_eq!(render(text, &v).unwrap(), text);
        }
        assert_eq!(render("{{{x}}}", &v).unwrap(), "{1}");
    }

    #[test]
    fn go_template_fields_pass_through_unchanged() {
        // What docker and kubectl take with --format / -o go-template.
        let v = vars(json!({"x": "1"}));
        for text in [
            "docker ps --format '{{.ID}}\t{{.Names}}'",
            "docker inspect -f '{{ .State.Status }}' \"$1\"",
            "docker ps --format '{{json .}}'",
            "kubectl get pods -o go-template='{{range .items}}{{.metadata.name}} {{- \"\\n\"}}'",
            "{{.}}",
            "{{-x}}",
            "{{$x}}",
        ] {
            assert_eq!(render(text, &v).unwrap(), text);
            assert_eq!(placeholders(text), []);
        }
    }

    #[test]
    fn doubled_braces_render_a_literal_placeholder() {
        let v = vars(json!({"end": "VALUE", "x": "1"}));
        assert_eq!(render("{{{{end}}}}", &v).unwrap(), "{{end}}");
        assert_eq!(render("{{{{ end }}}}", &v).unwrap(), "{{ end }}");
        assert_eq!(
            render(
                "kubectl get pods -o go-template='{{range .items}}{{.metadata.name}}/{{x}} {{{{end}}}}'",
                &v
            )
            .unwrap(),
            "kubectl get pods -o go-template='{{range .items}}{{.metadata.name}}/1 {{end}}'"
        );
        // An escape needs no value, and its name is not reported missing.
        let none = vars(json!({}));
        assert_eq!(render("{{{{end}}}}", &none).unwrap(), "{{end}}");
        assert_eq!(
            escapes("a {{{{end}}}} {{x}}"),
            [Placeholder {
                name: "end",
                start: 2,
                end: 13
            }]
        );
        assert_eq!(placeholders("a {{{{end}}}} {{x}}").len(), 1);
    }

    #[test]
    fn braces_that_are_neither_placeholders_nor_escapes_keep_their_meaning() {
        let v = vars(json!({"x": "1"}));
        assert_eq!(render("{{{{x}}}", &v).unwrap(), "{{1}");
        assert_eq!(render("{{{{{x}}}}}", &v).unwrap(), "{{{x}}}");
        assert_eq!(render("{{{{.ID}}}}", &v).unwrap(), "{{{{.ID}}}}");
        assert_eq!(render("\\{{x}}", &v).unwrap(), "\\1");
    }

    #[test]
    fn a_valid_name_starts_with_a_letter_a_digit_or_an_underscore() {
        for name in ["a", "A1", "_x", "0", "long.name-2"] {
            assert!(is_valid_name(name), "{name}");
        }
        for name in ["", ".ID", "-x", "a b", "a,b", "é"] {
            assert!(!is_valid_name(name), "{name}");
        }
    }

    #[test]
    fn values_are_not_rescanned_for_placeholders() {
        let v = vars(json!({"a": "{{b}}"}));
        assert_eq!(render("{{a}}", &v).unwrap(), "{{b}}");
    }

    #[test]
    fn multibyte_text_around_placeholders_is_kept() {
        let v = vars(json!({"x": "é"}));
        assert_eq!(render("→{{x}}←{{", &v).unwrap(), "→é←{{");
    }

    proptest! {
        #[test]
        fn rendering_never_panics_and_text_without_braces_is_unchanged(text in "\\PC*") {
            let v = vars(json!({"a": "1"}));
            let _ = render(&text, &v);
            if !text.contains("{{") {
                prop_assert_eq!(render(&text, &v).unwrap(), text);
            }
        }

        #[test]
        fn every_found_placeholder_is_replaced(names in proptest::collection::vec("[a-z]{1,5}", 0..6)) {
            let template: String = names.iter().map(|n| format!("<{{{{{n}}}}}>")).collect();
            let map: serde_json::Map<String, serde_json::Value> =
                names.iter().map(|n| (n.clone(), json!(format!("v-{n}")))).collect();
            let v = Variables::from_json(&serde_json::Value::Object(map)).unwrap();
            let expected: String = names.iter().map(|n| format!("<v-{n}>")).collect();
            prop_assert_eq!(render(&template, &v).unwrap(), expected);
        }
    }
}
