//! Two-factor sign-in (TOTP): enrolment becomes active only when confirmed;
//! a login with the right password gives a challenge, redeemed by
//! `verifyMfa` with a code of the previous, current or next step (never a
//! step twice) or an unused recovery code; five wrong codes kill a
//! challenge, a challenge expires, wrong codes feed the account backoff;
//! secrets and recovery codes never reach the database in clear; TOTP can
//! be turned off (disableTotp, `authql user reset-mfa`); without
//! `secret-key` there is no MFA. Codes are computed here from the returned
//! secret with RFC 6238's parameters, at the time of the server's clock,
//! which the tests move.

use std::time::Duration;

use authql::db::entities::{auth_token, recovery_code, user};
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde_json::{json, Value};

use crate::helpers::process::run_authql;
use crate::helpers::{error_code, failed_logins, spawn_app, spawn_app_with, TestApp, TestUser};

/// 32 bytes, base64.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const STEP: u64 = 30;

const ENROLL: &str =
    "mutation($p: String!) { enrollTotp(password: $p) { secret otpauthUri qrCodeSvg } }";
const CONFIRM: &str = "mutation($c: String!) { confirmTotp(code: $c) }";
const VERIFY: &str = "mutation($ch: String!, $c: String!) { verifyMfa(challenge: $ch, code: $c) { token expiresAt user { username mfaEnabled lastLogin } } }";
const DISABLE: &str = "mutation($p: String!, $c: String!) { disableTotp(password: $p, code: $c) }";
const ME: &str = "{ me { username mfaEnabled } }";

async fn spawn_mfa_app() -> TestApp {
    spawn_app_with(|settings| settings.secret_key = Some(KEY.parse().expect("a valid key"))).await
}

/// The code of `secret` (base32) for the step `offset` steps from the
/// server's now.
fn code(app: &TestApp, secret: &str, offset: i64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
    let generator = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(STEP)
        .with_secret(bytes.as_bytes().to_vec())
        .build()
        .expect("RFC 6238 parameters");
    let now = app.clock.now().timestamp();
    let at = now + offset * STEP as i64;
    generator.generate(u64::try_from(at).unwrap()).to_string()
}

/// A six-digit code that is not the code of any step near now.
fn wrong_code(app: &TestApp, secret: &str) -> String {
    let near: Vec<String> = (-2..=2).map(|o| code(app, secret, o)).collect();
    (0..)
        .map(|n| format!("{:06}", 123_456 + n))
        .find(|candidate| !near.contains(candidate))
        .unwrap()
}

/// What `enable` leaves: the session it used, the secret and the codes.
struct Enabled {
    token: String,
    secret: String,
    recovery: Vec<String>,
}

async fn enroll(app: &TestApp, token: &str, password: &str) -> Value {
    app.graphql(ENROLL, json!({ "p": password }), Some(token))
        .await
}

