//! Hostile requests: documents built to exhaust the stack, the CPU or the
//! document cache, and connections that never finish a request. Each is
//! refused or dropped quickly, and the server keeps serving meanwhile.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::helpers::process::{database_with_user, Server};
use crate::helpers::{error_code, spawn_app, spawn_app_with, TestApp};

fn deep_list(levels: usize) -> String {
    format!(
        "{{ me(x: {}1{}) {{ id }} }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

fn deep_object(levels: usize) -> String {
    format!(
        "{{ me(x: {}1{}) {{ id }} }}",
        "{a:".repeat(levels),
        "}".repeat(levels)
    )
}

fn deep_directive(levels: usize) -> String {
    format!(
        "{{ me @skip(if: {}true{}) {{ id }} }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

fn deep_selection(levels: usize) -> String {
    format!(
        "{{ me {}id{} }}",
        "{ a ".repeat(levels),
        " }".repeat(levels + 1)
    )
}

fn deep_variable_type(levels: usize) -> String {
    format!(
        "query($v: {}Int{}) {{ me {{ id }} }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

/// `{...F0}` with each fragment spreading the next twice: 2^depth fields
/// once expanded, in a few hundred bytes.
fn doubling_fragments(depth: usize) -> String {
    let mut text = String::from("{ ...F0 }");
    for level in 0..depth {
        let next = level + 1;
        text.push_str(&format!(
            " fragment F{level} on Query {{ ...F{next} ...F{next} }}"
        ));
    }
    text.push_str(&format!(" fragment F{depth} on Query {{ __typename }}"));
    text
}

/// graphql-js's `getIntrospectionQuery()`, as GraphiQL sends it.
const INTROSPECTION: &str = r"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}";

fn reasons(body: &Value) -> Vec<String> {
    body["errors"][0]["extensions"]["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn get_query(app: &TestApp, query: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", query)])
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn assert_serving(app: &TestApp) {
    let status = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("the server still answers")
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn deeply_nested_documents_are_refused_over_post_get_and_in_batches() {
    let app = spawn_app().await;
    let documents = [
        ("lists", deep_list(1_750)),
        ("lists, 20,000 deep", deep_list(20_000)),
        ("objects", deep_object(5_000)),
        ("directive arguments", deep_directive(2_000)),
        ("selections", deep_selection(3_000)),
        ("variable types", deep_variable_type(3_000)),
    ];
    for (shape, document) in &documents {
        let started = Instant::now();
        let (status, body) = app.post(json!({ "query": document }), None).await;
        assert_eq!(status, 200, "{shape}: {body}");
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{shape}: {body}");
        assert_eq!(reasons(&body), ["QUERY_TOO_DEEP"], "{shape}: {body}");
        assert!(body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nests deeper")));

        // Any web page can make a browser send a GET: as long a URL as
        // browsers send.
        if document.len() <= 16 * 1024 {
            let (status, body) = get_query(&app, document).await;
            assert_eq!(status, 200, "{shape} over GET: {body}");
            assert_eq!(
                reasons(&body),
                ["QUERY_TOO_DEEP"],
                "{shape} over GET: {body}"
            );
        }

        let batch = json!([{ "query": "{ __typename }" }, { "query": document }]);
        let (status, body) = app.post(batch, None).await;
        assert_eq!(status, 200);
        assert_eq!(body[0]["data"]["__typename"], "Query", "{shape}: {body}");
        assert_eq!(
            body[1]["errors"][0]["extensions"]["reasons"][0], "QUERY_TOO_DEEP",
            "{shape} in a batch: {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{shape} took {:?}",
            started.elapsed()
        );
        assert_serving(&app).await;
    }
}

#[tokio::test]
async fn documents_at_the_nesting_limit_still_run() {
    let app = spawn_app().await;
    // Brackets in strings and comments are text, not nesting.
    let document = format!(
        "# {deep}\n{{ __typename alias: __typename @include(if: true) }}",
        deep = "[".repeat(5_000)
    );
    let body = app.graphql(&document, json!({}), None).await;
    assert_eq!(body["data"]["alias"], "Query", "{body}");
    // GraphiQL's introspection query nests 14 deep.
    let body = app.graphql(INTROSPECTION, json!({}), None).await;
    assert!(body["data"]["__schema"]["types"].is_array(), "{body}");
}

#[tokio::test]
async fn exponential_fragments_are_refused_before_validation_and_do_not_stall_the_server() {
    let app = spawn_app().await;
    let document = doubling_fragments(30);
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, document) =
                (app.client.clone(), app.url("/graphql"), document.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let body: Value = client
                    .post(url)
                    .json(&json!({ "query": document }))
                    .send()
                    .await
                    .expect("request sent")
                    .json()
                    .await
                    .expect("a JSON body");
                (body, started.elapsed())
            })
        })
        .collect();
    let started = Instant::now();
    assert_serving(&app).await;
    let health = started.elapsed();
    for request in in_flight {
        let (body, elapsed) = request.await.expect("request task");
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(reasons(&body), ["QUERY_TOO_COMPLEX"], "{body}");
        assert!(elapsed < Duration::from_secs(2), "refusal took {elapsed:?}");
    }
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
}

#[tokio::test]
async fn aliases_are_counted_through_fragments() {
    let app = spawn_app().await;
    let aliases: String = (0..20).map(|i| format!(" a{i}: __typename")).collect();
    let document = format!("{{ ...F ...F }} fragment F on Query {{{aliases} }}");
    let body = app.graphql(&document, json!({}), None).await;
    assert_eq!(reasons(&body), ["TOO_MANY_ALIASES"], "{body}");
    // The same aliases spread once are within the limit.
    let document = format!("{{ ...F }} fragment F on Query {{{aliases} }}");
    let body = app.graphql(&document, json!({}), None).await;
    assert_eq!(body["data"]["a19"], "Query", "{body}");
}

#[tokio::test]
async fn fragment_cycles_and_floods_of_fragments_are_refused() {
    let app = spawn_app().await;
    let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
    let body = app.graphql(cycle, json!({}), None).await;
    assert_eq!(reasons(&body), ["FRAGMENT_CYCLE"], "{body}");
    let many: String = (0..100)
        .map(|i| format!(" fragment F{i} on Query {{ __typename }}"))
        .collect();
    let body = app
        .graphql(&format!("{{ ...F0 }}{many}"), json!({}), None)
        .await;
    assert_eq!(reasons(&body), ["TOO_MANY_FRAGMENTS"], "{body}");
}

/// A document of about 4 KiB that parses and is refused as too complex.
fn distinct_complex_document(n: usize) -> String {
    let fields: String = (0..600).map(|i| format!(" f{i}")).collect();
    format!("query Q{n} {{ me {{{fields} }} }}")
}

/// A document of about 4 KiB that passes validation (so it may be kept).
fn distinct_valid_document(n: usize) -> String {
    format!("query Q{n} {{{} }}", " __typename".repeat(350))
}

#[tokio::test]
async fn thousands_of_distinct_documents_leave_memory_within_the_cache_budget() {
    let (_dir, url) = database_with_user("memory_probe", "a strong password for memory");
    let server = Server::start(&url, &[]).await;
    let send_all = |make: fn(usize) -> String, offset: usize, count: usize| {
        let server = &server;
        async move {
            let mut tasks = Vec::new();
            for worker in 0..4 {
                let (client, url) = (server.client.clone(), server.url("/graphql"));
                tasks.push(tokio::spawn(async move {
                    for n in (worker..count).step_by(4) {
                        let status = client
                            .post(&url)
                            .json(&json!({ "query": make(offset + n) }))
                            .send()
                            .await
                            .expect("request sent")
                            .status();
                        assert_eq!(status, 200);
                    }
                }));
            }
            for task in tasks {
                task.await.expect("worker");
            }
        }
    };
    // Warm up: allocator arenas and pools reach their steady size.
    send_all(distinct_complex_document, 0, 400).await;
    let baseline = server.resident_kib();
    send_all(distinct_complex_document, 10_000, 2_000).await;
    let after_refused = server.resident_kib();
    send_all(distinct_valid_document, 20_000, 2_000).await;
    let after_valid = server.resident_kib();
    println!("resident: {baseline} KiB, after 2,000 refused documents {after_refused} KiB, after 2,000 valid ones {after_valid} KiB");
    let budget_kib = authql::graphql::documents::BUDGET_BYTES / 1024;
    // Refused documents are never kept: what is left is allocator noise.
    assert!(
        after_refused.saturating_sub(baseline) < 16 * 1024,
        "2,000 refused documents grew the process from {baseline} KiB to {after_refused} KiB"
    );
    // Kept documents stay within the budget (plus the same noise).
    assert!(
        after_valid.saturating_sub(baseline) < budget_kib + 16 * 1024,
        "2,000 valid documents grew the process from {baseline} KiB to {after_valid} KiB (budget {budget_kib} KiB)"
    );
}

#[tokio::test]
async fn the_deepest_admitted_documents_survive_a_small_thread_stack() {
    let (_dir, url) = database_with_user("stack_probe", "a strong password for stacks");
    let server = Server::start_with_env(&url, &[], &[("RUST_MIN_STACK", "1048576")]).await;
    let limit = authql::graphql::MAX_NESTING;
    // One bracket of each document is the operation's selection set.
    let documents = [
        deep_list(limit - 2),
        deep_object(limit - 2),
        deep_directive(limit - 2),
        deep_variable_type(limit - 1),
        deep_selection(limit - 2),
        doubling_fragments(7),
    ];
    for document in &documents {
        let body = server.graphql(document, json!({}), None).await;
        assert!(
            body["errors"].is_array() || body["data"].is_object(),
            "{body}"
        );
    }
    // Variables are JSON: serde_json stops at 128 levels.
    let deep_variables: Value = serde_json::from_str(&format!(
        "{{\"v\": {}1{}}}",
        "[".repeat(120),
        "]".repeat(120)
    ))
    .expect("nested JSON");
    let body = server
        .graphql("query($v: Int) { __typename }", deep_variables, None)
        .await;
    assert!(body["errors"].is_array(), "{body}");
    let body = server
        .graphql(
            "mutation { login(username: \"stack_probe\", password: \"a strong password for stacks\") { token } }",
            json!({}),
            None,
        )
        .await;
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
}

async fn half_sent_request(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connected");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request written");
    stream
}

/// Waits (bounded) until the server closes `stream`; returns how long.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(started + bound, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn half_sent_requests_are_dropped_at_the_header_deadline_while_others_are_served() {
    let app = spawn_app_with(|s| s.header_read_timeout = Duration::from_secs(1)).await;
    let mut stalled = Vec::new();
    for _ in 0..100 {
        stalled.push(half_sent_request(&app).await);
    }
    let started = Instant::now();
    assert_serving(&app).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    for stream in &mut stalled {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "a half-sent request stayed open");
    }
}

