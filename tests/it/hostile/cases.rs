//! The table of hostile requests. Each row: what it is, the request, and the
//! answer it must get as `"STATUS CODE [FIELD]"` (no field: none is to blame).
//! The table functions are kept one row per line (`rustfmt::skip`).

use super::{FORM, JSON, Request, Table};
use crate::seed_api::urlencode;
use reqwest::Method;
use serde_json::{Map, Value, json};

/// The default limits (`limits.*`), which these requests run into.
const MAX_ITEMS: usize = 1_000_000;
const MAX_ITEM_BYTES: usize = 65_536;
const MAX_TEMPLATE_BYTES: usize = 65_536;
const MAX_BODY_BYTES: usize = 33_554_432;
const MAX_VARIABLES_BYTES: usize = 65_536;
const MAX_MEMORY_MB: u64 = 1_048_576;
const MAX_CPUS: u64 = 1024;

const UNKNOWN_ID: &str = "6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10";

/// Every row, for a node where `existing` is an ended task.
pub fn all(existing: &str) -> Table {
    let mut table = Table::default();
    json_cases(&mut table, "/v1/tasks");
    json_cases(&mut table, "/schedule/create");
    form_cases(&mut table);
    id_cases(&mut table, existing);
    seed_query_cases(&mut table);
    cross_site_cases(&mut table, existing);
    table
}

/// A valid submission with `changes` applied (a `null` change removes the key).
fn body_with(changes: Value) -> Value {
    let mut body = json!({"templateFunction": "echo $1", "inputList": ["a"]});
    for (key, value) in changes.as_object().expect("an object") {
        if value.is_null() {
            body.as_object_mut().unwrap().remove(key);
        } else {
            body[key] = value.clone();
        }
    }
    body
}

