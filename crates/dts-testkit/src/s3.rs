//! A private S3 emulator: the broker's durable storage in the tests that
//! restart the broker. tansu keeps topics, records and committed offsets in
//! the bucket, so a broker restart is a real one and loses nothing, as with
//! a real Kafka's disks.
//!
//! Why S3 and not PostgreSQL: the pinned tansu binary is built with its
//! memory and S3 storage engines only (docs/kafka-broker.md).
//!
//! Why an emulator of our own: tansu lists all of a partition's objects at
//! every fetch that has data to return, and the emulator used before (moto)
//! walked every key of the bucket for each page of a listing, so its CPU grew
//! with everything the broker had ever written, until an hour's chaos soak
//! stalled (docs/reliability.md). Here the keys are kept in order, and a page
//! of a listing costs its own length.
//!
//! It serves one bucket, in memory, with what the broker's S3 client
//! (`object_store`) uses: PUT with `If-None-Match: *` and `If-Match` (the
//! compare-and-set tansu's group state relies on, atomic here), GET and HEAD
//! (with `If-Match`, `If-None-Match` and a byte `Range`), DELETE, the
//! multi-object delete (`POST ?delete`) and ListObjectsV2 (`prefix`,
//! `delimiter`, `continuation-token`, `start-after`, `max-keys`).
//! Credentials and signatures are not checked.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;
use tokio::sync::oneshot;

/// The bucket the broker keeps its log in.
pub(crate) const BUCKET: &str = "tansu";

/// The most keys a listing page holds, as S3's default.
const MAX_KEYS: usize = 1000;

/// A private S3 emulator on a free loopback port, serving [`BUCKET`] from
/// memory on a thread of its own; stopped when dropped. Its data outlives
/// broker restarts but not the emulator.
pub(crate) struct S3Server {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    pub(crate) fn start() -> S3Server {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .unwrap_or_else(|e| panic!("the S3 emulator's listener on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the S3 emulator's port: {e}"))
            .port();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3-emulator".to_string())
            .spawn(move || serve(listener, stopped))
            .unwrap_or_else(|e| panic!("the S3 emulator's thread: {e}"));
        S3Server {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment the broker needs to use it: the endpoint, plain
    /// HTTP, and dummy credentials (the emulator checks none).
    pub(crate) fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "dts-test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "dts-test".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs the emulator until `stopped` fires; dropping the runtime then ends
/// every open connection.
fn serve(listener: std::net::TcpListener, stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("the S3 emulator's runtime: {e}"));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .unwrap_or_else(|e| panic!("the S3 emulator's listener: {e}"));
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::new(Mutex::new(Bucket::default())));
        tokio::select! {
            served = axum::serve(listener, app) => {
                if let Err(e) = served {
                    eprintln!("the S3 emulator stopped: {e}");
                }
            }
            _ = stopped => {}
        }
    });
}

/// The bucket's objects, ordered by key so that a listing is a range.
#[derive(Default)]
struct Bucket {
    objects: BTreeMap<String, Object>,
    /// The next ETag: every write gets a new one.
    next_etag: u64,
}

struct Object {
    body: Bytes,
    /// Quoted, as S3 sends it.
    etag: String,
    modified: SystemTime,
}

type Shared = Arc<Mutex<Bucket>>;