/// Signs in, enrols and confirms; then moves the clock three steps on, so
/// that the previous, current and next steps are all unused.
async fn enable(app: &TestApp, user: &TestUser) -> Enabled {
    let token = app.login(user).await;
    let body = enroll(app, &token, &user.password).await;
    let secret = body["data"]["enrollTotp"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("enrolment failed: {body}"))
        .to_owned();
    let body = app
        .graphql(CONFIRM, json!({ "c": code(app, &secret, 0) }), Some(&token))
        .await;
    let recovery = body["data"]["confirmTotp"]
        .as_array()
        .unwrap_or_else(|| panic!("confirmation failed: {body}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    app.clock.advance(Duration::from_secs(3 * STEP));
    Enabled {
        token,
        secret,
        recovery,
    }
}

/// Logs in with the right password; returns the challenge of MFA_REQUIRED.
async fn challenge(app: &TestApp, user: &TestUser) -> String {
    let body = app.login_as(&user.username, &user.password).await;
    assert_eq!(error_code(&body), "MFA_REQUIRED", "{body}");
    assert!(body["data"].is_null(), "no token: {body}");
    body["errors"][0]["extensions"]["challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("no challenge: {body}"))
        .to_owned()
}

async fn verify(app: &TestApp, challenge: &str, code: &str) -> Value {
    app.graphql(VERIFY, json!({ "ch": challenge, "c": code }), None)
        .await
}

fn token_of(body: &Value) -> String {
    body["data"]["verifyMfa"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("verifyMfa failed: {body}"))
        .to_owned()
}

async fn sessions_of(app: &TestApp, username: &str) -> u64 {
    let account = user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(app.auth.db())
        .await
        .unwrap()
        .unwrap();
    auth_token::Entity::find()
        .filter(auth_token::Column::UserId.eq(account.id))
        .count(app.auth.db())
        .await
        .unwrap()
}

#[tokio::test]
async fn enrolment_changes_nothing_until_confirmed_with_a_right_code() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let other = app.login(&user).await;

    let body = enroll(&app, &token, &user.password).await;
    let enrollment = &body["data"]["enrollTotp"];
    let secret = enrollment["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    let uri = enrollment["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("otpauth://totp/authql:{}?", user.username)),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")) && uri.contains("issuer=authql"));
    assert!(enrollment["qrCodeSvg"].as_str().unwrap().contains("<svg"));
    assert_eq!(
        error_code(&enroll(&app, &token, "not the password at all").await),
        "INVALID_CREDENTIALS"
    );

    // Not active yet: a login still gets a token at once.
    app.login(&user).await;
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["mfaEnabled"], false);

    let wrong = app
        .graphql(
            CONFIRM,
            json!({ "c": wrong_code(&app, &secret) }),
            Some(&token),
        )
        .await;
    assert_eq!(error_code(&wrong), "INVALID_CODE");

    let body = app
        .graphql(
            CONFIRM,
            json!({ "c": code(&app, &secret, 0) }),
            Some(&token),
        )
        .await;
    let codes = body["data"]["confirmTotp"].as_array().expect("codes");
    assert_eq!(codes.len(), 10);
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["mfaEnabled"], true, "{me}");
    // The other sessions were signed out; this one was not.
    assert_eq!(error_code(&app.me(&other).await), "UNAUTHENTICATED");
    assert_eq!(sessions_of(&app, &user.username).await, 1);
    challenge(&app, &user).await;
}

#[tokio::test]
async fn a_login_needs_the_second_step_which_gives_a_session_once() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let before = sessions_of(&app, &user.username).await;

    let challenge = challenge(&app, &user).await;
    assert!(challenge.starts_with("aqm_"), "{challenge}");
    assert_eq!(
        sessions_of(&app, &user.username).await,
        before,
        "no token yet"
    );
    let body = verify(&app, &challenge, &code(&app, &enabled.secret, 0)).await;

    let token = token_of(&body);
    assert_eq!(body["data"]["verifyMfa"]["user"]["mfaEnabled"], true);
    assert!(body["data"]["verifyMfa"]["user"]["lastLogin"].is_string());
    assert!(app.me(&token).await["data"]["me"].is_object());
    // Single use, even with another valid code.
    let again = verify(&app, &challenge, &code(&app, &enabled.secret, 1)).await;
    assert_eq!(error_code(&again), "INVALID_CODE");
    let garbage = verify(&app, "aqm_nonsense", &code(&app, &enabled.secret, 1)).await;
    assert_eq!(error_code(&garbage), "INVALID_CODE");
}

#[tokio::test]
async fn the_previous_and_next_steps_are_accepted_and_the_one_after_next_is_not() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;

    let too_late = challenge(&app, &user).await;
    let body = verify(&app, &too_late, &code(&app, &enabled.secret, 2)).await;
    assert_eq!(error_code(&body), "INVALID_CODE");
    let body = verify(&app, &too_late, &code(&app, &enabled.secret, -2)).await;
    assert_eq!(error_code(&body), "INVALID_CODE");

    for offset in [-1, 0, 1] {
        let challenge = challenge(&app, &user).await;
        let body = verify(&app, &challenge, &code(&app, &enabled.secret, offset)).await;
        token_of(&body);
    }
}

