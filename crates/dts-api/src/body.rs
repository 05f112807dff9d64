//! Reading request bodies: size limit, content type, JSON and the seed's
//! `application/x-www-form-urlencoded` form, each failure a clear 4xx.

use crate::error::ApiError;
use crate::strict_json::{self, StrictJsonError};
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use dts_model::ValidationError;
use serde_json::Value;

/// The kinds of body a submission may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded`, as the seed's client posts.
    Form,
}

/// What the `Content-Type` header says, if it is one of ours.
pub fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(BodyKind::Json),
        "application/x-www-form-urlencoded" => Some(BodyKind::Form),
        _ => None,
    }
}

/// The body's bytes, or a 413 naming the limit when it was too large.
pub fn bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::Invalid(ValidationError::general(
                "too_large_body",
                format!(
                    "the request body is larger than the {limit}-byte limit (limits.max-body-bytes)"
                ),
            ))
        } else {
            ApiError::Invalid(ValidationError::general(
                "unreadable_body",
                format!("the request body could not be read: {rejection}"),
            ))
        }
    })
}

/// Parses a JSON body; a key given twice in one object is refused, naming
/// it, as a repeated form field is.
pub fn json(bytes: &[u8]) -> Result<Value, ApiError> {
    strict_json::parse(bytes).map_err(|e| match e {
        StrictJsonError::Syntax(e) => ApiError::Invalid(ValidationError::general(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )),
        StrictJsonError::Repeated { path } => ApiError::Invalid(ValidationError::field(
            "repeated_field",
            path.clone(),
            format!("`{path}` is given more than once"),
        )),
    })
}

/// The JSON body of an endpoint that takes only JSON (`endpoint`, such as
/// `POST /v1/tasks`, names it in the 415): the content type, the size
/// limit and the strict parse, in that order.
pub fn json_only(
    endpoint: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, ApiError> {
    if body_kind(headers) != Some(BodyKind::Json) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "{endpoint} takes a JSON body (Content-Type: application/json)"
        )));
    }
    json(&bytes(body, limit)?)
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs, refusing
/// text that is not UTF-8 after percent-decoding (naming the field).
pub fn form_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for part in bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        let key = decode_component(raw_key).map_err(|_| {
            ApiError::Invalid(ValidationError::general(
                "invalid_form",
                "a form field name is not valid UTF-8 after percent-decoding",
            ))
        })?;
        let value = decode_component(raw_value).map_err(|_| {
            ApiError::Invalid(ValidationError::field(
                "invalid_form",
                key.clone(),
                format!("the value of `{key}` is not valid UTF-8 after percent-decoding"),
            ))
        })?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn decode_component(raw: &[u8]) -> Result<String, std::str::Utf8Error> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus_as_space)
        .decode_utf8()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_plus_and_percent_and_keep_order() {
        let pairs =
            form_pairs(b"inputList=a+b&inputList=c%2Cd&templateFunction=echo%20%24%31&flag")
                .unwrap();
        let expected = [
            ("inputList", "a b"),
            ("inputList", "c,d"),
            ("templateFunction", "echo $1"),
            ("flag", ""),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn invalid_utf8_in_a_form_value_names_the_field() {
        let err = form_pairs(b"templateFunction=%FF%FE").unwrap_err();
        match err {
            ApiError::Invalid(e) => assert_eq!(e.field.as_deref(), Some("templateFunction")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn content_type_parameters_and_case_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(body_kind(&headers), Some(BodyKind::Json));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(body_kind(&headers), None);
    }
}