#[tokio::test]
async fn a_header_trickle_does_not_extend_the_deadline() {
    let app = spawn_app_with(|s| s.header_read_timeout = Duration::from_secs(1)).await;
    let mut stream = half_sent_request(&app).await;
    let started = Instant::now();
    let mut closed = false;
    for n in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream
            .write_all(format!("X-Trickle-{n}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
    }
    let closed_after = if closed {
        Some(started.elapsed())
    } else {
        closed_within(&mut stream, Duration::from_secs(3)).await
    };
    let closed_after = closed_after.expect("a trickling client stayed connected");
    assert!(
        closed_after < Duration::from_millis(2_500),
        "closed after {closed_after:?}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_on_arrival() {
    let app = spawn_app_with(|s| {
        s.max_connections = 8;
        s.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(half_sent_request(&app).await);
    }
    // Give the server a moment to take them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = half_sent_request(&app).await;
    let closed = closed_within(&mut over, Duration::from_millis(500)).await;
    assert!(closed.is_some(), "the 9th connection was kept");
    // Once the held ones hit their deadline, there is room again.
    for stream in &mut held {
        assert!(closed_within(stream, Duration::from_secs(5))
            .await
            .is_some());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_serving(&app).await;
}

#[tokio::test]
async fn kept_alive_connections_still_serve_several_requests() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connected");
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request written");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("response read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

#[tokio::test]
async fn wide_documents_and_long_get_queries_are_refused_before_validation() {
    let app = spawn_app().await;
    // Repeated fields with many arguments cost async-graphql pairwise
    // comparisons: refused by their width first.
    let arguments: String = (0..3_000).map(|i| format!("a{i}:0,")).collect();
    let wide = format!("{{ me({arguments}) {{ id }} me({arguments}) {{ id }} }}");
    let started = Instant::now();
    let (status, body) = app.post(json!({ "query": wide }), None).await;
    assert_eq!(status, 200);
    assert_eq!(reasons(&body), ["TOO_MANY_ARGUMENTS"], "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Over GET the document rides in the URL: no longer than a POST body.
    let long = format!("{{ __typename {} }}", "__typename ".repeat(3_500));
    let (status, body) = get_query(&app, &long).await;
    assert_eq!(status, 414, "{body}");
    assert_eq!(reasons(&body), ["QUERY_TOO_LONG"], "{body}");
    assert_serving(&app).await;
}

/// POSTs `body` to `/graphql` in chunks of `chunk` bytes over a raw
/// connection; the status line and the body of the answer.
async fn post_chunked(app: &TestApp, body: &[u8], chunk: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connected");
    let mut request = b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for piece in body.chunks(chunk) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer 413 and close before it has read everything.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, text)
}

#[tokio::test]
async fn a_body_sent_a_byte_per_chunk_is_read_whole_and_bounded() {
    let app = spawn_app().await;
    let body = json!({ "query": "{ __typename }" }).to_string();
    let (status, answer) = post_chunked(&app, body.as_bytes(), 1).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""__typename":"Query""#), "{answer}");
    // Exactly the limit still passes (padded with spaces, which JSON
    // allows); one byte more is refused, however it is cut.
    let padded = |len: usize| format!("{body}{}", " ".repeat(len - body.len()));
    let (status, answer) = post_chunked(&app, padded(64 * 1024).as_bytes(), 7).await;
    assert_eq!(status, 200, "{answer}");
    let over = padded(64 * 1024 + 1);
    for chunk in [1, 1000, over.len()] {
        let (status, answer) = post_chunked(&app, over.as_bytes(), chunk).await;
        assert_eq!(status, 413, "chunks of {chunk}: {answer}");
        assert!(answer.contains("BODY_TOO_LARGE"), "{answer}");
    }
    assert_serving(&app).await;
}
