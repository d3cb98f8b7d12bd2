//! A request authenticated before its session was revoked cannot revoke
//! anything after: not the sessions that came later, not the password.

use std::sync::Arc;
use std::time::Duration;

use authql::auth::passwords::Password;
use authql::auth::{ClientInfo, Credential, Principal};
use authql::error::{AuthError, Unauthenticated};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::captcha_stub::{passed, CaptchaStub, Reply};
use crate::helpers::{error_code, error_reason, spawn_app, spawn_app_with, TestApp, TestUser};

const CHANGE: &str = "mutation($old: String!, $new: String!) { changePassword(oldPassword: $old, newPassword: $new) { token } }";
const NEW_PASSWORD: &str = "a brand new passphrase for tests";

/// The principal a request with `token` would act as, resolved now.
async fn resolve(app: &TestApp, token: &str) -> Arc<Principal> {
    app.auth
        .authenticate(&Credential::Token(SecretString::from(token.to_owned())))
        .await
        .expect("the token resolves")
}

/// The victim changes the password from the session `token`; returns the
/// new session's token.
async fn change_password(app: &TestApp, user: &TestUser, token: &str) -> String {
    let body = app
        .graphql(
            CHANGE,
            json!({ "old": user.password, "new": NEW_PASSWORD }),
            Some(token),
        )
        .await;
    body["data"]["changePassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("password not changed: {body}"))
        .to_owned()
}

fn assert_signed_in(body: &Value) {
    assert!(body["data"]["me"].is_object(), "signed out: {body}");
}

fn assert_invalid_token<T: std::fmt::Debug>(result: Result<T, AuthError>) {
    assert!(
        matches!(
            result,
            Err(AuthError::Unauthenticated(Unauthenticated::InvalidToken))
        ),
        "expected INVALID_TOKEN, got {result:?}"
    );
}

/// A user with the attacker's stolen session and the victim's own.
async fn stolen_and_own(app: &TestApp) -> (TestUser, String, String) {
    let user = app.create_user().await;
    let stolen = app.login(&user).await;
    let own = app.login(&user).await;
    (user, stolen, own)
}

#[tokio::test]
async fn logout_others_resolved_before_a_password_change_leaves_the_new_session_alive() {
    let app = spawn_app().await;
    let (user, stolen, own) = stolen_and_own(&app).await;
    let stale = resolve(&app, &stolen).await;
    let fresh = change_password(&app, &user, &own).await;

    let result = app.auth.logout_others(&stale, &ClientInfo::default()).await;

    assert_invalid_token(result);
    assert_signed_in(&app.me(&fresh).await);
}

#[tokio::test]
async fn logout_all_resolved_before_a_password_change_leaves_the_new_session_alive() {
    let app = spawn_app().await;
    let (user, stolen, own) = stolen_and_own(&app).await;
    let stale = resolve(&app, &stolen).await;
    let fresh = change_password(&app, &user, &own).await;

    let result = app.auth.logout_all(&stale, &ClientInfo::default()).await;

    assert_invalid_token(result);
    assert_signed_in(&app.me(&fresh).await);
}

#[tokio::test]
async fn revoke_session_resolved_before_a_password_change_cannot_revoke_the_new_session() {
    let app = spawn_app().await;
    let (user, stolen, own) = stolen_and_own(&app).await;
    let stale = resolve(&app, &stolen).await;
    let fresh = change_password(&app, &user, &own).await;
    let fresh_id = resolve(&app, &fresh).await.session_id.to_string();

    let result = app
        .auth
        .revoke_session(&stale, &fresh_id, &ClientInfo::default())
        .await;

    assert_invalid_token(result);
    assert_signed_in(&app.me(&fresh).await);
}

#[tokio::test]
async fn change_password_resolved_before_its_session_was_revoked_changes_nothing() {
    let app = spawn_app().await;
    let (user, stolen, own) = stolen_and_own(&app).await;
    let stale = resolve(&app, &stolen).await;
    // The victim signs the stolen session out, keeping the password.
    let body = app
        .graphql("mutation { logoutOthers }", json!({}), Some(&own))
        .await;
    assert_eq!(body["data"]["logoutOthers"], 1, "{body}");

    // The attacker knows the password, but the session is gone.
    let result = app
        .auth
        .change_password(
            &stale,
            &Password::new(&user.password),
            Password::new(NEW_PASSWORD),
            &ClientInfo::default(),
        )
        .await;

    assert_invalid_token(result);
    assert_signed_in(&app.me(&own).await);
    app.login(&user).await; // the password is unchanged
}

#[tokio::test]
async fn change_password_resolved_before_a_password_change_leaves_the_new_session_alive() {
    let app = spawn_app().await;
    let (user, stolen, own) = stolen_and_own(&app).await;
    let stale = resolve(&app, &stolen).await;
    let fresh = change_password(&app, &user, &own).await;

    // Even with the new password, the stale request cannot change it again.
    let result = app
        .auth
        .change_password(
            &stale,
            &Password::new(NEW_PASSWORD),
            Password::new("yet another passphrase for the attacker"),
            &ClientInfo::default(),
        )
        .await;

    assert_invalid_token(result);
    assert_signed_in(&app.me(&fresh).await);
    assert!(app.login_as(&user.username, NEW_PASSWORD).await["data"]["login"]["token"].is_string());
}

#[tokio::test]
async fn logout_of_a_session_revoked_meanwhile_answers_invalid_token() {
    let app = spawn_app().await;
    let (_user, stolen, own) = stolen_and_own(&app).await;
    let stale = resolve(&app, &stolen).await;
    let body = app
        .graphql("mutation { logoutOthers }", json!({}), Some(&own))
        .await;
    assert_eq!(body["data"]["logoutOthers"], 1, "{body}");

    let result = app.auth.logout(&stale, &ClientInfo::default()).await;

    // The same answer as a logout sent a moment later, with the revoked
    // token, gets.
    assert_invalid_token(result);
    assert_signed_in(&app.me(&own).await);
}

// The attack of issue 9 over HTTP: one document resolves the stolen token
// first, then spends a while on a login (its captcha check is held until
// the test lets it go), and signs the other sessions out last. Meanwhile
// the victim changes the password.
#[tokio::test]
async fn a_slow_document_sent_before_a_password_change_cannot_sign_out_the_new_session() {
    let stub = CaptchaStub::start(passed()).await;
    let app = spawn_app_with(|s| stub.configure(s)).await;
    let user = app.create_user().await;
    let login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p, captcha: \"ok\") { token } }";
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let body = app
            .graphql(
                login,
                json!({ "u": user.username, "p": user.password }),
                None,
            )
            .await;
        tokens.push(
            body["data"]["login"]["token"]
                .as_str()
                .unwrap_or_else(|| panic!("login failed: {body}"))
                .to_owned(),
        );
    }
    let (stolen, own) = (tokens[0].clone(), tokens[1].clone());
    let gate = Arc::new(tokio::sync::Notify::new());
    stub.reply(Reply::Held(gate.clone()));

    let attack = {
        let (client, url) = (app.client.clone(), app.url("/graphql"));
        let document = "mutation {
            probe: revokeSession(id: \"0\")
            slow: login(username: \"someone\", password: \"guess\", captcha: \"held\") { token }
            steal: logoutOthers
        }";
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(stolen)
                .json(&json!({ "query": document }))
                .send()
                .await
                .expect("attack sent");
            response.json::<Value>().await.expect("a JSON body")
        })
    };
    // The stolen token is resolved (by `probe`) once the login waits on
    // its captcha.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stub.calls() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow field never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fresh = change_password(&app, &user, &own).await;
    gate.notify_one();
    let body = attack.await.expect("attack task");

    let errors = body["errors"].as_array().expect("errors");
    let steal = errors
        .iter()
        .find(|e| e["path"] == json!(["steal"]))
        .unwrap_or_else(|| panic!("logoutOthers was not refused: {body}"));
    assert_eq!(steal["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    assert_eq!(steal["extensions"]["reason"], "INVALID_TOKEN", "{body}");
    assert_signed_in(&app.me(&fresh).await);
    // And the stolen token stays dead.
    let after = app.me(&tokens[0]).await;
    assert_eq!(error_code(&after), "UNAUTHENTICATED");
    assert_eq!(error_reason(&after), "INVALID_TOKEN");
}
