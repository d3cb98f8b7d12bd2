//! The token cache: a cached token is served without the database, every
//! revocation made by this instance empties its entry at once, and an entry
//! changed behind its back (by the CLI) is trusted no longer than
//! `--cache-ttl` (on PostgreSQL, not at all: the change is notified).

use std::time::Duration;

use serde_json::json;

use crate::helpers::process::run_authql;
use crate::helpers::{
    error_code, error_reason, spawn_app, spawn_app_with, wait_for_refusal, TestApp, TestUser,
};

/// Logs in and resolves the token once, so it sits in the cache.
async fn warm(app: &TestApp, user: &TestUser) -> String {
    let token = app.login(user).await;
    assert!(app.me(&token).await["data"]["me"].is_object());
    token
}

#[tokio::test]
async fn a_cached_token_is_served_without_the_database() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = warm(&app, &user).await;

    app.auth.db().clone().close().await.unwrap();

    assert_eq!(
        app.me(&token).await["data"]["me"]["username"],
        user.username.as_str()
    );
}

#[tokio::test]
async fn with_capacity_zero_every_request_reads_the_database() {
    let app = spawn_app_with(|s| s.cache_capacity = 0).await;
    let user = app.create_user().await;
    let token = warm(&app, &user).await;

    app.auth.db().clone().close().await.unwrap();
    let body = app.me(&token).await;

    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR");
    assert_eq!(body["errors"][0]["message"], "internal server error");
}

#[tokio::test]
async fn every_revocation_reaches_the_cache_at_once() {
    let app = spawn_app().await;
    let user = app.create_user().await;

    // logout
    let token = warm(&app, &user).await;
    app.graphql("mutation { logout }", json!({}), Some(&token))
        .await;
    assert_eq!(
        error_reason(&app.me(&token).await),
        "INVALID_TOKEN",
        "after logout"
    );

    // logoutAll, from another device
    let (a, b) = (warm(&app, &user).await, warm(&app, &user).await);
    app.graphql("mutation { logoutAll }", json!({}), Some(&b))
        .await;
    assert_eq!(
        error_reason(&app.me(&a).await),
        "INVALID_TOKEN",
        "after logoutAll"
    );

    // logoutOthers
    let (a, b) = (warm(&app, &user).await, warm(&app, &user).await);
    app.graphql("mutation { logoutOthers }", json!({}), Some(&b))
        .await;
    assert_eq!(
        error_reason(&app.me(&a).await),
        "INVALID_TOKEN",
        "after logoutOthers"
    );
    app.graphql("mutation { logout }", json!({}), Some(&b))
        .await;

    // revokeSession
    let (a, b) = (warm(&app, &user).await, warm(&app, &user).await);
    let sessions = app
        .graphql("{ sessions { id current } }", json!({}), Some(&b))
        .await;
    let a_id = sessions["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .clone();
    app.graphql(
        "mutation($id: ID!) { revokeSession(id: $id) }",
        json!({ "id": a_id }),
        Some(&b),
    )
    .await;
    assert_eq!(
        error_reason(&app.me(&a).await),
        "INVALID_TOKEN",
        "after revokeSession"
    );
    assert!(app.me(&b).await["data"]["me"].is_object());

    // changePassword
    let a = warm(&app, &user).await;
    let body = app
        .graphql(
            "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token } }",
            json!({ "o": user.password, "n": "another long passphrase here" }),
            Some(&b),
        )
        .await;
    assert!(
        body["data"]["changePassword"]["token"].is_string(),
        "{body}"
    );
    assert_eq!(
        error_reason(&app.me(&a).await),
        "INVALID_TOKEN",
        "after changePassword"
    );
    assert_eq!(
        error_reason(&app.me(&b).await),
        "INVALID_TOKEN",
        "after changePassword"
    );
}

#[tokio::test]
async fn deactivating_a_user_in_process_refuses_cached_tokens_at_once() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = warm(&app, &user).await;

    app.auth.deactivate(&user.username).await.unwrap();

    assert_eq!(error_reason(&app.me(&token).await), "INVALID_TOKEN");
}

#[tokio::test]
async fn a_cached_entry_is_not_trusted_beyond_cache_ttl() {
    let app = spawn_app_with(|s| s.cache_ttl = Duration::from_secs(30)).await;
    let user = app.create_user().await;
    let token = warm(&app, &user).await;

    // Another process (the CLI) deactivates the user behind the cache's back.
    let output = run_authql(
        &["user", "deactivate", &user.username],
        &app.database_url,
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    if !app.is_postgres() {
        // SQLite: this instance hears nothing; the entry is served until it
        // ages out…
        assert!(app.me(&token).await["data"]["me"].is_object());
        app.clock.advance(Duration::from_secs(31));
    }
    // …and then (at once on PostgreSQL, which notifies) the token is refused.
    let refused = wait_for_refusal(&app, &token).await;
    assert_eq!(refused, "INVALID_TOKEN");
}