async fn handle(
    State(bucket): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = decode(uri.path().trim_start_matches('/'));
    let (name, key) = match path.split_once('/') {
        Some((name, key)) => (name.to_string(), key.to_string()),
        None => (path, String::new()),
    };
    if name != BUCKET {
        return error(StatusCode::NOT_FOUND, "NoSuchBucket");
    }
    let query = parse_query(uri.query().unwrap_or(""));
    let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
    match (method, key.is_empty()) {
        // Creating the bucket: it always exists.
        (Method::PUT, true) => StatusCode::OK.into_response(),
        (Method::PUT, false) => put(&mut bucket, key, &headers, body),
        (Method::GET, false) => get(&bucket, &key, &headers, true),
        (Method::HEAD, false) => get(&bucket, &key, &headers, false),
        (Method::DELETE, false) => {
            bucket.objects.remove(&key);
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, true) => list(&bucket, &query),
        (Method::POST, true) if query.contains_key("delete") => delete_many(&mut bucket, &body),
        _ => error(StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
    }
}

/// PUT, refused with 412 when `If-None-Match: *` finds the key or
/// `If-Match` finds another ETag (or no object): the check and the write
/// happen under one lock, so concurrent writers get compare-and-set.
fn put(bucket: &mut Bucket, key: String, headers: &HeaderMap, body: Bytes) -> Response {
    if headers.contains_key("x-amz-copy-source") {
        return error(StatusCode::NOT_IMPLEMENTED, "NotImplemented");
    }
    let current = bucket.objects.get(&key).map(|object| object.etag.as_str());
    if header_str(headers, &header::IF_NONE_MATCH) == Some("*") && current.is_some() {
        return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
    }
    if let Some(expected) = header_str(headers, &header::IF_MATCH) {
        if current != Some(expected) {
            return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
        }
    }
    bucket.next_etag += 1;
    let etag = format!("\"{:x}\"", bucket.next_etag);
    bucket.objects.insert(
        key,
        Object {
            body,
            etag: etag.clone(),
            modified: SystemTime::now(),
        },
    );
    ([(header::ETAG, etag)], StatusCode::OK).into_response()
}

/// GET (or HEAD, without the body), honouring `If-Match`, `If-None-Match`
/// and a `Range` of the form `bytes=A-B`, `bytes=A-` or `bytes=-N`.
fn get(bucket: &Bucket, key: &str, headers: &HeaderMap, with_body: bool) -> Response {
    let Some(object) = bucket.objects.get(key) else {
        return error(StatusCode::NOT_FOUND, "NoSuchKey");
    };
    if let Some(expected) = header_str(headers, &header::IF_MATCH) {
        if expected != "*" && expected != object.etag {
            return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
        }
    }
    if let Some(unwanted) = header_str(headers, &header::IF_NONE_MATCH) {
        if unwanted == "*" || unwanted == object.etag {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
    let size = object.body.len();
    let (status, range) = match header_str(headers, &header::RANGE) {
        None => (StatusCode::OK, 0..size),
        Some(range) => match byte_range(range, size) {
            Some(range) => (StatusCode::PARTIAL_CONTENT, range),
            None => return error(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
        },
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::ETAG, &object.etag)
        .header(header::LAST_MODIFIED, http_date(object.modified))
        .header(header::CONTENT_LENGTH, range.len())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        let last = range.end.saturating_sub(1);
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{last}/{size}", range.start),
        );
    }
    let body = if with_body {
        Body::from(object.body.slice(range))
    } else {
        Body::empty()
    };
    response
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"))
}

/// The byte range a `Range` header asks of an object of `size` bytes.
fn byte_range(range: &str, size: usize) -> Option<std::ops::Range<usize>> {
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    let (start, end) = match (first.parse::<usize>().ok(), last.parse::<usize>().ok()) {
        (Some(start), Some(last)) => (start, last.saturating_add(1).min(size)),
        (Some(start), None) if last.is_empty() => (start, size),
        (None, Some(suffix)) if first.is_empty() => (size.saturating_sub(suffix), size),
        _ => return None,
    };
    (start < end).then_some(start..end)
}

/// ListObjectsV2. A page holds at most `max-keys` entries (keys and common
/// prefixes); its continuation token is the last key it passed, so the next
/// page starts after it, and the keys under a common prefix already given
/// are passed in the page that gave it.
fn list(bucket: &Bucket, query: &BTreeMap<String, String>) -> Response {
    if query.get("list-type").map(String::as_str) != Some("2") {
        return error(StatusCode::NOT_IMPLEMENTED, "NotImplemented");
    }
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let delimiter = query.get("delimiter").filter(|d| !d.is_empty());
    let max_keys = query
        .get("max-keys")
        .and_then(|max| max.parse::<usize>().ok())
        .unwrap_or(MAX_KEYS)
        .min(MAX_KEYS);
    let after = [query.get("continuation-token"), query.get("start-after")]
        .into_iter()
        .flatten()
        .max()
        .filter(|after| **after >= prefix);
    let start = match after {
        Some(after) => Bound::Excluded(after.clone()),
        None => Bound::Included(prefix.clone()),
    };

    let mut contents = String::new();
    let mut common_prefixes = String::new();
    let mut last_prefix: Option<String> = None;
    let mut entries = 0;
    let mut passed: Option<&str> = None;
    let mut truncated = false;
    for (key, object) in bucket
        .objects
        .range((start, Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(&prefix))
    {
        let common = delimiter.and_then(|delimiter| {
            key[prefix.len()..]
                .find(delimiter.as_str())
                .map(|at| key[..prefix.len() + at + delimiter.len()].to_string())
        });
        if common.is_some() && common == last_prefix {
            passed = Some(key);
            continue;
        }
        if entries == max_keys {
            truncated = true;
            break;
        }
        entries += 1;
        passed = Some(key);
        match common {
            Some(common) => {
                common_prefixes.push_str(&format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    escape(&common)
                ));
                last_prefix = Some(common);
            }
            None => contents.push_str(&format!(
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag>\
                 <Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                escape(key),
                iso_date(object.modified),
                escape(&object.etag),
                object.body.len()
            )),
        }
    }
    let token = match (truncated, passed) {
        (true, Some(passed)) => format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            escape(passed)
        ),
        _ => String::new(),
    };
    xml(format!(
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>{BUCKET}</Name><Prefix>{}</Prefix><KeyCount>{entries}</KeyCount>\
         <MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>{token}\
         {contents}{common_prefixes}</ListBucketResult>",
        escape(&prefix)
    ))
}

/// `POST ?delete`: deletes every `<Key>` of the request, and reports each
/// deleted (a missing key counts as deleted, as in S3).
fn delete_many(bucket: &mut Bucket, body: &[u8]) -> Response {
    let Ok(request) = std::str::from_utf8(body) else {
        return error(StatusCode::BAD_REQUEST, "MalformedXML");
    };
    let mut deleted = String::new();
    let mut rest = request;
    // ends: each turn moves `rest` past one `<Key>`.
    while let Some(start) = rest.find("<Key>") {
        let after = &rest[start + "<Key>".len()..];
        let Some(end) = after.find("</Key>") else {
            return error(StatusCode::BAD_REQUEST, "MalformedXML");
        };
        let key = unescape(&after[..end]);
        bucket.objects.remove(&key);
        deleted.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", escape(&key)));
        rest = &after[end..];
    }
    xml(format!(
        "<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{deleted}</DeleteResult>"
    ))
}

fn xml(document: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{document}"),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str) -> Response {
    let mut response = xml(format!(
        "<Error><Code>{code}</Code><Message>{code}</Message></Error>"
    ));
    *response.status_mut() = status;
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// A query string's parameters, decoded (`+` is a space, as the client's
/// form encoding writes it); a parameter without `=` has an empty value.
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                decode(&name.replace('+', " ")),
                decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// `2026-12-02T06:21:04.000Z`, the date format of S3's listings.
fn iso_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_with(keys: &[&str]) -> Bucket {
        let mut bucket = Bucket::default();
        for key in keys {
            put(
                &mut bucket,
                key.to_string(),
                &HeaderMap::new(),
                Bytes::from_static(b"x"),
            );
        }
        bucket
    }

    fn listing(bucket: &Bucket, query: &str) -> String {
        let response = list(bucket, &parse_query(query));
        let body = futures_body(response);
        String::from_utf8(body).expect("utf-8 listing")
    }

    fn futures_body(response: Response) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .expect("body")
            .to_vec()
    }

    fn keys_of(listing: &str) -> Vec<String> {
        listing
            .split("<Key>")
            .skip(1)
            .map(|rest| rest.split("</Key>").next().unwrap_or("").to_string())
            .collect()
    }

    fn token_of(listing: &str) -> Option<String> {
        let rest = listing.split("<NextContinuationToken>").nth(1)?;
        rest.split("</NextContinuationToken>")
            .next()
            .map(str::to_string)
    }

    #[test]
    fn a_listing_pages_through_exactly_the_keys_under_its_prefix_in_order() {
        let mut keys: Vec<String> = (0..25).map(|i| format!("p/records/{i:05}")).collect();
        keys.push("p/recordz".to_string());
        keys.push("q/records/00001".to_string());
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let bucket = bucket_with(&refs);
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10 {
            let query = match &token {
                Some(token) => {
                    format!("list-type=2&prefix=p/records/&max-keys=10&continuation-token={token}")
                }
                None => "list-type=2&prefix=p/records/&max-keys=10".to_string(),
            };
            let page = listing(&bucket, &query);
            seen.extend(keys_of(&page));
            token = token_of(&page);
            if token.is_none() {
                break;
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("p/records/{i:05}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_delimited_listing_gives_each_common_prefix_once_across_pages() {
        let bucket = bucket_with(&["g/a/1", "g/a/2", "g/a/3", "g/b/1", "g/c", "g/d/1"]);
        let first = listing(&bucket, "list-type=2&prefix=g/&delimiter=/&max-keys=2");
        assert!(first.contains("<Prefix>g/a/</Prefix>") && first.contains("<Prefix>g/b/</Prefix>"));
        let token = token_of(&first).expect("a truncated page has a token");
        let second = listing(
            &bucket,
            &format!("list-type=2&prefix=g/&delimiter=/&continuation-token={token}"),
        );
        assert_eq!(keys_of(&second), vec!["g/c".to_string()]);
        assert!(second.contains("<Prefix>g/d/</Prefix>"));
        assert!(!second.contains("g/a/") && !second.contains("g/b/"));
        assert!(token_of(&second).is_none());
    }

    #[test]
    fn a_conditional_put_is_refused_when_the_object_changed_or_exists() {
        let mut bucket = bucket_with(&["k"]);
        let etag = bucket.objects["k"].etag.clone();
        let mut create = HeaderMap::new();
        create.insert(header::IF_NONE_MATCH, "*".parse().expect("header"));
        let refused = put(&mut bucket, "k".into(), &create, Bytes::from_static(b"new"));
        assert_eq!(refused.status(), StatusCode::PRECONDITION_FAILED);
        let mut update = HeaderMap::new();
        update.insert(header::IF_MATCH, etag.parse().expect("header"));
        let first = put(&mut bucket, "k".into(), &update, Bytes::from_static(b"one"));
        assert_eq!(first.status(), StatusCode::OK);
        let second = put(&mut bucket, "k".into(), &update, Bytes::from_static(b"two"));
        assert_eq!(second.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(&bucket.objects["k"].body[..], b"one");
    }

    #[test]
    fn byte_ranges_are_those_http_defines() {
        assert_eq!(byte_range("bytes=2-4", 10), Some(2..5));
        assert_eq!(byte_range("bytes=7-", 10), Some(7..10));
        assert_eq!(byte_range("bytes=-3", 10), Some(7..10));
        assert_eq!(byte_range("bytes=5-100", 10), Some(5..10));
        assert_eq!(byte_range("bytes=10-", 10), None);
        assert_eq!(byte_range("items=1-2", 10), None);
    }

    #[test]
    fn listing_dates_are_iso_8601_in_utc() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_192_464);
        assert_eq!(iso_date(time), "2026-12-02T06:21:04.000Z");
        assert_eq!(iso_date(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
