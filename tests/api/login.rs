//! `login`: a token that identifies the user, case-insensitive usernames,
//! one answer for a wrong password, an unknown user and an inactive one,
//! one session per login, and hashes of another bcrypt cost upgraded at
//! login, also under concurrent logins.

use serde_json::json;

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn login_returns_a_token_that_identifies_the_user() {
    let app = spawn_app().await;
    let user = app.create_user().await;

    let body = app.login_as(&user.username, &user.password).await;

    let login = &body["data"]["login"];
    let token = login["token"].as_str().unwrap();
    assert!(token.starts_with("aql_"));
    assert_eq!(login["user"]["username"], user.username.as_str());
    assert!(login["expiresAt"].as_str().unwrap().ends_with("+00:00"));
    let me = app.me(token).await;
    assert_eq!(me["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn login_sets_last_login() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let before = app.auth.clock().now();

    let body = app.login_as(&user.username, &user.password).await;

    let last_login: chrono::DateTime<chrono::Utc> = body["data"]["login"]["user"]["lastLogin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last_login >= before);
}

#[tokio::test]
async fn usernames_are_case_insensitive() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let body = app
        .login_as(&user.username.to_uppercase(), &user.password)
        .await;
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
}

#[tokio::test]
async fn wrong_password_unknown_user_and_inactive_user_look_the_same() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let inactive = app.create_user().await;
    app.auth.deactivate(&inactive.username).await.unwrap();

    let wrong_password = app
        .login_as(&user.username, "not the password at all")
        .await;
    let unknown_user = app.login_as("nobody_here", &user.password).await;
    let inactive_user = app.login_as(&inactive.username, &inactive.password).await;

    for body in [&wrong_password, &unknown_user, &inactive_user] {
        assert_eq!(error_code(body), "INVALID_CREDENTIALS");
        assert!(body["data"].is_null());
    }
    assert_eq!(
        wrong_password["errors"][0]["message"],
        unknown_user["errors"][0]["message"]
    );
    assert_eq!(
        wrong_password["errors"][0]["message"],
        inactive_user["errors"][0]["message"]
    );
}

#[tokio::test]
async fn a_password_over_72_bytes_never_logs_in() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let longer = format!("{}{}", user.password, "x".repeat(72));
    let body = app.login_as(&user.username, &longer).await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn each_login_is_its_own_session() {
    let app = spawn_app().await;
    let user = app.create_user().await;

    let phone = app.login(&user).await;
    let laptop = app.login(&user).await;
    assert_ne!(phone, laptop);

    let body = app
        .graphql("mutation { logout }", json!({}), Some(&phone))
        .await;
    assert_eq!(body["data"]["logout"], true);

    assert_eq!(error_code(&app.me(&phone).await), "UNAUTHENTICATED");
    assert_eq!(
        app.me(&laptop).await["data"]["me"]["username"],
        user.username.as_str()
    );
}

#[tokio::test]
async fn a_hash_of_another_cost_is_upgraded_at_login() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    // The app hashes at cost 4; a second instance configured at cost 5
    // re-hashes at the next successful login.
    let upgraded = app.spawn_sibling(|s| s.bcrypt_cost = 5).await;
    upgraded.login(&user).await;

    let stored = stored_hash(&app, &user.username).await;
    assert!(
        stored.starts_with("$2b$05$"),
        "hash not upgraded: cost is {}",
        &stored[..7]
    );
    // And the password still works.
    app.login(&user).await;
}

#[tokio::test]
async fn parallel_logins_all_succeed_while_one_of_them_upgrades_the_hash() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let upgraded = std::sync::Arc::new(app.spawn_sibling(|s| s.bcrypt_cost = 5).await);

    let logins: Vec<_> = (0..4)
        .map(|_| {
            let (upgraded, user) = (upgraded.clone(), user.clone());
            tokio::spawn(async move { upgraded.login_as(&user.username, &user.password).await })
        })
        .collect();
    for login in logins {
        let body = login.await.unwrap();
        assert!(body["data"]["login"]["token"].is_string(), "{body}");
    }
    assert!(stored_hash(&app, &user.username)
        .await
        .starts_with("$2b$05$"));
}

async fn stored_hash(app: &crate::helpers::TestApp, username: &str) -> String {
    use authql::db::entities::user;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(app.auth.db())
        .await
        .unwrap()
        .unwrap()
        .password_hash
}

#[tokio::test]
async fn fifty_concurrent_logins_and_me_calls_all_succeed() {
    let app = std::sync::Arc::new(spawn_app().await);
    let user = app.create_user().await;

    let logins = (0..50).map(|_| {
        let (app, user) = (app.clone(), user.clone());
        tokio::spawn(async move {
            let token = app.login(&user).await;
            let me = app.me(&token).await;
            assert_eq!(me["data"]["me"]["username"], user.username.as_str(), "{me}");
            token
        })
    });
    let tokens: Vec<String> = futures_join(logins).await;

    let unique: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(unique.len(), 50);
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.expect("task finished"));
    }
    out
}
