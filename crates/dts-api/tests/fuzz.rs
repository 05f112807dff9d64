//! Fuzzing how the API decodes request bodies: the seed's form
//! (`body::form_pairs`, then `submit::from_form`) and JSON
//! (`strict_json::parse`, which refuses repeated keys).
//!
//! Each target runs for `DTS_FUZZ_SECS` seconds (3 by default) and prints how
//! many cases it ran; see `crates/dts-model/tests/fuzz.rs` for a long run.
//!
//! Properties beyond "no panic": any pairs, percent-encoded in any of the
//! legal ways, decode back to exactly themselves; `form_pairs` agrees with an
//! independent reference decoder, and its errors are `invalid_form` naming
//! the field whose value is bad; a repeated field is refused naming it; every
//! validation error names a field of the form; the strict JSON parser accepts
//! exactly what serde_json accepts, with the same value, except that it
//! refuses a repeated key, always and only when there is one.

use dts_api::body::form_pairs;
use dts_api::error::ApiError;
use dts_api::strict_json::{self, StrictJsonError};
use dts_model::submit::{self, SubmitLimits};
use dts_testkit::fuzz::fuzz;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

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

const FORM_FIELDS: &[&str] = &[
    "templateFunction",
    "inputList",
    "inputList[]",
    "variableJson",
    "name",
    "interpreter",
    "timeoutSecs",
    "retries",
    "id",
    "status",
];

/// Text with everything a form encoder must escape.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
        "[&=+% ,;#?\\x00-\\x1f]{0,8}",
        prop::sample::select(vec![
            "",
            "a+b",
            "a b",
            "100%",
            "%zz",
            "%",
            "é",
            "😀",
            "\u{0}",
            "{{x}}",
            "$1",
            "a,b,c",
            "{\"x\":1}",
            "\r\n",
        ])
        .prop_map(String::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FORM_FIELDS.to_vec()).prop_map(String::from),
        1 => text(),
    ]
}

/// How one byte is written in the encoded form.
#[derive(Debug, Clone, Copy)]
struct Style {
    /// Space as `+` (else `%20`).
    plus: bool,
    /// Hex digits in lower case.
    lower: bool,
    /// Encode unreserved characters too.
    everything: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(plus, lower, everything)| Style {
        plus,
        lower,
        everything,
    })
}

fn encode(text: &str, style: Style) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b' ' if style.plus => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~'
                if !style.everything =>
            {
                out.push(byte as char)
            }
            _ if style.lower => out.push_str(&format!("%{byte:02x}")),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn encode_form(pairs: &[(String, String)], style: Style) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k, style), encode(v, style)))
        .collect::<Vec<_>>()
        .join("&")
}

fn invalid(error: ApiError) -> Result<dts_model::ValidationError, TestCaseError> {
    match error {
        ApiError::Invalid(e) => Ok(e),
        other => Err(TestCaseError::fail(format!("not a 400: {other:?}"))),
    }
}

/// Checks `from_form` on decoded pairs: a repeated field is named; any other
/// error names a field of the form (or one it lacks); success keeps the items.
fn check_from_form(pairs: &[(String, String)]) -> Result<(), TestCaseError> {
    let limits = limits();
    let outcome = submit::from_form(pairs, &limits);
    let mut seen: Vec<&str> = Vec::new();
    let mut first_repeat = None;
    for (k, _) in pairs {
        if k == "inputList" || k == "inputList[]" {
            continue;
        }
        if seen.contains(&k.as_str()) {
            first_repeat = Some(k.as_str());
            break;
        }
        seen.push(k);
    }
    match (&outcome, first_repeat) {
        (Err(e), Some(key)) => {
            prop_assert_eq!(e.code, "repeated_field");
            prop_assert_eq!(e.field.as_deref(), Some(key));
        }
        (Ok(_), Some(key)) => prop_assert!(false, "accepted a repeated {key:?}"),
        (Err(e), None) => {
            prop_assert!(!e.message.is_empty());
            let field = e
                .field
                .as_deref()
                .ok_or_else(|| TestCaseError::fail(format!("no field in {e:?}")))?;
            let root = field.split(['[', '.']).next().unwrap_or("");
            let present = pairs.iter().any(|(k, _)| {
                k == field || k == root || (root == "inputList" && k == "inputList[]")
            });
            match e.code {
                "missing_field" => prop_assert!(
                    !pairs.iter().any(|(k, _)| k == field) || field == "inputList",
                    "{e:?}"
                ),
                // Blamed when the rendered script is wrong, even if absent.
                _ if root == "variableJson" => {}
                _ => prop_assert!(present, "{e:?} names a field not in the form"),
            }
        }
        (Ok(task), None) => {
            let items: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| k == "inputList" || k == "inputList[]")
                .map(|(_, v)| v.as_str())
                .collect();
            let expected: Vec<dts_model::Bytes> = match items.as_slice() {
                [] | [""] => Vec::new(),
                [one] => one.split(',').map(dts_model::Bytes::from).collect(),
                many => many.iter().map(|s| dts_model::Bytes::from(*s)).collect(),
            };
            prop_assert_eq!(&task.inputs, &expected);
            prop_assert!(task.inputs.len() <= limits.max_items);
        }
    }
    Ok(())
}

