//! The shared throttle store: the per-IP and per-username limits hold across
//! instances and restarts, and a prober sees the same refusals for a real
//! account and for a name that is no account, on any instance, after a
//! restart, and with tens of thousands of unknown names already recorded.
//!
//! A restart works on either backend (one instance at a time); two
//! instances at once are PostgreSQL-only tests, ignored unless run with
//! `TEST_DATABASE_URL` set and `--ignored` (see `helpers`).

use std::time::Duration;

use authql::config::Settings;
use authql::db::entities::login_throttle;
use sea_orm::{EntityTrait as _, PaginatorTrait as _, TransactionTrait as _};
use serde_json::{json, Value};

use crate::helpers::{
    error_code, random_text, spawn_app, spawn_app_with, spawn_postgres_app,
    spawn_postgres_app_with, TestApp,
};

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
const WRONG: &str = "not the password at all";

/// Four attempts a minute, client IPs from `X-Forwarded-For`.
fn four_a_minute(settings: &mut Settings) {
    settings.login_rate = "4/minute".parse().unwrap();
    settings.trust_forwarded_for = true;
}

/// `login` from `ip` (via `X-Forwarded-For`).
async fn login_from(app: &TestApp, ip: &str, username: &str, password: &str) -> Value {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("x-forwarded-for", ip)
        .json(&json!({ "query": LOGIN, "variables": { "u": username, "p": password } }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

/// What a client sees of a refused login: the code, and the wait when
/// rate-limited.
fn outcome(body: &Value) -> String {
    match error_code(body) {
        "RATE_LIMITED" => format!(
            "RATE_LIMITED {}",
            body["errors"][0]["extensions"]["retryAfter"]
        ),
        code => code.to_owned(),
    }
}

fn assert_rate_limited(body: &Value) {
    assert_eq!(error_code(body), "RATE_LIMITED", "{body}");
}

/// Four wrong attempts from one IP, each on another unknown name, split over
/// `apps` in turn.
async fn spend_ip_budget(apps: &[&TestApp], ip: &str) {
    for (i, app) in apps.iter().cycle().take(4).enumerate() {
        let body = login_from(app, ip, &format!("ghost_{i}_{}", random_text(6)), WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
}

/// Four wrong attempts on `username`, each from another IP, split over
/// `apps` in turn.
async fn spend_username_budget(apps: &[&TestApp], username: &str) {
    for (i, app) in apps.iter().cycle().take(4).enumerate() {
        let body = login_from(app, &format!("198.51.100.{}", i + 1), username, WRONG).await;
        assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    }
}

/// Probes two names at once, step by step, recording what each attempt got,
/// so that the two sequences can be compared. Every attempt is a wrong
/// password, as a prober's would be.
struct Probe {
    names: [String; 2],
    seen: [Vec<String>; 2],
}

impl Probe {
    fn new(real: &str, unknown: &str) -> Self {
        Self {
            names: [real.to_owned(), unknown.to_owned()],
            seen: [Vec::new(), Vec::new()],
        }
    }

    /// One attempt on each name, on `app`.
    async fn attempt(&mut self, app: &TestApp) {
        for (name, seen) in self.names.iter().zip(self.seen.iter_mut()) {
            seen.push(outcome(&app.login_as(name, WRONG).await));
        }
    }

    /// The free failures and the first refusal, on `apps` in turn.
    async fn trip(&mut self, apps: &[&TestApp]) {
        for app in apps.iter().cycle().take(6) {
            self.attempt(app).await;
        }
    }

    /// Waits out the backoff twice, attempting twice after each wait, on
    /// `apps` in turn.
    async fn wait_and_retry(&mut self, apps: &[&TestApp]) {
        let mut turn = apps.iter().cycle();
        for wait in [1, 2] {
            // Siblings share one clock: moving one moves them all.
            apps[0].clock.advance(Duration::from_secs(wait));
            for app in turn.by_ref().take(2) {
                self.attempt(app).await;
            }
        }
    }

    /// Both names saw the same, and it was the backoff at work.
    fn assert_alike(&self) {
        let [real, unknown] = &self.seen;
        assert_eq!(real, unknown, "a real and an unknown name told apart");
        let expected: Vec<&str> = [
            ["INVALID_CREDENTIALS"; 5].as_slice(),
            &["RATE_LIMITED 1", "INVALID_CREDENTIALS", "RATE_LIMITED 2"],
            &["INVALID_CREDENTIALS", "RATE_LIMITED 4"],
        ]
        .concat();
        assert_eq!(real, &expected);
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn two_instances_share_one_budget_per_ip() {
    let a = spawn_postgres_app_with(four_a_minute).await;
    let b = a.spawn_sibling(four_a_minute).await;
    let user = a.create_user().await;

    spend_ip_budget(&[&a, &b], "203.0.113.7").await;

    for app in [&a, &b] {
        assert_rate_limited(&login_from(app, "203.0.113.7", &user.username, &user.password).await);
    }
    // Another client has its own budget.
    let body = login_from(&b, "203.0.113.8", &user.username, &user.password).await;
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn two_instances_share_one_budget_per_username() {
    let a = spawn_postgres_app_with(four_a_minute).await;
    let b = a.spawn_sibling(four_a_minute).await;
    let user = a.create_user().await;

    spend_username_budget(&[&a, &b], &user.username).await;

    // Fresh IPs, the right password, another spelling of the name.
    for (app, ip) in [(&a, "192.0.2.10"), (&b, "192.0.2.11")] {
        let body = login_from(app, ip, &user.username.to_uppercase(), &user.password).await;
        assert_rate_limited(&body);
    }
}

#[tokio::test]
async fn a_restarted_instance_still_refuses_inside_the_window() {
    let app = spawn_app_with(four_a_minute).await;
    let user = app.create_user().await;
    spend_ip_budget(&[&app], "203.0.113.7").await;
    spend_username_budget(&[&app], &user.username).await;

    let restarted = app.restart(four_a_minute).await;

    let body = login_from(&restarted, "203.0.113.7", "someone_new", WRONG).await;
    assert_rate_limited(&body);
    let body = login_from(&restarted, "192.0.2.10", &user.username, &user.password).await;
    assert_rate_limited(&body);
    // Neither limit is a lockout: another client and another name pass.
    let other = restarted.create_user().await;
    let body = login_from(&restarted, "192.0.2.10", &other.username, &other.password).await;
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
}

#[tokio::test]
async fn a_real_and_an_unknown_username_are_refused_alike_across_a_restart() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let mut probe = Probe::new(&user.username, "nobody_by_this_name");

    probe.trip(&[&app]).await;
    let restarted = app.restart(|_| {}).await;
    probe.wait_and_retry(&[&restarted]).await;

    probe.assert_alike();
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn a_real_and_an_unknown_username_are_refused_alike_across_instances_and_a_restart() {
    let a = spawn_postgres_app().await;
    let b = a.spawn_sibling(|_| {}).await;
    let user = a.create_user().await;
    let mut probe = Probe::new(&user.username, "nobody_by_this_name");

    probe.trip(&[&a, &b]).await;
    let b = b.restart(|_| {}).await;
    probe.wait_and_retry(&[&b, &a]).await;

    probe.assert_alike();
}

/// Unknown names recorded in backoff: 7 failures each, the latest now.
async fn record_unknown_names(app: &TestApp, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("probe_{i}_x")).collect();
    let now = app.clock.now().timestamp_micros();
    let txn = app.auth.db().begin().await.expect("transaction");
    for chunk in names.chunks(1000) {
        let rows = chunk.iter().map(|name| login_throttle::ActiveModel {
            key: sea_orm::Set(app.auth.throttle_store().username_key(name)),
            tat: sea_orm::Set(0),
            admitted: sea_orm::Set(true),
            failures: sea_orm::Set(7),
            last_failure: sea_orm::Set(Some(now)),
        });
        login_throttle::Entity::insert_many(rows)
            .exec(&txn)
            .await
            .expect("rows inserted");
    }
    txn.commit().await.expect("committed");
    names
}

#[tokio::test]
async fn with_twenty_thousand_unknown_names_recorded_real_and_unknown_still_match() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let names = record_unknown_names(&app, 20_000).await;
    assert!(
        login_throttle::Entity::find()
            .count(app.auth.db())
            .await
            .unwrap()
            >= 20_000
    );

    // Every recorded name is still in backoff: nothing was evicted.
    for name in [&names[0], &names[9_999], &names[19_999]] {
        let body = app.login_as(name, WRONG).await;
        assert_rate_limited(&body);
    }
    let mut probe = Probe::new(&user.username, "nobody_by_this_name");
    probe.trip(&[&app]).await;
    let restarted = app.restart(|_| {}).await;
    probe.wait_and_retry(&[&restarted]).await;

    probe.assert_alike();
}

#[tokio::test]
async fn the_sweep_forgets_only_rows_that_remember_nothing() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    app.login(&user).await;
    let body = app.login_as("nobody_by_this_name", WRONG).await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS", "{body}");
    let rows = || async {
        login_throttle::Entity::find()
            .count(app.auth.db())
            .await
            .unwrap()
    };
    // The IP, the account's name and the unknown name.
    assert_eq!(rows().await, 3);

    // A second on, every budget is full again; the failure is remembered.
    app.clock.advance(Duration::from_secs(1));
    let store = app.auth.throttle_store();
    assert_eq!(store.sweep(app.clock.now()).await.unwrap(), 2);
    assert_eq!(rows().await, 1);

    app.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(store.sweep(app.clock.now()).await.unwrap(), 1);
    assert_eq!(rows().await, 0);
}
