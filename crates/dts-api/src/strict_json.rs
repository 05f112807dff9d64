//! Parsing a request body into a JSON [`Value`] strictly: as
//! `serde_json::from_slice`, with its recursion limit, but an object that
//! names a key twice is refused instead of keeping the last value.
//!
//! Last-wins would let `{"templateFunction":"true","templateFunction":"rm -rf ~"}`
//! pass a proxy or log that reads the first value while dts runs the second;
//! the seed's form already refuses repeated fields, and so does JSON now.
//! Called by [`crate::body::json`].

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// Why a body was refused.
#[derive(Debug)]
pub enum StrictJsonError {
    /// Not JSON (syntax, encoding, nesting deeper than serde_json's limit).
    Syntax(serde_json::Error),
    /// An object names a key twice; `path` is where, e.g. `variableJson.x`.
    Repeated {
        /// Where the key is, e.g. `variableJson.x`.
        path: String,
    },
}

/// Parses `bytes` as one JSON value, refusing repeated keys.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let repeated = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
        path: &Path::Root,
        repeated: &repeated,
    };
    match seed.deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(StrictJsonError::Syntax)?;
            Ok(value)
        }
        Err(e) => match repeated.into_inner() {
            Some(path) => Err(StrictJsonError::Repeated { path }),
            None => Err(StrictJsonError::Syntax(e)),
        },
    }
}

/// Where a value sits, built on the stack and written out only for an error.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => match parent.render() {
                p if p.is_empty() => (*key).to_string(),
                p => format!("{p}.{key}"),
            },
            Path::Index(parent, index) => format!("{}[{index}]", parent.render()),
        }
    }
}

/// Deserializes one value at `path`; records the path of a repeated key.
struct Seed<'a> {
    path: &'a Path<'a>,
    repeated: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = Seed {
                path: &path,
                repeated: self.repeated,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = Path::Key(self.path, &key);
            if object.contains_key(&key) {
                let path = path.render();
                let message = format!("`{path}` is given more than once");
                *self.repeated.borrow_mut() = Some(path);
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(Seed {
                path: &path,
                repeated: self.repeated,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repeated(text: &str) -> String {
        match parse(text.as_bytes()) {
            Err(StrictJsonError::Repeated { path }) => path,
            other => panic!("{text}: expected a repeated key, got {other:?}"),
        }
    }

    /// Bug found by the hostile-input table: with serde_json's last-wins,
    /// `{"templateFunction":"true","templateFunction":"rm -rf ~"}` was
    /// accepted and ran the second script.
    #[test]
    fn a_json_field_given_twice_is_refused_not_last_wins() {
        assert_eq!(
            repeated(r#"{"templateFunction":"true","templateFunction":"rm -rf ~","inputList":[]}"#),
            "templateFunction"
        );
        assert_eq!(
            repeated(r#"{"variableJson":{"x":1,"y":2,"x":3}}"#),
            "variableJson.x"
        );
        assert_eq!(
            repeated(r#"{"inputList":["a",{"k":1,"k":2}]}"#),
            "inputList[1].k"
        );
        assert_eq!(repeated(r#"[{"a":1,"a":1}]"#), "[0].a");
    }

    #[test]
    fn parses_what_serde_json_parses() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,true,false,null,"é\u0000\ud83d\ude00"],"b":{"c":{}}}"#,
            "[]",
            "\"x\"",
            " 18446744073709551615 ",
            "-9223372036854775808",
            "1.850302716630693e84",
        ] {
            let ours = parse(text.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
        assert_eq!(parse(br#"{"a":{"a":1}}"#).unwrap(), json!({"a": {"a": 1}}));
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for text in ["", "{", "[1,]", "{} x", "\u{feff}{}", "NaN", "1e999", &deep] {
            assert!(
                matches!(parse(text.as_bytes()), Err(StrictJsonError::Syntax(_))),
                "{text:?}"
            );
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
        assert!(matches!(
            parse(b"{\"a\":\"\xff\"}"),
            Err(StrictJsonError::Syntax(_))
        ));
    }
}
