//! What stands between an attacker and `register` / `requestPasswordReset`:
//! the captcha, with its own reCAPTCHA v3 action for each (so a token
//! solved for the login page is no good here); the per-IP limit, which
//! refuses a flood before anything is created or mailed; and latencies
//! that do not tell a known address from an unknown one.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use authql::config::{EmailVerification, Registration, Settings};
use authql::db::entities::user;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde_json::{json, Value};

use crate::helpers::captcha_stub::{CaptchaStub, Reply, SECRET};
use crate::helpers::mail::{mails, wait_for_mails};
use crate::helpers::{error_code, random_text, spawn_app_with, TestApp};

const REGISTER: &str = "mutation($u: String!, $e: String!, $p: String!, $c: String) { register(username: $u, email: $e, password: $p, captcha: $c) { session { token } verificationSent } }";
const REQUEST_RESET: &str =
    "mutation($e: String!, $c: String) { requestPasswordReset(email: $e, captcha: $c) }";
const PASSWORD: &str = "a registered passphrase, long enough";

/// A server with registration open under `verification`, mailing into a
/// temporary directory, with `configure` applied last.
async fn spawn_accounts(
    verification: EmailVerification,
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    let app = spawn_app_with(|s| {
        s.mail_dir = Some(path);
        s.registration = Registration::Open;
        s.email_verification = verification;
        configure(s);
    })
    .await;
    (app, dir)
}

async fn register(app: &TestApp, username: &str, email: &str, captcha: Option<&str>) -> Value {
    let body = app
        .graphql(
            REGISTER,
            json!({ "u": username, "e": email, "p": PASSWORD, "c": captcha }),
            None,
        )
        .await;
    assert!(!body.to_string().contains(SECRET), "secret leaked: {body}");
    body
}

async fn request_reset(app: &TestApp, email: &str, captcha: Option<&str>) -> Value {
    let body = app
        .graphql(REQUEST_RESET, json!({ "e": email, "c": captcha }), None)
        .await;
    assert!(!body.to_string().contains(SECRET), "secret leaked: {body}");
    body
}

async fn user_exists(app: &TestApp, username: &str) -> bool {
    user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .count(app.auth.db())
        .await
        .expect("users readable")
        > 0
}

/// The mails in `dir` after a pause long enough for a (wrong) mail to be
/// written by the outbox.
async fn settled_mail_count(dir: &Path) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    mails(dir).len()
}

/// A reCAPTCHA v3 answer.
fn v3(score: f64, action: &str) -> Reply {
    Reply::Json(json!({ "success": true, "score": score, "action": action }))
}

/// Asserts that the stub's last request carried our secret, the answer
/// and the client's IP.
fn assert_last_verification(stub: &CaptchaStub, answer: &str) {
    let requests = stub.requests();
    let last = requests.last().expect("the stub was asked");
    assert_eq!(last.get("secret").map(String::as_str), Some(SECRET));
    assert_eq!(last.get("response").map(String::as_str), Some(answer));
    assert_eq!(last.get("remoteip").map(String::as_str), Some("127.0.0.1"));
}

// ---------------------------------------------------------------- captcha

