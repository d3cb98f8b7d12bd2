//! What operators see: `/metrics`, the audit log, request ids, and a
//! graceful shutdown. The log tests run the real binary and read its
//! stderr; the metrics test runs it too, so that it owns its recorder.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::captcha_stub::{passed, CaptchaStub, Reply, SECRET};
use crate::helpers::mail::token_in;
use crate::helpers::metrics::{read_exposition, total, Sample};
use crate::helpers::process::{database_with_user, json_lines, Server};
use crate::helpers::smtp_server::{start_smtp, wait_for_count, Received};
use crate::helpers::{error_code, error_reason, random_text};

// ---------------------------------------------------------------- metrics

/// An expected change: metric name, labels it must carry, by how much.
type Change<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Asserts that each metric of `changes` moved by exactly its amount
/// between two scrapes.
fn assert_changes(step: &str, before: &[Sample], after: &[Sample], changes: &[Change<'_>]) {
    for &(name, labels, expected) in changes {
        // `+ 0.0` shows an empty sum (-0) as 0.
        let was = total(before, name, labels) + 0.0;
        let is = total(after, name, labels) + 0.0;
        assert_eq!(
            is - was,
            expected,
            "{step}: {name}{labels:?} went from {was} to {is}, expected a change of {expected}"
        );
    }
}

// The recorder is process-wide and the other tests of this binary run in
// parallel in this process, so an in-process server's /metrics counts their
// requests too. This test reads the metrics of the real binary, run as its
// own process: only this test talks to it, so every change is exact.
#[tokio::test]
async fn metrics_move_after_real_requests_and_the_exposition_parses() {
    const LOGINS: &str = "authql_logins_total";
    const RESOLUTIONS: &str = "authql_token_resolutions_total";
    const REVOCATIONS: &str = "authql_revocations_total";
    const OPERATIONS: &str = "authql_operation_duration_seconds_count";
    const OPERATIONS_INF: &str = "authql_operation_duration_seconds_bucket";
    const HTTP: &str = "authql_http_request_duration_seconds_count";

    let username = new_username();
    let password = strong_password();
    let wrong = format!("wrong {}", random_text(16));
    let stray_path = format!("/no-such-route-{}", random_text(12));
    let (_dir, url) = database_with_user(&username, &password);
    let server = Server::start(&url, &["--bcrypt-cost", "4"]).await;
    let metrics_url = server.url("/metrics");
    let scrape = || read_exposition(&server.client, &metrics_url);
    let login =
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
    let me = "{ me { id username } }";

    let failed: &[(&str, &str)] = &[("outcome", "invalid_credentials")];
    let succeeded: &[(&str, &str)] = &[("outcome", "success")];
    let database: &[(&str, &str)] = &[("path", "database")];
    let cache: &[(&str, &str)] = &[("path", "cache")];
    let refused: &[(&str, &str)] = &[("path", "refused")];
    let invalid_token: &[(&str, &str)] = &[("path", "refused"), ("reason", "INVALID_TOKEN")];
    let logout: &[(&str, &str)] = &[("kind", "logout")];
    let query: &[(&str, &str)] = &[("operation", "query")];
    let query_inf: &[(&str, &str)] = &[("operation", "query"), ("le", "+Inf")];
    let mutation: &[(&str, &str)] = &[("operation", "mutation")];
    let mutation_inf: &[(&str, &str)] = &[("operation", "mutation"), ("le", "+Inf")];
    let graphql: &[(&str, &str)] = &[("route", "graphql")];
    let other: &[(&str, &str)] = &[("route", "other")];

    let (_, start) = scrape().await;

    // A wrong password: one failed login, one mutation, no resolution.
    let body = server
        .graphql(login, json!({ "u": username, "p": wrong }), None)
        .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    let (_, after_failure) = scrape().await;
    assert_changes(
        "a failed login",
        &start,
        &after_failure,
        &[
            (LOGINS, failed, 1.0),
            (LOGINS, succeeded, 0.0),
            (LOGINS, &[], 1.0),
            (RESOLUTIONS, &[], 0.0),
            (OPERATIONS, mutation, 1.0),
            (OPERATIONS_INF, mutation_inf, 1.0),
            (OPERATIONS, query, 0.0),
            (HTTP, graphql, 1.0),
        ],
    );

    // The right one: one successful login.
    let body = server
        .graphql(login, json!({ "u": username, "p": password }), None)
        .await;
    let token = body["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let (_, after_login) = scrape().await;
    assert_changes(
        "a successful login",
        &after_failure,
        &after_login,
        &[
            (LOGINS, succeeded, 1.0),
            (LOGINS, failed, 0.0),
            (LOGINS, &[], 1.0),
            (RESOLUTIONS, &[], 0.0),
            (OPERATIONS, mutation, 1.0),
            (OPERATIONS, query, 0.0),
            (HTTP, graphql, 1.0),
        ],
    );

    // The new token's first use reads the database…
    let body = server.graphql(me, json!({}), Some(&token)).await;
    assert_eq!(body["data"]["me"]["username"], username.as_str(), "{body}");
    let (_, after_first_me) = scrape().await;
    assert_changes(
        "the first me",
        &after_login,
        &after_first_me,
        &[
            (RESOLUTIONS, database, 1.0),
            (RESOLUTIONS, cache, 0.0),
            (RESOLUTIONS, refused, 0.0),
            (OPERATIONS, query, 1.0),
            (OPERATIONS_INF, query_inf, 1.0),
            (OPERATIONS, mutation, 0.0),
            (LOGINS, &[], 0.0),
            (HTTP, graphql, 1.0),
        ],
    );

    // …the second is served from the cache.
    let body = server.graphql(me, json!({}), Some(&token)).await;
    assert_eq!(body["data"]["me"]["username"], username.as_str(), "{body}");
    let (_, after_cached_me) = scrape().await;
    assert_changes(
        "the second me",
        &after_first_me,
        &after_cached_me,
        &[
            (RESOLUTIONS, cache, 1.0),
            (RESOLUTIONS, database, 0.0),
            (RESOLUTIONS, refused, 0.0),
            (OPERATIONS, query, 1.0),
            (OPERATIONS, mutation, 0.0),
            (HTTP, graphql, 1.0),
        ],
    );
    let entries = total(&after_cached_me, "authql_token_cache_entries", &[]);
    assert!(
        entries >= 1.0,
        "authql_token_cache_entries is {entries} after a cached me \
         (it reads mini-moka's entry_count, which lags until the cache's housekeeping runs)"
    );

    // A logout revokes one token (resolved once, from the cache)…
    let body = server
        .graphql("mutation { logout }", json!({}), Some(&token))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let (_, after_logout) = scrape().await;
    assert_changes(
        "a logout",
        &after_cached_me,
        &after_logout,
        &[
            (REVOCATIONS, logout, 1.0),
            (REVOCATIONS, &[], 1.0),
            (RESOLUTIONS, &[], 1.0),
            (RESOLUTIONS, refused, 0.0),
            (OPERATIONS, mutation, 1.0),
            (OPERATIONS, query, 0.0),
            (HTTP, graphql, 1.0),
        ],
    );

    // …after which the token is refused.
    let body = server.graphql(me, json!({}), Some(&token)).await;
    assert_eq!(error_reason(&body), "INVALID_TOKEN", "{body}");
    let (_, after_refusal) = scrape().await;
    assert_changes(
        "a me with a revoked token",
        &after_logout,
        &after_refusal,
        &[
            (RESOLUTIONS, invalid_token, 1.0),
            (RESOLUTIONS, &[], 1.0),
            (REVOCATIONS, &[], 0.0),
            (OPERATIONS, query, 1.0),
            (OPERATIONS, mutation, 0.0),
            (HTTP, graphql, 1.0),
        ],
    );

    // A path that is no route counts under a fixed label.
    let response = server.client.get(server.url(&stray_path)).send().await;
    assert_eq!(response.expect("an answer").status(), 404);
    let (text, end) = scrape().await;
    assert_changes(
        "a stray path",
        &after_refusal,
        &end,
        &[(HTTP, other, 1.0), (HTTP, graphql, 0.0)],
    );

    // Over the whole run: three queries, three mutations, six requests.
    assert_changes(
        "the whole run",
        &start,
        &end,
        &[
            (OPERATIONS, query, 3.0),
            (OPERATIONS, mutation, 3.0),
            (OPERATIONS, &[], 6.0),
            (HTTP, graphql, 6.0),
        ],
    );
    for family in [
        "# TYPE authql_logins_total counter",
        "# TYPE authql_token_resolutions_total counter",
        "# TYPE authql_revocations_total counter",
        "# TYPE authql_token_cache_entries gauge",
        "# TYPE authql_operation_duration_seconds histogram",
        "# TYPE authql_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(family), "no {family:?} in {text}");
    }

    // Label values come from fixed sets: nothing of the requests leaks in.
    for secret in [
        username.as_str(),
        password.as_str(),
        wrong.as_str(),
        token.as_str(),
        &stray_path[1..],
    ] {
        assert!(!text.contains(secret), "/metrics contains {secret:?}");
    }
    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status}: {log:?}");
}

// ------------------------------------------------------------- the binary

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

/// The one line of `event`, checked to be at `info` with the client's IP.
fn logged_once<'a>(lines: &'a [Value], log: &[String], event: &str) -> &'a Value {
    let found = events(lines, event);
    assert_eq!(
        found.len(),
        1,
        "{event} logged {} times: {log:?}",
        found.len()
    );
    let line = found[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["ip"], "127.0.0.1", "{event}: {line}");
    line
}

