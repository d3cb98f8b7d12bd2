//! GraphQL over HTTP as clients expect it: the `Accept` negotiation of the
//! GraphQL-over-HTTP specification (status by how far the request got under
//! `application/graphql-response+json`, 200 under `application/json`, 406
//! otherwise), Apollo's automatic persisted queries over POST and GET, and
//! the GraphiQL page's headers and assets (the page in a real browser is
//! `graphiql.rs`).

use authql::graphql::persisted::sha256_hex;
use serde_json::{json, Value};

use crate::helpers::{error_code, error_reasons, spawn_app, spawn_app_with, TestApp};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const APOLLO_ACCEPT: &str = "application/graphql-response+json, application/json";

/// POSTs `body` (raw) with `accept`; returns status, content type, JSON.
async fn post_raw(app: &TestApp, body: &str, accept: &str) -> (u16, String, Value) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn post_accept(app: &TestApp, body: Value, accept: &str) -> (u16, String, Value) {
    post_raw(app, &body.to_string(), accept).await
}

async fn get(app: &TestApp, query: &[(&str, &str)]) -> (u16, Value) {
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(query)
        .send()
        .await
        .expect("request sent");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

fn persisted(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn a_client_preferring_graphql_response_json_gets_it_with_200_when_the_operation_ran() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    let response = app
        .client
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(&token)
        .json(&json!({ "query": "{ me { username } }" }))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with(GRAPHQL_RESPONSE));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn field_errors_keep_200_under_graphql_response_json() {
    let app = spawn_app().await;

    let (status, content_type, body) =
        post_accept(&app, json!({ "query": "{ me { id } }" }), APOLLO_ACCEPT).await;

    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with(GRAPHQL_RESPONSE));
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_request_refused_before_execution_is_400_under_graphql_response_json() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "{ me ".repeat(100), "}".repeat(100));
    // A parse error, a validation error, a bound.
    for query in ["{ me { id }", "{ nope }", deep.as_str()] {
        let (status, content_type, body) =
            post_accept(&app, json!({ "query": query }), GRAPHQL_RESPONSE).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(content_type.starts_with(GRAPHQL_RESPONSE));
        assert_eq!(error_code(&body), "BAD_USER_INPUT");
        assert!(body.get("data").is_none(), "no data entry: {body}");
    }
    let (status, _, body) = post_accept(
        &app,
        json!({ "query": "query($n: Int!) { me { id } }", "variables": { "n": "x" } }),
        GRAPHQL_RESPONSE,
    )
    .await;
    assert_eq!(status, 400, "bad variables: {body}");
    let (status, content_type, body) = post_raw(&app, "{ not json", GRAPHQL_RESPONSE).await;
    assert_eq!(status, 400);
    assert!(content_type.starts_with(GRAPHQL_RESPONSE));
    assert_eq!(error_reasons(&body), ["MALFORMED_REQUEST"]);
}

#[tokio::test]
async fn application_json_keeps_200_for_graphql_errors() {
    let app = spawn_app().await;
    for accept in ["application/json", "*/*", ""] {
        let (status, content_type, body) =
            post_accept(&app, json!({ "query": "{ nope }" }), accept).await;
        assert_eq!(status, 200, "Accept {accept:?}: {body}");
        assert!(content_type.starts_with("application/json"));
        assert_eq!(error_reasons(&body), ["GRAPHQL_VALIDATION_FAILED"]);
    }
}

#[tokio::test]
async fn an_accept_allowing_neither_json_type_is_406() {
    let app = spawn_app().await;
    let (status, _, body) =
        post_accept(&app, json!({ "query": "{ me { id } }" }), "text/html").await;
    assert_eq!(status, 406);
    assert_eq!(error_reasons(&body), ["NOT_ACCEPTABLE"]);

    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { id } }")])
        .header("accept", "application/xml")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
}

#[tokio::test]
async fn an_unknown_persisted_query_is_not_found_as_apollo_clients_expect() {
    let app = spawn_app().await;
    let hash = sha256_hex("{ me { id } }");

    for accept in ["application/json", APOLLO_ACCEPT] {
        let (status, _, body) =
            post_accept(&app, json!({ "extensions": persisted(&hash) }), accept).await;
        assert_eq!(status, 200, "{accept}: {body}");
        assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
        assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");
    }
    let extensions = persisted(&hash).to_string();
    let (status, body) = get(&app, &[("extensions", &extensions)]).await;
    assert_eq!(status, 200);
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");
}

#[tokio::test]
async fn a_registered_persisted_query_runs_by_its_hash_over_post_and_get() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let query = "query Me { me { username } }";
    let hash = sha256_hex(query);

    let (_, body) = app
        .post(
            json!({ "query": query, "extensions": persisted(&hash) }),
            Some(&token),
        )
        .await;
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());

    let (status, body) = app
        .post(json!({ "extensions": persisted(&hash) }), Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());

    let extensions = persisted(&hash).to_string();
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", extensions.as_str())])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn a_persisted_query_whose_hash_does_not_match_is_refused() {
    let app = spawn_app().await;
    let wrong = sha256_hex("{ me { username } }");

    let (status, body) = app
        .post(
            json!({ "query": "{ me { id } }", "extensions": persisted(&wrong) }),
            None,
        )
        .await;

    assert_eq!(status, 200);
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_reasons(&body), ["PERSISTED_QUERY_HASH_MISMATCH"]);
    let (_, body) = app
        .post(json!({ "extensions": persisted(&wrong) }), None)
        .await;
    assert_eq!(
        error_code(&body),
        "PERSISTED_QUERY_NOT_FOUND",
        "nothing kept"
    );
}