#[tokio::test]
async fn register_needs_a_captcha_answer_for_the_register_action_when_a_secret_is_set() {
    let stub = CaptchaStub::start(v3(0.9, "register")).await;
    let (app, dir) = spawn_accounts(EmailVerification::Optional, |s| stub.configure(s)).await;

    let missing = register(&app, "no_captcha", "none@example.com", None).await;
    let calls_for_missing = stub.calls();
    stub.reply(v3(0.9, "login"));
    let login_token = register(&app, "login_token", "login@example.com", Some("a")).await;
    stub.reply(v3(0.1, "register"));
    let low_score = register(&app, "low_score", "low@example.com", Some("b")).await;
    stub.reply(Reply::Json(json!({ "success": false })));
    let failed = register(&app, "failed", "failed@example.com", Some("c")).await;
    let refused_mails = settled_mail_count(dir.path()).await;
    stub.reply(v3(0.9, "register"));
    let passed = register(&app, "passed", "passed@example.com", Some("good-answer")).await;

    assert_eq!(error_code(&missing), "CAPTCHA_REQUIRED", "{missing}");
    assert_eq!(calls_for_missing, 0, "nothing to verify, nothing sent");
    for body in [&login_token, &low_score, &failed] {
        assert_eq!(error_code(body), "CAPTCHA_INVALID", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    for name in ["no_captcha", "login_token", "low_score", "failed"] {
        assert!(!user_exists(&app, name).await, "{name} was created");
    }
    assert_eq!(refused_mails, 0);
    let payload = &passed["data"]["register"];
    assert!(payload["session"]["token"].is_string(), "{passed}");
    assert_eq!(payload["verificationSent"], true);
    assert!(user_exists(&app, "passed").await);
    assert_last_verification(&stub, "good-answer");
    assert_eq!(stub.calls(), 4);
    wait_for_mails(dir.path(), 1).await;
}

#[tokio::test]
async fn a_reset_request_needs_a_captcha_answer_for_the_password_reset_action() {
    let stub = CaptchaStub::start(v3(0.9, "password_reset")).await;
    let (app, dir) = spawn_accounts(EmailVerification::Optional, |s| stub.configure(s)).await;
    app.create_user_with_email("guarded@example.com").await;

    let missing = request_reset(&app, "guarded@example.com", None).await;
    stub.reply(v3(0.9, "register"));
    let other_action = request_reset(&app, "guarded@example.com", Some("a")).await;
    stub.reply(v3(0.2, "password_reset"));
    let low_score = request_reset(&app, "guarded@example.com", Some("b")).await;
    stub.reply(Reply::Json(json!({ "success": false })));
    let failed = request_reset(&app, "guarded@example.com", Some("c")).await;
    let refused_mails = settled_mail_count(dir.path()).await;
    stub.reply(v3(0.9, "password_reset"));
    let passed = request_reset(&app, "guarded@example.com", Some("good-answer")).await;

    assert_eq!(error_code(&missing), "CAPTCHA_REQUIRED", "{missing}");
    for body in [&other_action, &low_score, &failed] {
        assert_eq!(error_code(body), "CAPTCHA_INVALID", "{body}");
    }
    assert_eq!(refused_mails, 0, "a refused request mailed a link");
    assert_eq!(passed["data"]["requestPasswordReset"], true, "{passed}");
    let mail = wait_for_mails(dir.path(), 1).await.remove(0);
    assert!(mail.contains("To: guarded@example.com") && mail.contains("aqr_"));
    assert_last_verification(&stub, "good-answer");
    assert_eq!(stub.calls(), 4, "the missing answer was not sent");
}

// ------------------------------------------------------------ per-IP limit

/// The `RATE_LIMITED` refusal: the code, no data, and `retryAfter` in whole
/// seconds within the limit's period.
fn assert_rate_limited(body: &Value, period_seconds: u64) {
    assert_eq!(error_code(body), "RATE_LIMITED", "{body}");
    assert!(body["data"].is_null(), "{body}");
    let wait = body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("no whole-second retryAfter: {body}"));
    assert!((1..=period_seconds).contains(&wait), "retryAfter {wait}");
}

#[tokio::test]
async fn a_flood_of_registrations_from_one_ip_is_rate_limited_and_creates_and_mails_nothing() {
    let (app, dir) = spawn_accounts(EmailVerification::Optional, |s| {
        s.login_rate = "3/minute".parse().expect("a rate");
    })
    .await;
    let names: Vec<String> = (0..6).map(|i| format!("flood_{i}")).collect();

    let mut answers = Vec::new();
    for name in &names {
        answers.push(register(&app, name, &format!("{name}@example.com"), None).await);
    }

    for (name, body) in names.iter().zip(&answers).take(3) {
        assert!(body["data"]["register"]["session"].is_object(), "{body}");
        assert!(user_exists(&app, name).await);
    }
    for (name, body) in names.iter().zip(&answers).skip(3) {
        assert_rate_limited(body, 60);
        assert!(!user_exists(&app, name).await, "{name} was created");
    }
    wait_for_mails(dir.path(), 3).await;
    assert_eq!(settled_mail_count(dir.path()).await, 3);
    // It is the login limit: a login from that IP waits too.
    let user = app.create_user().await;
    assert_rate_limited(&app.login_as(&user.username, &user.password).await, 60);
}

#[tokio::test]
async fn a_flood_of_reset_requests_from_one_ip_is_rate_limited_whatever_the_address() {
    let (app, dir) = spawn_accounts(EmailVerification::Optional, |s| {
        s.login_rate = "2/minute".parse().expect("a rate");
    })
    .await;
    app.create_user_with_email("flooded@example.com").await;

    let admitted = [
        request_reset(&app, "flooded@example.com", None).await,
        request_reset(&app, "flooded@example.com", None).await,
    ];
    let refused_known = request_reset(&app, "flooded@example.com", None).await;
    let refused_unknown = request_reset(&app, "nobody@example.com", None).await;

    for body in &admitted {
        assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
    }
    assert_rate_limited(&refused_known, 60);
    assert_rate_limited(&refused_unknown, 60);
    assert_eq!(
        refused_known["errors"][0]["message"],
        refused_unknown["errors"][0]["message"]
    );
    // Two links mailed (under the per-address limit of 3), none for the
    // refused request.
    wait_for_mails(dir.path(), 2).await;
    assert_eq!(settled_mail_count(dir.path()).await, 2);
}

// ---------------------------------------------------------------- latency

/// Timed requests of each kind, after a few untimed ones.
const SAMPLES: usize = 30;
const WARM_UP: usize = 3;

/// Why this machine is too busy for timings to mean anything, if it is:
/// a one-minute load average above the number of cores.
fn machine_busy() -> Option<String> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load: f64 = loadavg.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (load > cores as f64).then(|| format!("load average {load} on {cores} core(s)"))
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The interquartile range: how far apart the middle half of the samples
/// lie, a spread that a few outliers do not move.
fn spread(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() * 3 / 4] - sorted[sorted.len() / 4]
}