fn strong_password() -> String {
    format!("{} {} {}", random_text(8), random_text(8), random_text(8))
}

fn new_username() -> String {
    format!("audit_{}", random_text(10).to_lowercase())
}

#[tokio::test]
async fn the_audit_log_records_each_event_and_no_secret() {
    let username = new_username();
    let (password, new_password) = (strong_password(), strong_password());
    let wrong = format!("wrong {}", random_text(16));
    let (_dir, url) = database_with_user(&username, &password);
    let server = Server::start(&url, &[]).await;
    let login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { id } } }";

    let body = server
        .graphql(login, json!({ "u": username, "p": password }), None)
        .await;
    let first = body["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let user_id = body["data"]["login"]["user"]["id"]
        .as_str()
        .expect("user id")
        .to_owned();
    let body = server
        .graphql(login, json!({ "u": username, "p": wrong }), None)
        .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    let body = server
        .graphql(
            "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token } }",
            json!({ "o": password, "n": new_password }),
            Some(&first),
        )
        .await;
    let second = body["data"]["changePassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let body = server
        .graphql("mutation { logout }", json!({}), Some(&second))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");

    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status}: {log:?}");
    let lines = json_lines(&log);

    for event in [
        "login_succeeded",
        "login_failed",
        "password_changed",
        "logout",
    ] {
        let line = logged_once(&lines, &log, event);
        let names_user = line["user_id"].as_i64().map(|id| id.to_string()) == Some(user_id.clone())
            || line["user_id"] == user_id.as_str()
            || line["username"] == username.as_str();
        assert!(names_user, "{event} does not name the user: {line}");
    }
    for event in ["login_succeeded", "login_failed"] {
        assert_eq!(
            events(&lines, event)[0]["user_agent"],
            "audit-test/1.0",
            "{event}"
        );
    }
    // One start-up report, without secrets.
    assert!(
        lines.iter().any(|l| l["message"] == "authql serving"
            && l["listen"] == server_address(&log)
            && l["version"].is_string()),
        "no start-up report: {log:?}"
    );

    let whole = log.join("\n");
    for secret in [&password, &new_password, &wrong, &first, &second] {
        assert!(
            !whole.contains(secret.as_str()),
            "the log contains {secret:?}"
        );
    }
}

