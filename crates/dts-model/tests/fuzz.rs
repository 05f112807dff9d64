//! Fuzzing the pure request-handling code: the template renderer, the JSON
//! validator (`submit::from_json`, from values and from raw text) and
//! `Variables::from_json`, with random and structure-aware inputs.
//!
//! Each target runs for `DTS_FUZZ_SECS` seconds (3 by default, so CI stays
//! fast) and prints how many cases it ran. A long run, one target at a time:
//!
//! ```text
//! DTS_FUZZ_SECS=120 cargo test --release -p dts-model --test fuzz -- --nocapture --test-threads=1
//! ```
//!
//! Beyond "no panic", each target checks properties: rendering replaces every
//! placeholder that has a value and reports exactly the ones that do not;
//! every validation error has a code and a message and names a field that is
//! really in (or missing from) the request; accepted tasks respect every limit.

use dts_model::plan::{input_encoded_len, json_escaped_len};
use dts_model::submit::{self, SubmitLimits, ValidationError};
use dts_model::template::{self, MissingVariables};
use dts_model::{Variables, is_valid_task_id};
use dts_testkit::fuzz::fuzz;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------
// Building blocks.

/// Names a template might use, mostly from a small pool so placeholders and
/// variables meet often.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "x_1", "long.name-2", "A", "0"]).prop_map(String::from),
        1 => "[a-zA-Z0-9_.-]{1,12}",
    ]
}

/// Text that is hard on parsers: control characters, NUL, quotes,
/// backslashes, braces, multi-byte and astral characters, lone surrogates'
/// replacement, very long runs.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,16}",
        ".{0,16}",
        "[\\x00-\\x1f\\x7f\"\\\\{}]{0,8}",
        prop::collection::vec(any::<char>(), 0..16).prop_map(|c| c.into_iter().collect()),
        prop::sample::select(vec![
            "",
            " ",
            "\u{0}",
            "é",
            "→",
            "😀",
            "\u{202e}",
            "\u{feff}",
            "\u{fffd}",
            "\r\n",
            "\t",
            "%00",
            "../..",
            "$(reboot)",
            "`id`",
            "'\"",
            "\\u0000",
        ])
        .prop_map(String::from),
        (any::<char>(), 0usize..3000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

/// One piece of a template: braces, placeholders and escaped ones (with odd
/// spacing), names and nasty text.
fn template_piece() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (name(), 0usize..3, 0usize..3)
            .prop_map(|(n, l, r)| format!("{{{{{}{n}{}}}}}", " ".repeat(l), " ".repeat(r))),
        1 => (name(), 0usize..3, 0usize..3)
            .prop_map(|(n, l, r)| format!("{{{{{{{{{}{n}{}}}}}}}}}", " ".repeat(l), " ".repeat(r))),
        2 => prop::sample::select(vec!["{{", "}}", "{", "}", " ", "{{{", "}}}", "{{{{", "}}}}", "{{}}", "{{ }}", "$1", "\n"])
            .prop_map(String::from),
        2 => name(),
        2 => nasty_text(),
        1 => (name(), "[^a-zA-Z0-9_. -]").prop_map(|(n, c)| format!("{{{{{n}{c}}}}}")),
    ]
    .boxed()
}

fn template_text() -> impl Strategy<Value = String> {
    prop::collection::vec(template_piece(), 0..24).prop_map(|pieces| pieces.concat())
}

