//! Sessions: the `sessions` list (newest first, the current one marked,
//! with its user agent), `logout`, `logoutAll`, `logoutOthers` and
//! `revokeSession` (only one's own), and every signed-in field refused
//! without a token.

use serde_json::json;

use crate::helpers::{error_code, error_reason, spawn_app};

const SESSIONS: &str = "{ sessions { id createdAt expiresAt userAgent ip current } }";

#[tokio::test]
async fn sessions_are_listed_newest_first_with_the_current_one_marked() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let first = app.login(&user).await;
    app.clock.advance(std::time::Duration::from_secs(1));
    let second = app.login(&user).await;

    let body = app.graphql(SESSIONS, json!({}), Some(&first)).await;

    let sessions = body["data"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(sessions[0]["createdAt"].as_str() > sessions[1]["createdAt"].as_str());
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(sessions[1]["current"], true);
    assert_eq!(sessions[1]["ip"], "127.0.0.1");
    let from_second = app.graphql(SESSIONS, json!({}), Some(&second)).await;
    assert_eq!(from_second["data"]["sessions"][0]["current"], true);
}

#[tokio::test]
async fn the_user_agent_is_stored_with_the_session() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let login = json!({
        "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
        "variables": { "u": user.username, "p": user.password }
    });
    let body = app
        .post_with_header(login, "User-Agent", "AuthqlTests/1.0 (phone)")
        .await;
    let token = body["data"]["login"]["token"].as_str().unwrap();

    let sessions = app.graphql(SESSIONS, json!({}), Some(token)).await;
    assert_eq!(
        sessions["data"]["sessions"][0]["userAgent"],
        "AuthqlTests/1.0 (phone)"
    );
}

#[tokio::test]
async fn logout_twice_fails_the_second_time() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    let first = app
        .graphql("mutation { logout }", json!({}), Some(&token))
        .await;
    let second = app
        .graphql("mutation { logout }", json!({}), Some(&token))
        .await;

    assert_eq!(first["data"]["logout"], true);
    assert_eq!(error_code(&second), "UNAUTHENTICATED");
    assert_eq!(error_reason(&second), "INVALID_TOKEN");
}

#[tokio::test]
async fn logout_all_revokes_every_session_and_counts_them() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let other = app.create_user().await;
    let tokens = [
        app.login(&user).await,
        app.login(&user).await,
        app.login(&user).await,
    ];
    let bystander = app.login(&other).await;

    let body = app
        .graphql("mutation { logoutAll }", json!({}), Some(&tokens[0]))
        .await;

    assert_eq!(body["data"]["logoutAll"], 3);
    for token in &tokens {
        assert_eq!(error_reason(&app.me(token).await), "INVALID_TOKEN");
    }
    assert!(app.me(&bystander).await["data"]["me"].is_object());
}

#[tokio::test]
async fn logout_others_keeps_only_the_current_session() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let current = app.login(&user).await;
    let others = [app.login(&user).await, app.login(&user).await];

    let body = app
        .graphql("mutation { logoutOthers }", json!({}), Some(&current))
        .await;

    assert_eq!(body["data"]["logoutOthers"], 2);
    for token in &others {
        assert_eq!(error_reason(&app.me(token).await), "INVALID_TOKEN");
    }
    assert!(app.me(&current).await["data"]["me"].is_object());
}

#[tokio::test]
async fn revoke_session_ends_that_session_only() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let current = app.login(&user).await;
    let lost_phone = app.login(&user).await;
    let body = app.graphql(SESSIONS, json!({}), Some(&current)).await;
    let phone_id = body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .clone();

    let body = app
        .graphql(
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({ "id": phone_id }),
            Some(&current),
        )
        .await;

    assert_eq!(body["data"]["revokeSession"], true);
    assert_eq!(error_reason(&app.me(&lost_phone).await), "INVALID_TOKEN");
    assert!(app.me(&current).await["data"]["me"].is_object());
}

#[tokio::test]
async fn revoking_another_users_session_is_not_found_and_leaves_it_working() {
    let app = spawn_app().await;
    let alice = app.create_user().await;
    let mallory = app.create_user().await;
    let alice_token = app.login(&alice).await;
    let mallory_token = app.login(&mallory).await;
    let body = app.graphql(SESSIONS, json!({}), Some(&alice_token)).await;
    let alice_session = body["data"]["sessions"][0]["id"].clone();

    for id in [alice_session, json!("not-a-number"), json!("999999")] {
        let body = app
            .graphql(
                "mutation($id: ID!) { revokeSession(id: $id) }",
                json!({ "id": id }),
                Some(&mallory_token),
            )
            .await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    }
    assert!(app.me(&alice_token).await["data"]["me"].is_object());
}

#[tokio::test]
async fn every_signed_in_field_needs_a_token() {
    let app = spawn_app().await;
    for query in [
        "{ me { id } }",
        "{ sessions { id } }",
        "mutation { logout }",
        "mutation { logoutAll }",
        "mutation { logoutOthers }",
        "mutation { revokeSession(id: \"1\") }",
        "mutation { changePassword(oldPassword: \"a\", newPassword: \"b\") { token } }",
    ] {
        let body = app.graphql(query, json!({}), None).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{query}");
        assert_eq!(error_reason(&body), "MISSING_TOKEN", "{query}");
    }
}
