//! Accounts by mail, read back from `--mail-dir`: a password reset asked
//! for a known and an unknown address gets byte-identical answers, mails
//! only the known one, and its link works once, expires, dies when a newer
//! one is mailed, and sets a password that ends every session.

use std::time::Duration;

use authql::auth::passwords::Password;
use authql::config::{EmailVerification, SettingError};
use authql::startup::App;
use serde_json::{json, Value};

use crate::helpers::mail::{mails, other_token, token_in, wait_for_mails};
use crate::helpers::{
    empty_database, error_code, error_reason, error_reasons, spawn_app_on, spawn_app_with,
    test_settings, Backend, TestApp, TestUser,
};

const REQUEST: &str = "mutation($e: String!) { requestPasswordReset(email: $e) }";
const RESET: &str = "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) { token user { username emailVerified } } }";
const NEW_PASSWORD: &str = "a fresh passphrase after the reset";

/// A server writing its mails into a temporary directory.
async fn spawn_with_mail() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let app = spawn_app_with(|s| {
        s.mail_dir = Some(path);
        s.email_verification = EmailVerification::Optional;
        s.reset_url = Some("https://app.example.test/reset?token={token}".into());
    })
    .await;
    (app, dir)
}

/// A user whose address is `email`.
async fn user_with_email(app: &TestApp, email: &str) -> TestUser {
    let user = TestUser {
        username: format!("user_{}", crate::helpers::random_text(10).to_lowercase()),
        password: "an old passphrase that is long enough".into(),
    };
    app.auth
        .create_user(&user.username, Some(email), Password::new(&user.password))
        .await
        .expect("user created");
    user
}

async fn request_reset(app: &TestApp, email: &str) -> Value {
    app.graphql(REQUEST, json!({ "e": email }), None).await
}

async fn reset(app: &TestApp, token: &str, password: &str) -> Value {
    app.graphql(RESET, json!({ "t": token, "p": password }), None)
        .await
}

