//! Bearer tokens: the accepted schemes, malformed, unknown and expired
//! tokens refused (a bad checksum without a query), one refusal for every
//! field of a request, only digests stored, the per-user session cap, and
//! the sweep of expired tokens.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{error_code, error_reason, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_request_without_a_token_is_unauthenticated() {
    let app = spawn_app().await;
    let body = app.graphql("{ me { id } }", json!({}), None).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert_eq!(error_reason(&body), "MISSING_TOKEN");
}

#[tokio::test]
async fn the_token_keyword_of_django_rest_framework_is_accepted() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    let body = app
        .post_with_header(
            json!({ "query": "{ me { username } }" }),
            "Authorization",
            &format!("Token {token}"),
        )
        .await;
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn an_unknown_scheme_is_an_invalid_token() {
    let app = spawn_app().await;
    let body = app
        .post_with_header(
            json!({ "query": "{ me { id } }" }),
            "Authorization",
            "Basic YWxpY2U6c2VjcmV0",
        )
        .await;
    assert_eq!(error_reason(&body), "INVALID_TOKEN");
}

#[tokio::test]
async fn a_token_with_a_wrong_checksum_is_refused_without_a_query() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();

    // With the database gone, only a check that needs no query can answer.
    app.auth.db().clone().close().await.unwrap();
    let body = app.me(&forged).await;

    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert_eq!(error_reason(&body), "INVALID_TOKEN");
}

#[tokio::test]
async fn a_well_formed_but_unknown_token_is_invalid() {
    let app = spawn_app().await;
    let made_up = authql::auth::tokens::Token::generate();
    let body = app.me(made_up.expose()).await;
    assert_eq!(error_reason(&body), "INVALID_TOKEN");
}

#[tokio::test]
async fn an_expired_token_is_refused_and_deleted() {
    let app = spawn_app_with(|s| s.token_ttl = Duration::from_secs(60)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    app.clock.advance(Duration::from_secs(61));
    let body = app.me(&token).await;

    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert_eq!(error_reason(&body), "TOKEN_EXPIRED");
    assert_eq!(
        token_rows(&app).await,
        0,
        "the expired token was not deleted"
    );
    // Once deleted, it is simply unknown.
    assert_eq!(error_reason(&app.me(&token).await), "INVALID_TOKEN");
}

#[tokio::test]
async fn every_field_of_a_request_sees_the_same_refusal() {
    let app = spawn_app_with(|s| s.token_ttl = Duration::from_secs(60)).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    app.clock.advance(Duration::from_secs(61));

    let body = app
        .graphql(
            "{ me { id } sessions { id } again: me { id } }",
            json!({}),
            Some(&token),
        )
        .await;

    let reasons: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["extensions"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["TOKEN_EXPIRED"; 3], "{body}");
}

#[tokio::test]
async fn a_token_that_expires_while_cached_is_refused() {
    let app = spawn_app_with(|s| {
        s.token_ttl = Duration::from_secs(60);
        s.cache_ttl = Duration::from_secs(3600);
    })
    .await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    assert!(app.me(&token).await["data"]["me"].is_object()); // now cached

    app.clock.advance(Duration::from_secs(60));

    assert_eq!(error_reason(&app.me(&token).await), "TOKEN_EXPIRED");
}

#[tokio::test]
async fn the_database_holds_no_token() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    app.me(&token).await;

    if let Some(path) = app.database_url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        for suffix in ["-wal", "-shm"] {
            if let Ok(more) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(more);
            }
        }
        let secret_part = &token.as_bytes()[4..];
        assert!(
            !bytes.windows(secret_part.len()).any(|w| w == secret_part),
            "token found in the database file"
        );
    }
    // On every backend: the stored digest is not the token.
    use authql::db::entities::auth_token;
    use sea_orm::EntityTrait as _;
    let rows = auth_token::Entity::find().all(app.auth.db()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].digest, token);
    assert_eq!(rows[0].digest.len(), 64);
}

#[tokio::test]
async fn the_session_cap_revokes_the_oldest_sessions() {
    let app = spawn_app_with(|s| s.max_sessions_per_user = 2).await;
    let user = app.create_user().await;
    let first = app.login(&user).await;
    app.me(&first).await; // cached
    let second = app.login(&user).await;
    let third = app.login(&user).await;

    assert_eq!(error_reason(&app.me(&first).await), "INVALID_TOKEN");
    assert!(app.me(&second).await["data"]["me"].is_object());
    assert!(app.me(&third).await["data"]["me"].is_object());
}

#[tokio::test]
async fn the_sweep_deletes_expired_tokens_only() {
    let app = spawn_app_with(|s| s.token_ttl = Duration::from_secs(60)).await;
    let user = app.create_user().await;
    for _ in 0..3 {
        app.login(&user).await;
    }
    app.clock.advance(Duration::from_secs(61));
    let fresh = app.login(&user).await;

    let swept = authql::auth::sweeper::sweep_expired(app.auth.db(), app.clock.now())
        .await
        .unwrap();

    assert_eq!(swept, 3);
    assert_eq!(token_rows(&app).await, 1);
    assert!(app.me(&fresh).await["data"]["me"].is_object());
}

async fn token_rows(app: &crate::helpers::TestApp) -> u64 {
    use authql::db::entities::auth_token;
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    auth_token::Entity::find()
        .count(app.auth.db())
        .await
        .unwrap()
}
