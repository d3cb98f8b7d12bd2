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