/// Times `request(known, i)` for a known and an unknown address, alternating
/// which goes first so that a drift hits both alike; returns the two
/// medians, or `None` (having printed why) when the machine is too noisy
/// to tell: busy before or after, or either kind's samples spread wider
/// than their median.
async fn median_latencies<F, Fut>(mut request: F) -> Option<(Duration, Duration)>
where
    F: FnMut(bool, usize) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(reason) = machine_busy() {
        eprintln!("latency comparison skipped: {reason}");
        return None;
    }
    for i in 0..WARM_UP {
        request(true, i).await;
        request(false, i).await;
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in WARM_UP..WARM_UP + SAMPLES {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_known in order {
            let start = Instant::now();
            request(is_known, i).await;
            let took = start.elapsed();
            if is_known {
                known.push(took);
            } else {
                unknown.push(took);
            }
        }
    }
    if let Some(reason) = machine_busy() {
        eprintln!("latency comparison skipped: {reason}");
        return None;
    }
    for (kind, samples) in [("known", &known), ("unknown", &unknown)] {
        if spread(samples) > median(samples) {
            eprintln!(
                "latency comparison skipped: the {kind} samples spread over {:?} around a median of {:?}",
                spread(samples),
                median(samples)
            );
            return None;
        }
    }
    Some((median(&known), median(&unknown)))
}

/// The medians differ by less than 25 ms or half the larger one, whichever
/// is more: a difference an attacker could read needs far more.
fn assert_close(what: &str, known: Duration, unknown: Duration) {
    let difference = known.abs_diff(unknown);
    let allowed = Duration::from_millis(25).max(known.max(unknown) / 2);
    eprintln!(
        "{what}: median {known:?} for an address with an account, {unknown:?} for one without"
    );
    assert!(
        difference < allowed,
        "{what}: medians {known:?} (account) and {unknown:?} (none) differ by {difference:?}"
    );
}

#[tokio::test]
async fn a_reset_request_takes_as_long_for_a_known_address_as_for_an_unknown_one() {
    let (app, _dir) = spawn_accounts(EmailVerification::Optional, |_| {}).await;
    app.create_user_with_email("timed@example.com").await;
    let unknown_prefix = random_text(8).to_lowercase();
    let app = &app;

    let medians = median_latencies(move |known, i| {
        let email = if known {
            "timed@example.com".to_owned()
        } else {
            format!("{unknown_prefix}.{i}@example.com")
        };
        async move {
            let body = request_reset(app, &email, None).await;
            assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
        }
    })
    .await;

    if let Some((known, unknown)) = medians {
        assert_close("requestPasswordReset", known, unknown);
    }
}

#[tokio::test]
async fn under_required_registering_a_taken_address_takes_as_long_as_a_new_one() {
    let (app, _dir) = spawn_accounts(EmailVerification::Required, |_| {}).await;
    app.create_user_with_email("owner@example.com").await;
    let run = random_text(8).to_lowercase();
    let app = &app;

    let medians = median_latencies(move |taken, i| {
        let (username, email) = if taken {
            (format!("taker_{run}_{i}"), "owner@example.com".to_owned())
        } else {
            (
                format!("fresh_{run}_{i}"),
                format!("fresh.{run}.{i}@example.com"),
            )
        };
        async move {
            let body = register(app, &username, &email, None).await;
            assert_eq!(
                body["data"]["register"],
                json!({ "session": null, "verificationSent": true }),
                "{body}"
            );
        }
    })
    .await;

    if let Some((taken, fresh)) = medians {
        assert_close("register under required", taken, fresh);
    }
}