/// A scalar variable value (what `variableJson` accepts).
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => nasty_text().prop_map(Value::from),
        1 => template_text().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        1 => any::<bool>().prop_map(Value::from),
    ]
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        scalar(),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e300)),
        Just(json!(-0.0)),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((nasty_text(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value nested `depth` levels deep (arrays or objects), built iteratively.
fn nested(depth: usize, object: bool) -> Value {
    let mut value = json!("bottom");
    for _ in 0..depth {
        value = if object {
            json!({ "k": value })
        } else {
            json!([value])
        };
    }
    value
}

fn variables_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((name(), scalar()), 0..6).prop_map(|kv| kv.into_iter().collect())
}

// ---------------------------------------------------------------------------
// Target 1: the template renderer.

/// A value that cannot be part of a placeholder, so if one shows up in the
/// output it came from the template text.
fn sentinel(i: usize) -> String {
    format!("§{i}§")
}

fn check_render(template: &str, vars_map: &Map<String, Value>) -> Result<(), TestCaseError> {
    let vars = Variables::from_json(&Value::Object(vars_map.clone()))
        .map_err(|e| TestCaseError::fail(format!("scalar variables refused: {e}")))?;
    let found = template::placeholders(template);

    // The placeholders are in order, do not overlap, and each is `{{ name }}`.
    let mut last_end = 0;
    for p in &found {
        prop_assert!(p.start >= last_end && p.start < p.end && p.end <= template.len());
        let text = &template[p.start..p.end];
        prop_assert!(text.starts_with("{{") && text.ends_with("}}"), "{text:?}");
        prop_assert_eq!(text[2..text.len() - 2].trim_matches(' '), p.name);
        prop_assert!(template::is_valid_name(p.name));
        last_end = p.end;
    }

    let mut expected_missing: Vec<String> = Vec::new();
    for p in &found {
        if vars.get(p.name).is_none() && !expected_missing.iter().any(|m| m == p.name) {
            expected_missing.push(p.name.to_string());
        }
    }
    // Escapes are `{{{{ name }}}}`, outside every placeholder.
    let escapes = template::escapes(template);
    for e in &escapes {
        let text = &template[e.start..e.end];
        prop_assert!(
            text.starts_with("{{{{") && text.ends_with("}}}}"),
            "{text:?}"
        );
        prop_assert_eq!(text[4..text.len() - 4].trim_matches(' '), e.name);
        prop_assert!(found.iter().all(|p| p.end <= e.start || p.start >= e.end));
    }

    match template::render(template, &vars) {
        Err(MissingVariables(missing)) => {
            prop_assert_eq!(&missing, &expected_missing);
            prop_assert!(!missing.is_empty());
            let message = MissingVariables(missing.clone()).to_string();
            for name in &missing {
                let quoted = format!("{{{{{name}}}}}");
                prop_assert!(message.contains(&quoted), "{}", message);
            }
        }
        Ok(out) => {
            prop_assert!(
                expected_missing.is_empty(),
                "missing {:?}",
                expected_missing
            );
            // Length: the template minus the placeholders plus the values,
            // and two braces less on each side of an escape.
            let removed: usize =
                found.iter().map(|p| p.end - p.start).sum::<usize>() + 4 * escapes.len();
            let added: usize = found
                .iter()
                .map(|p| vars.get(p.name).map_or(0, |v| v.len()))
                .sum();
            prop_assert_eq!(out.len(), template.len() - removed + added);
            if !template.contains("{{") {
                prop_assert_eq!(&out, template);
            }
        }
    }

    // With values that cannot form a placeholder, nothing that had a value
    // is left as `{{name}}` in the output; only escapes leave one.
    let sentinels: Map<String, Value> = vars_map
        .keys()
        .enumerate()
        .map(|(i, k)| (k.clone(), Value::from(sentinel(i))))
        .collect();
    let sentinel_vars = Variables::from_json(&Value::Object(sentinels)).expect("strings");
    if let Ok(out) = template::render(template, &sentinel_vars) {
        let left = template::placeholders(&out);
        // Every placeholder of the template had a value, so only what an
        // escape wrote is left.
        prop_assert!(
            left.iter()
                .all(|p| escapes.iter().any(|e| e.name == p.name)),
            "placeholders left in {out:?}: {left:?}"
        );
        for p in &found {
            prop_assert!(sentinel_vars.get(p.name).is_some());
        }
    }
    Ok(())
}

#[test]
fn fuzz_template_render() {
    fuzz(
        "template::render",
        (template_text(), variables_object()),
        |(template, vars)| check_render(&template, &vars),
    );
}

#[test]
fn fuzz_template_render_random_text() {
    fuzz(
        "template::render (random text)",
        (prop_oneof![".*", "\\PC*", "[{} a-z]*"], variables_object()),
        |(template, vars)| check_render(&template, &vars),
    );
}

// ---------------------------------------------------------------------------
// Target 2: `submit::from_json`, from near-valid JSON values.

fn limits() -> SubmitLimits {
    SubmitLimits {
        max_items: 20,
        max_item_bytes: 64,
        max_template_bytes: 256,
        max_timeout_secs: 1000,
        default_timeout_secs: 60,
        max_retries: 10,
        max_variables_bytes: 512,
        max_memory_mb: 4096,
        max_cpus: 16,
    }
}

/// The fields a submission may set, written out here as the spec the
/// validator is checked against.
const FIELDS: &[&str] = &[
    "templateFunction",
    "inputList",
    "variableJson",
    "name",
    "interpreter",
    "timeoutSecs",
    "retries",
    "deadlineSecs",
    "memoryMb",
    "cpus",
    "priority",
    "weight",
    "maxConcurrency",
    "requires",
    "speculation",
];
const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "chunksToExecute",
    "chunksExecuted",
    "itemsTotal",
    "itemsSucceeded",
    "itemsFailed",
    "createdAt",
    "startedAt",
    "finishedAt",
    "error",
    "version",
];
const CODES: &[&str] = &[
    "invalid_body",
    "unknown_field",
    "missing_field",
    "invalid_field",
    "too_large",
    "too_many_items",
    "missing_variables",
    "repeated_field",
];

/// A field's value: usually sensible, sometimes wrong in one of many ways.
fn field_value(good: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        6 => good.prop_map(Some),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => any_json().prop_map(Some),
    ]
    .boxed()
}