#[tokio::test]
async fn a_step_once_accepted_is_refused_again() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let used = code(&app, &enabled.secret, 0);
    token_of(&verify(&app, &challenge(&app, &user).await, &used).await);

    let replayed = verify(&app, &challenge(&app, &user).await, &used).await;
    assert_eq!(error_code(&replayed), "INVALID_CODE");
    // Nor an earlier step: the previous one is behind the accepted one.
    let earlier = verify(
        &app,
        &challenge(&app, &user).await,
        &code(&app, &enabled.secret, -1),
    )
    .await;
    assert_eq!(error_code(&earlier), "INVALID_CODE");
}

#[tokio::test]
async fn a_recovery_code_works_once() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let first = &enabled.recovery[0];

    token_of(&verify(&app, &challenge(&app, &user).await, first).await);
    let again = verify(&app, &challenge(&app, &user).await, first).await;
    assert_eq!(error_code(&again), "INVALID_CODE");
    // Case and dashes do not matter.
    let typed = enabled.recovery[1].replace('-', "").to_uppercase();
    token_of(&verify(&app, &challenge(&app, &user).await, &typed).await);
}

#[tokio::test]
async fn five_wrong_codes_kill_the_challenge_and_feed_the_backoff() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let challenge_one = challenge(&app, &user).await;

    for _ in 0..5 {
        let wrong = wrong_code(&app, &enabled.secret);
        let body = verify(&app, &challenge_one, &wrong).await;
        assert_eq!(error_code(&body), "INVALID_CODE", "{body}");
    }
    assert_eq!(failed_logins(&app, &user.username).await, 5);
    // In backoff now: the next attempt must wait.
    let body = app.login_as(&user.username, &user.password).await;
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");

    app.clock.advance(Duration::from_secs(2));
    let body = verify(&app, &challenge_one, &code(&app, &enabled.secret, 0)).await;
    assert_eq!(error_code(&body), "INVALID_CODE", "the challenge is dead");

    // A right password alone does not reset the count for this user…
    app.clock.advance(Duration::from_secs(5));
    let challenge_two = challenge(&app, &user).await;
    assert!(failed_logins(&app, &user.username).await >= 5);
    // …a passed second step does.
    app.clock.advance(Duration::from_secs(10));
    let body = verify(&app, &challenge_two, &code(&app, &enabled.secret, 0)).await;
    token_of(&body);
    assert_eq!(failed_logins(&app, &user.username).await, 0);
}

#[tokio::test]
async fn an_expired_challenge_is_refused_and_swept() {
    let app = spawn_app_with(|settings| {
        settings.secret_key = Some(KEY.parse().unwrap());
        settings.mfa_challenge_ttl = Duration::from_secs(60);
    })
    .await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let expired = challenge(&app, &user).await;
    let _swept_later = challenge(&app, &user).await;

    app.clock.advance(Duration::from_secs(61));

    let body = verify(&app, &expired, &code(&app, &enabled.secret, 0)).await;
    assert_eq!(error_code(&body), "INVALID_CODE");
    let swept = authql::auth::sweeper::sweep_expired_challenges(app.auth.db(), app.clock.now())
        .await
        .unwrap();
    assert_eq!(swept, 1, "the other expired challenge");
}

