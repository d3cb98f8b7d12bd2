//! The HTTP surface around GraphQL: health and readiness, refused bodies
//! (not JSON, malformed, oversized) and documents (too deep, too many
//! aliases, huge batches), queries over GET and mutations refused there,
//! GraphiQL, introspection switched off, errors that quote neither the
//! password nor the document, and a clean stop.

use serde_json::{json, Value};

use crate::helpers::{error_code, error_reasons, spawn_app, spawn_app_with, TestApp};

async fn still_serving(app: &TestApp) {
    let user = app.create_user().await;
    let token = app.login(&user).await;
    assert!(
        app.me(&token).await["data"]["me"].is_object(),
        "the server stopped serving"
    );
}

#[tokio::test]
async fn healthz_answers_while_the_process_serves() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn routes_answer_by_path_and_method() {
    let app = spawn_app().await;
    let status = |method: reqwest::Method, path: &'static str| {
        let request = app.client.request(method, app.url(path)).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    // No such path: 404, also for near misses of a route's path.
    for path in [
        "/nope",
        "/healthz/",
        "/graphql/",
        "/auth",
        "/graphql/assets/",
        "/graphql/assets/a/b",
    ] {
        assert_eq!(status(reqwest::Method::GET, path).await, 404, "{path}");
    }
    // A path served, by another method: 405.
    assert_eq!(status(reqwest::Method::POST, "/healthz").await, 405);
    assert_eq!(status(reqwest::Method::PUT, "/graphql").await, 405);
    assert_eq!(status(reqwest::Method::DELETE, "/auth/verify").await, 405);
    // HEAD is answered as GET, without the body.
    let head = app.client.head(app.url("/healthz")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    // hyper never sends a HEAD answer's body; a body left in place would
    // still show as its length (2), an emptied one as none.
    assert_eq!(head.headers().get("content-length"), None);
    assert!(head.bytes().await.unwrap().is_empty());
    let get = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(get.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn readyz_follows_the_database() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    app.auth.db().clone().close().await.unwrap();

    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_post_that_is_not_json_is_refused_with_415() {
    let app = spawn_app().await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", content_type)
            .body(r#"{"query":"{ __typename }"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
    }
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_malformed_body_is_refused_clearly() {
    let app = spawn_app().await;
    for body in [
        "{",
        "[]",
        "\"aql_not_echoed_back\"",
        "{\"query\": \"aql_not_echoed_back\", \"variables\": 5}",
        "",
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("aql_not_echoed_back"),
            "the body was echoed: {text}"
        );
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error_code(&json), "BAD_USER_INPUT");
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let huge = json!({ "query": format!("{{ __typename }} #{}", "x".repeat(200_000)) });
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    still_serving(&app).await;
}

#[tokio::test]
async fn a_too_deep_query_is_refused() {
    let app = spawn_app().await;
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        "}".repeat(14)
    );
    let body = app.graphql(&deep, json!({}), None).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_reasons(&body), ["QUERY_TOO_DEEP"]);
    still_serving(&app).await;
}

#[tokio::test]
async fn a_huge_batch_is_refused() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..50)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let (status, body) = app.post(Value::Array(batch), None).await;
    assert_eq!(status, 400);
    assert_eq!(error_reasons(&body), ["BATCH_TOO_LARGE"]);
    still_serving(&app).await;
}

#[tokio::test]
async fn a_small_batch_runs_every_operation() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let batch =
        json!([{ "query": "{ me { username } }" }, { "query": "{ sessions { current } }" }]);
    let (status, body) = app.post(batch, Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["data"]["me"]["username"], user.username.as_str());
    assert_eq!(body[1]["data"]["sessions"][0]["current"], true);
}

#[tokio::test]
async fn too_many_aliases_are_refused() {
    let app = spawn_app().await;
    let fields: String = (0..40).map(|i| format!("a{i}: __typename ")).collect();
    let body = app
        .graphql(&format!("{{ {fields} }}"), json!({}), None)
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_reasons(&body), ["TOO_MANY_ALIASES"]);
}

#[tokio::test]
async fn a_document_seen_before_is_held_to_every_limit_again() {
    let app = spawn_app().await;
    let fields: String = (0..40).map(|i| format!("a{i}: __typename ")).collect();
    let too_many_aliases = format!("{{ {fields} }}");
    let too_deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        "}".repeat(14)
    );
    for _ in 0..3 {
        let body = app.graphql(&too_many_aliases, json!({}), None).await;
        assert_eq!(error_reasons(&body), ["TOO_MANY_ALIASES"]);
        let body = app.graphql(&too_deep, json!({}), None).await;
        assert_eq!(error_reasons(&body), ["QUERY_TOO_DEEP"]);
        let body = app.graphql("{ me { id } }", json!({}), None).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn queries_run_over_get() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let body: Value = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { username } }")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn mutations_over_get_are_refused_with_405() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { logout }")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert!(
        app.me(&token).await["data"]["me"].is_object(),
        "the mutation ran"
    );
}

#[tokio::test]
async fn a_browser_gets_graphiql() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("graphiql"));
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let on = spawn_app().await;
    let body = on
        .graphql("{ __schema { queryType { name } } }", json!({}), None)
        .await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");

    let off = spawn_app_with(|s| s.introspection = false).await;
    let body = off
        .graphql("{ __schema { queryType { name } } }", json!({}), None)
        .await;
    assert!(body["data"]["__schema"].is_null(), "{body}");
    let body = off.graphql("{ mee { id } }", json!({}), None).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("Did you mean"),
        "suggestions leak the schema: {message}"
    );
}

#[tokio::test]
async fn errors_never_contain_the_password() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let secret = "my very secret wrong password";
    let (_, body) = app
        .post(
            json!({
                "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
                "variables": { "u": user.username, "p": secret }
            }),
            None,
        )
        .await;
    assert!(!body.to_string().contains(secret));
    // A type error in the variables does not echo the value either.
    let (_, body) = app
        .post(
            json!({
                "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
                "variables": { "u": user.username, "p": [secret] }
            }),
            None,
        )
        .await;
    assert!(body["errors"].is_array());
    assert!(!body.to_string().contains(secret), "{body}");
}

#[tokio::test]
async fn a_stopped_server_stops_accepting_and_exits_cleanly() {
    let app = spawn_app().await;
    let client = app.client.clone();
    let url = app.url("/healthz");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);

    app.stop().await;

    assert!(
        client.get(&url).send().await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn a_syntax_error_does_not_quote_the_document() {
    let app = spawn_app().await;
    let secret = "hunter2-typed-inline";
    let body = app
        .graphql(
            &format!("mutation {{ login(username: \"a\", password: \"{secret}\" {{ token }} }}"),
            json!({}),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_reasons(&body), ["GRAPHQL_PARSE_FAILED"]);
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("syntax error at line 1"));
    assert!(!body.to_string().contains(secret), "{body}");
}
