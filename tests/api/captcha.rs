//! Captcha at login, against a siteverify stand-in: a real HTTP server on
//! loopback, started by each test and told what to answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authql::config::{CaptchaProvider, Settings};
use serde_json::{json, Value};

use crate::helpers::captcha_stub::{login_with, passed, CaptchaStub, Reply, LOGIN, SECRET};
use crate::helpers::{error_code, failed_logins, spawn_app_with, TestApp};

fn token(body: &Value) -> &str {
    body["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a token, got {body}"))
}

async fn app_with_stub(
    reply: Reply,
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, CaptchaStub) {
    let stub = CaptchaStub::start(reply).await;
    let app = spawn_app_with(|s| {
        stub.configure(s);
        configure(s);
    })
    .await;
    (app, stub)
}

#[tokio::test]
async fn a_login_without_a_captcha_is_refused_when_a_secret_is_set() {
    let (app, stub) = app_with_stub(passed(), |_| {}).await;
    let user = app.create_user().await;

    for captcha in [None, Some("")] {
        let body = login_with(&app, &user, &user.password, captcha).await;
        assert_eq!(error_code(&body), "CAPTCHA_REQUIRED", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    // A wrong password without a captcha is not checked either.
    let body = login_with(&app, &user, "not the password at all", None).await;
    assert_eq!(error_code(&body), "CAPTCHA_REQUIRED");
    assert_eq!(stub.calls(), 0, "nothing to verify, nothing sent");
    assert_eq!(failed_logins(&app, &user.username).await, 0);
}

#[tokio::test]
async fn without_a_secret_no_captcha_is_needed_and_none_is_checked() {
    let stub = CaptchaStub::start(Reply::Json(json!({ "success": false }))).await;
    let app = spawn_app_with(|s| s.captcha_verify_url = Some(stub.url.clone())).await;
    let user = app.create_user().await;

    token(&login_with(&app, &user, &user.password, None).await);
    token(&login_with(&app, &user, &user.password, Some("ignored")).await);
    assert_eq!(stub.calls(), 0);
}

#[tokio::test]
async fn a_passed_captcha_lets_the_login_through_and_the_service_gets_secret_answer_and_ip() {
    let (app, stub) = app_with_stub(passed(), |_| {}).await;
    let user = app.create_user().await;

    let body = login_with(&app, &user, &user.password, Some("answer-from-the-widget")).await;

    let token = token(&body);
    assert_eq!(
        app.me(token).await["data"]["me"]["username"],
        user.username.as_str()
    );
    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    let expected: HashMap<String, String> = [
        ("secret", SECRET),
        ("response", "answer-from-the-widget"),
        ("remoteip", "127.0.0.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(requests[0], expected);
}

#[tokio::test]
async fn behind_a_trusted_proxy_remoteip_is_the_forwarded_client() {
    let (app, stub) = app_with_stub(passed(), |s| s.trust_forwarded_for = true).await;
    let user = app.create_user().await;

    let response = app
        .client
        .post(app.url("/graphql"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
        .json(&json!({
            "query": LOGIN,
            "variables": { "u": user.username, "p": user.password, "c": "answer" }
        }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();

    token(&body);
    assert_eq!(stub.requests()[0]["remoteip"], "203.0.113.9");
}

#[tokio::test]
async fn a_refused_captcha_is_captcha_invalid_and_checks_no_password() {
    let (app, stub) = app_with_stub(
        Reply::Json(json!({ "success": false, "error-codes": ["invalid-input-response"] })),
        |_| {},
    )
    .await;
    let user = app.create_user().await;

    let body = login_with(&app, &user, &user.password, Some("bad")).await;
    assert_eq!(error_code(&body), "CAPTCHA_INVALID", "{body}");
    assert!(body["data"].is_null());
    // More wrong passwords than the backoff allows: none is checked.
    for _ in 0..6 {
        let body = login_with(&app, &user, "not the password at all", Some("bad")).await;
        assert_eq!(error_code(&body), "CAPTCHA_INVALID", "{body}");
    }
    assert_eq!(failed_logins(&app, &user.username).await, 0);
    assert_eq!(stub.calls(), 7);

    // The account was never backed off: a good captcha gets straight in.
    stub.reply(passed());
    token(&login_with(&app, &user, &user.password, Some("good")).await);
}

#[tokio::test]
async fn recaptcha_v3_answers_need_the_score_and_the_action() {
    let (app, stub) = app_with_stub(passed(), |s| {
        s.captcha_min_score = 0.7;
        s.captcha_action = "signin".into();
    })
    .await;
    let user = app.create_user().await;
    let v3 = |score: f64, action: Option<&str>| {
        let mut answer = json!({
            "success": true,
            "score": score,
            "challenge_ts": "2024-05-01T12:00:00Z",
            "hostname": "app.example.com"
        });
        if let Some(action) = action {
            answer["action"] = json!(action);
        }
        Reply::Json(answer)
    };
    let cases = [
        (v3(0.3, Some("signin")), "CAPTCHA_INVALID"),
        (v3(0.69, Some("signin")), "CAPTCHA_INVALID"),
        (v3(0.9, Some("login")), "CAPTCHA_INVALID"),
        (v3(0.9, None), "CAPTCHA_INVALID"),
        (v3(0.7, Some("signin")), "ok"),
        (v3(0.9, Some("signin")), "ok"),
    ];
    for (reply, expected) in cases {
        stub.reply(reply);
        let body = login_with(&app, &user, &user.password, Some("v3-token")).await;
        if expected == "ok" {
            token(&body);
        } else {
            assert_eq!(error_code(&body), expected, "{body}");
        }
    }
    assert_eq!(failed_logins(&app, &user.username).await, 0);
}

#[tokio::test]
async fn a_service_that_never_answers_is_unavailable_within_the_timeout_and_the_server_stays_responsive(
) {
    let (app, stub) = app_with_stub(passed(), |_| {}).await;
    let app = Arc::new(app);
    let user = app.create_user().await;
    let session = token(&login_with(&app, &user, &user.password, Some("ok")).await).to_owned();
    stub.reply(Reply::Hang);

    let started = Instant::now();
    let pending = tokio::spawn({
        let (app, user) = (app.clone(), user.clone());
        async move { login_with(&app, &user, &user.password, Some("slow")).await }
    });
    // Wait until the service holds the request.
    while stub.calls() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the stub got nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        app.me(&session).await["data"]["me"]["username"],
        user.username.as_str()
    );
    assert!(
        !pending.is_finished(),
        "the login should still be waiting for the captcha service"
    );

    let body = pending.await.unwrap();
    assert_eq!(error_code(&body), "CAPTCHA_UNAVAILABLE", "{body}");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "refused after {waited:?}, not within the timeout"
    );
}

#[tokio::test]
async fn an_error_status_is_unavailable() {
    let (app, stub) = app_with_stub(Reply::Status(500), |_| {}).await;
    let user = app.create_user().await;

    for status in [500, 502, 503, 404, 429] {
        stub.reply(Reply::Status(status));
        let body = login_with(&app, &user, "not the password at all", Some("x")).await;
        assert_eq!(
            error_code(&body),
            "CAPTCHA_UNAVAILABLE",
            "status {status}: {body}"
        );
    }
    assert_eq!(stub.calls(), 5);
    assert_eq!(failed_logins(&app, &user.username).await, 0);
}

#[tokio::test]
async fn an_answer_that_is_not_a_verdict_is_unavailable() {
    let (app, stub) = app_with_stub(passed(), |_| {}).await;
    let user = app.create_user().await;

    let garbage = [
        Reply::Text("<html><body>Service temporarily unavailable</body></html>"),
        Reply::Text(""),
        Reply::Text("{\"success\": tru"),
        Reply::Json(json!({ "ok": true })),
        Reply::Json(json!({ "success": "true" })),
        Reply::Json(json!([true])),
    ];
    let count = garbage.len();
    for reply in garbage {
        stub.reply(reply);
        let body = login_with(&app, &user, &user.password, Some("x")).await;
        assert_eq!(error_code(&body), "CAPTCHA_UNAVAILABLE", "{body}");
    }
    assert_eq!(stub.calls(), count);
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = spawn_app_with(|s| {
        s.captcha_secret = Some(SECRET.into());
        s.captcha_verify_url = Some(format!("http://127.0.0.1:{port}/siteverify"));
    })
    .await;
    let user = app.create_user().await;

    let body = login_with(&app, &user, &user.password, Some("x")).await;
    assert_eq!(error_code(&body), "CAPTCHA_UNAVAILABLE", "{body}");
    let body = login_with(&app, &user, "not the password at all", Some("x")).await;
    assert_eq!(error_code(&body), "CAPTCHA_UNAVAILABLE", "{body}");
    assert_eq!(failed_logins(&app, &user.username).await, 0);
}

#[tokio::test]
async fn a_refused_secret_is_our_misconfiguration_not_the_users_failure() {
    let (app, _stub) = app_with_stub(
        Reply::Json(json!({ "success": false, "error-codes": ["invalid-input-secret"] })),
        |_| {},
    )
    .await;
    let user = app.create_user().await;

    let body = login_with(&app, &user, &user.password, Some("x")).await;
    assert_eq!(error_code(&body), "CAPTCHA_UNAVAILABLE", "{body}");
}

#[tokio::test]
async fn hcaptcha_answers_are_read_and_its_scores_are_not_recaptcha_scores() {
    let (app, stub) = app_with_stub(passed(), |s| {
        s.captcha_provider = CaptchaProvider::Hcaptcha;
        s.captcha_min_score = 0.5;
    })
    .await;
    let user = app.create_user().await;

    // hCaptcha's documented answer; Enterprise adds a risk score where
    // higher means more likely a bot, so a low one must not refuse.
    stub.reply(Reply::Json(json!({
        "success": true,
        "challenge_ts": "2024-05-01T12:00:00Z",
        "hostname": "app.example.com",
        "credit": false,
        "score": 0.1,
        "score_reason": []
    })));
    token(&login_with(&app, &user, &user.password, Some("P1_hcaptcha-answer")).await);
    stub.reply(Reply::Json(json!({
        "success": false,
        "error-codes": ["invalid-or-already-seen-response"]
    })));
    let body = login_with(&app, &user, &user.password, Some("P1_seen")).await;
    assert_eq!(error_code(&body), "CAPTCHA_INVALID", "{body}");

    let sent = &stub.requests()[0];
    assert_eq!(sent["secret"], SECRET);
    assert_eq!(sent["response"], "P1_hcaptcha-answer");
    assert_eq!(sent["remoteip"], "127.0.0.1");
}

#[tokio::test]
async fn turnstile_answers_are_read() {
    let (app, stub) = app_with_stub(passed(), |s| {
        s.captcha_provider = CaptchaProvider::Turnstile;
    })
    .await;
    let user = app.create_user().await;

    // Turnstile's documented answer: its `action` is the widget's, not a
    // reCAPTCHA v3 action, and there is no score.
    stub.reply(Reply::Json(json!({
        "success": true,
        "challenge_ts": "2024-05-01T12:00:00.000Z",
        "hostname": "app.example.com",
        "error-codes": [],
        "action": "widget-login",
        "cdata": "session-123"
    })));
    token(&login_with(&app, &user, &user.password, Some("0.turnstile-answer")).await);
    stub.reply(Reply::Json(json!({
        "success": false,
        "error-codes": ["timeout-or-duplicate"]
    })));
    let body = login_with(&app, &user, "not the password at all", Some("0.old")).await;
    assert_eq!(error_code(&body), "CAPTCHA_INVALID", "{body}");
    assert_eq!(failed_logins(&app, &user.username).await, 0);

    let sent = &stub.requests()[0];
    assert_eq!(sent["secret"], SECRET);
    assert_eq!(sent["response"], "0.turnstile-answer");
    assert_eq!(sent["remoteip"], "127.0.0.1");
}
