//! Bytes that are usually text: an item's input and its output.
//!
//! A script's output is bytes (`gzip -c` writes binary; a file name may not
//! be UTF-8), and dts must hand back exactly what was written. JSON has no
//! bytes, so [`Bytes`] is written as a JSON string when it is valid UTF-8
//! (the common case, readable as it is) and otherwise as
//! `{"base64": "..."}`, which loses nothing. Reading accepts both forms.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Owned bytes, shown as text when they are valid UTF-8.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(Vec<u8>);

impl Bytes {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text, if the bytes are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The text, with U+FFFD for each invalid sequence: for display only,
    /// never where the exact bytes matter.
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The bytes in standard base64, as the API's `...Base64` fields carry
    /// them.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    /// Bytes from standard base64 text.
    pub fn from_base64(text: &str) -> Result<Self, base64::DecodeError> {
        STANDARD.decode(text).map(Self)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(text) => fmt::Debug::fmt(text, f),
            None => write!(f, "b{:?}", self.to_string_lossy()),
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl From<String> for Bytes {
    fn from(text: String) -> Self {
        Self(text.into_bytes())
    }
}

impl From<&str> for Bytes {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().to_vec())
    }
}

impl PartialEq<str> for Bytes {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(text) => serializer.serialize_str(text),
            None => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &self.to_base64())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, or {"base64": "..."} for bytes that are not UTF-8"#)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes, E> {
        Ok(Bytes::from(text))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Bytes, E> {
        Ok(Bytes::from(text))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::from(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::new(bytes))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bytes, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "base64" || found.is_some() {
                return Err(de::Error::custom(format!(
                    r#"unexpected key {key:?}: bytes are {{"base64": "..."}}"#
                )));
            }
            let text: String = map.next_value()?;
            found = Some(Bytes::from_base64(&text).map_err(|e| {
                de::Error::custom(format!("base64 is not valid standard base64: {e}"))
            })?);
        }
        found.ok_or_else(|| de::Error::missing_field("base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_written_as_a_json_string() {
        let json = serde_json::to_string(&Bytes::from("café\n")).unwrap();
        assert_eq!(json, "\"café\\n\"");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_written_as_base64_and_read_back_exactly() {
        let bytes = Bytes::new(vec![b'c', b'a', b'f', 0xe9, 0x1f, 0x8b, 0x00]);
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(json, r#"{"base64":"Y2Fm6R+LAA=="}"#);
        let back: Bytes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn both_forms_are_read() {
        let text: Bytes = serde_json::from_str("\"a b\"").unwrap();
        assert_eq!(text, "a b");
        let encoded: Bytes = serde_json::from_str(r#"{"base64":"YSBi"}"#).unwrap();
        assert_eq!(encoded, "a b");
    }

    #[test]
    fn a_bad_object_is_refused_saying_what_bytes_look_like() {
        let wrong = serde_json::from_str::<Bytes>(r#"{"hex":"00"}"#).unwrap_err();
        assert!(wrong.to_string().contains("base64"), "{wrong}");
        let bad = serde_json::from_str::<Bytes>(r#"{"base64":"!!"}"#).unwrap_err();
        assert!(
            bad.to_string().contains("not valid standard base64"),
            "{bad}"
        );
    }

    #[test]
    fn lossy_text_is_for_display_only() {
        assert_eq!(Bytes::new(vec![b'a', 0xff]).to_string_lossy(), "a\u{fffd}");
        assert_eq!(Bytes::new(vec![b'a', 0xff]).as_str(), None);
    }
}
