//! Forward authentication: `/auth/verify` answers a proxy with the user's
//! headers or an RFC 6750 challenge (no error code when no token was sent,
//! `invalid_token` when one was refused), and `/auth/hasura` answers Hasura
//! with session variables whose `max-age` never outlives the token nor
//! `cache-ttl`. Both take the resolve path of `/graphql`: its cache, its
//! refusals (a logout is refused at once, an expired token too) and its
//! metrics.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::metrics::{read_exposition, total};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// GET `path` with an `Authorization` header when given.
async fn get(app: &TestApp, path: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.expect("request sent")
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn assert_refused(response: reqwest::Response, challenge: &str) {
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("x-authql-user-id").is_none());
    assert_eq!(header(&response, "www-authenticate"), challenge);
    let body = response.text().await.unwrap();
    assert!(!body.is_empty() && body.len() < 64, "{body}");
}

const INVALID: &str = r#"Bearer error="invalid_token", error_description="the token is invalid""#;
const EXPIRED: &str = r#"Bearer error="invalid_token", error_description="the token expired""#;

#[tokio::test]
async fn verify_answers_a_valid_token_with_the_users_headers() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let me = app.me(&token).await;

    let response = get(&app, "/auth/verify", Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-authql-user-id"),
        me["data"]["me"]["id"].as_str().unwrap()
    );
    assert_eq!(header(&response, "x-authql-username"), user.username);
    let sessions = app
        .graphql(
            "{ sessions { id current } }",
            serde_json::json!({}),
            Some(&token),
        )
        .await;
    let current = sessions["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap();
    assert_eq!(
        header(&response, "x-authql-session-id"),
        current["id"].as_str().unwrap()
    );
    assert_eq!(header(&response, "cache-control"), "no-store");
}

#[tokio::test]
async fn verify_accepts_the_token_keyword() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    let response = get(&app, "/auth/verify", Some(&format!("Token {token}"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-authql-username"), user.username);
}

#[tokio::test]
async fn verify_without_a_token_is_a_challenge_without_an_error_code() {
    let app = spawn_app().await;
    assert_refused(get(&app, "/auth/verify", None).await, "Bearer").await;
}

#[tokio::test]
async fn verify_refuses_malformed_and_unknown_tokens_as_invalid() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let mut forged = token.into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();

    for authorization in [
        "Bearer not-a-token".to_owned(),
        format!("Bearer {forged}"),
        "Basic YWxpY2U6c2VjcmV0".to_owned(),
        "Bearer".to_owned(),
    ] {
        assert_refused(
            get(&app, "/auth/verify", Some(&authorization)).await,
            INVALID,
        )
        .await;
    }
}

#[tokio::test]
async fn verify_refuses_a_token_at_once_after_logout() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let bearer = format!("Bearer {token}");
    // Twice: the second answer comes from the cache.
    for _ in 0..2 {
        assert_eq!(get(&app, "/auth/verify", Some(&bearer)).await.status(), 200);
    }

    let body = app
        .graphql("mutation { logout }", serde_json::json!({}), Some(&token))
        .await;
    assert_eq!(body["data"]["logout"], true);

    assert_refused(get(&app, "/auth/verify", Some(&bearer)).await, INVALID).await;
    assert_eq!(get(&app, "/auth/hasura", Some(&bearer)).await.status(), 401);
}

#[tokio::test]
async fn verify_refuses_an_expired_token() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(get(&app, "/auth/verify", Some(&bearer)).await.status(), 200);

    app.clock
        .advance(crate::helpers::test_settings().token_ttl + Duration::from_secs(1));

    assert_refused(get(&app, "/auth/verify", Some(&bearer)).await, EXPIRED).await;
    // Removed when met: now it is unknown.
    assert_refused(get(&app, "/auth/verify", Some(&bearer)).await, INVALID).await;
}

#[tokio::test]
async fn verify_serves_a_cached_token_without_the_database() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(get(&app, "/auth/verify", Some(&bearer)).await.status(), 200);

    app.auth.db().clone().close().await.unwrap();

    let response = get(&app, "/auth/verify", Some(&bearer)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-authql-username"), user.username);
}

// Metrics are global to the test process and tests run in parallel: the
// counts can only be said to have grown by at least what this test did.
#[tokio::test]
async fn verify_counts_in_the_token_resolution_metrics() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let bearer = format!("Bearer {token}");
    let metrics_url = app.url("/metrics");
    let count = |samples: &[_], labels: &[(&str, &str)]| {
        total(samples, "authql_token_resolutions_total", labels)
    };
    let (_, before) = read_exposition(&app.client, &metrics_url).await;

    assert_eq!(get(&app, "/auth/verify", Some(&bearer)).await.status(), 200);
    assert_eq!(get(&app, "/auth/verify", Some(&bearer)).await.status(), 200);
    assert_eq!(
        get(&app, "/auth/verify", Some("Bearer x")).await.status(),
        401
    );

    let (_, after) = read_exposition(&app.client, &metrics_url).await;
    for labels in [
        &[("path", "database")][..],
        &[("path", "cache")][..],
        &[("path", "refused"), ("reason", "INVALID_TOKEN")][..],
    ] {
        assert!(
            count(&after, labels) >= count(&before, labels) + 1.0,
            "{labels:?}"
        );
    }
    assert!(
        total(
            &after,
            "authql_http_request_duration_seconds_count",
            &[("route", "auth_verify")]
        ) >= 3.0
    );
}

async fn hasura(app: &TestApp, token: &str) -> Value {
    let response = get(app, "/auth/hasura", Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    response.json().await.unwrap()
}

fn max_age(body: &Value) -> u64 {
    body["Cache-Control"]
        .as_str()
        .unwrap()
        .strip_prefix("max-age=")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn hasura_gets_the_session_variables_cached_no_longer_than_cache_ttl() {
    let app = spawn_app_with(|s| s.cache_ttl = Duration::from_secs(120)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let me = app.me(&token).await;

    let body = hasura(&app, &token).await;
    assert_eq!(body["X-Hasura-User-Id"], me["data"]["me"]["id"]);
    assert_eq!(body["X-Hasura-Role"], "user");
    assert_eq!(max_age(&body), 120);
    assert_eq!(body.as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn hasura_max_age_never_outlives_the_token() {
    let app = spawn_app_with(|s| s.cache_ttl = Duration::from_secs(3600)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let token_ttl = crate::helpers::test_settings().token_ttl;

    app.clock.advance(token_ttl - Duration::from_secs(90));

    let age = max_age(&hasura(&app, &token).await);
    assert!((89..=90).contains(&age), "max-age={age}");
}

#[tokio::test]
async fn hasura_refuses_a_missing_or_invalid_token() {
    let app = spawn_app().await;
    let missing = get(&app, "/auth/hasura", None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(header(&missing, "www-authenticate"), "Bearer");
    let invalid = get(&app, "/auth/hasura", Some("Bearer nope")).await;
    assert_eq!(invalid.status(), 401);
    assert_eq!(header(&invalid, "www-authenticate"), INVALID);
}
