//! A task's variables (`variableJson`): names mapped to string, number or
//! boolean values, accepted as a JSON object or, as the seed sent them, as a
//! string holding one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Variables with their values as submitted (types kept for display).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables(BTreeMap<String, Value>);

/// Why a `variableJson` value was refused: `field` is the JSON path to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct VariablesError {
    /// The JSON path to blame (`variableJson.name`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Variables {
    /// Accepts an object, a string holding an object, an empty string or null
    /// (no variables). Values must be strings, numbers or booleans.
    pub fn from_json(value: &Value) -> Result<Variables, VariablesError> {
        match value {
            Value::Null => Ok(Variables::default()),
            Value::Object(map) => Self::from_map(map),
            Value::String(text) if text.trim().is_empty() => Ok(Variables::default()),
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Self::from_map(&map),
                Ok(_) => Err(VariablesError {
                    field: "variableJson".into(),
                    message: "must be a JSON object (or a string holding one)".into(),
                }),
                Err(e) => Err(VariablesError {
                    field: "variableJson".into(),
                    message: format!("is a string but not valid JSON: {e}"),
                }),
            },
            _ => Err(VariablesError {
                field: "variableJson".into(),
                message: "must be a JSON object (or a string holding one)".into(),
            }),
        }
    }

    fn from_map(map: &Map<String, Value>) -> Result<Variables, VariablesError> {
        let mut vars = BTreeMap::new();
        for (name, value) in map {
            match value {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    vars.insert(name.clone(), value.clone());
                }
                other => {
                    let kind = match other {
                        Value::Null => "null",
                        Value::Array(_) => "an array",
                        _ => "an object",
                    };
                    return Err(VariablesError {
                        field: format!("variableJson.{name}"),
                        message: format!("must be a string, number or boolean, not {kind}"),
                    });
                }
            }
        }
        Ok(Variables(vars))
    }

    /// The text pasted into the script for `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|value| match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// How many variables there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The variables as a JSON object, values in their submitted types.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The variables as the seed carried them: a string holding a JSON object.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// Bytes of [`Variables::to_json_string`], counted without building it.
    pub fn encoded_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        // Writing into a counter cannot fail, and the values are plain JSON.
        let _ = serde_json::to_writer(&mut count, &self.0);
        count.0
    }
}

impl Serialize for Variables {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Variables::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_an_object_or_a_string_holding_one() {
        let a = Variables::from_json(&json!({"x": "1", "n": 2, "b": false})).unwrap();
        let b = Variables::from_json(&json!(r#"{"x": "1", "n": 2, "b": false}"#)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("x").as_deref(), Some("1"));
        assert_eq!(a.get("n").as_deref(), Some("2"));
        assert_eq!(a.get("b").as_deref(), Some("false"));
        assert_eq!(a.get("missing"), None);
    }

    #[test]
    fn empty_forms_mean_no_variables() {
        for v in [json!(null), json!(""), json!("  "), json!({})] {
            assert!(Variables::from_json(&v).unwrap().is_empty(), "{v}");
        }
    }

    #[test]
    fn nested_values_are_refused_naming_the_variable() {
        for (value, kind) in [
            (json!({"deep": {"a": 1}}), "an object"),
            (json!({"deep": [1]}), "an array"),
            (json!({"deep": null}), "null"),
        ] {
            let err = Variables::from_json(&value).unwrap_err();
            assert_eq!(err.field, "variableJson.deep");
            assert!(err.message.contains(kind), "{}", err.message);
        }
        let err = Variables::from_json(&json!(r#"{"deep": [1]}"#)).unwrap_err();
        assert_eq!(err.field, "variableJson.deep");
    }

    #[test]
    fn other_shapes_are_refused_naming_variable_json() {
        for value in [
            json!(1),
            json!([1]),
            json!(true),
            json!("not json"),
            json!("[1,2]"),
        ] {
            let err = Variables::from_json(&value).unwrap_err();
            assert_eq!(err.field, "variableJson", "{value}");
        }
    }

    /// Bug found by fuzzing: serde_json's default float parser can be one ulp
    /// off, so `1.850302716630693e84` went into the script (and came back
    /// from the store) as `1.8503027166306932e84`. Fixed by serde_json's
    /// `float_roundtrip` feature.
    #[test]
    fn numeric_variables_keep_their_exact_value_through_the_store() {
        let text = r#"{"x": 1.850302716630693e84, "y": 0.30000000000000004}"#;
        let v = Variables::from_json(&json!(text)).unwrap();
        assert_eq!(v.get("x").as_deref(), Some("1.850302716630693e+84"));
        assert_eq!(v.get("y").as_deref(), Some("0.30000000000000004"));
        let stored = serde_json::to_string(&v).unwrap();
        let loaded: Variables = serde_json::from_str(&stored).unwrap();
        assert_eq!(loaded, v);
    }

    #[test]
    fn the_encoded_length_is_that_of_the_json_text() {
        let v = Variables::from_json(&json!({"n": 2, "s": "t\"\n", "b": true, "é": 1.5})).unwrap();
        assert_eq!(v.encoded_len(), v.to_json_string().len());
        assert_eq!(Variables::default().encoded_len(), 2);
    }

    #[test]
    fn seed_string_form_keeps_value_types() {
        let v = Variables::from_json(&json!({"n": 2, "s": "t"})).unwrap();
        assert_eq!(v.to_json_string(), r#"{"n":2,"s":"t"}"#);
    }
}