#[tokio::test]
async fn the_database_holds_neither_the_secret_nor_the_recovery_codes() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    // A pending enrolment (another user's, begun and not confirmed) is
    // sealed too.
    let other = app.create_user().await;
    let other_token = app.login(&other).await;
    let pending = enroll(&app, &other_token, &other.password).await["data"]["enrollTotp"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let secrets = [enabled.secret.as_str(), pending.as_str()];
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for secret in secrets {
        needles.push(secret.as_bytes().to_vec());
        needles.push(secret.to_lowercase().into_bytes());
        needles.push(
            totp_rs::Secret::try_from_base32(secret)
                .unwrap()
                .as_bytes()
                .to_vec(),
        );
    }
    for code in &enabled.recovery {
        needles.push(code.as_bytes().to_vec());
        needles.push(code.replace('-', "").into_bytes());
    }

    let haystack: Vec<u8> = if app.is_postgres() {
        let mut text = Vec::new();
        for row in user::Entity::find().all(app.auth.db()).await.unwrap() {
            text.extend(format!("{:?}{:?}", row.totp_secret, row.totp_pending).into_bytes());
        }
        for row in recovery_code::Entity::find()
            .all(app.auth.db())
            .await
            .unwrap()
        {
            text.extend(row.digest.into_bytes());
        }
        text
    } else {
        // The database file and its write-ahead log, as a thief copies them.
        let path = app
            .database_url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let mut bytes = std::fs::read(&path).expect("the database file");
        bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
        bytes
    };
    assert_eq!(
        recovery_code::Entity::find()
            .count(app.auth.db())
            .await
            .unwrap(),
        10
    );
    for needle in &needles {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "found {:?} in the database",
            String::from_utf8_lossy(needle)
        );
    }
}

#[tokio::test]
async fn reset_mfa_from_the_command_line_turns_it_off_and_revokes_the_tokens() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    enable(&app, &user).await;
    assert_eq!(sessions_of(&app, &user.username).await, 1);

    let (url, name) = (app.database_url.clone(), user.username.clone());
    let output =
        tokio::task::spawn_blocking(move || run_authql(&["user", "reset-mfa", &name], &url, None))
            .await
            .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("turned off; 1 session(s) revoked"),
        "{stderr}"
    );
    assert_eq!(sessions_of(&app, &user.username).await, 0);
    let token = app.login(&user).await;
    let me = app.graphql(ME, json!({}), Some(&token)).await;
    assert_eq!(me["data"]["me"]["mfaEnabled"], false);
    assert_eq!(
        recovery_code::Entity::find()
            .count(app.auth.db())
            .await
            .unwrap(),
        0
    );

    let output = run_authql(
        &["user", "reset-mfa", "nobody_here"],
        &app.database_url,
        None,
    );
    assert!(!output.status.success());
}

#[tokio::test]
async fn a_user_with_totp_on_can_change_the_password_and_log_out_everywhere() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let second = token_of(
        &verify(
            &app,
            &challenge(&app, &user).await,
            &code(&app, &enabled.secret, 0),
        )
        .await,
    );
    let new_password = "another long passphrase for tests";

    let body = app
        .graphql(
            "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token } }",
            json!({ "o": user.password, "n": new_password }),
            Some(&enabled.token),
        )
        .await;
    let fresh = body["data"]["changePassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    assert_eq!(error_code(&app.me(&second).await), "UNAUTHENTICATED");
    let renamed = TestUser {
        username: user.username.clone(),
        password: new_password.to_owned(),
    };
    // Still two steps with the new password.
    let pending = challenge(&app, &renamed).await;
    app.clock.advance(Duration::from_secs(STEP));
    let third = token_of(&verify(&app, &pending, &code(&app, &enabled.secret, 0)).await);

    let body = app
        .graphql("mutation { logoutAll }", json!({}), Some(&fresh))
        .await;
    assert_eq!(body["data"]["logoutAll"], 2, "{body}");
    assert_eq!(error_code(&app.me(&third).await), "UNAUTHENTICATED");
}

#[tokio::test]
async fn disabling_needs_the_password_and_a_code() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    let other = token_of(&verify(&app, &challenge(&app, &user).await, &enabled.recovery[0]).await);
    let disable = |password: String, code: String| {
        let token = enabled.token.clone();
        let app = &app;
        async move {
            app.graphql(DISABLE, json!({ "p": password, "c": code }), Some(&token))
                .await
        }
    };

    let body = disable("wrong password here".into(), code(&app, &enabled.secret, 0)).await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    let body = disable(user.password.clone(), wrong_code(&app, &enabled.secret)).await;
    assert_eq!(error_code(&body), "INVALID_CODE");
    let body = disable(user.password.clone(), enabled.recovery[0].clone()).await;
    assert_eq!(error_code(&body), "INVALID_CODE", "a used recovery code");

    let body = disable(user.password.clone(), code(&app, &enabled.secret, 0)).await;
    assert_eq!(body["data"]["disableTotp"], true, "{body}");
    assert_eq!(error_code(&app.me(&other).await), "UNAUTHENTICATED");
    app.login(&user).await;
}