/// The SMTP password the server is given; no log line may contain it.
const SMTP_PASSWORD: &str = "smtp-pass-must-never-leak-4c1e";

/// The `prefix` token in the mail to `to` among `mails` (the body with
/// quoted-printable soft breaks and `=3D` undone).
fn link_in(mails: &[Received], to: &str, prefix: &str) -> String {
    let mail = mails
        .iter()
        .find(|m| m.recipients == [format!("<{to}>")] && m.data.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix} mail to {to}: {mails:?}"));
    token_in(&mail.data.replace("=\n", "").replace("=3D", "="), prefix)
}

#[tokio::test]
async fn account_events_are_audited_without_a_link_a_password_or_the_smtp_password() {
    let (port, inbox) = start_smtp(0).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("authql.db").display()
    );
    let smtp_url = format!("smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{port}");
    let server = Server::start_with_env(
        &url,
        &[
            "--registration",
            "open",
            "--email-verification",
            "optional",
            "--verify-url",
            "https://app.example.test/verify?token={token}",
            "--reset-url",
            "https://app.example.test/reset?token={token}",
        ],
        &[("AUTHQL_SMTP_URL", &smtp_url)],
    )
    .await;
    let username = new_username();
    let (password, new_password) = (strong_password(), strong_password());
    let (email, new_email) = (
        format!("{username}@example.com"),
        format!("new.{username}@example.com"),
    );
    let verify = "mutation($t: String!) { verifyEmail(token: $t) }";

    let body = server
        .graphql(
            "mutation($u: String!, $e: String!, $p: String!) { register(username: $u, email: $e, password: $p) { session { token user { id } } } }",
            json!({ "u": username, "e": email, "p": password }),
            None,
        )
        .await;
    let session = &body["data"]["register"]["session"];
    let registered = session["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let user_id = session["user"]["id"].as_str().expect("user id").to_owned();
    let verify_link = link_in(&wait_for_count(&inbox, 1).await, &email, "aqv_");
    let body = server
        .graphql(verify, json!({ "t": verify_link }), None)
        .await;
    assert_eq!(body["data"]["verifyEmail"], true, "{body}");
    let body = server
        .graphql(
            "mutation($e: String!) { requestPasswordReset(email: $e) }",
            json!({ "e": email }),
            None,
        )
        .await;
    assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
    let reset_link = link_in(&wait_for_count(&inbox, 2).await, &email, "aqr_");
    let body = server
        .graphql(
            "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) { token } }",
            json!({ "t": reset_link, "p": new_password }),
            None,
        )
        .await;
    let after_reset = body["data"]["resetPassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let body = server
        .graphql(
            "mutation($p: String!, $e: String!) { changeEmail(password: $p, newEmail: $e) }",
            json!({ "p": new_password, "e": new_email }),
            Some(&after_reset),
        )
        .await;
    assert_eq!(body["data"]["changeEmail"], true, "{body}");
    let mails = wait_for_count(&inbox, 4).await;
    let change_link = link_in(&mails, &new_email, "aqe_");
    let body = server
        .graphql(verify, json!({ "t": change_link }), None)
        .await;
    assert_eq!(body["data"]["verifyEmail"], true, "{body}");

    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status}: {log:?}");
    let lines = json_lines(&log);

    for event in [
        "registered",
        "email_verified",
        "password_reset_requested",
        "password_reset",
        "email_change_requested",
        "email_changed",
    ] {
        let line = logged_once(&lines, &log, event);
        assert_eq!(
            line["user_id"].as_i64().map(|id| id.to_string()),
            Some(user_id.clone()),
            "{event} does not name the user: {line}"
        );
    }
    assert_eq!(events(&lines, "mail_sent").len(), 4, "{log:?}");
    // The SMTP server was given the password, so it was in play.
    let plain = mails[0]
        .auth
        .as_deref()
        .and_then(|a| a.strip_prefix("PLAIN "));
    let decoded = plain
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .unwrap_or_default();
    assert_eq!(decoded, format!("\0mailer\0{SMTP_PASSWORD}").into_bytes());
    let whole = log.join("\n");
    for secret in [
        &password,
        &new_password,
        &registered,
        &after_reset,
        &verify_link,
        &reset_link,
        &change_link,
        &SMTP_PASSWORD.to_owned(),
        &plain.unwrap_or_default().to_owned(),
    ] {
        assert!(
            !whole.contains(secret.as_str()),
            "the log contains {secret:?}"
        );
    }
    // Not even a piece of a token: no prefix appears at all.
    for prefix in ["aql_", "aqv_", "aqr_", "aqe_"] {
        assert!(
            !whole.contains(prefix),
            "the log mentions {prefix}: {log:?}"
        );
    }
}

