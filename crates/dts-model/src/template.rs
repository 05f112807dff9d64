//! `{{name}}` placeholders in a task's script template.
//!
//! A placeholder is `{{`, optional spaces, a name made of letters, digits, `_`,
//! `-` and `.`, optional spaces, `}}`. Anything else between double braces is
//! left as written, so scripts that use `{{` for their own purposes (awk, jq,
//! Go templates passed through) still work.
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

/// Whether `name` could be used as a placeholder name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_name_byte)
}

/// Every placeholder in `template`, in order.
pub fn placeholders(template: &str) -> Vec<Placeholder<'_>> {
    let bytes = template.as_bytes();
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(offset) = template[pos..].find("{{") {
        let start = pos + offset;
        let mut i = start + 2;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && is_name_byte(bytes[i]) {
            i += 1;
        }
        let name_end = i;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if name_end > name_start && template[i..].starts_with("}}") {
            found.push(Placeholder {
                name: &template[name_start..name_end],
                start,
                end: i + 2,
            });
            pos = i + 2;
        } else {
            // Not a placeholder: skip one brace so `{{{x}}}` still finds `{{x}}`.
            pos = start + 1;
        }
    }
    found
}

/// Fills every placeholder with its variable's value.
pub fn render(template: &str, variables: &Variables) -> Result<String, MissingVariables> {
    let found = placeholders(template);
    let mut missing: Vec<String> = Vec::new();
    for p in &found {
        if variables.get(p.name).is_none() && !missing.iter().any(|m| m == p.name) {
            missing.push(p.name.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(MissingVariables(missing));
    }
    let mut out = String::with_capacity(template.len());
    let mut pos = 0;
    for p in &found {
        out.push_str(&template[pos..p.start]);
        if let Some(value) = variables.get(p.name) {
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