#[tokio::test]
async fn without_a_secret_key_there_is_no_mfa_and_no_way_around_it() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    enable(&app, &user).await;
    let keyless = app.spawn_sibling(|_| {}).await;

    let body = keyless.login_as(&user.username, &user.password).await;
    assert_eq!(error_code(&body), "MFA_UNAVAILABLE", "{body}");
    assert!(body["data"].is_null());

    let plain = keyless.create_user().await;
    let token = keyless.login(&plain).await;
    let body = enroll(&keyless, &token, &plain.password).await;
    assert_eq!(error_code(&body), "MFA_UNAVAILABLE");

    let fresh = spawn_app().await;
    let plain = fresh.create_user().await;
    let token = fresh.login(&plain).await;
    assert_eq!(
        error_code(&enroll(&fresh, &token, &plain.password).await),
        "MFA_UNAVAILABLE"
    );
}

#[tokio::test]
async fn an_active_second_factor_cannot_be_replaced_without_turning_it_off() {
    let app = spawn_mfa_app().await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;
    // A stolen session and the password are not enough to swap the factor.
    let body = enroll(&app, &enabled.token, &user.password).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["reasons"][0],
        "MFA_ALREADY_ENABLED"
    );
}

/// POSTs a GraphQL request with `headers`; returns its `Set-Cookie` lines
/// and body.
async fn post_with(
    app: &TestApp,
    query: &str,
    variables: Value,
    headers: &[(&str, &str)],
) -> (Vec<String>, Value) {
    let (status, cookies, body) = app.graphql_with_headers(query, variables, headers).await;
    assert_eq!(status, 200, "{body}");
    (cookies, body)
}

#[tokio::test]
async fn with_the_session_cookie_only_the_second_step_sets_it() {
    let app = spawn_app_with(|settings| {
        settings.secret_key = Some(KEY.parse().expect("a valid key"));
        settings.session_cookie = true;
    })
    .await;
    let user = app.create_user().await;
    let enabled = enable(&app, &user).await;

    // The right password alone issues no session, so no cookie.
    let login =
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
    let (cookies, body) = post_with(
        &app,
        login,
        json!({ "u": user.username, "p": user.password }),
        &[],
    )
    .await;
    assert_eq!(error_code(&body), "MFA_REQUIRED", "{body}");
    assert!(cookies.is_empty(), "{cookies:?}");
    let challenge = body["errors"][0]["extensions"]["challenge"]
        .as_str()
        .expect("a challenge")
        .to_owned();

    // A wrong code sets none either.
    let (cookies, body) = post_with(
        &app,
        VERIFY,
        json!({ "ch": challenge, "c": wrong_code(&app, &enabled.secret) }),
        &[],
    )
    .await;
    assert_eq!(error_code(&body), "INVALID_CODE", "{body}");
    assert!(cookies.is_empty(), "{cookies:?}");

    // The right code sets the new session as the cookie, which then signs
    // requests in on its own.
    let (cookies, body) = post_with(
        &app,
        VERIFY,
        json!({ "ch": challenge, "c": code(&app, &enabled.secret, 0) }),
        &[],
    )
    .await;
    let token = token_of(&body);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let expected =
        format!("__Host-authql={token}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=");
    assert!(cookies[0].starts_with(&expected), "{cookies:?}");
    let jar = format!("__Host-authql={token}");
    let (_, body) = post_with(
        &app,
        ME,
        json!({}),
        &[("Cookie", &jar), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(
        body["data"]["me"]["username"],
        user.username.as_str(),
        "{body}"
    );
    assert_eq!(body["data"]["me"]["mfaEnabled"], true);
}
