//! CORS: only the origins in --cors-origins may call from a browser, each
//! matched as browsers send it, and every answer says it varies by origin.

use authql::config::Settings;
use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const ALLOWED: &str = "https://app.example.com";

async fn app_allowing(origins: &str) -> TestApp {
    let parsed = Settings::from_args(&["--cors-origins", origins]).cors_origins;
    spawn_app_with(|s| s.cors_origins = parsed).await
}

async fn preflight(app: &TestApp, origin: &str) -> (u16, HeaderMap) {
    let response = app
        .client
        .request(Method::OPTIONS, app.url("/graphql"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}

async fn post_from(app: &TestApp, origin: &str) -> (u16, HeaderMap) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("origin", origin)
        .json(&serde_json::json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}

/// A POST from `origin` is answered, and the answer lets the browser read it.
async fn assert_a_post_is_allowed(app: &TestApp, origin: &str) {
    let (status, headers) = post_from(app, origin).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(origin)
    );
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered() {
    let app = app_allowing("https://app.example.com/,https://admin.example.com").await;

    for origin in [ALLOWED, "https://admin.example.com"] {
        let (status, headers) = preflight(&app, origin).await;

        assert!((200..300).contains(&status), "status {status}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(origin)
        );
        let methods = header(&headers, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("POST"), "{methods}");
        let allowed = header(&headers, "access-control-allow-headers")
            .unwrap_or_default()
            .to_lowercase();
        assert!(allowed.contains("authorization"), "{allowed}");
        assert!(allowed.contains("content-type"), "{allowed}");
        // Tokens travel in a header: no cookies, no credentials.
        assert_eq!(header(&headers, "access-control-allow-credentials"), None);
    }

    assert_a_post_is_allowed(&app, ALLOWED).await;
}

#[tokio::test]
async fn a_preflight_from_another_origin_is_not_allowed() {
    let app = app_allowing(ALLOWED).await;

    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com.evil.test",
        "null",
    ] {
        let (_, headers) = preflight(&app, origin).await;
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            None,
            "{origin}"
        );
        let (_, headers) = post_from(&app, origin).await;
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            None,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn without_cors_origins_no_cors_headers_are_sent() {
    let app = spawn_app().await;

    let (_, headers) = preflight(&app, ALLOWED).await;
    assert_eq!(cors_headers(&headers), Vec::<String>::new());
    let (status, headers) = post_from(&app, ALLOWED).await;
    assert_eq!(status, 200);
    assert_eq!(cors_headers(&headers), Vec::<String>::new());
}

fn varies_by_origin(headers: &HeaderMap) -> bool {
    headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("origin"))
}

#[tokio::test]
async fn origins_are_matched_as_browsers_send_them() {
    // Upper case, the default port, a trailing slash: all the same origin.
    let app = app_allowing("https://App.Example.COM:443/,HTTP://localhost:80").await;

    for origin in [ALLOWED, "http://localhost"] {
        let (status, headers) = preflight(&app, origin).await;
        assert!((200..300).contains(&status), "{origin}: status {status}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(origin)
        );
        assert_a_post_is_allowed(&app, origin).await;
    }
}

#[tokio::test]
async fn every_answer_with_cors_on_says_it_varies_by_origin() {
    let app = app_allowing(ALLOWED).await;

    for origin in [ALLOWED, "https://evil.example.com"] {
        let (_, headers) = preflight(&app, origin).await;
        assert!(
            varies_by_origin(&headers),
            "preflight from {origin}: {headers:?}"
        );
        let (_, headers) = post_from(&app, origin).await;
        assert!(
            varies_by_origin(&headers),
            "POST from {origin}: {headers:?}"
        );
    }
    // Without an Origin the answer differs too (no CORS headers), so a
    // shared cache must not hand it to a browser.
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&serde_json::json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert!(
        varies_by_origin(response.headers()),
        "{:?}",
        response.headers()
    );
    let (_, headers) = post_from(&spawn_app().await, ALLOWED).await;
    assert!(!varies_by_origin(&headers), "CORS off: {headers:?}");
}