#[tokio::test]
async fn a_mailed_reset_link_sets_the_password_ends_every_session_and_verifies_the_address() {
    let (app, dir) = spawn_with_mail().await;
    let user = user_with_email(&app, "Reset.Me@Example.com").await;
    let old_session = app.login(&user).await;

    let body = request_reset(&app, "reset.me@example.COM").await;
    assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
    let mail = wait_for_mails(dir.path(), 1).await.remove(0);
    assert!(mail.contains("To: Reset.Me@Example.com"), "{mail}");
    assert!(mail.contains("Content-Type: text/plain"));
    assert!(mail.contains("Content-Type: text/html"));
    assert!(mail.contains("https://app.example.test/reset?token=aqr_"));
    let token = token_in(&mail, "aqr_");

    let body = reset(&app, &token, NEW_PASSWORD).await;

    let fresh = body["data"]["resetPassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("reset failed: {body}"));
    assert_eq!(body["data"]["resetPassword"]["user"]["emailVerified"], true);
    assert!(app.me(fresh).await["data"]["me"].is_object());
    assert_eq!(error_reason(&app.me(&old_session).await), "INVALID_TOKEN");
    assert_eq!(
        error_code(&app.login_as(&user.username, &user.password).await),
        "INVALID_CREDENTIALS"
    );
    assert!(app.login_as(&user.username, NEW_PASSWORD).await["data"]["login"]["token"].is_string());
}

#[tokio::test]
async fn known_and_unknown_addresses_get_byte_identical_answers_and_only_the_known_one_a_mail() {
    let (app, dir) = spawn_with_mail().await;
    user_with_email(&app, "known@example.com").await;
    let raw = |email: &str| {
        let request = app
            .client
            .post(app.url("/graphql"))
            .json(&json!({ "query": REQUEST, "variables": { "e": email } }));
        async move {
            request
                .send()
                .await
                .expect("sent")
                .bytes()
                .await
                .expect("body")
        }
    };

    let known = raw("known@example.com").await;
    let unknown = raw("nobody@example.com").await;

    assert_eq!(known, unknown);
    let mails = wait_for_mails(dir.path(), 1).await;
    // Give a (wrong) mail to the unknown address time to appear.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(self::mails(dir.path()).len(), 1);
    assert!(mails[0].contains("To: known@example.com"));
}

#[tokio::test]
async fn a_reset_link_works_once_and_wrong_used_and_expired_links_get_one_answer() {
    let (app, dir) = spawn_with_mail().await;
    let user = user_with_email(&app, "once@example.com").await;
    request_reset(&app, "once@example.com").await;
    let token = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqr_");

    assert!(reset(&app, &token, NEW_PASSWORD).await["data"]["resetPassword"].is_object());
    let used = reset(&app, &token, "yet another passphrase for this").await;
    let wrong = reset(&app, "aqr_not-a-token", NEW_PASSWORD).await;
    request_reset(&app, "once@example.com").await;
    let second = other_token(&wait_for_mails(dir.path(), 2).await, "aqr_", &token);
    app.clock.advance(Duration::from_secs(3601));
    let expired = reset(&app, &second, "yet another passphrase for this").await;

    for body in [&used, &wrong, &expired] {
        assert_eq!(error_code(body), "BAD_USER_INPUT", "{body}");
        assert_eq!(error_reasons(body), ["INVALID_LINK_TOKEN"]);
    }
    assert_eq!(
        used["errors"][0]["message"],
        expired["errors"][0]["message"]
    );
    assert!(app.login_as(&user.username, NEW_PASSWORD).await["data"]["login"].is_object());
}

#[tokio::test]
async fn a_newer_link_kills_the_older_and_a_refused_password_keeps_the_link() {
    let (app, dir) = spawn_with_mail().await;
    user_with_email(&app, "twice@example.com").await;
    request_reset(&app, "twice@example.com").await;
    let first = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqr_");
    request_reset(&app, "twice@example.com").await;
    let second = other_token(&wait_for_mails(dir.path(), 2).await, "aqr_", &first);

    assert_eq!(
        error_reasons(&reset(&app, &first, NEW_PASSWORD).await),
        ["INVALID_LINK_TOKEN"]
    );
    let weak = reset(&app, &second, "password").await;
    assert_eq!(error_code(&weak), "BAD_USER_INPUT");
    assert!(!error_reasons(&weak).contains(&"INVALID_LINK_TOKEN".to_owned()));
    assert!(reset(&app, &second, NEW_PASSWORD).await["data"]["resetPassword"].is_object());
}

#[tokio::test]
async fn two_concurrent_resets_with_one_link_give_one_success() {
    let (app, dir) = spawn_with_mail().await;
    user_with_email(&app, "race@example.com").await;
    request_reset(&app, "race@example.com").await;
    let token = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqr_");

    let (a, b) = tokio::join!(
        reset(&app, &token, NEW_PASSWORD),
        reset(&app, &token, "the other racer's passphrase here")
    );

    let wins = [&a, &b]
        .iter()
        .filter(|body| body["data"]["resetPassword"].is_object())
        .count();
    assert_eq!(wins, 1, "{a} {b}");
    let loser = if a["data"]["resetPassword"].is_object() {
        &b
    } else {
        &a
    };
    assert_eq!(error_reasons(loser), ["INVALID_LINK_TOKEN"]);
}

#[tokio::test]
async fn an_address_gets_at_most_three_reset_mails_an_hour_and_every_answer_is_true() {
    let (app, dir) = spawn_with_mail().await;
    user_with_email(&app, "flood@example.com").await;

    for _ in 0..5 {
        let body = request_reset(&app, "flood@example.com").await;
        assert_eq!(body["data"]["requestPasswordReset"], true);
    }

    wait_for_mails(dir.path(), 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mails(dir.path()).len(), 3);
}

#[tokio::test]
async fn without_a_mailer_a_reset_is_mail_unavailable() {
    let app = spawn_app_with(|_| {}).await;

    let body = request_reset(&app, "anyone@example.com").await;

    assert_eq!(error_code(&body), "MAIL_UNAVAILABLE");
}

#[tokio::test]
async fn required_verification_without_a_mailer_refuses_to_start_naming_the_flag() {
    let mut settings = test_settings();
    settings.email_verification = EmailVerification::Required;

    let err = App::build(settings).await.err().expect("refused");

    let setting = err.downcast_ref::<SettingError>().expect("a setting error");
    assert_eq!(setting.flag(), "--email-verification");
}

#[tokio::test]
async fn a_changed_password_kills_a_mailed_reset_link() {
    let (app, dir) = spawn_with_mail().await;
    let user = user_with_email(&app, "change@example.com").await;
    let session = app.login(&user).await;
    request_reset(&app, "change@example.com").await;
    let token = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqr_");

    let changed = app
        .graphql(
            "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token } }",
            json!({ "o": user.password, "n": NEW_PASSWORD }),
            Some(&session),
        )
        .await;
    assert!(changed["data"]["changePassword"].is_object(), "{changed}");

    assert_eq!(
        error_reasons(&reset(&app, &token, "yet another passphrase for this").await),
        ["INVALID_LINK_TOKEN"]
    );
}

/// How many migration steps come before the accounts step: a database at
/// that step is what this release upgrades.
fn steps_before_accounts() -> u32 {
    use migration::MigratorTrait as _;
    let steps = migration::Migrator::migrations();
    let position = steps
        .iter()
        .position(|step| step.name() == "m20261201_000004_accounts")
        .expect("the accounts step is listed");
    u32::try_from(position).expect("a few steps")
}

/// Builds a database at the step before the accounts step holding users
/// whose addresses differ only in case, and a live session of one that
/// loses its address; then starts a server on it, which upgrades it in
/// place. The oldest holder of each address keeps it (verified: an
/// operator set it), the others lose it and keep signing in by name and
/// with their sessions; the new index refuses a duplicate in another case.
async fn upgrade_with_duplicate_emails(backend: Backend) {
    use authql::auth::tokens::Token;
    use migration::MigratorTrait as _;
    use sea_orm::{ConnectionTrait as _, Database, Statement};

    let (storage, url) = empty_database(backend).await;
    let db = Database::connect(&url).await.expect("connects");
    migration::Migrator::up(&db, Some(steps_before_accounts()))
        .await
        .expect("old steps");
    let backend = db.get_database_backend();
    let joined = chrono::Utc::now() - chrono::Duration::days(30);
    for (name, email) in [
        ("first", Some("Shared@Example.com")),
        ("second", Some("shared@example.com")),
        ("third", Some("SHARED@EXAMPLE.COM")),
        ("other", Some("other@example.com")),
        ("none", None),
    ] {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO users (username, email, password_hash, is_active, date_joined) \
             VALUES ($1, $2, 'x', TRUE, $3)",
            [name.into(), email.map(str::to_owned).into(), joined.into()],
        ))
        .await
        .expect("old user inserted");
    }
    let session = Token::generate();
    let now = chrono::Utc::now();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "INSERT INTO auth_tokens (user_id, digest, created_at, expires_at) \
         SELECT id, $1, $2, $3 FROM users WHERE username = 'second'",
        [
            session.digest().to_hex().into(),
            now.into(),
            (now + chrono::Duration::days(1)).into(),
        ],
    ))
    .await
    .expect("old session inserted");
    db.close().await.expect("closed");

    let app = spawn_app_on(storage).await;

    let db = app.auth.db();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT username, email, email_verified_at IS NOT NULL AS verified FROM users ORDER BY id",
        ))
        .await
        .expect("read back");
    let got: Vec<(String, Option<String>, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "username").unwrap(),
                r.try_get("", "email").unwrap(),
                r.try_get("", "verified").unwrap(),
            )
        })
        .collect();
    let want = [
        ("first", Some("Shared@Example.com"), true),
        ("second", None, false),
        ("third", None, false),
        ("other", Some("other@example.com"), true),
        ("none", None, false),
    ]
    .map(|(n, e, v)| (n.to_owned(), e.map(str::to_owned), v));
    assert_eq!(got, want);
    let me = app
        .graphql(
            "{ me { username email emailVerified } }",
            json!({}),
            Some(session.expose()),
        )
        .await;
    assert_eq!(
        me["data"]["me"],
        json!({ "username": "second", "email": null, "emailVerified": false }),
        "{me}"
    );
    // The index now refuses a new duplicate in another case.
    let duplicate = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO users (username, email, password_hash, is_active, date_joined) \
             VALUES ('fourth', 'OTHER@example.com', 'x', TRUE, $1)",
            [joined.into()],
        ))
        .await;
    assert!(duplicate.is_err());
}

