//! Login throttling: the in-memory limits per IP and per username, and the
//! per-account backoff kept in the database.

use std::sync::Arc;
use std::time::Duration;

use authql::db::entities::auth_token;
use sea_orm::{EntityTrait as _, PaginatorTrait as _};
use serde_json::{json, Value};

use crate::helpers::captcha_stub::{login_with, passed, CaptchaStub};
use crate::helpers::{error_code, failed_logins, spawn_app, spawn_app_with, TestApp};

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
const WRONG: &str = "not the password at all";

/// Sessions stored (each successful login stores one).
async fn sessions(app: &TestApp) -> u64 {
    auth_token::Entity::find()
        .count(app.auth.db())
        .await
        .expect("tokens readable")
}

/// `login`, with an `X-Forwarded-For` header when `forwarded_for` is set.
async fn login_via(
    app: &TestApp,
    forwarded_for: Option<&str>,
    username: &str,
    password: &str,
) -> Value {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({
        "query": LOGIN,
        "variables": { "u": username, "p": password }
    }));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

fn retry_after(body: &Value) -> u64 {
    assert_eq!(error_code(body), "RATE_LIMITED", "{body}");
    body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retryAfter in {body}"))
}

fn has_token(body: &Value) -> bool {
    body["data"]["login"]["token"].is_string()
}

async fn app_with_rate(rate: &str, trust_forwarded_for: bool) -> TestApp {
    spawn_app_with(|s| {
        s.login_rate = rate.parse().unwrap();
        s.trust_forwarded_for = trust_forwarded_for;
    })
    .await
}

#[tokio::test]
async fn the_attempt_after_the_limit_from_one_ip_is_rate_limited_even_after_successes() {
    let app = app_with_rate("3/minute", false).await;
    let user = app.create_user().await;

    for _ in 0..3 {
        app.login(&user).await;
    }
    let body = app.login_as(&user.username, &user.password).await;

    let wait = retry_after(&body);
    assert!((1..=60).contains(&wait), "retryAfter {wait}");
    assert!(body["data"].is_null());
    assert_eq!(sessions(&app).await, 3);
}