/// `username_hash` of a log line, checked to be 16 lower-case hex digits.
fn username_hash(line: &Value) -> String {
    let hash = line["username_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no username_hash: {line}"));
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not a short hex hash: {line}"
    );
    hash.to_owned()
}

#[tokio::test]
async fn a_password_typed_as_the_username_is_logged_only_as_a_keyed_hash() {
    let username = new_username();
    let password = strong_password();
    let (_dir, url) = database_with_user(&username, &password);
    let stub = CaptchaStub::start(passed()).await;
    let server = Server::start(
        &url,
        &[
            "--captcha-secret",
            SECRET,
            "--captcha-verify-url",
            &stub.url,
        ],
    )
    .await;
    let login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p, captcha: \"answer\") { token } }";
    // Two passwords typed into the username field (the second with a
    // character no username may hold).
    let typed = format!("S3cr3t-{}", random_text(16));
    let other_typed = format!("hunter2 {}", random_text(16));

    // Failed logins until the unknown name's backoff refuses one.
    let mut failures = 0;
    loop {
        let body = server
            .graphql(login, json!({ "u": typed, "p": "wrong" }), None)
            .await;
        match error_code(&body) {
            "INVALID_CREDENTIALS" => failures += 1,
            "RATE_LIMITED" => break,
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(failures < 10, "never refused by the backoff");
    }
    // A known account's failure, and a refused captcha.
    let body = server
        .graphql(login, json!({ "u": username, "p": "wrong" }), None)
        .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    stub.reply(Reply::Json(json!({ "success": false })));
    let body = server
        .graphql(login, json!({ "u": other_typed, "p": "wrong" }), None)
        .await;
    assert_eq!(error_code(&body), "CAPTCHA_INVALID");

    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status}: {log:?}");
    let lines = json_lines(&log);

    let whole = log.join("\n");
    for secret in [&typed, &other_typed, &password] {
        for form in [secret.clone(), secret.to_lowercase()] {
            assert!(!whole.contains(&form), "the log contains {form:?}");
        }
    }
    assert!(!whole.contains(SECRET), "the captcha secret was logged");
    // One name, one hash: the failures and the refusal can be correlated.
    let unknown: Vec<&Value> = events(&lines, "login_failed")
        .into_iter()
        .filter(|l| l["user_id"].is_null())
        .collect();
    assert_eq!(unknown.len(), failures, "{log:?}");
    let hash = username_hash(unknown[0]);
    for line in &unknown {
        assert_eq!(username_hash(line), hash, "{line}");
        assert!(line["username"].is_null(), "{line}");
    }
    let limited = events(&lines, "rate_limited");
    assert_eq!(limited.len(), 1, "{log:?}");
    assert_eq!(username_hash(limited[0]), hash);
    assert!(limited[0]["username"].is_null(), "{}", limited[0]);
    let refused = events(&lines, "captcha_refused");
    assert_eq!(refused.len(), 1, "{log:?}");
    assert_ne!(username_hash(refused[0]), hash, "two names, two hashes");
    assert!(refused[0]["username"].is_null(), "{}", refused[0]);
    // A real account's line names it.
    let known = events(&lines, "login_failed")
        .into_iter()
        .find(|l| !l["user_id"].is_null())
        .unwrap_or_else(|| panic!("no login_failed for the account: {log:?}"));
    assert_eq!(known["username"], username.as_str(), "{known}");
    assert_ne!(username_hash(known), hash);
}

