//! `Session.lastUsedAt`: set at sign-in, moved by a later request at most
//! once per `last-used-interval`, and written off the request path (a
//! background write within about a second), from the cache as from the
//! database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};

async fn last_used(app: &TestApp, token: &str) -> DateTime<Utc> {
    let body = app
        .graphql(
            "{ sessions { lastUsedAt createdAt current } }",
            json!({}),
            Some(token),
        )
        .await;
    let session = body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .cloned()
        .unwrap_or_else(|| panic!("{body}"));
    session["lastUsedAt"].as_str().unwrap().parse().unwrap()
}

/// Polls until lastUsedAt reaches `at`, for up to 5 s.
async fn wait_for_last_used(app: &TestApp, token: &str, at: DateTime<Utc>) -> DateTime<Utc> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = last_used(app, token).await;
        if seen >= at || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn last_used_at_moves_at_most_once_per_interval() {
    let app = spawn_app_with(|s| s.last_used_interval = Duration::from_secs(60)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let signed_in = last_used(&app, &token).await;

    // Within the interval: no write.
    app.clock.advance(Duration::from_secs(30));
    app.me(&token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_used(&app, &token).await, signed_in);

    // Past it: the request (served from the cache) is noted and written.
    app.clock.advance(Duration::from_secs(31));
    let used = app.clock.now();
    app.me(&token).await;
    let seen = wait_for_last_used(&app, &token, used - chrono::Duration::seconds(1)).await;
    assert!(seen > signed_in, "{seen} after {signed_in}");
    assert!((seen - used).num_seconds().abs() <= 1, "{seen} vs {used}");
}

#[tokio::test]
async fn forward_authentication_counts_as_use() {
    let app = spawn_app_with(|s| s.last_used_interval = Duration::from_secs(10)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let signed_in = last_used(&app, &token).await;

    app.clock.advance(Duration::from_secs(11));
    let status = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let seen = wait_for_last_used(&app, &token, signed_in + chrono::Duration::seconds(10)).await;
    assert!(seen >= signed_in + chrono::Duration::seconds(10), "{seen}");
}

const IDLE: u64 = 300;
const INTERVAL: u64 = 60;

fn idle_settings(s: &mut authql::config::Settings) {
    s.token_idle_timeout = Duration::from_secs(IDLE);
    s.last_used_interval = Duration::from_secs(INTERVAL);
}

#[tokio::test]
async fn an_idle_session_is_refused_as_expired_and_removed() {
    let app = spawn_app_with(idle_settings).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    assert!(app.me(&token).await["data"]["me"].is_object());

    // Idle for the timeout, plus the lag allowed for other instances'
    // writes (one interval and two flushes).
    app.clock.advance(Duration::from_secs(IDLE + INTERVAL + 3));

    let body = app.me(&token).await;
    assert_eq!(crate::helpers::error_reason(&body), "TOKEN_EXPIRED");
    let body = app.me(&token).await;
    assert_eq!(crate::helpers::error_reason(&body), "INVALID_TOKEN");
}

#[tokio::test]
async fn a_session_in_use_is_never_idle() {
    let app = spawn_app_with(idle_settings).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    for _ in 0..4 {
        app.clock.advance(Duration::from_secs(200));
        assert!(app.me(&token).await["data"]["me"].is_object());
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
}

#[tokio::test]
async fn the_sweep_removes_idle_sessions() {
    let app = spawn_app_with(idle_settings).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let cutoff = app.clock.now() + chrono::Duration::seconds(1);
    let swept = authql::auth::sweeper::sweep_idle(app.auth.db(), cutoff)
        .await
        .unwrap();
    assert!(swept >= 1);
    app.auth.cache().clear();
    let body = app.me(&token).await;
    assert_eq!(crate::helpers::error_reason(&body), "INVALID_TOKEN");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn a_session_in_use_on_another_instance_is_not_refused_for_idleness() {
    let a = crate::helpers::spawn_postgres_app_with(idle_settings).await;
    let b = a.spawn_sibling(idle_settings).await;
    let user = a.create_user().await;
    let token = a.login(&user).await;
    // Cached on A, which then sees no use of it.
    assert!(a.me(&token).await["data"]["me"].is_object());

    for _ in 0..4 {
        a.clock.advance(Duration::from_secs(200));
        assert!(b.me(&token).await["data"]["me"].is_object());
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }

    // 800 s since A last saw it: A's view is stale, the database is not.
    assert!(a.me(&token).await["data"]["me"].is_object());
}

#[tokio::test]
async fn a_note_whose_write_failed_is_written_by_the_next_flush() {
    use authql::auth::last_used::{LastUse, LastUsed};

    let app = spawn_app_with(|s| s.last_used_interval = Duration::from_secs(60)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let signed_in = last_used(&app, &token).await;
    let body = app
        .graphql("{ sessions { id current } }", json!({}), Some(&token))
        .await;
    let session: i64 = body["data"]["sessions"][0]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));

    // Notes of our own, apart from the server's, which its background task
    // writes: a use ten minutes on, noted once for the interval.
    let notes = LastUsed::new(Duration::from_secs(60));
    let used = signed_in + chrono::Duration::minutes(10);
    notes.used(session, &LastUse::new(signed_in), used);

    // A database without the table: the write fails.
    let broken = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
    assert!(notes.flush(&broken, used).await.is_err());
    assert_eq!(last_used(&app, &token).await, signed_in);

    // The note was kept: the next flush writes it.
    assert_eq!(notes.flush(app.auth.db(), used).await.unwrap(), 1);
    assert_eq!(last_used(&app, &token).await, used);
    assert_eq!(notes.flush(app.auth.db(), used).await.unwrap(), 0);
}

#[tokio::test]
async fn a_use_noted_just_before_shutdown_is_written_at_shutdown() {
    use authql::db::entities::auth_token;
    use sea_orm::EntityTrait as _;

    let app = spawn_app_with(|s| s.last_used_interval = Duration::from_secs(60)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let signed_in = last_used(&app, &token).await;

    // A use due to be noted, then a stop well within the second before the
    // next background write.
    app.clock.advance(Duration::from_secs(61));
    let used = app.clock.now();
    assert!(app.me(&token).await["data"]["me"].is_object());
    let app = app.restart(|_| {}).await;

    // Read straight from the database: a request would be a use of its own.
    let row = auth_token::Entity::find()
        .one(app.auth.db())
        .await
        .unwrap()
        .unwrap();
    let written = row.last_used_at.expect("lastUsedAt");
    assert!(
        written >= used,
        "{written}, used at {used}, signed in {signed_in}"
    );
}