#[tokio::test]
async fn the_attempt_after_the_limit_for_one_username_is_rate_limited_from_any_ip() {
    let app = app_with_rate("3/minute", true).await;
    let user = app.create_user().await;

    for i in 1..=3 {
        let ip = format!("198.51.100.{i}");
        let body = login_via(&app, Some(&ip), &user.username, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    // A fresh IP, the right password, another spelling of the name.
    let body = login_via(
        &app,
        Some("198.51.100.4"),
        &user.username.to_uppercase(),
        &user.password,
    )
    .await;
    let wait = retry_after(&body);
    assert!((1..=60).contains(&wait), "retryAfter {wait}");
    assert_eq!(failed_logins(&app, &user.username).await, 3);

    // Another username from that IP is not limited.
    let other = app.create_user().await;
    let body = login_via(&app, Some("198.51.100.4"), &other.username, &other.password).await;
    assert!(has_token(&body), "{body}");
}

#[tokio::test]
async fn the_attempt_after_the_limit_from_one_forwarded_ip_is_rate_limited_across_usernames() {
    let app = app_with_rate("3/minute", true).await;
    let user = app.create_user().await;

    for name in ["ghost_one", "ghost_two", "ghost_three"] {
        let body = login_via(&app, Some("203.0.113.7"), name, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    let body = login_via(&app, Some("203.0.113.7"), &user.username, &user.password).await;
    assert!(retry_after(&body) >= 1);
    // Entries before the last one are the client's to forge.
    let body = login_via(
        &app,
        Some("192.0.2.50, 203.0.113.7"),
        &user.username,
        &user.password,
    )
    .await;
    assert!(retry_after(&body) >= 1);

    // Another client behind the proxy has its own budget.
    let body = login_via(
        &app,
        Some("192.0.2.50, 203.0.113.8"),
        &user.username,
        &user.password,
    )
    .await;
    assert!(has_token(&body), "{body}");
}

#[tokio::test]
async fn without_trust_forwarded_for_the_header_is_ignored() {
    let app = app_with_rate("3/minute", false).await;
    let user = app.create_user().await;

    for (i, name) in ["ghost_one", "ghost_two", "ghost_three"].iter().enumerate() {
        let ip = format!("203.0.113.{}", i + 1);
        let body = login_via(&app, Some(&ip), name, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    // Every attempt came from 127.0.0.1, whatever the header said.
    let body = login_via(&app, Some("203.0.113.99"), &user.username, &user.password).await;
    assert!(retry_after(&body) >= 1);
}

#[tokio::test]
async fn a_rate_limited_attempt_costs_no_captcha_call_and_no_password_check() {
    let stub = CaptchaStub::start(passed()).await;
    let app = spawn_app_with(|s| {
        stub.configure(s);
        s.login_rate = "2/minute".parse().unwrap();
    })
    .await;
    let user = app.create_user().await;

    for _ in 0..2 {
        let body = login_with(&app, &user, WRONG, Some("answer")).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    assert_eq!(stub.calls(), 2);
    assert_eq!(failed_logins(&app, &user.username).await, 2);

    for _ in 0..3 {
        let body = login_with(&app, &user, WRONG, Some("answer")).await;
        assert!(retry_after(&body) >= 1);
    }
    assert_eq!(stub.calls(), 2, "no captcha call for a throttled attempt");
    assert_eq!(
        failed_logins(&app, &user.username).await,
        2,
        "no password check for a throttled attempt"
    );
}

#[tokio::test]
async fn twenty_aliased_logins_in_one_document_get_at_most_the_limit_through() {
    let app = app_with_rate("3/minute", false).await;
    let user = app.create_user().await;
    let fields: String = (0..20)
        .map(|i| format!("a{i}: login(username: $u, password: $p) {{ token }} "))
        .collect();
    let query = format!("mutation($u: String!, $p: String!) {{ {fields}}}");

    let body = app
        .graphql(
            &query,
            json!({ "u": user.username, "p": user.password }),
            None,
        )
        .await;

    let tokens = body["data"].as_object().map_or(0, |data| {
        data.values().filter(|f| f["token"].is_string()).count()
    });
    assert_eq!(tokens, 3, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 17, "{body}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{body}");
        assert!(
            error["extensions"]["retryAfter"].as_u64() >= Some(1),
            "{body}"
        );
    }
    assert_eq!(sessions(&app).await, 3, "{body}");
    // The budget is spent for the next request too.
    assert!(retry_after(&app.login_as(&user.username, &user.password).await) >= 1);
}

#[tokio::test]
async fn a_batch_of_logins_gets_at_most_the_limit_through() {
    let app = app_with_rate("3/minute", false).await;
    let user = app.create_user().await;
    let one = json!({ "query": LOGIN, "variables": { "u": user.username, "p": user.password } });

    // Over the batch limit: refused whole, nothing runs.
    let (status, _) = app.post(Value::Array(vec![one.clone(); 20]), None).await;
    assert_eq!(status, 400);
    assert_eq!(sessions(&app).await, 0);

    let (status, body) = app.post(Value::Array(vec![one; 10]), None).await;

    assert_eq!(status, 200);
    let answers = body.as_array().expect("one answer per operation");
    assert_eq!(answers.len(), 10);
    let through = answers.iter().filter(|a| has_token(a)).count();
    assert_eq!(through, 3, "{body}");
    for refused in answers.iter().filter(|a| !has_token(a)) {
        assert!(retry_after(refused) >= 1);
    }
    assert_eq!(sessions(&app).await, 3);
}

#[tokio::test]
async fn the_limit_recovers_after_the_window() {
    let app = app_with_rate("2/second", false).await;
    let user = app.create_user().await;
    let one = json!({ "query": LOGIN, "variables": { "u": user.username, "p": user.password } });

    // Spend the budget in one request, so that a slow machine cannot let
    // the window refill between attempts.
    let (_, body) = app.post(Value::Array(vec![one; 10]), None).await;
    let answers = body.as_array().expect("one answer per operation");
    let through = answers.iter().filter(|a| has_token(a)).count();
    assert!((1..=3).contains(&through), "{body}");
    for refused in answers.iter().filter(|a| !has_token(a)) {
        assert_eq!(retry_after(refused), 1, "{body}");
    }

    tokio::time::sleep(Duration::from_millis(1100)).await;

    app.login(&user).await;
    app.login(&user).await;
}

/// Five wrong passwords: the free failures.
async fn fail_five_times(app: &TestApp, username: &str) {
    for _ in 0..5 {
        let body = app.login_as(username, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
}

#[tokio::test]
async fn the_account_backoff_trips_after_five_failures_doubles_and_resets_on_success() {
    let app = spawn_app().await;
    let user = app.create_user().await;

    fail_five_times(&app, &user.username).await;
    assert_eq!(failed_logins(&app, &user.username).await, 5);

    // Even the right password waits.
    let body = app.login_as(&user.username, &user.password).await;
    assert_eq!(retry_after(&body), 1);
    assert_eq!(
        body["errors"][0]["message"],
        "too many attempts; retry in 1 second"
    );
    // A refused attempt checks no password and does not extend the wait.
    let body = app.login_as(&user.username, WRONG).await;
    assert_eq!(retry_after(&body), 1);
    assert_eq!(failed_logins(&app, &user.username).await, 5);

    for (step, wait) in [(1, 2), (2, 4), (4, 8)] {
        app.clock.advance(Duration::from_secs(step));
        let body = app.login_as(&user.username, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
        let body = app.login_as(&user.username, &user.password).await;
        assert_eq!(retry_after(&body), wait, "{body}");
        let message = format!("too many attempts; retry in {wait} seconds");
        assert_eq!(body["errors"][0]["message"], message.as_str());
    }
    assert_eq!(failed_logins(&app, &user.username).await, 8);

    app.clock.advance(Duration::from_secs(8));
    app.login(&user).await;
    assert_eq!(failed_logins(&app, &user.username).await, 0);
    // Back to five free failures.
    fail_five_times(&app, &user.username).await;
    assert_eq!(
        retry_after(&app.login_as(&user.username, &user.password).await),
        1
    );
}

#[tokio::test]
async fn failures_a_day_old_are_forgotten_for_accounts_and_unknown_usernames_alike() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    for _ in 0..7 {
        app.login_as(&user.username, WRONG).await;
        app.login_as("nobody_by_this_name", WRONG).await;
        app.clock.advance(Duration::from_secs(60));
    }
    assert_eq!(failed_logins(&app, &user.username).await, 7);

    app.clock.advance(Duration::from_secs(24 * 3600));

    // One more failure counts as the first, so the next attempt is free.
    for username in [user.username.as_str(), "nobody_by_this_name"] {
        let body = app.login_as(username, WRONG).await;
        assert_eq!(
            error_code(&body),
            "INVALID_CREDENTIALS",
            "{username}: {body}"
        );
        let body = app.login_as(username, WRONG).await;
        assert_eq!(
            error_code(&body),
            "INVALID_CREDENTIALS",
            "{username}: {body}"
        );
    }
    assert_eq!(failed_logins(&app, &user.username).await, 2);
}

#[tokio::test]
async fn the_account_backoff_survives_a_restart() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    fail_five_times(&app, &user.username).await;

    let restarted = app.spawn_sibling(|_| {}).await;
    app.stop().await;

    let body = restarted.login_as(&user.username, &user.password).await;
    assert_eq!(retry_after(&body), 1);
    restarted.clock.advance(Duration::from_secs(1));
    restarted.login(&user).await;
}

#[tokio::test]
async fn two_instances_share_the_account_backoff() {
    let one = spawn_app().await;
    let two = one.spawn_sibling(|_| {}).await;
    let user = one.create_user().await;

    for app in [&one, &two, &one, &two, &one] {
        let body = app.login_as(&user.username, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }

    for app in [&one, &two] {
        let body = app.login_as(&user.username, &user.password).await;
        assert_eq!(retry_after(&body), 1, "{body}");
    }
    // A success on one instance resets it for both.
    one.clock.advance(Duration::from_secs(1));
    one.login(&user).await;
    two.login(&user).await;
    assert_eq!(failed_logins(&two, &user.username).await, 0);
}

#[tokio::test]
async fn unknown_usernames_get_the_same_backoff() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let ghost = "nobody_by_this_name";

    fail_five_times(&app, ghost).await;
    fail_five_times(&app, &user.username).await;

    for name in [ghost, user.username.as_str()] {
        let body = app.login_as(name, WRONG).await;
        assert_eq!(retry_after(&body), 1, "{name}: {body}");
    }
    app.clock.advance(Duration::from_secs(1));
    for name in [ghost, user.username.as_str()] {
        let body = app.login_as(name, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{name}: {body}");
        let body = app.login_as(name, WRONG).await;
        assert_eq!(retry_after(&body), 2, "{name}: {body}");
    }
}

#[tokio::test]
async fn a_wrong_old_password_in_change_password_counts_toward_the_backoff() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let change = |old: &str| {
        app.graphql(
            "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token } }",
            json!({ "o": old, "n": "a brand new passphrase for tests" }),
            Some(token.as_str()),
        )
    };

    for _ in 0..5 {
        let body = change(WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    assert_eq!(failed_logins(&app, &user.username).await, 5);

    assert_eq!(retry_after(&change(&user.password).await), 1);
    assert_eq!(
        retry_after(&app.login_as(&user.username, &user.password).await),
        1
    );
    assert_eq!(failed_logins(&app, &user.username).await, 5);
}

#[tokio::test]
async fn concurrent_failures_are_all_counted() {
    let one = Arc::new(spawn_app().await);
    let two = Arc::new(one.spawn_sibling(|_| {}).await);
    let user = one.create_user().await;

    let attempts: Vec<_> = [&one, &two, &one, &two, &one]
        .into_iter()
        .map(|app| {
            let (app, username) = (Arc::clone(app), user.username.clone());
            tokio::spawn(async move { app.login_as(&username, WRONG).await })
        })
        .collect();
    for attempt in attempts {
        let body = attempt.await.unwrap();
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }

    assert_eq!(failed_logins(&one, &user.username).await, 5);
    assert_eq!(
        retry_after(&two.login_as(&user.username, &user.password).await),
        1
    );
}

#[tokio::test]
async fn concurrent_failures_for_an_unknown_username_are_all_counted() {
    let app = Arc::new(spawn_app().await);

    let attempts: Vec<_> = (0..5)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.login_as("nobody_by_this_name", WRONG).await })
        })
        .collect();
    for attempt in attempts {
        let body = attempt.await.unwrap();
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }

    assert_eq!(
        retry_after(&app.login_as("nobody_by_this_name", WRONG).await),
        1
    );
}

#[tokio::test]
async fn an_attempt_refused_by_the_account_backoff_costs_no_captcha_call() {
    let stub = CaptchaStub::start(passed()).await;
    let app = spawn_app_with(|s| stub.configure(s)).await;
    let user = app.create_user().await;
    for _ in 0..5 {
        let body = login_with(&app, &user, WRONG, Some("answer")).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
    assert_eq!(stub.calls(), 5);

    let body = login_with(&app, &user, &user.password, Some("answer")).await;

    assert_eq!(retry_after(&body), 1);
    assert_eq!(
        stub.calls(),
        5,
        "the spec: a refused request never costs a captcha call"
    );
}

#[tokio::test]
async fn in_backoff_concurrent_guesses_get_one_password_check_per_wait() {
    let app = Arc::new(spawn_app().await);
    let user = app.create_user().await;
    let token = app.login(&user).await;
    fail_five_times(&app, &user.username).await;
    app.clock.advance(Duration::from_secs(1));

    // Twenty guesses at once, half through login, half through changePassword
    // with a stolen token: the backoff allows one attempt now, not twenty.
    let guesses = (0..20).map(|i| {
        let (app, user, token) = (app.clone(), user.clone(), token.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                app.login_as(&user.username, WRONG).await
            } else {
                app.graphql(
                    "mutation($o: String!) { changePassword(oldPassword: $o, newPassword: \"a fresh long passphrase\") { token } }",
                    json!({ "o": WRONG }),
                    Some(&token),
                )
                .await
            }
        })
    });
    let mut checked = 0;
    for guess in guesses.collect::<Vec<_>>() {
        let body = guess.await.unwrap();
        match error_code(&body) {
            "INVALID_CREDENTIALS" => checked += 1,
            "RATE_LIMITED" => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(checked, 1, "guesses that reached bcrypt");
    assert_eq!(failed_logins(&app, &user.username).await, 6);
}

#[tokio::test]
async fn change_password_is_rate_limited_like_login() {
    let app = app_with_rate("2/minute", false).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let change = "mutation($o: String!) { changePassword(oldPassword: $o, newPassword: \"a fresh long passphrase\") { token } }";

    // The login used one of the username's two attempts.
    let body = app
        .graphql(change, json!({ "o": WRONG }), Some(&token))
        .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    let body = app
        .graphql(change, json!({ "o": WRONG }), Some(&token))
        .await;
    assert!(retry_after(&body) >= 1);
}