/// The `listen` field of the start-up report.
fn server_address(log: &[String]) -> String {
    json_lines(log)
        .iter()
        .find_map(|l| l["listen"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn request_ids_are_echoed_and_attached_to_the_log_and_bad_ones_replaced() {
    let (_dir, url) = database_with_user(&new_username(), &strong_password());
    let server = Server::start(&url, &[]).await;
    let login =
        "mutation($u: String!) { login(username: $u, password: \"not the password\") { token } }";

    // Each request fails a login with its own unknown username: one
    // login_failed line each, in order.
    let sent_ids = [
        Some(format!("req-{}", random_text(20))),
        Some(format!("bad id {}", random_text(6))),
        Some("a".repeat(200)),
        Some("wrong/chars?".to_owned()),
        None,
    ];
    let mut exchanges = Vec::new();
    for sent in &sent_ids {
        let ghost = new_username();
        let (echoed, body) = server
            .graphql_with(login, json!({ "u": ghost }), None, sent.as_deref())
            .await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
        exchanges.push((sent.clone(), ghost, echoed));
    }
    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status}: {log:?}");
    let lines = json_lines(&log);
    let failures = events(&lines, "login_failed");
    assert_eq!(failures.len(), exchanges.len(), "{log:?}");

    let mut generated = Vec::new();
    for (i, ((sent, ghost, echoed), line)) in exchanges.iter().zip(failures).enumerate() {
        if i == 0 {
            assert_eq!(Some(echoed), sent.as_ref(), "a good id is echoed");
        } else {
            assert_ne!(Some(echoed), sent.as_ref(), "a bad id is replaced");
            assert!(
                (8..=128).contains(&echoed.len())
                    && echoed
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "generated id {echoed:?}"
            );
            generated.push(echoed.clone());
        }
        assert!(line["username_hash"].is_string(), "{line}");
        assert!(
            !log.join("\n").contains(ghost.as_str()),
            "an unknown name was logged"
        );
        assert_eq!(
            line["span"]["request_id"],
            echoed.as_str(),
            "the log line carries the request's id: {line}"
        );
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 4, "generated ids are distinct");
    // The bad ids were not written to the log either.
    let whole = log.join("\n");
    assert!(!whole.contains(&"a".repeat(200)));
    assert!(!whole.contains("wrong/chars?"));
}

#[tokio::test]
async fn sigterm_lets_a_slow_login_finish_and_exits_zero() {
    // The user's hash is cost 4; the server runs at cost 12, so a
    // successful login re-hashes at cost 12 (about a second in a debug
    // build) before it answers.
    let username = new_username();
    let password = strong_password();
    let (_dir, url) = database_with_user(&username, &password);
    let server = Server::start(&url, &["--bcrypt-cost", "12"]).await;

    let request = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({
            "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
            "variables": { "u": username, "p": password },
        }))
        .send();
    let in_flight = tokio::spawn(async move {
        let response = request.await.expect("the login answered");
        let status = response.status();
        (status, response.json::<Value>().await.expect("JSON body"))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the login finished before the signal: the test proves nothing"
    );

    server.signal_terminate();
    // It stops accepting at once, while the login is still running.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fresh.get(server.url("/healthz")).send().await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the login finished before the server stopped accepting: the test proves nothing"
    );
    let (status, body) = in_flight.await.expect("login task");

    assert_eq!(status, 200);
    assert!(
        body["data"]["login"]["token"].is_string(),
        "the login in flight was cut: {body}"
    );
    let mut server = server;
    let (exit, log) = server.finish().await;
    assert!(exit.success(), "exit status {exit}: {log:?}");
    assert_eq!(exit.code(), Some(0));
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutdown signal received"))),
        "{log:?}"
    );
    assert!(
        lines.iter().any(|l| l["event"] == "login_succeeded"),
        "{log:?}"
    );
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_carry_no_terminal_colour_codes() {
    let (_dir, url) = database_with_user(&new_username(), &strong_password());
    let server = Server::start_with_format(&url, "text", &[]).await;
    let body = server
        .graphql(
            "mutation { login(username: \"nobody\", password: \"not the password\") { token } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
    let (status, log) = server.stop().await;
    assert!(status.success(), "exit status {status}: {log:?}");

    let whole = log.join("\n");
    assert!(whole.contains("authql serving"), "{whole}");
    assert!(whole.contains("login_failed"), "{whole}");
    // Colours are for terminals; in a file or a log shipper they are noise.
    assert!(!whole.contains('\u{1b}'), "escape codes in {whole:?}");
}