#[test]
fn fuzz_form_pairs_round_trip() {
    fuzz(
        "body::form_pairs (round trip)",
        (prop::collection::vec((text(), text()), 0..10), style()),
        |(pairs, style)| {
            let encoded = encode_form(&pairs, style);
            let decoded = form_pairs(encoded.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{encoded:?}: {e}")))?;
            // An empty pair list and one ("", "") pair both encode to nothing
            // or "=", which decode as written.
            prop_assert_eq!(&decoded, &pairs, "{}", encoded);
            check_from_form(&decoded)
        },
    );
}

/// A form body near a valid one: encoded pairs with damage, or random bytes.
fn form_bytes() -> impl Strategy<Value = Vec<u8>> {
    let damage = prop_oneof![
        prop::sample::select(vec![
            &b"%"[..],
            b"%f",
            b"%ff",
            b"%FE%FF",
            b"%c3",
            b"%c3%28",
            b"%ed%a0%80",
            b"%00",
            b"&",
            b"=",
            b"==",
            b"&&&",
            b"+",
            b"%zz",
            b"\xff",
            b"\xc3",
            b"\x00",
        ])
        .prop_map(|s| s.to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop_oneof![
        4 => (
            prop::collection::vec((key(), text()), 0..8),
            style(),
            prop::collection::vec((any::<prop::sample::Index>(), damage), 0..4),
        )
            .prop_map(|(pairs, style, damage)| {
                let mut bytes = encode_form(&pairs, style).into_bytes();
                for (at, insert) in damage {
                    let i = if bytes.is_empty() { 0 } else { at.index(bytes.len() + 1) };
                    bytes.splice(i..i, insert);
                }
                bytes
            }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => (key(), 0usize..5000).prop_map(|(k, n)| format!("{k}={}", "%41".repeat(n)).into_bytes()),
    ]
}

/// A reference decoder, written independently of `form_pairs`: `+` is a
/// space, `%XY` with two hex digits is a byte, anything else stays as written.
fn reference_decode(raw: &[u8]) -> Vec<u8> {
    let raw: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    // ends: every turn moves `i` on through the finite input.
    while i < raw.len() {
        if raw[i] == b'%' {
            if let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// What `form_pairs` should answer: the pairs, or the field whose value is
/// not UTF-8 (`Some(None)` when a name is not).
fn reference_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, Option<String>> {
    let mut pairs = Vec::new();
    for part in bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        let key = String::from_utf8(reference_decode(k)).map_err(|_| None)?;
        let value = String::from_utf8(reference_decode(v)).map_err(|_| Some(key.clone()))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[test]
fn fuzz_form_bytes_then_validation() {
    fuzz(
        "body::form_pairs + submit::from_form (raw bytes)",
        form_bytes(),
        |bytes| {
            match (form_pairs(&bytes), reference_pairs(&bytes)) {
                (Ok(pairs), Ok(expected)) => {
                    prop_assert_eq!(&pairs, &expected);
                    check_from_form(&pairs)?;
                }
                (Err(e), Err(field)) => {
                    let e = invalid(e)?;
                    prop_assert_eq!(e.code, "invalid_form");
                    prop_assert!(!e.message.is_empty());
                    prop_assert_eq!(e.field, field);
                }
                (got, expected) => {
                    prop_assert!(false, "form_pairs gave {got:?}, the reference {expected:?}")
                }
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_from_form_structured_pairs() {
    fuzz(
        "submit::from_form (structured pairs)",
        prop::collection::vec(
            (
                key(),
                prop_oneof![
                    text(),
                    (-5i64..2000).prop_map(|n| n.to_string()),
                    Just("99999999999999999999".to_string()),
                    Just(" 7 ".to_string()),
                    Just("echo {{x}} $1".to_string()),
                    Just("{\"x\": \"1\"}".to_string()),
                ],
            ),
            0..10,
        ),
        |pairs| check_from_form(&pairs),
    );
}

/// JSON text, and whether some object in it names a key twice. Keys come from
/// a small pool (`\u0061` is `a` written another way) so repeats are common.
fn json_text() -> impl Strategy<Value = (String, bool)> {
    let leaf = prop::sample::select(vec![
        "null",
        "true",
        "false",
        "0",
        "-1",
        "2.5e3",
        "18446744073709551615",
        "-9223372036854775808",
        "1.850302716630693e84",
        "\"\"",
        "\"s\"",
        "\"\\u00e9\\n\"",
        "\"\\ud83d\\ude00\"",
        "[]",
        "{}",
    ])
    .prop_map(|s| (s.to_string(), false));
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                let dup = items.iter().any(|(_, d)| *d);
                let texts: Vec<String> = items.into_iter().map(|(t, _)| t).collect();
                (format!("[{}]", texts.join(",")), dup)
            }),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "b", "\\u0061", "A", "é", ""]),
                    inner
                ),
                0..5,
            )
            .prop_map(|pairs| {
                let mut seen = Vec::new();
                let mut dup = false;
                let mut texts = Vec::new();
                for (key, (value, inner_dup)) in pairs {
                    let decoded = if key == "\\u0061" { "a" } else { key };
                    dup |= inner_dup || seen.contains(&decoded);
                    seen.push(decoded);
                    texts.push(format!("\"{key}\":{value}"));
                }
                (format!("{{{}}}", texts.join(",")), dup)
            }),
        ]
    })
}

/// Damages `text`: removes a range, inserts bytes, or cuts it short.
fn damage(text: &str, edits: &[(u8, prop::sample::Index, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for (kind, at, insert) in edits {
        let i = at.index(bytes.len() + 1);
        match kind % 3 {
            0 => {
                let end = (i + insert.len()).min(bytes.len());
                bytes.drain(i..end);
            }
            1 => {
                bytes.splice(i..i, insert.iter().copied());
            }
            _ => bytes.truncate(i),
        }
    }
    bytes
}

#[test]
fn fuzz_strict_json_against_serde_json() {
    let edit = (
        any::<u8>(),
        any::<prop::sample::Index>(),
        prop::collection::vec(
            prop::sample::select(vec![
                b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', 0xff, 0xc3, b'a', b' ',
            ]),
            0..4,
        ),
    );
    fuzz(
        "strict_json::parse (against serde_json)",
        (json_text(), prop::collection::vec(edit, 0..3)),
        |((text, has_repeat), edits)| {
            let bytes = damage(&text, &edits);
            let ours = strict_json::parse(&bytes);
            let theirs = serde_json::from_slice::<Value>(&bytes);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Ok(_), Err(e)) => prop_assert!(false, "accepted what serde_json refuses: {e}"),
                (Err(StrictJsonError::Syntax(_)), Err(_)) => {}
                (Err(StrictJsonError::Syntax(e)), Ok(_)) => {
                    prop_assert!(false, "refused what serde_json accepts: {e}")
                }
                (Err(StrictJsonError::Repeated { path }), _) => {
                    // Damage can create a repeat; without it, only a real one counts.
                    prop_assert!(!edits.is_empty() || has_repeat, "no repeat, yet {path:?}");
                }
            }
            if edits.is_empty() {
                // Undamaged text: refused exactly when a key is repeated.
                let refused = matches!(ours, Err(StrictJsonError::Repeated { .. }));
                prop_assert_eq!(refused, has_repeat, "{}", text);
            }
            Ok(())
        },
    );
}