fn number_field(max: u64) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0..=max + 2).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => prop::sample::select(vec![json!(-1), json!(0), json!(1.5), json!(1e300), json!(-0.0), json!(u64::MAX), json!(i64::MIN), json!("5"), json!(true)]),
    ]
    .boxed()
}

fn signed_number_field(max: i64) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (-max - 2..=max + 2).prop_map(Value::from),
        1 => number_field(max as u64),
    ]
    .boxed()
}

/// A `requires` object: mostly sane labels, sometimes bad names, values or
/// too many entries.
fn requires_value() -> BoxedStrategy<Value> {
    let label_name = prop_oneof![
        4 => "[A-Za-z0-9_./-]{1,12}",
        1 => nasty_text(),
        1 => (60usize..68).prop_map(|n| "n".repeat(n)),
    ];
    let label_value = prop_oneof![
        4 => "[a-z0-9]{0,8}".prop_map(Value::from),
        1 => nasty_text().prop_map(Value::from),
        1 => any_json(),
    ];
    prop::collection::vec((label_name, label_value), 0..20)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
        .boxed()
}

fn item() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => nasty_text().prop_map(Value::from),
        1 => scalar(),
        1 => any_json(),
        1 => (0usize..200).prop_map(|n| Value::from("\n".repeat(n))),
    ]
}

