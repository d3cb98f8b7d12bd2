//! `changePassword`: it revokes every older token and returns a fresh one,
//! a wrong old password changes nothing, and the new password meets the
//! policy (every failed rule reported, 72 bytes at most, compared after
//! NFC normalisation).

use serde_json::{json, Value};

use crate::helpers::{error_code, error_reason, error_reasons, spawn_app, TestApp};

const CHANGE: &str = "mutation($old: String!, $new: String!) { changePassword(oldPassword: $old, newPassword: $new) { token expiresAt user { username } } }";

async fn change(app: &TestApp, token: &str, old: &str, new: &str) -> Value {
    app.graphql(CHANGE, json!({ "old": old, "new": new }), Some(token))
        .await
}

#[tokio::test]
async fn changing_the_password_revokes_old_tokens_and_returns_a_working_one() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let here = app.login(&user).await;
    let elsewhere = app.login(&user).await;
    app.me(&elsewhere).await; // cached
    let new_password = "a brand new passphrase for tests";

    let body = change(&app, &here, &user.password, new_password).await;

    let fresh = body["data"]["changePassword"]["token"]
        .as_str()
        .expect("a new token");
    assert_eq!(error_reason(&app.me(&here).await), "INVALID_TOKEN");
    assert_eq!(error_reason(&app.me(&elsewhere).await), "INVALID_TOKEN");
    assert!(app.me(fresh).await["data"]["me"].is_object());
    assert_eq!(
        error_code(&app.login_as(&user.username, &user.password).await),
        "INVALID_CREDENTIALS"
    );
    assert!(app.login_as(&user.username, new_password).await["data"]["login"]["token"].is_string());
}

#[tokio::test]
async fn a_wrong_old_password_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    let body = change(
        &app,
        &token,
        "not my password at all",
        "a brand new passphrase for tests",
    )
    .await;

    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    // Said to a signed-in user: about the password, not the username.
    assert_eq!(
        body["errors"][0]["message"],
        "the current password is wrong"
    );
    assert!(app.me(&token).await["data"]["me"].is_object());
    app.login(&user).await;
}

#[tokio::test]
async fn the_policy_reports_every_failed_rule() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    let cases: [(&str, &[&str]); 5] = [
        ("short", &["TOO_SHORT", "COMMON_PASSWORD"]),
        ("passwordpassword", &["COMMON_PASSWORD"]),
        (&user.username.repeat(2), &["SIMILAR_TO_USERNAME"]),
        (&user.password, &["SAME_AS_OLD_PASSWORD"]),
        (&"Zq8!".repeat(19), &["TOO_LONG"]),
    ];
    for (candidate, expected) in cases {
        let body = change(&app, &token, &user.password, candidate).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{candidate}: {body}");
        let reasons = error_reasons(&body);
        for reason in expected {
            assert!(
                reasons.contains(&(*reason).to_owned()),
                "{candidate}: {reasons:?}"
            );
        }
        let message = body["errors"][0]["message"].as_str().unwrap();
        if candidate.len() >= 10 {
            assert!(
                !message.contains(candidate),
                "the message repeats the password"
            );
        }
    }
    // Nothing changed.
    assert!(app.me(&token).await["data"]["me"].is_object());
}

#[tokio::test]
async fn the_byte_limit_is_72_with_multibyte_characters_too() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let mut token = app.login(&user).await;
    let mut current = user.password.clone();

    // 71 and 72 bytes are accepted (24 three-byte kana are 72 bytes).
    let ascii_71 = format!("{}{}", "Vq7#kLm2pZ9x".repeat(5), "Rt8wNb3yHcX");
    let ascii_72 = format!("{ascii_71}J");
    let multibyte_72 = "いろはにほへとちりぬるをわかよたれそつねならむう".to_owned();
    assert_eq!(
        (ascii_71.len(), ascii_72.len(), multibyte_72.len()),
        (71, 72, 72)
    );
    for accepted in [&ascii_71, &ascii_72, &multibyte_72] {
        let body = change(&app, &token, &current, accepted).await;
        token = body["data"]["changePassword"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{} bytes refused: {body}", accepted.len()))
            .to_owned();
        current.clone_from(accepted);
    }
    // The 72nd byte counts: a password differing only there does not log in
    // ("う" and "ぇ" differ in their last byte only).
    let almost = multibyte_72.replace('う', "ぇ");
    assert_eq!(almost.len(), 72);
    let differing: Vec<usize> = (0..72)
        .filter(|&i| almost.as_bytes()[i] != multibyte_72.as_bytes()[i])
        .collect();
    assert_eq!(differing, [71]);
    assert_eq!(
        error_code(&app.login_as(&user.username, &almost).await),
        "INVALID_CREDENTIALS"
    );

    // 73 bytes, ASCII or not, are refused.
    let ascii_73 = format!("{ascii_72}u");
    let multibyte_73 = format!("{multibyte_72}x");
    for refused in [&ascii_73, &multibyte_73] {
        let body = change(&app, &token, &current, refused).await;
        assert!(
            error_reasons(&body).contains(&"TOO_LONG".to_owned()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn passwords_are_compared_after_nfc_normalisation() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let composed = "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e, s'il vous pla\u{ee}t";
    let decomposed = "Cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e, s'il vous plai\u{302}t";

    let body = change(&app, &token, &user.password, composed).await;
    assert!(
        body["data"]["changePassword"]["token"].is_string(),
        "{body}"
    );

    assert!(app.login_as(&user.username, decomposed).await["data"]["login"]["token"].is_string());
}
