//! Several instances on one PostgreSQL database: revocations (a password
//! reset's too) and changes to a cached user's address reach every
//! instance's cache within a second, a lost revocation channel never lets
//! a revoked token through, and database faults fail cleanly and heal.
//!
//! PostgreSQL only: every test here is ignored unless run with
//! `TEST_DATABASE_URL` set and `--ignored` (see `helpers`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authql::auth::cache::Lookup;
use authql::auth::tokens::Token;
use sea_orm::{ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use authql::config::{EmailVerification, Registration, Settings};

use crate::helpers::mail::{token_in, wait_for_mails};
use crate::helpers::metrics::{scrape, total};
use crate::helpers::process::run_authql_off_thread as cli;
use crate::helpers::{
    error_code, error_reason, random_text, spawn_postgres_app, spawn_postgres_app_with,
    wait_for_refusal, TestApp, TestUser,
};

/// Two instances on one database, and a user.
async fn pair() -> (TestApp, TestApp, TestUser) {
    let a = spawn_postgres_app().await;
    let b = a.spawn_sibling(|_| {}).await;
    let user = a.create_user().await;
    (a, b, user)
}

/// Resolves `token` on `app` until `app` serves it from its cache, which it
/// does only while it is listening for revocations: a test that then sees
/// the token refused has seen the notification at work, not a bypass.
async fn warm_on(app: &TestApp, token: &str) {
    let digest = Token::parse(token).expect("a token we issued").digest();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = app.me(token).await;
        assert!(body["data"]["me"].is_object(), "me failed: {body}");
        if matches!(
            app.auth.cache().get(&digest, app.clock.now()),
            Lookup::Hit(_)
        ) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the instance never cached the token: is it listening?"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection of the test's own to `url` (one connection, so that
/// `pg_backend_pid()` is stable).
async fn connect(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Database::connect(options).await.expect("test connection")
}

/// Terminates the backends of the test's database that match `condition`
/// (SQL over `pg_stat_activity`), from a connection of our own, and waits
/// until they are gone (PostgreSQL 14 or later); returns how many.
async fn terminate(app: &TestApp, condition: &str) -> usize {
    let own = connect(&app.database_url).await;
    let rows = own
        .query_all_raw(sea_orm::Statement::from_string(
            own.get_database_backend(),
            format!(
                "SELECT pg_terminate_backend(pid, 5000) AS killed FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND ({condition})"
            ),
        ))
        .await
        .expect("pg_terminate_backend");
    own.close().await.expect("test connection closed");
    rows.len()
}

async fn logout(app: &TestApp, token: &str) {
    let body = app
        .graphql("mutation { logout }", json!({}), Some(token))
        .await;
    assert_eq!(body["data"]["logout"], true, "{body}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn logout_on_one_instance_is_refused_by_the_other_within_a_second() {
    let (a, b, user) = pair().await;
    let token = a.login(&user).await;
    warm_on(&b, &token).await;

    logout(&a, &token).await;

    assert_eq!(wait_for_refusal(&b, &token).await, "INVALID_TOKEN");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn logout_all_on_one_instance_is_refused_by_the_other_within_a_second() {
    let (a, b, user) = pair().await;
    let (first, second) = (a.login(&user).await, a.login(&user).await);
    warm_on(&b, &first).await;
    warm_on(&b, &second).await;

    let body = a
        .graphql("mutation { logoutAll }", json!({}), Some(&second))
        .await;
    assert_eq!(body["data"]["logoutAll"], 2, "{body}");

    assert_eq!(wait_for_refusal(&b, &first).await, "INVALID_TOKEN");
    assert_eq!(wait_for_refusal(&b, &second).await, "INVALID_TOKEN");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn revoke_session_on_one_instance_is_refused_by_the_other_within_a_second() {
    let (a, b, user) = pair().await;
    let (victim, keeper) = (a.login(&user).await, a.login(&user).await);
    warm_on(&b, &victim).await;
    warm_on(&b, &keeper).await;
    let sessions = a
        .graphql("{ sessions { id current } }", json!({}), Some(&keeper))
        .await;
    let victim_id = sessions["data"]["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == false)
        .expect("the other session")["id"]
        .clone();

    let body = a
        .graphql(
            "mutation($id: ID!) { revokeSession(id: $id) }",
            json!({ "id": victim_id }),
            Some(&keeper),
        )
        .await;
    assert_eq!(body["data"]["revokeSession"], true, "{body}");

    assert_eq!(wait_for_refusal(&b, &victim).await, "INVALID_TOKEN");
    // Only that session: the other token still works on B.
    assert_eq!(
        b.me(&keeper).await["data"]["me"]["username"],
        user.username.as_str()
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn change_password_on_one_instance_is_refused_by_the_other_within_a_second() {
    let (a, b, user) = pair().await;
    let token = a.login(&user).await;
    warm_on(&b, &token).await;

    let new_password = format!("{} {} {}", random_text(8), random_text(8), random_text(8));
    let body = a
        .graphql(
            "mutation($o: String!, $n: String!) { changePassword(oldPassword: $o, newPassword: $n) { token } }",
            json!({ "o": user.password, "n": new_password }),
            Some(&token),
        )
        .await;
    let fresh = body["data"]["changePassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("changePassword failed: {body}"))
        .to_owned();

    assert_eq!(wait_for_refusal(&b, &token).await, "INVALID_TOKEN");
    assert!(b.me(&fresh).await["data"]["me"].is_object());
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn cli_set_password_is_refused_by_every_instance_within_a_second() {
    let (a, b, user) = pair().await;
    let (on_a, on_b) = (a.login(&user).await, b.login(&user).await);
    warm_on(&a, &on_a).await;
    warm_on(&b, &on_a).await;
    warm_on(&b, &on_b).await;

    let new_password = format!("{} {} {}", random_text(8), random_text(8), random_text(8));
    let output = cli(
        &a.database_url,
        &["user", "set-password", &user.username, "--password-stdin"],
        Some(format!("{new_password}\n")),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for (app, token) in [(&a, &on_a), (&b, &on_a), (&b, &on_b)] {
        assert_eq!(wait_for_refusal(app, token).await, "INVALID_TOKEN");
    }
    let renewed = TestUser {
        username: user.username.clone(),
        password: new_password,
    };
    assert!(b.me(&b.login(&renewed).await).await["data"]["me"].is_object());
}

/// Runs `authql user COMMAND USERNAME extra…` while each of two instances
/// has one of the user's tokens cached; both must refuse it within a
/// second, and the password must no longer sign in.
async fn cli_command_is_refused_by_every_instance_within_a_second(command: &str, extra: &[&str]) {
    let (a, b, user) = pair().await;
    let (on_a, on_b) = (a.login(&user).await, b.login(&user).await);
    warm_on(&a, &on_a).await;
    warm_on(&b, &on_b).await;

    let mut args = vec!["user", command, &user.username];
    args.extend(extra);
    let output = cli(&a.database_url, &args, None).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(wait_for_refusal(&a, &on_a).await, "INVALID_TOKEN");
    assert_eq!(wait_for_refusal(&b, &on_b).await, "INVALID_TOKEN");
    let body = b.login_as(&user.username, &user.password).await;
    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn cli_deactivate_is_refused_by_every_instance_within_a_second() {
    cli_command_is_refused_by_every_instance_within_a_second("deactivate", &[]).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn cli_delete_is_refused_by_every_instance_within_a_second() {
    cli_command_is_refused_by_every_instance_within_a_second("delete", &["--yes"]).await;
}

/// Settings of an instance with registration open, mailing into `dir`.
fn mailing_into(dir: &std::path::Path) -> impl Fn(&mut Settings) + '_ {
    move |s| {
        s.mail_dir = Some(dir.to_owned());
        s.registration = Registration::Open;
        s.email_verification = EmailVerification::Optional;
    }
}

/// Two instances mailing into one directory.
async fn mailing_pair(dir: &std::path::Path) -> (TestApp, TestApp) {
    let a = spawn_postgres_app_with(mailing_into(dir)).await;
    let b = a.spawn_sibling(mailing_into(dir)).await;
    (a, b)
}

/// `me { email emailVerified }` on `app`, polled for up to a second until
/// it is `wanted` (a notice from another instance is asynchronous);
/// returns the last answer. A second is far below `cache-ttl` (300 s): an
/// instance that waited for its entry to expire would fail.
async fn wait_for_address(app: &TestApp, token: &str, wanted: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let body = app
            .graphql("{ me { email emailVerified } }", json!({}), Some(token))
            .await;
        let me = body["data"]["me"].clone();
        if me == *wanted || Instant::now() >= deadline {
            return me;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const VERIFY: &str = "mutation($t: String!) { verifyEmail(token: $t) }";

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn an_address_verified_on_one_instance_shows_verified_on_the_other_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = mailing_pair(dir.path()).await;
    let body = a
        .graphql(
            "mutation($u: String!, $e: String!, $p: String!) { register(username: $u, email: $e, password: $p) { session { token } } }",
            json!({ "u": "verifier", "e": "verifier@example.com", "p": "a registered passphrase, long enough" }),
            None,
        )
        .await;
    let token = body["data"]["register"]["session"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("register failed: {body}"))
        .to_owned();
    let link = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqv_");
    warm_on(&b, &token).await;
    let unverified = json!({ "email": "verifier@example.com", "emailVerified": false });
    assert_eq!(wait_for_address(&b, &token, &unverified).await, unverified);

    let body = a.graphql(VERIFY, json!({ "t": link }), None).await;
    assert_eq!(body["data"]["verifyEmail"], true, "{body}");

    let verified = json!({ "email": "verifier@example.com", "emailVerified": true });
    assert_eq!(wait_for_address(&b, &token, &verified).await, verified);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn an_email_change_confirmed_on_one_instance_shows_on_the_other_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = mailing_pair(dir.path()).await;
    let user = a.create_user_with_email("before@example.com").await;
    let token = a.login(&user).await;
    warm_on(&b, &token).await;
    let body = a
        .graphql(
            "mutation($p: String!, $e: String!) { changeEmail(password: $p, newEmail: $e) }",
            json!({ "p": user.password, "e": "after@example.com" }),
            Some(&token),
        )
        .await;
    assert_eq!(body["data"]["changeEmail"], true, "{body}");
    let link = wait_for_mails(dir.path(), 2)
        .await
        .iter()
        .find(|m| m.contains("To: after@example.com"))
        .map(|m| token_in(m, "aqe_"))
        .expect("the new address gets the link");
    let before = json!({ "email": "before@example.com", "emailVerified": true });
    assert_eq!(wait_for_address(&b, &token, &before).await, before);

    let body = a.graphql(VERIFY, json!({ "t": link }), None).await;
    assert_eq!(body["data"]["verifyEmail"], true, "{body}");

    let after = json!({ "email": "after@example.com", "emailVerified": true });
    assert_eq!(wait_for_address(&b, &token, &after).await, after);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn a_password_reset_on_one_instance_is_refused_by_the_other_within_a_second() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = mailing_pair(dir.path()).await;
    let user = a.create_user_with_email("forgetful@example.com").await;
    let on_b = b.login(&user).await;
    warm_on(&b, &on_b).await;
    let body = a
        .graphql(
            "mutation { requestPasswordReset(email: \"forgetful@example.com\") }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
    let link = token_in(&wait_for_mails(dir.path(), 1).await[0], "aqr_");

    let body = a
        .graphql(
            "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) { token } }",
            json!({ "t": link, "p": "a fresh passphrase after the reset" }),
            None,
        )
        .await;
    let fresh = body["data"]["resetPassword"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("resetPassword failed: {body}"))
        .to_owned();

    assert_eq!(wait_for_refusal(&b, &on_b).await, "INVALID_TOKEN");
    assert!(b.me(&fresh).await["data"]["me"].is_object());
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn a_killed_listener_lets_no_revoked_token_through_and_listens_again() {
    let (a, b, user) = pair().await;
    let token = a.login(&user).await;
    warm_on(&b, &token).await;

    // A listener's last statement is its LISTEN, or its heartbeat once it
    // has been quiet for a second.
    let listeners = format!(
        "query ILIKE 'LISTEN%' OR query = '{}'",
        authql::auth::listener::HEARTBEAT_QUERY
    );
    let killed = terminate(&a, &listeners).await;
    assert!(
        killed >= 2,
        "expected both instances' listeners, killed {killed}"
    );
    // Revoked right after the kill: B cannot hear this one, and must not
    // accept the token even once (its connection closed before the
    // revocation committed).
    logout(&a, &token).await;
    for _ in 0..5 {
        assert_eq!(error_reason(&b.me(&token).await), "INVALID_TOKEN");
    }

    // B listens again: it caches once more (it bypasses its cache while
    // deaf), and a later revocation on A reaches it.
    let later = a.login(&user).await;
    warm_on(&b, &later).await;
    logout(&a, &later).await;
    assert_eq!(wait_for_refusal(&b, &later).await, "INVALID_TOKEN");
}

/// A request's outcome while the database misbehaves: it answered (no hang
/// past the pool's bounded timeouts), and either worked or failed with
/// INTERNAL_SERVER_ERROR.
fn worked_or_failed_cleanly(what: &str, body: &Value, data: &str) -> bool {
    if body["data"][data].is_object() {
        return true;
    }
    assert_eq!(error_code(body), "INTERNAL_SERVER_ERROR", "{what}: {body}");
    assert_eq!(body["errors"][0]["message"], "internal server error");
    false
}

/// Runs `request` until it works, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut request: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !request().await {
        assert!(Instant::now() < deadline, "{what} did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn killed_pool_connections_fail_cleanly_and_service_resumes() {
    let app = spawn_postgres_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;

    // Kill every connection of the server, again and again, while
    // requests run.
    let killer = async {
        for _ in 0..5 {
            terminate(&app, "true").await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let requests = async {
        let mut outcomes = Vec::new();
        for _ in 0..10 {
            let (login, me) =
                tokio::join!(app.login_as(&user.username, &user.password), app.me(&token));
            outcomes.push(worked_or_failed_cleanly("login", &login, "login"));
            outcomes.push(worked_or_failed_cleanly("me", &me, "me"));
        }
        outcomes
    };
    let started = Instant::now();
    let ((), _outcomes) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(killer, requests)
    })
    .await
    .expect("requests answered in bounded time");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Healed by itself: no restart, no help.
    eventually(Duration::from_secs(10), "login", || async {
        worked_or_failed_cleanly(
            "login",
            &app.login_as(&user.username, &user.password).await,
            "login",
        )
    })
    .await;
    assert!(app.me(&token).await["data"]["me"].is_object());
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// The name of the database in a PostgreSQL URL.
fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .status()
        .as_u16()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn readyz_is_503_while_the_database_refuses_connections_and_200_after() {
    let app = spawn_postgres_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    assert_eq!(readyz(&app).await, 200);

    let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let admin = connect(&admin_url).await;
    let name = database_name(&app.database_url);
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        ))
        .await
        .expect("connections refused");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .expect("backends terminated");

    let started = Instant::now();
    assert_eq!(readyz(&app).await, 503);
    let body = app.login_as(&user.username, &user.password).await;
    assert!(!worked_or_failed_cleanly("login", &body, "login"));
    // The cache may still serve a token it can vouch for; if not, the
    // failure is clean.
    worked_or_failed_cleanly("me", &app.me(&token).await, "me");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "requests must not hang while the database is away"
    );

    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .await
        .expect("connections allowed");
    admin.close().await.expect("admin closed");

    eventually(Duration::from_secs(10), "readyz", || async {
        readyz(&app).await == 200
    })
    .await;
    eventually(Duration::from_secs(10), "login", || async {
        worked_or_failed_cleanly(
            "login",
            &app.login_as(&user.username, &user.password).await,
            "login",
        )
    })
    .await;
    assert!(app.me(&token).await["data"]["me"].is_object());
}

/// A TCP relay in front of PostgreSQL that the test can cut (every link
/// closed, new connections refused), freeze (bytes stop flowing, sockets
/// stay open: a silent network partition) and restore: a database that
/// becomes unreachable from one instance.
struct Relay {
    addr: SocketAddr,
    upstream: String,
    accept: Option<JoinHandle<()>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let mut relay = Self {
            addr: listener.local_addr().expect("relay address"),
            upstream,
            accept: None,
            links: Arc::default(),
            frozen: tokio::sync::watch::Sender::new(false),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, links) = (self.upstream.clone(), self.links.clone());
        let frozen = self.frozen.subscribe();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut frozen = frozen.clone();
                let link = tokio::spawn(async move {
                    if !*frozen.borrow() {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                                _ = frozen.wait_for(|frozen| *frozen) => {}
                            }
                            // Frozen: hold both sockets open, relay nothing.
                            std::future::pending::<()>().await;
                        }
                    }
                    std::future::pending::<()>().await;
                });
                links.lock().unwrap().push(link.abort_handle());
            }
        }));
    }

    /// Stops relaying without closing anything: connections stay open and
    /// silent, new ones are accepted and never answered.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Closes every link and the listening socket: connecting is refused.
    async fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
        // Let the aborted links drop their sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Relays again (after `cut`).
    async fn restore(&mut self) {
        self.frozen.send_replace(false);
        let listener = TcpListener::bind(self.addr).await.expect("relay rebinds");
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// `url` with its host and port (`host:port`, default port 5432), and the
/// same URL going through `relay` instead; `None` for a URL without a TCP
/// host (a Unix socket).
fn split_host(url: &str) -> Option<(String, impl Fn(SocketAddr) -> String + '_)> {
    let scheme_end = url.find("://")? + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host = &authority[host_start..];
    if host.is_empty() {
        return None;
    }
    let upstream = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let via = move |relay: SocketAddr| {
        format!(
            "{}{relay}{}",
            &url[..scheme_end + host_start],
            &url[authority_end..]
        )
    };
    Some((upstream, via))
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn an_instance_cut_off_from_the_database_accepts_no_revoked_token_and_recovers() {
    let (a, _, user) = pair().await;
    let (upstream, via) = split_host(&a.database_url)
        .expect("TEST_DATABASE_URL names a TCP host (this test relays to it)");
    let mut relay = Relay::start(upstream).await;
    let b = a.spawn_sibling(|s| s.database_url = via(relay.addr)).await;
    let token = a.login(&user).await;
    warm_on(&b, &token).await;
    assert_eq!(readyz(&b).await, 200);

    relay.cut().await;
    // B cannot reach the database, A still can.
    assert_eq!(readyz(&b).await, 503);
    logout(&a, &token).await;

    let (_, before) = scrape(&b).await;
    let started = Instant::now();
    let body = b.me(&token).await;
    assert!(
        !body["data"]["me"].is_object(),
        "B accepted a token revoked while it could not hear revocations: {body}"
    );
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "requests must fail in bounded time"
    );

    let (_, after) = scrape(&b).await;
    let errors = |samples| total(samples, "authql_database_errors_total", &[]);
    assert!(
        errors(&after) > errors(&before),
        "the database error was not counted"
    );

    relay.restore().await;
    eventually(Duration::from_secs(10), "readyz", || async {
        readyz(&b).await == 200
    })
    .await;
    assert_eq!(error_reason(&b.me(&token).await), "INVALID_TOKEN");
    // Listening again: a fresh token is cached and a revocation on A
    // reaches B.
    let fresh = b.login(&user).await;
    warm_on(&b, &fresh).await;
    logout(&a, &fresh).await;
    assert_eq!(wait_for_refusal(&b, &fresh).await, "INVALID_TOKEN");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]
async fn an_instance_whose_database_goes_silent_stops_trusting_its_cache() {
    let (a, _, user) = pair().await;
    let (upstream, via) = split_host(&a.database_url)
        .expect("TEST_DATABASE_URL names a TCP host (this test relays to it)");
    let mut relay = Relay::start(upstream).await;
    let b = a.spawn_sibling(|s| s.database_url = via(relay.addr)).await;
    let token = a.login(&user).await;
    warm_on(&b, &token).await;

    // No FIN, no RST: B's connections just stop answering, so B cannot
    // tell from its socket that it went deaf.
    relay.freeze();
    logout(&a, &token).await;

    // B may serve the token from its cache only while it can vouch for
    // it: a few seconds at most, not until the entry expires.
    let frozen_at = Instant::now();
    let refused = loop {
        let body = b.me(&token).await;
        if !body["data"]["me"].is_object() {
            break body;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(5),
            "B still trusts its cache {:?} after its database went silent",
            frozen_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(error_code(&refused), "INTERNAL_SERVER_ERROR", "{refused}");

    relay.cut().await;
    relay.restore().await;
    eventually(Duration::from_secs(15), "readyz", || async {
        readyz(&b).await == 200
    })
    .await;
    assert_eq!(error_reason(&b.me(&token).await), "INVALID_TOKEN");
    let fresh = b.login(&user).await;
    warm_on(&b, &fresh).await;
    logout(&a, &fresh).await;
    assert_eq!(wait_for_refusal(&b, &fresh).await, "INVALID_TOKEN");
}