/// A submission with `n` items, written directly rather than built as JSON values.
fn many_items_body(n: usize) -> Vec<u8> {
    let items = vec!["\"x\""; n].join(",");
    format!(r#"{{"templateFunction":"echo $1","inputList":[{items}]}}"#).into_bytes()
}

/// Requests refused the same way by `/v1/tasks` and by the seed's
/// `/schedule/create` (JSON).
#[rustfmt::skip]
fn json_cases(t: &mut Table, path: &str) {
    let p = |what: &str| format!("{path}: {what}");
    let raw = |json: &[u8]| Request::json(path, json.to_vec());
    let with = |changes: Value| Request::value(path, &body_with(changes));
    let typed = |ct: &str, body: &[u8]| Request::new(Method::POST, path, Some(ct), body.to_vec());

    // Not JSON, or not an object.
    let bad_json: [(&str, &[u8]); 11] = [
        ("broken JSON", b"{\"templateFunction\": "),
        ("trailing garbage", b"{\"templateFunction\":\"x\",\"inputList\":[]} rm -rf"),
        ("invalid UTF-8 in a string", b"{\"templateFunction\": \"\xff\xfe\", \"inputList\": []}"),
        ("invalid UTF-8 outside strings", b"\xc3\x28{}"),
        ("a lone surrogate escape", b"{\"templateFunction\": \"\\ud800\", \"inputList\": []}"),
        ("a byte order mark", b"\xef\xbb\xbf{\"templateFunction\":\"x\",\"inputList\":[]}"),
        ("empty body", b""),
        ("whitespace only", b" \r\n\t "),
        ("NaN", b"{\"templateFunction\":\"x\",\"inputList\":[],\"timeoutSecs\":NaN}"),
        ("a number out of range", b"{\"templateFunction\":\"x\",\"inputList\":[],\"timeoutSecs\":1e999}"),
        ("single quotes", b"{'templateFunction':'x','inputList':[]}"),
    ];
    for (what, body) in bad_json {
        t.add(p(what), raw(body), "400 invalid_json");
    }
    for (what, body) in [("null", "null"), ("an array", "[1,2]"), ("a string", "\"echo\""), ("a number", "12")] {
        t.add(p(&format!("{what} as the body")), raw(body.as_bytes()), "400 invalid_body");
    }

    // Deep nesting: refused by the parser's recursion limit, never a stack overflow.
    t.add(p("10,000 open brackets"), raw("[".repeat(10_000).as_bytes()), "400 invalid_json");
    let deep = format!(r#"{{"templateFunction":"x","inputList":[{}{}]}}"#, "[".repeat(200), "]".repeat(200));
    t.add(p("an item nested 200 deep"), raw(deep.as_bytes()), "400 invalid_json");
    t.add(p("100,000 nested objects"), raw("{\"a\":".repeat(100_000).as_bytes()), "400 invalid_json");
    let deep_vars = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    t.add(p("variableJson string nested 100,000 deep"), with(json!({"variableJson": deep_vars})), "400 invalid_field variableJson");
    let deep_item = format!(r#"{{"templateFunction":"x","inputList":["a",{}"b"{}]}}"#, "[".repeat(100), "]".repeat(100));
    t.add(p("an item nested 100 deep"), raw(deep_item.as_bytes()), "400 invalid_field inputList[1]");

    // Repeated keys: refused, not last-wins (a proxy might read the first).
    let twice = br#"{"templateFunction":"true","templateFunction":"rm -rf ~","inputList":[]}"#;
    t.add(p("templateFunction twice"), raw(twice), "400 repeated_field templateFunction");
    let var_twice = br#"{"templateFunction":"echo {{x}}","variableJson":{"x":"1","x":"2"},"inputList":[]}"#;
    t.add(p("a variable twice"), raw(var_twice), "400 repeated_field variableJson.x");

    // templateFunction.
    t.add(p("no template"), with(json!({"templateFunction": null})), "400 missing_field templateFunction");
    t.add(p("null template"), raw(br#"{"templateFunction":null,"inputList":[]}"#), "400 missing_field templateFunction");
    let bad_templates = [
        ("an array", json!(["echo"])),
        ("a number", json!(5)),
        ("an object", json!({"sh": "echo"})),
        ("true", json!(true)),
        ("empty", json!("")),
        ("blank", json!(" \n\t")),
        ("with a NUL", json!("echo\u{0}hi")),
    ];
    for (what, template) in bad_templates {
        t.add(p(&format!("template {what}")), with(json!({"templateFunction": template})), "400 invalid_field templateFunction");
    }
    let long = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    t.add(p("template over the limit"), with(json!({"templateFunction": long})), "400 too_large templateFunction");
    let quotes = "\"".repeat(MAX_TEMPLATE_BYTES / 2 + 1);
    t.add(p("template over the limit once escaped"), with(json!({"templateFunction": quotes})), "400 too_large templateFunction");

    // inputList.
    t.add(p("no inputList"), with(json!({"inputList": null})), "400 missing_field inputList");
    t.add(p("null inputList"), raw(br#"{"templateFunction":"x","inputList":null}"#), "400 missing_field inputList");
    for (what, list) in [("a string", json!("a,b")), ("an object", json!({"0": "a"})), ("a number", json!(3))] {
        t.add(p(&format!("inputList {what}")), with(json!({"inputList": list})), "400 invalid_field inputList");
    }
    t.add(p("a null item"), with(json!({"inputList": [null]})), "400 invalid_field inputList[0]");
    t.add(p("an array item"), with(json!({"inputList": ["a", "b", ["c"]]})), "400 invalid_field inputList[2]");
    t.add(p("an object item"), with(json!({"inputList": ["a", {"b": 1}]})), "400 invalid_field inputList[1]");
    t.add(p("NUL in an item"), with(json!({"inputList": ["ok", "a\u{0}b"]})), "400 invalid_field inputList[1]");
    let ten_mb = "x".repeat(10_000_000);
    t.add(p("a 10 MB item"), with(json!({"inputList": ["a", ten_mb]})), "400 too_large inputList[1]");
    let newlines = "\n".repeat(MAX_ITEM_BYTES / 2 + 1);
    t.add(p("an item over the limit once escaped"), with(json!({"inputList": [newlines]})), "400 too_large inputList[0]");
    t.add(p("1,000,001 items"), Request::json(path, many_items_body(MAX_ITEMS + 1)), "400 too_many_items inputList");

    // variableJson and placeholders.
    let unknown = json!({"templateFunction": "echo {{nope}} $1"});
    t.add(p("an unknown placeholder"), with(unknown), "400 missing_variables variableJson");
    let partly = json!({"templateFunction": "echo {{a}} {{ b }} {{c.d}}", "variableJson": {"a": 1}});
    t.add(p("placeholders partly filled"), with(partly), "400 missing_variables variableJson");
    let rendered = json!({"templateFunction": "echo {{v}}", "variableJson": {"v": "y".repeat(MAX_TEMPLATE_BYTES)}});
    t.add(p("a rendered script over the limit"), with(rendered), "400 too_large variableJson");
    let bad_variables = [
        ("a null variable", json!({"v": null}), "variableJson.v"),
        ("a nested variable", json!({"v": {"x": 1}}), "variableJson.v"),
        ("an array variable", json!({"v": [1]}), "variableJson.v"),
        ("variableJson an array", json!([1]), "variableJson"),
        ("variableJson a number", json!(42), "variableJson"),
        ("variableJson a string but not JSON", json!("{oops"), "variableJson"),
        ("variableJson a string holding an array", json!("[1,2]"), "variableJson"),
        ("variableJson a string with a nested variable", json!("{\"v\": {\"x\": 1}}"), "variableJson.v"),
    ];
    for (what, variables, field) in bad_variables {
        t.add(p(what), with(json!({"variableJson": variables})), &format!("400 invalid_field {field}"));
    }

    // Unknown fields.
    for key in ["timeoutSec", "TemplateFunction", "__proto__"] {
        let extra = Map::from_iter([(key.to_string(), json!({"admin": true}))]);
        t.add(p(&format!("unknown field {key}")), with(Value::Object(extra)), &format!("400 unknown_field {key}"));
    }

    // Timeouts, retries, interpreter and name.
    let bad_timeouts = [
        json!(-1), json!(0), json!(99_999_999_999u64), json!(u64::MAX), json!(i64::MIN),
        json!(1.5), json!(1e300), json!("5"), json!(true), json!([5]),
    ];
    for value in bad_timeouts {
        t.add(p(&format!("timeoutSecs {value}")), with(json!({"timeoutSecs": value})), "400 invalid_field timeoutSecs");
    }
    for value in [json!(-1), json!(1000), json!(4_294_967_296u64), json!(2.5), json!("3")] {
        t.add(p(&format!("retries {value}")), with(json!({"retries": value})), "400 invalid_field retries");
    }
    for value in ["bash -x", "", "bash\n", "../../bin/sh -c", &"b".repeat(300)] {
        t.add(p(&format!("interpreter {value:.20?}")), with(json!({"interpreter": value})), "400 invalid_field interpreter");
    }
    t.add(p("interpreter a number"), with(json!({"interpreter": 5})), "400 invalid_field interpreter");
    t.add(p("a name of 201 characters"), with(json!({"name": "é".repeat(201)})), "400 too_large name");
    t.add(p("a name that is an object"), with(json!({"name": {"first": "x"}})), "400 invalid_field name");

    // Resource limits.
    let bad_memory = [json!(0), json!(-1), json!("512"), json!(1.5), json!(MAX_MEMORY_MB + 1), json!(u64::MAX), json!(true)];
    for value in bad_memory {
        t.add(p(&format!("memoryMb {value}")), with(json!({"memoryMb": value})), "400 invalid_field memoryMb");
    }
    let bad_cpus = [json!(0), json!(-1), json!(-0.5), json!("2"), json!(MAX_CPUS + 1), json!(1e300), json!([1]), json!(false)];
    for value in bad_cpus {
        t.add(p(&format!("cpus {value}")), with(json!({"cpus": value})), "400 invalid_field cpus");
    }

    // Scheduling fields.
    for value in [json!(1001), json!(-1001), json!(1.5), json!("1"), json!(i64::MIN), json!(u64::MAX)] {
        t.add(p(&format!("priority {value}")), with(json!({"priority": value})), "400 invalid_field priority");
    }
    for value in [json!(0), json!(-1), json!(1001), json!("2"), json!(2.5)] {
        t.add(p(&format!("weight {value}")), with(json!({"weight": value})), "400 invalid_field weight");
    }
    for value in [json!(0), json!(-1), json!(1_000_001), json!("4"), json!(true)] {
        t.add(p(&format!("maxConcurrency {value}")), with(json!({"maxConcurrency": value})), "400 invalid_field maxConcurrency");
    }
    for value in [json!("false"), json!(0), json!([true])] {
        t.add(p(&format!("speculation {value}")), with(json!({"speculation": value})), "400 invalid_field speculation");
    }
    for value in [json!("gpu=a100"), json!(["gpu"]), json!({"g pu": "a100"}), json!({"": "x"}), json!({"n".repeat(64): "x"})] {
        t.add(p(&format!("requires {value:.40}")), with(json!({"requires": value})), "400 invalid_field requires");
    }
    for value in [json!(100), json!({"model": "a100"}), json!("a\u{0}"), json!("a,b"), json!(" a"), json!("v".repeat(64))] {
        t.add(p(&format!("requires.gpu {value:.40}")), with(json!({"requires": {"gpu": value}})), "400 invalid_field requires.gpu");
    }
    let many_labels = Value::Object((0..17).map(|i| (format!("l{i}"), json!("v"))).collect());
    t.add(p("requires with 17 labels"), with(json!({"requires": many_labels})), "400 too_large requires");

    // Variables, used or not, are bounded as a whole.
    let unused = json!({"variableJson": {"unused": "v".repeat(MAX_VARIABLES_BYTES)}});
    t.add(p("unused variables over the limit"), with(unused), "400 too_large variableJson");
    let many = Value::Object((0..MAX_VARIABLES_BYTES / 8).map(|i| (format!("v{i}"), json!(i))).collect());
    t.add(p("many small variables over the limit"), with(json!({"variableJson": many})), "400 too_large variableJson");

    // Size and content type.
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    t.add(p("a body over the 32 MiB limit"), Request::json(path, huge), "413 too_large_body");
    let media = ["text/plain", "multipart/form-data; boundary=x", "application/xml", "application/json-patch+json"];
    for ct in media {
        t.add(p(&format!("content type {ct}")), typed(ct, b"{}"), "415 unsupported_media_type");
    }
    t.add(p("no content type"), Request::new(Method::POST, path, None, b"{}".to_vec()), "415 unsupported_media_type");
}

/// The seed's form: `/schedule/create` as `application/x-www-form-urlencoded`.
#[rustfmt::skip]
fn form_cases(t: &mut Table) {
    let p = |what: &str| format!("/schedule/create form: {what}");
    let ok = "templateFunction=echo+%241&inputList=a";
    let with = |extra: &str| Request::form(format!("{ok}&{extra}"));

    t.add(p("templateFunction twice"), with("templateFunction=id"), "400 repeated_field templateFunction");
    t.add(p("variableJson twice"), with("variableJson=%7B%7D&variableJson=%7B%7D"), "400 repeated_field variableJson");
    t.add(p("timeoutSecs twice"), with("timeoutSecs=5&timeoutSecs=6"), "400 repeated_field timeoutSecs");
    t.add(p("no inputList"), Request::form("templateFunction=echo"), "400 missing_field inputList");
    t.add(p("no templateFunction"), Request::form("inputList=a"), "400 missing_field templateFunction");
    t.add(p("an empty body"), Request::form(""), "400 missing_field templateFunction");
    // The empty name is the field to blame (note the trailing space).
    t.add(p("only separators"), Request::form("&&&=&"), "400 unknown_field ");

    // Not UTF-8 once decoded.
    t.add(p("%ff in a value"), Request::form("templateFunction=%ff&inputList=a"), "400 invalid_form templateFunction");
    t.add(p("a raw 0xff byte in a value"), Request::form(b"templateFunction=echo&inputList=a\xffb".to_vec()), "400 invalid_form inputList");
    t.add(p("%ff in a name"), Request::form("%ff%fe=1&templateFunction=echo&inputList=a"), "400 invalid_form");
    t.add(p("a character cut in half"), Request::form("templateFunction=echo+%E2%82&inputList=a"), "400 invalid_form templateFunction");
    t.add(p("an overlong /"), Request::form("templateFunction=echo&inputList=..%c0%af..%c0%afetc"), "400 invalid_form inputList");
    t.add(p("an encoded surrogate"), Request::form("templateFunction=echo&inputList=%ed%a0%80"), "400 invalid_form inputList");

    // Numbers and values.
    for value in ["-5", "99999999999999999999", "1e3", "0", "five"] {
        t.add(p(&format!("timeoutSecs={value}")), with(&format!("timeoutSecs={value}")), "400 invalid_field timeoutSecs");
    }
    for value in ["many", "11", "-1"] {
        t.add(p(&format!("retries={value}")), with(&format!("retries={value}")), "400 invalid_field retries");
    }
    t.add(p("an unknown field"), with("callback=http%3A%2F%2Fevil"), "400 unknown_field callback");
    let unknown = "templateFunction=echo+%7B%7Bnope%7D%7D&inputList=a";
    t.add(p("an unknown placeholder"), Request::form(unknown), "400 missing_variables variableJson");
    t.add(p("variableJson not JSON"), with("variableJson=%7Boops"), "400 invalid_field variableJson");
    t.add(p("NUL in an item"), Request::form("templateFunction=echo&inputList=a%00b"), "400 invalid_field inputList[0]");
    t.add(p("interpreter with arguments"), with("interpreter=bash+-c"), "400 invalid_field interpreter");
    for value in ["0", "-1", "lots", "1.5", "1048577"] {
        t.add(p(&format!("memoryMb={value}")), with(&format!("memoryMb={value}")), "400 invalid_field memoryMb");
    }
    for value in ["0", "-1", "NaN", "inf", "two", "1025"] {
        t.add(p(&format!("cpus={value}")), with(&format!("cpus={value}")), "400 invalid_field cpus");
    }
    for (field, value) in [("priority", "1001"), ("weight", "0"), ("maxConcurrency", "none"), ("speculation", "yes"), ("requires", "gpu%3Da100")] {
        t.add(p(&format!("{field}={value}")), with(&format!("{field}={value}")), &format!("400 invalid_field {field}"));
    }

    // Sizes.
    let many = format!("templateFunction=echo&inputList={}", vec!["x"; MAX_ITEMS + 1].join("%2C"));
    t.add(p("1,000,001 comma-separated items"), Request::form(many), "400 too_many_items inputList");
    let repeated = format!("templateFunction=echo{}", "&inputList=x".repeat(MAX_ITEMS + 1));
    t.add(p("1,000,001 inputList fields"), Request::form(repeated), "400 too_many_items inputList");
    let big = format!("templateFunction=echo&inputList={}", "x".repeat(10_000_000));
    t.add(p("a 10 MB item"), Request::form(big), "400 too_large inputList[0]");
    t.add(p("a body over the 32 MiB limit"), Request::form(vec![b'a'; MAX_BODY_BYTES + 1]), "413 too_large_body");

    // The wrong thing altogether.
    let json_text = r#"{"templateFunction":"echo","inputList":["a"]}"#;
    t.add(p("JSON sent as a form"), Request::form(json_text), &format!("400 unknown_field {json_text}"));
    let csv = Request::new(Method::POST, "/schedule/create", Some("text/csv"), b"a,b".to_vec());
    t.add(p("text/csv"), csv, "415 unsupported_media_type");
    t.add(p("GET"), Request::get("/schedule/create"), "405 method_not_allowed");
    let put = Request::new(Method::PUT, "/schedule/create", Some(FORM), ok.into());
    t.add(p("PUT"), put, "405 method_not_allowed");
}

/// Task ids in paths (traversal, encodings, unknown ids) and v1 query parameters.
#[rustfmt::skip]
fn id_cases(t: &mut Table, existing: &str) {
    let post = |path: &str| Request::new(Method::POST, path, None, Vec::new());
    let traversal = "..%2F..%2F..%2Fetc%2Fpasswd";
    let bad_ids = [
        ("encoded path traversal", Request::get(&format!("/v1/tasks/{traversal}"))),
        ("encoded traversal, results", Request::get(&format!("/v1/tasks/{traversal}/results"))),
        ("encoded traversal, events", Request::get(&format!("/v1/tasks/{traversal}/events"))),
        ("encoded traversal, cancel", post(&format!("/v1/tasks/{traversal}/cancel"))),
        ("dots encoded as %2e", Request::raw(Method::GET, "/v1/tasks/%2e%2e%2f%2e%2e%2fetc%2fpasswd")),
        ("an id of two dots", Request::raw(Method::GET, "/v1/tasks/%2e%2e")),
        ("NUL", Request::get("/v1/tasks/%00")),
        ("a UUID and a NUL", Request::get(&format!("/v1/tasks/{UNKNOWN_ID}%00"))),
        ("a UUID in braces", Request::get(&format!("/v1/tasks/%7B{UNKNOWN_ID}%7D"))),
        ("10,000 characters", Request::get(&format!("/v1/tasks/{}", "a".repeat(10_000)))),
        ("not a task id", Request::get("/v1/tasks/not-a-task")),
    ];
    for (what, request) in bad_ids {
        t.add(format!("v1 id: {what}"), request, "400 invalid_field id");
    }
    // `..` segments reach the router as written and match no route.
    t.add("v1: raw path traversal", Request::raw(Method::GET, "/v1/tasks/../../../etc/passwd"), "404 no_route");
    t.add("v1: raw traversal via a real route", Request::raw(Method::GET, "/v1/tasks/../workers/../../x"), "404 no_route");

    let unknown = [
        ("an unknown id", Request::get(&format!("/v1/tasks/{UNKNOWN_ID}"))),
        ("results of an unknown id", Request::get(&format!("/v1/tasks/{UNKNOWN_ID}/results"))),
        ("a bad filter on an unknown id", Request::get(&format!("/v1/tasks/{UNKNOWN_ID}/results?status=maybe"))),
        ("cancel an unknown id", post(&format!("/v1/tasks/{UNKNOWN_ID}/cancel"))),
    ];
    for (what, request) in unknown {
        t.add(format!("v1: {what}"), request, "404 not_found id");
    }
    t.add("v1: cancel a task that has ended", post(&format!("/v1/tasks/{existing}/cancel")), "409 conflict");

    let bad_params = [
        (format!("/v1/tasks/{existing}/results?status=maybe"), "status"),
        (format!("/v1/tasks/{existing}/results?offset=-1"), "offset"),
        (format!("/v1/tasks/{existing}/results?limit=0"), "limit"),
        (format!("/v1/tasks/{existing}/results?limit=10001"), "limit"),
        (format!("/v1/tasks/{existing}?summary=perhaps"), "summary"),
        ("/v1/tasks?status=DONE".to_string(), "status"),
        ("/v1/tasks?status=%ff".to_string(), "status"),
        ("/v1/tasks?limit=-1".to_string(), "limit"),
        ("/v1/tasks?limit=99999999999999999999999".to_string(), "limit"),
        ("/v1/tasks?full=perhaps".to_string(), "full"),
        (format!("/v1/tasks/{existing}/events?full=2"), "full"),
    ];
    for (path, field) in bad_params {
        t.add(format!("v1: {path}"), Request::get(&path), &format!("400 invalid_field {field}"));
    }

    let form = Request::new(Method::POST, "/v1/tasks", Some(FORM), b"templateFunction=echo&inputList=a".to_vec());
    t.add("v1: a form body", form, "415 unsupported_media_type");
    t.add("v1: an unknown route", Request::get("/v2/tasks"), "404 no_route");
    let wrong_methods = [
        Request::new(Method::DELETE, "/v1/tasks", None, Vec::new()),
        Request::new(Method::PUT, &format!("/v1/tasks/{existing}"), Some(JSON), b"{}".to_vec()),
        Request::new(Method::POST, "/v1/workers", Some(JSON), b"{}".to_vec()),
        Request::new(Method::PATCH, "/v1/tasks", Some(JSON), b"{}".to_vec()),
    ];
    for request in wrong_methods {
        t.add(format!("v1: {} {}", request.method, request.path), request, "405 method_not_allowed");
    }
}

/// `/schedule/status` and `/schedule/node-beat`.
#[rustfmt::skip]
fn seed_query_cases(t: &mut Table) {
    let status = |query: &str| Request::get(&format!("/schedule/status{query}"));
    t.add("status: no taskId", status(""), "400 missing_field taskId");
    t.add("status: empty taskId", status("?taskId="), "400 missing_field taskId");
    let bad_ids = [
        status("?taskId=..%2F..%2F..%2Fetc%2Fpasswd"),
        Request::raw(Method::GET, "/schedule/status?taskId=../../../etc/passwd"),
        status("?taskId=%ff%fe"),
        status("?taskId=6f1c1a39%0A52bb"),
    ];
    for request in bad_ids {
        t.add(format!("status: {}", request.path), request, "400 invalid_field taskId");
    }
    t.add("status: an unknown taskId", status(&format!("?taskId={UNKNOWN_ID}")), "404 not_found taskId");
    let post = Request::new(Method::POST, "/schedule/status", Some(JSON), b"{}".to_vec());
    t.add("status: POST", post, "405 method_not_allowed");

    let beat = |query: &str| Request::new(Method::POST, &format!("/schedule/node-beat{query}"), None, Vec::new());
    t.add("node-beat: no nodeId", beat(""), "400 missing_field nodeId");
    t.add("node-beat: empty nodeId", beat("?nodeId="), "400 missing_field nodeId");
    t.add("node-beat: blank nodeId", beat("?nodeId=%20%09"), "400 missing_field nodeId");
    let injected = urlencode("../../../etc/passwd\r\nX-Injected: 1");
    let bad_nodes = ["a%0Ab".to_string(), "a%00b".to_string(), "%1B%5B2J".to_string(), "n".repeat(201), injected];
    for node in bad_nodes {
        let query = format!("?nodeId={node}");
        t.add(format!("node-beat: {query:.40}"), beat(&query), "400 invalid_field nodeId");
    }
    for cores in ["0", "-1", "4097", "abc", "99999999999999999999", "1.5"] {
        let query = format!("?nodeId=intruder&cores={cores}");
        t.add(format!("node-beat: {query}"), beat(&query), "400 invalid_field cores");
    }
    t.add("node-beat: nodeId twice", beat("?nodeId=a&nodeId=b"), "400 repeated_field nodeId");
    let both = Request::new(Method::POST, "/schedule/node-beat?nodeId=a", Some(FORM), b"nodeId=b".to_vec());
    t.add("node-beat: nodeId in the query and the form", both, "400 repeated_field nodeId");
    let json_body = Request::new(Method::POST, "/schedule/node-beat", Some(JSON), br#"{"nodeId":"x"}"#.to_vec());
    t.add("node-beat: a JSON body", json_body, "415 unsupported_media_type");
    // A GET must change nothing: an <img> tag could send it.
    t.add("node-beat: GET", Request::get("/schedule/node-beat?nodeId=ghost&cores=4096"), "405 method_not_allowed");
    let put = Request::new(Method::PUT, "/schedule/node-beat?nodeId=x", Some(JSON), b"{}".to_vec());
    t.add("node-beat: PUT", put, "405 method_not_allowed");
}

/// Requests a page of another site could make the browser send: a foreign
/// `Origin` (a form post, a fetch) or a foreign `Host` (DNS rebinding).
#[rustfmt::skip]
fn cross_site_cases(t: &mut Table, existing: &str) {
    let form = || Request::form("templateFunction=touch+%2Ftmp%2Fdts-pwned&inputList=a");
    let json_submit = || Request::value("/v1/tasks", &json!({"templateFunction": "touch /tmp/dts-pwned", "inputList": ["a"]}));
    let origins = ["http://evil.example", "null", "https://evil.example:443", "http://127.0.0.1.evil.example", "file://"];
    for origin in origins {
        t.add(format!("a form post from origin {origin}"), form().header("Origin", origin), "403 forbidden_origin");
        t.add(format!("a v1 submission from origin {origin}"), json_submit().header("Origin", origin), "403 forbidden_origin");
    }
    t.add("reading tasks from a foreign origin", Request::get("/v1/tasks").header("Origin", "http://evil.example"), "403 forbidden_origin");
    t.add("cancelling from a foreign origin", Request::new(Method::POST, &format!("/v1/tasks/{existing}/cancel"), None, Vec::new()).header("Origin", "http://evil.example"), "403 forbidden_origin");
    t.add("a node-beat from a foreign origin", Request::new(Method::POST, "/schedule/node-beat?nodeId=ghost", None, Vec::new()).header("Origin", "http://evil.example"), "403 forbidden_origin");

    for host in ["attacker.example", "attacker.example:30000", "localhost.attacker.example", "127.0.0.1.nip.io", "[::1]:1"] {
        t.add(format!("a form post naming Host {host}"), form().with_host(host), "421 forbidden_host");
        t.add(format!("reading tasks naming Host {host}"), Request::get("/v1/tasks").with_host(host), "421 forbidden_host");
    }
    t.add("a foreign Host and Origin together", form().header("Origin", "http://attacker.example").with_host("attacker.example"), "421 forbidden_host");
}