#[tokio::test]
async fn upgrading_a_database_with_duplicate_emails_keeps_the_oldest_holder_of_each() {
    upgrade_with_duplicate_emails(Backend::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn upgrading_a_postgres_database_with_duplicate_emails_keeps_the_oldest_holder_of_each() {
    upgrade_with_duplicate_emails(Backend::Postgres).await;
}

const REGISTER: &str = "mutation($u: String!, $e: String!, $p: String!) { register(username: $u, email: $e, password: $p) { session { token user { username emailVerified } } verificationSent } }";
const VERIFY: &str = "mutation($t: String!) { verifyEmail(token: $t) }";
const REGISTERED_PASSWORD: &str = "a registered passphrase, long enough";

async fn spawn_open(verification: EmailVerification) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let app = spawn_app_with(|s| {
        s.mail_dir = Some(path);
        s.email_verification = verification;
        s.registration = authql::config::Registration::Open;
        s.verify_url = Some("https://app.example.test/verify?token={token}".into());
    })
    .await;
    (app, dir)
}

async fn register(app: &TestApp, username: &str, email: &str) -> Value {
    app.graphql(
        REGISTER,
        json!({ "u": username, "e": email, "p": REGISTERED_PASSWORD }),
        None,
    )
    .await
}

async fn verify(app: &TestApp, token: &str) -> Value {
    app.graphql(VERIFY, json!({ "t": token }), None).await
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    let (app, _dir) = spawn_with_mail().await;

    let body = register(&app, "newcomer", "newcomer@example.com").await;

    assert_eq!(error_code(&body), "REGISTRATION_CLOSED");
}

#[tokio::test]
async fn under_optional_a_registered_account_signs_in_at_once_and_its_link_verifies_the_address() {
    let (app, dir) = spawn_open(EmailVerification::Optional).await;

    let body = register(&app, "Newcomer", "newcomer@example.com").await;

    let payload = &body["data"]["register"];
    assert_eq!(payload["verificationSent"], true, "{body}");
    assert_eq!(payload["session"]["user"]["username"], "newcomer");
    assert_eq!(payload["session"]["user"]["emailVerified"], false);
    let session = payload["session"]["token"].as_str().expect("a session");
    let mail = wait_for_mails(dir.path(), 1).await.remove(0);
    assert!(mail.contains("To: newcomer@example.com"));
    assert!(mail.contains("https://app.example.test/verify?token=aqv_"));
    let token = token_in(&mail, "aqv_");
    assert_eq!(verify(&app, &token).await["data"]["verifyEmail"], true);
    let me = app
        .graphql("{ me { emailVerified } }", json!({}), Some(session))
        .await;
    assert_eq!(me["data"]["me"]["emailVerified"], true, "{me}");
    assert_eq!(
        error_reasons(&verify(&app, &token).await),
        ["INVALID_LINK_TOKEN"]
    );
}

#[tokio::test]
async fn taken_usernames_and_addresses_in_any_case_are_refused_outside_required() {
    let (app, _dir) = spawn_open(EmailVerification::Optional).await;
    register(&app, "first", "First@Example.com").await;

    let same_name = register(&app, "FIRST", "other@example.com").await;
    let same_address = register(&app, "second", "first@example.COM").await;
    let bad_name = register(&app, "no spaces allowed", "third@example.com").await;
    let bad_email = register(&app, "fourth", "not-an-address").await;

    assert_eq!(error_reasons(&same_name), ["USERNAME_TAKEN"]);
    assert_eq!(error_reasons(&same_address), ["EMAIL_TAKEN"]);
    assert_eq!(error_code(&bad_name), "BAD_USER_INPUT");
    assert_eq!(error_reasons(&bad_email), ["INVALID_EMAIL"]);
}

#[tokio::test]
async fn under_required_a_login_waits_for_the_link_and_a_taken_address_reveals_nothing() {
    let (app, dir) = spawn_open(EmailVerification::Required).await;
    let owner = user_with_email(&app, "owner@example.com").await;
    let raw = |username: &'static str, email: &'static str| {
        let request = app.client.post(app.url("/graphql")).json(&json!({
            "query": REGISTER,
            "variables": { "u": username, "e": email, "p": REGISTERED_PASSWORD },
        }));
        async move {
            request
                .send()
                .await
                .expect("sent")
                .bytes()
                .await
                .expect("body")
        }
    };

    let fresh = raw("fresh", "fresh@example.com").await;
    let taken = raw("intruder", "OWNER@example.com").await;

    assert_eq!(fresh, taken);
    assert_eq!(
        serde_json::from_slice::<Value>(&fresh).unwrap()["data"]["register"],
        json!({ "session": null, "verificationSent": true })
    );
    let mails = wait_for_mails(dir.path(), 2).await;
    let notice = mails
        .iter()
        .find(|m| m.contains("To: owner@example.com"))
        .expect("the owner is told");
    assert!(notice.contains("already belongs to your account"));
    assert!(!notice.contains("aqv_"));
    let link = mails
        .iter()
        .find(|m| m.contains("To: fresh@example.com"))
        .map(|m| token_in(m, "aqv_"))
        .expect("the fresh address gets a link");
    let login = app.login_as("fresh", REGISTERED_PASSWORD).await;
    assert_eq!(error_code(&login), "EMAIL_NOT_VERIFIED");
    assert_eq!(
        error_code(&app.login_as("fresh", "a wrong passphrase entirely").await),
        "INVALID_CREDENTIALS"
    );
    assert_eq!(verify(&app, &link).await["data"]["verifyEmail"], true);
    assert!(app.login_as("fresh", REGISTERED_PASSWORD).await["data"]["login"].is_object());
    // The operator-made owner counts as verified and signs in.
    assert!(app.login(&owner).await.starts_with("aql_"));
}

#[tokio::test]
async fn resending_a_verification_link_kills_the_older_one() {
    let (app, dir) = spawn_open(EmailVerification::Optional).await;
    let body = register(&app, "resender", "resender@example.com").await;
    let session = body["data"]["register"]["session"]["token"]
        .as_str()
        .expect("a session")
        .to_owned();
    let first = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqv_");

    let resent = app
        .graphql("mutation { resendVerification }", json!({}), Some(&session))
        .await;

    assert_eq!(resent["data"]["resendVerification"], true, "{resent}");
    let second = other_token(&wait_for_mails(dir.path(), 2).await, "aqv_", &first);
    assert_eq!(
        error_reasons(&verify(&app, &first).await),
        ["INVALID_LINK_TOKEN"]
    );
    assert_eq!(verify(&app, &second).await["data"]["verifyEmail"], true);
    let again = app
        .graphql("mutation { resendVerification }", json!({}), Some(&session))
        .await;
    assert_eq!(again["data"]["resendVerification"], false);
}

const CHANGE_EMAIL: &str =
    "mutation($p: String!, $e: String!) { changeEmail(password: $p, newEmail: $e) }";

#[tokio::test]
async fn an_email_change_applies_when_the_new_address_follows_its_link_and_the_old_one_is_told() {
    let (app, dir) = spawn_with_mail().await;
    let user = user_with_email(&app, "old@example.com").await;
    user_with_email(&app, "taken@example.com").await;
    let session = app.login(&user).await;
    let change = |password: &'static str, email: &'static str| {
        app.graphql(
            CHANGE_EMAIL,
            json!({ "p": password, "e": email }),
            Some(&session),
        )
    };

    let wrong = change("not the password at all", "new@example.com").await;
    let taken = change("an old passphrase that is long enough", "TAKEN@example.com").await;
    let body = change("an old passphrase that is long enough", "new@example.com").await;

    assert_eq!(error_code(&wrong), "INVALID_CREDENTIALS");
    assert_eq!(error_reasons(&taken), ["EMAIL_TAKEN"]);
    assert_eq!(body["data"]["changeEmail"], true, "{body}");
    let mails = wait_for_mails(dir.path(), 2).await;
    let notice = mails
        .iter()
        .find(|m| m.contains("To: old@example.com"))
        .expect("the old address is told");
    assert!(!notice.contains("aqe_"));
    let link = mails
        .iter()
        .find(|m| m.contains("To: new@example.com"))
        .map(|m| token_in(m, "aqe_"))
        .expect("the new address gets the link");
    let me = || app.graphql("{ me { email emailVerified } }", json!({}), Some(&session));
    assert_eq!(me().await["data"]["me"]["email"], "old@example.com");
    assert_eq!(verify(&app, &link).await["data"]["verifyEmail"], true);
    assert_eq!(
        me().await["data"]["me"],
        json!({ "email": "new@example.com", "emailVerified": true })
    );
    assert_eq!(
        error_reasons(&verify(&app, &link).await),
        ["INVALID_LINK_TOKEN"]
    );
}