#[tokio::test]
async fn every_limit_applies_to_a_persisted_query_and_a_refused_one_is_not_kept() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "{ me ".repeat(100), "}".repeat(100));
    let hash = sha256_hex(&deep);

    let (_, _, body) = post_accept(
        &app,
        json!({ "query": deep, "extensions": persisted(&hash) }),
        APOLLO_ACCEPT,
    )
    .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_ne!(error_reasons(&body), ["PERSISTED_QUERY_HASH_MISMATCH"]);

    let (_, body) = app
        .post(json!({ "extensions": persisted(&hash) }), None)
        .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");
}

#[tokio::test]
async fn a_persisted_mutation_is_refused_over_get() {
    let app = spawn_app().await;
    let query = "mutation { logout }";
    let hash = sha256_hex(query);
    app.post(
        json!({ "query": query, "extensions": persisted(&hash) }),
        None,
    )
    .await;

    let extensions = persisted(&hash).to_string();
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", extensions.as_str())])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

async fn get_page(app: &TestApp) -> reqwest::Response {
    app.client
        .get(app.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_graphiql_page_allows_only_its_own_origin() {
    let app = spawn_app().await;

    let response = get_page(&app).await;

    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("http"),
        "an absolute URL in the page: {page}"
    );
    assert!(!page.contains("<script>"), "an inline script");
    for link in page.split('"').filter(|s| s.starts_with("graphql/assets/")) {
        let asset = app
            .client
            .get(app.url(&format!("/{link}")))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{link}");
        if link.contains("-3.") || link.contains("-18.") {
            assert_eq!(
                asset.headers()["cache-control"],
                "public, max-age=31536000, immutable",
                "{link}"
            );
        }
    }
}

#[tokio::test]
async fn graphiql_can_be_turned_off_and_follows_introspection_by_default() {
    for app in [
        spawn_app_with(|s| s.graphiql = false).await,
        spawn_app_with(|s| with_flags(s, &["--introspection", "false"])).await,
    ] {
        // No page: the request is a GraphQL one, which HTML cannot answer.
        let response = get_page(&app).await;
        assert_eq!(response.status(), 406);
        let asset = app
            .client
            .get(app.url("/graphql/assets/graphiql-3.9.0.min.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 404);
    }
    let on = spawn_app_with(|s| {
        with_flags(s, &["--introspection", "false", "--graphiql", "true"]);
    })
    .await;
    assert_eq!(get_page(&on).await.status(), 200);
}

/// Takes `introspection` and `graphiql` as these flags set them.
fn with_flags(settings: &mut authql::config::Settings, flags: &[&str]) {
    let parsed = authql::config::Settings::from_args(flags);
    settings.introspection = parsed.introspection;
    settings.graphiql = parsed.graphiql;
}

/// The raw text of the answer to `body`, sent with `token`.
async fn answer_text(app: &TestApp, body: Value, token: &str) -> String {
    app.client
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("a body")
}

#[tokio::test]
async fn fields_are_answered_in_the_order_they_were_selected() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    // In the text itself: a JSON parser's map may reorder keys.
    let in_order = |text: &str, keys: &[&str]| {
        let at: Vec<_> = keys
            .iter()
            .map(|key| {
                text.find(&format!("\"{key}\":"))
                    .unwrap_or_else(|| panic!("{key} in {text}"))
            })
            .collect();
        at.windows(2).all(|pair| pair[0] < pair[1])
    };
    for (query, keys) in [
        ("{ me { username id } }", ["username", "id"]),
        ("{ me { id username } }", ["id", "username"]),
        ("{ zed: me { id } abe: me { id } }", ["zed", "abe"]),
    ] {
        let single = answer_text(&app, json!({ "query": query }), &token).await;
        assert!(in_order(&single, &keys), "{query}: {single}");
        let batch = answer_text(&app, json!([{ "query": query }]), &token).await;
        assert!(batch.starts_with('['), "{batch}");
        assert!(in_order(&batch, &keys), "{query} in a batch: {batch}");
    }
    // A refused request still has no `data` entry, in a batch too.
    let refused = answer_text(
        &app,
        json!([{ "query": "{ nope }" }, { "query": "{ me { id } }" }]),
        &token,
    )
    .await;
    let answers: Value = serde_json::from_str(&refused).expect("JSON");
    assert!(answers[0].get("data").is_none(), "{refused}");
    assert!(answers[0]["errors"].is_array(), "{refused}");
    assert!(answers[1]["data"]["me"]["id"].is_string(), "{refused}");
}