/// A request body close to a valid submission.
fn near_valid_body() -> impl Strategy<Value = Value> {
    let template = prop_oneof![
        6 => template_text().prop_map(Value::from),
        1 => (0usize..400).prop_map(|n| Value::from("x".repeat(n))),
        1 => Just(Value::from("  ")),
    ]
    .boxed();
    let inputs = prop_oneof![
        6 => prop::collection::vec(item(), 0..24).prop_map(Value::Array),
        1 => nasty_text().prop_map(Value::from),
        1 => Just(Value::Array(vec![json!("a"); 21])),
    ]
    .boxed();
    let variables = prop_oneof![
        4 => variables_object().prop_map(Value::Object),
        2 => variables_object().prop_map(|m| Value::from(Value::Object(m).to_string())),
        1 => nasty_text().prop_map(Value::from),
        1 => prop::collection::vec((name(), any_json()), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
    ]
    .boxed();
    let interpreter = prop_oneof![
        4 => prop::sample::select(vec!["bash", "sh", "python3", "/bin/bash"]).prop_map(Value::from),
        2 => nasty_text().prop_map(Value::from),
        1 => (0usize..300).prop_map(|n| Value::from("b".repeat(n))),
    ]
    .boxed();
    let name_field = prop_oneof![
        3 => nasty_text().prop_map(Value::from),
        1 => (190usize..210).prop_map(|n| Value::from("é".repeat(n))),
    ]
    .boxed();
    let scheduling = (
        field_value(signed_number_field(1000)),
        field_value(number_field(1000)),
        field_value(number_field(1_000_000)),
        field_value(requires_value()),
        field_value(any::<bool>().prop_map(Value::from).boxed()),
    );
    let read_only =
        prop::collection::vec((prop::sample::select(READ_ONLY.to_vec()), any_json()), 0..3);
    let extra = prop::collection::vec(
        (
            prop_oneof![
                nasty_text(),
                prop::sample::select(vec![
                    "inputlist",
                    "templateFunction ",
                    "timeoutSec",
                    "TEMPLATEFUNCTION",
                    "variableJSON",
                    "__proto__",
                    ""
                ])
                .prop_map(String::from),
            ],
            any_json(),
        ),
        0..2,
    );
    (
        (
            field_value(template),
            field_value(inputs),
            field_value(variables),
            field_value(name_field),
        ),
        (
            field_value(interpreter),
            field_value(number_field(1000)),
            field_value(number_field(10)),
        ),
        scheduling,
        read_only,
        prop::option::weighted(0.2, extra),
    )
        .prop_map(
            |(
                (t, i, v, n),
                (interp, timeout, retries),
                (priority, weight, cap, requires, speculation),
                read_only,
                extra,
            )| {
                let mut body = Map::new();
                for (key, value) in [
                    ("templateFunction", t),
                    ("inputList", i),
                    ("variableJson", v),
                    ("name", n),
                    ("interpreter", interp),
                    ("timeoutSecs", timeout),
                    ("retries", retries),
                    ("priority", priority),
                    ("weight", weight),
                    ("maxConcurrency", cap),
                    ("requires", requires),
                    ("speculation", speculation),
                ] {
                    if let Some(value) = value {
                        body.insert(key.to_string(), value);
                    }
                }
                for (key, value) in read_only {
                    body.insert(key.to_string(), value);
                }
                for (key, value) in extra.unwrap_or_default() {
                    body.insert(key, value);
                }
                Value::Object(body)
            },
        )
}

/// The part of an error's field before any `[` or `.`: the request field.
fn root(field: &str) -> &str {
    field
        .split(['[', '.'])
        .next()
        .expect("split yields at least one piece")
}

/// Checks the outcome of validating `body` (with `limits`).
fn check_validation(
    body: &Value,
    outcome: &Result<submit::NewTask, ValidationError>,
    limits: &SubmitLimits,
) -> Result<(), TestCaseError> {
    match outcome {
        Ok(task) => {
            let fields = body.as_object().expect("only objects are accepted");
            for key in fields.keys() {
                prop_assert!(
                    FIELDS.contains(&key.as_str()) || READ_ONLY.contains(&key.as_str()),
                    "accepted unknown field {key:?}"
                );
            }
            prop_assert!(is_valid_task_id(&task.id));
            prop_assert_eq!(
                Some(task.template_function.as_str()),
                body["templateFunction"].as_str()
            );
            prop_assert!(!task.template_function.trim().is_empty());
            prop_assert!(!task.template_function.contains('\0'));
            prop_assert!(json_escaped_len(&task.template_function) <= limits.max_template_bytes);
            let list = body["inputList"].as_array().expect("inputList accepted");
            prop_assert_eq!(task.inputs.len(), list.len());
            prop_assert!(task.inputs.len() <= limits.max_items);
            for (input, value) in task.inputs.iter().zip(list) {
                prop_assert!(input_encoded_len(input.as_bytes()) <= limits.max_item_bytes);
                prop_assert!(!input.as_bytes().contains(&0));
                match value {
                    Value::String(s) => prop_assert_eq!(input, s.as_str()),
                    Value::Number(_) | Value::Bool(_) => {
                        let text = value.to_string();
                        prop_assert_eq!(input.as_bytes(), text.as_bytes())
                    }
                    Value::Object(_) => {
                        let decoded =
                            serde_json::from_value::<dts_model::Bytes>(value.clone()).ok();
                        prop_assert_eq!(Some(input), decoded.as_ref())
                    }
                    other => prop_assert!(false, "accepted item {other}"),
                }
            }
            prop_assert!((1..=limits.max_timeout_secs).contains(&task.timeout_secs));
            prop_assert!(task.retries <= limits.max_retries);
            prop_assert!(!task.interpreter.is_empty());
            prop_assert!(
                !task
                    .interpreter
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            );
            if let Some(name) = &task.name {
                prop_assert!(name.chars().count() <= 200);
            }
            let scheduling = &task.scheduling;
            prop_assert!((-1000..=1000).contains(&scheduling.priority));
            prop_assert!((1..=1000).contains(&scheduling.weight));
            prop_assert!(
                scheduling
                    .max_concurrency
                    .is_none_or(|n| (1..=1_000_000).contains(&n))
            );
            prop_assert!(scheduling.requires.len() <= 16);
            for (label, value) in &scheduling.requires {
                prop_assert_eq!(dts_model::scheduling::check_label(label, value), Ok(()));
                prop_assert_eq!(body["requires"][label].as_str(), Some(value.as_str()));
            }
            let rendered = template::render(&task.template_function, &task.variables)
                .map_err(|e| TestCaseError::fail(format!("accepted, yet {e}")))?;
            prop_assert!(json_escaped_len(&rendered) <= limits.max_template_bytes);
            prop_assert!(task.variables.encoded_len() <= limits.max_variables_bytes);
        }
        Err(e) => {
            prop_assert!(CODES.contains(&e.code), "unexpected code {:?}", e.code);
            prop_assert!(!e.message.is_empty());
            let Some(fields) = body.as_object() else {
                prop_assert_eq!(e.code, "invalid_body");
                prop_assert_eq!(&e.field, &None);
                return Ok(());
            };
            let field = e
                .field
                .as_deref()
                .ok_or_else(|| TestCaseError::fail(format!("no field named in {e:?}")))?;
            match e.code {
                "unknown_field" => prop_assert!(fields.contains_key(field), "{e:?}"),
                "missing_field" => {
                    prop_assert!(
                        matches!(fields.get(field), None | Some(Value::Null)),
                        "{e:?}"
                    )
                }
                "repeated_field" => prop_assert!(false, "JSON cannot repeat a field: {e:?}"),
                _ => {
                    prop_assert!(FIELDS.contains(&root(field)), "{e:?}");
                    // `missing_variables` and a too-large rendering blame
                    // variableJson even when it was left out.
                    if root(field) != "variableJson" {
                        prop_assert!(fields.contains_key(root(field)), "{e:?}");
                    }
                }
            }
            if let Some(index) = field
                .strip_prefix("inputList[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                let index: usize = index.parse().expect("an index");
                let list = fields["inputList"].as_array().expect("an array");
                prop_assert!(index < list.len(), "{e:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_submit_from_json_near_valid() {
    let limits = limits();
    fuzz(
        "submit::from_json (near-valid bodies)",
        near_valid_body(),
        |body| {
            let outcome = submit::from_json(&body, &limits);
            check_validation(&body, &outcome, &limits)?;
            // The same body gets the same answer (apart from the fresh id).
            let again = submit::from_json(&body, &limits);
            match (&outcome, &again) {
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (Ok(a), Ok(b)) => prop_assert_eq!(&a.inputs, &b.inputs),
                _ => prop_assert!(false, "different answers for one body"),
            }
            // Sizes are counted as serde_json would write them.
            for text in body["inputList"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                prop_assert_eq!(
                    json_escaped_len(text),
                    serde_json::to_string(text).unwrap().len() - 2
                );
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_submit_from_json_any_value() {
    let limits = limits();
    fuzz(
        "submit::from_json (any JSON value)",
        prop_oneof![
            3 => any_json(),
            1 => (0usize..120, any::<bool>()).prop_map(|(d, o)| json!({"templateFunction": "x", "inputList": [nested(d, o)]})),
            1 => (0usize..120, any::<bool>()).prop_map(|(d, o)| json!({"templateFunction": "x", "inputList": [], "variableJson": nested(d, o)})),
        ],
        |body| check_validation(&body, &submit::from_json(&body, &limits), &limits),
    );
}

// ---------------------------------------------------------------------------
// Target 3: raw request text, as the API parses it before validating.

/// A byte string close to a valid body: serialized, then damaged.
fn damaged_text() -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| (
            0u8,
            a,
            b,
            Vec::new()
        )),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(a, bytes)| (1u8, a, a, bytes)),
        (
            any::<prop::sample::Index>(),
            prop::sample::select(vec![
                &b"\""[..],
                b"\\",
                b"{",
                b"[",
                b"]",
                b"}",
                b",",
                b":",
                b"\xff",
                b"\xc3",
                b"\xed\xa0\x80",
                b"\\ud800",
                b"null",
                b"1e999999",
                b"-",
                b"\x00"
            ])
        )
            .prop_map(|(a, s)| (1u8, a, a, s.to_vec())),
        any::<prop::sample::Index>().prop_map(|a| (2u8, a, a, Vec::new())),
    ];
    (near_valid_body(), prop::collection::vec(mutation, 0..4)).prop_map(|(body, mutations)| {
        let mut text = body.to_string().into_bytes();
        for (kind, a, b, bytes) in mutations {
            if text.is_empty() {
                text.extend_from_slice(&bytes);
                continue;
            }
            let i = a.index(text.len());
            match kind {
                0 => {
                    let j = b.index(text.len());
                    let (lo, hi) = (i.min(j), i.max(j));
                    text.drain(lo..hi);
                }
                1 => {
                    text.splice(i..i, bytes);
                }
                _ => text.truncate(i),
            }
        }
        text
    })
}

fn deep_text() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..5000,
        prop::sample::select(vec!["[", "{\"a\":", "[{\"k\":", "{\"inputList\":"]),
    )
        .prop_map(|(depth, open)| {
            let mut text = String::from("{\"templateFunction\":\"x\",\"inputList\":");
            text.push_str(&open.repeat(depth));
            text.into_bytes()
        })
}

#[test]
fn fuzz_submit_from_raw_text() {
    let limits = limits();
    fuzz(
        "serde_json + submit::from_json (raw text)",
        prop_oneof![
            4 => damaged_text(),
            1 => prop::collection::vec(any::<u8>(), 0..256),
            1 => deep_text(),
        ],
        |bytes| {
            // The API parses with serde_json's default recursion limit.
            if let Ok(body) = serde_json::from_slice::<Value>(&bytes) {
                check_validation(&body, &submit::from_json(&body, &limits), &limits)?;
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Target 4: `Variables::from_json`.

fn check_variables(value: &Value) -> Result<(), TestCaseError> {
    // The object the variables come from, when there is one.
    let object: Option<Map<String, Value>> = match value {
        Value::Object(map) => Some(map.clone()),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        },
        _ => None,
    };
    match Variables::from_json(value) {
        Ok(vars) => {
            match &object {
                Some(map) => {
                    prop_assert_eq!(vars.len(), map.len());
                    for (key, v) in map {
                        let expected = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        prop_assert_eq!(vars.get(key), Some(expected));
                    }
                }
                None => prop_assert!(vars.is_empty(), "variables from {value}"),
            }
            // Both ways of writing them back read back the same.
            prop_assert_eq!(&Variables::from_json(&vars.to_json()).unwrap(), &vars);
            prop_assert_eq!(
                &Variables::from_json(&Value::from(vars.to_json_string())).unwrap(),
                &vars
            );
            let through_serde: Variables =
                serde_json::from_str(&serde_json::to_string(&vars).unwrap()).unwrap();
            prop_assert_eq!(&through_serde, &vars);
        }
        Err(e) => {
            prop_assert!(!e.message.is_empty());
            if e.field == "variableJson" {
                return Ok(());
            }
            let name = e
                .field
                .strip_prefix("variableJson.")
                .ok_or_else(|| TestCaseError::fail(format!("odd field {:?}", e.field)))?;
            let map = object.expect("a per-variable error comes from an object");
            let bad = map
                .iter()
                .find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
                .map(|(k, _)| k.as_str());
            prop_assert_eq!(Some(name), bad, "should blame the first non-scalar");
        }
    }
    Ok(())
}

#[test]
fn fuzz_variables_from_json() {
    fuzz(
        "Variables::from_json",
        prop_oneof![
            3 => variables_object().prop_map(Value::Object),
            2 => variables_object().prop_map(|m| Value::from(Value::Object(m).to_string())),
            2 => any_json(),
            1 => any_json().prop_map(|v| Value::from(v.to_string())),
            1 => damaged_text().prop_map(|b| Value::from(String::from_utf8_lossy(&b).into_owned())),
            1 => nasty_text().prop_map(Value::from),
            1 => (1usize..3000).prop_map(|d| Value::from("[".repeat(d))),
        ],
        |value| check_variables(&value),
    );
}

// ---------------------------------------------------------------------------
// Regression and edge cases the fuzzers keep in view.

#[test]
fn a_sentinel_check_catches_values_that_would_form_placeholders() {
    // The check above relies on values like `§0§` never forming a
    // placeholder; a value of plain name bytes can, and that is by design
    // (values are not rescanned).
    let vars = Variables::from_json(&json!({"a": "a"})).unwrap();
    assert_eq!(template::render("{{ {{a}} }}", &vars).unwrap(), "{{ a }}");
    let vars = Variables::from_json(&json!({"a": sentinel(0)})).unwrap();
    let out = template::render("{{ {{a}} }}", &vars).unwrap();
    assert!(template::placeholders(&out).is_empty(), "{out}");
}

#[test]
fn variables_nested_beyond_the_parsers_limit_are_refused_not_overflowed() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = Variables::from_json(&Value::from(deep)).unwrap_err();
    assert_eq!(err.field, "variableJson");
    let mut object = BTreeMap::new();
    object.insert("v", "{".repeat(100_000));
    assert!(Variables::from_json(&json!(object)).is_ok());
}
