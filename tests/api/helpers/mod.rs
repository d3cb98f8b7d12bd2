//! The test harness: each test starts the real server on a random loopback
//! port over its own database (a SQLite file in a temporary directory, or a
//! fresh PostgreSQL database when `TEST_DATABASE_URL` is set) and talks to
//! it over HTTP, as clients do.
//!
//! Everything the test files share lives here, and no test file imports
//! another: [`browser`] (headless Chromium over the DevTools protocol),
//! [`captcha_stub`] (a siteverify stand-in), [`mail`] (mails written to
//! `--mail-dir`), [`metrics`] (reading `/metrics`), [`process`] (the real
//! binary as its own process), [`smtp_server`] (an SMTP server on loopback).
//!
//! A test that needs PostgreSQL is marked
//! `#[ignore = "needs PostgreSQL: set TEST_DATABASE_URL and run with --ignored"]`
//! and starts with [`spawn_postgres_app`]. A plain `cargo test` lists it as
//! ignored, with that reason, and counts it among the ignored: it never
//! counts as passed after asserting nothing, as an early `return` on SQLite
//! would. `.ci/run` runs these with `TEST_DATABASE_URL` set and
//! `-- --ignored`; `--ignored` without `TEST_DATABASE_URL` fails them
//! loudly. `#[ignore]` in this binary is kept for that one reason, so
//! `--ignored` runs exactly the PostgreSQL-only tests.

pub mod browser;
pub mod captcha_stub;
pub mod mail;
pub mod metrics;
pub mod process;
pub mod smtp_server;

use std::sync::Arc;
use std::time::Duration;

use authql::auth::passwords::Password;
use authql::auth::AuthService;
use authql::clock::Clock;
use authql::config::Settings;
use authql::db::entities::user;
use authql::startup::App;
use rand::distr::{Alphanumeric, SampleString as _};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, Database, EntityTrait as _, QueryFilter as _,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub auth: Arc<AuthService>,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _storage: Arc<Storage>,
}

/// A user created for a test, with credentials it can log in with.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub username: String,
    pub password: String,
}

/// Where a test's database lives; removed when the last app using it ends.
pub enum Storage {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime: use a thread of our own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let admin = Database::connect(&admin_url).await?;
                    admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await?;
                    admin.close().await
                })?;
                anyhow::Ok(())
            })
            .join();
        }
    }
}

/// Settings every test starts from: a random port, cheap bcrypt, and a
/// login rate high enough to stay out of the way.
pub fn test_settings() -> Settings {
    Settings::from_args(&[
        "--listen",
        "127.0.0.1:0",
        "--bcrypt-cost",
        "4",
        "--login-rate",
        "10000/second",
        "--hash-concurrency",
        "2",
        "--password-min-length",
        "15",
    ])
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with `configure` applied to the test settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let storage = Arc::new(new_storage().await);
    let database_url = storage.url();
    start(database_url, storage, Clock::default(), configure).await
}

/// Which database a test needs, whatever `TEST_DATABASE_URL` says.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    /// Fails the test when `TEST_DATABASE_URL` is unset.
    Postgres,
}

/// A new, empty database (no migration applied), for a test that builds
/// an old schema itself and then starts a server on it with
/// [`spawn_app_on`]. Returns it and its URL.
pub async fn empty_database(backend: Backend) -> (Arc<Storage>, String) {
    let storage = match backend {
        Backend::Sqlite => Storage::Sqlite(tempfile::tempdir().expect("temporary directory")),
        Backend::Postgres => new_postgres_storage(&postgres_admin_url()).await,
    };
    let url = storage.url();
    (Arc::new(storage), url)
}

/// Starts a server on `storage` with the test settings; like `authql
/// serve`, it applies the pending migrations first.
pub async fn spawn_app_on(storage: Arc<Storage>) -> TestApp {
    init_logs();
    let database_url = storage.url();
    start(database_url, storage, Clock::default(), |_| {}).await
}

/// [`spawn_app`] for a test that needs PostgreSQL; fails the test at once
/// when `TEST_DATABASE_URL` is unset, so that it cannot pass on SQLite
/// without asserting anything.
pub async fn spawn_postgres_app() -> TestApp {
    spawn_postgres_app_with(|_| {}).await
}

/// [`spawn_postgres_app`] with `configure` applied to the test settings.
pub async fn spawn_postgres_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let url = postgres_admin_url();
    let app = spawn_app_with(configure).await;
    assert!(
        app.is_postgres(),
        "TEST_DATABASE_URL is not PostgreSQL: {url}"
    );
    app
}

/// Starts a server on a copy of the SQLite database file `fixture`, made in
/// a temporary directory so the fixture itself is never written.
pub async fn spawn_app_on_copy_of(fixture: &std::path::Path) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("authql.db");
    std::fs::copy(fixture, &file).expect("fixture copied");
    let database_url = format!("sqlite://{}?mode=rwc", file.display());
    start(
        database_url,
        Arc::new(Storage::Sqlite(dir)),
        Clock::default(),
        |_| {},
    )
    .await
}

impl TestApp {
    /// A second server on the same database (another instance). It shares
    /// this app's clock, as instances share the wall time: moving one moves
    /// both.
    pub async fn spawn_sibling(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        start(
            self.database_url.clone(),
            self._storage.clone(),
            self.clock.clone(),
            configure,
        )
        .await
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs a GraphQL request; returns the HTTP status and the JSON body.
    pub async fn post(&self, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.post(self.url("/graphql")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POSTs a GraphQL request with one extra header; returns the JSON body.
    pub async fn post_with_header(&self, body: Value, name: &str, value: &str) -> Value {
        self.client
            .post(self.url("/graphql"))
            .header(name, value)
            .json(&body)
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Runs one operation; returns the JSON body.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let (status, body) = self
            .post(json!({ "query": query, "variables": variables }), token)
            .await;
        assert_eq!(status, 200, "unexpected status for {query}: {body}");
        body
    }

    /// POSTs a GraphQL request with extra `headers` (a cookie, an origin);
    /// returns the status, the `Set-Cookie` lines and the body (`Null`
    /// when it is not JSON).
    pub async fn graphql_with_headers(
        &self,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<String>, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let cookies = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("an ASCII Set-Cookie").to_owned())
            .collect();
        (
            status,
            cookies,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Creates an active user with a random name and a strong password,
    /// whose address is `USERNAME@example.com`.
    pub async fn create_user(&self) -> TestUser {
        let username = format!("user_{}", random_text(10).to_lowercase());
        let email = format!("{username}@example.com");
        self.create_named_user(username, Some(&email)).await
    }

    /// [`create_user`](Self::create_user) with the address `email` (verified,
    /// as for any user an operator creates).
    pub async fn create_user_with_email(&self, email: &str) -> TestUser {
        let username = format!("user_{}", random_text(10).to_lowercase());
        self.create_named_user(username, Some(email)).await
    }

    async fn create_named_user(&self, username: String, email: Option<&str>) -> TestUser {
        let user = TestUser {
            username,
            password: format!("{} {} {}", random_text(8), random_text(8), random_text(8)),
        };
        self.auth
            .create_user(&user.username, email, Password::new(&user.password))
            .await
            .expect("user created");
        user
    }

    /// The raw `login` answer.
    pub async fn login_as(&self, username: &str, password: &str) -> Value {
        self.graphql(
            "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token expiresAt user { id username lastLogin } } }",
            json!({ "u": username, "p": password }),
            None,
        )
        .await
    }

    /// Logs in and returns the token, failing the test otherwise.
    pub async fn login(&self, user: &TestUser) -> String {
        let body = self.login_as(&user.username, &user.password).await;
        body["data"]["login"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login failed: {body}"))
            .to_owned()
    }

    /// `{ me { id username } }` with `token`.
    pub async fn me(&self, token: &str) -> Value {
        self.graphql(
            "{ me { id username isActive lastLogin } }",
            json!({}),
            Some(token),
        )
        .await
    }

    /// Stops this server, then starts a new one on the same database with
    /// the same clock and `configure` applied: a restart, as far as the
    /// database can tell (the new process starts with empty memory).
    pub async fn restart(self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let (database_url, storage, clock) = (
            self.database_url.clone(),
            self._storage.clone(),
            self.clock.clone(),
        );
        self.stop().await;
        start(database_url, storage, clock, configure).await
    }

    /// Stops the server as SIGTERM would and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The `extensions.code` of the first error.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {body}"))
}

/// The `extensions.reason` of the first error.
pub fn error_reason(body: &Value) -> &str {
    body["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or("")
}

/// The `extensions.reasons` of the first error.
pub fn error_reasons(body: &Value) -> Vec<String> {
    body["errors"][0]["extensions"]["reasons"]
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `me` for up to a second (cross-process notices are asynchronous).
pub async fn wait_for_refusal(app: &TestApp, token: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let body = app.me(token).await;
        if body["errors"].is_array() || tokio::time::Instant::now() >= deadline {
            return error_reason(&body).to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The user's consecutive failed password checks, read from the database.
pub async fn failed_logins(app: &TestApp, username: &str) -> i32 {
    user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(app.auth.db())
        .await
        .expect("users readable")
        .expect("the user exists")
        .failed_logins
}

pub fn random_text(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

async fn start(
    database_url: String,
    storage: Arc<Storage>,
    clock: Clock,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = test_settings();
    settings.database_url = database_url.clone();
    configure(&mut settings);
    let app = App::build_with_clock(settings, clock.clone())
        .await
        .expect("app builds");
    let address = format!("http://{}", app.local_addr());
    let auth = app.state().auth.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // On PostgreSQL the cache is bypassed until the instance listens for
    // revocations; wait for that so cache behaviour is deterministic.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while auth.cache().is_bypassed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds");
    TestApp {
        address,
        client,
        clock,
        auth,
        database_url,
        stop: Some(stop),
        server: Some(server),
        _storage: storage,
    }
}

async fn new_storage() -> Storage {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => new_postgres_storage(&admin_url).await,
        _ => Storage::Sqlite(tempfile::tempdir().expect("temporary directory")),
    }
}

/// `TEST_DATABASE_URL`; fails the test when it is unset, so that a test
/// that needs PostgreSQL cannot pass on SQLite without asserting anything.
fn postgres_admin_url() -> String {
    let url = std::env::var("TEST_DATABASE_URL").unwrap_or_default();
    assert!(
        !url.is_empty(),
        "this test needs PostgreSQL: set TEST_DATABASE_URL (e.g. \
         postgres://postgres@127.0.0.1:5432/postgres)"
    );
    url
}

/// A uniquely named database created through `admin_url`.
async fn new_postgres_storage(admin_url: &str) -> Storage {
    let name = format!("authql_test_{}", random_text(12).to_lowercase());
    let admin = Database::connect(admin_url)
        .await
        .expect("TEST_DATABASE_URL reachable");
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("test database created");
    admin.close().await.expect("admin connection closed");
    Storage::Postgres {
        admin_url: admin_url.to_owned(),
        name,
    }
}

impl Storage {
    /// The URL a server or the test connects with.
    fn url(&self) -> String {
        match self {
            Storage::Sqlite(dir) => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("authql.db").display()
            ),
            Storage::Postgres { admin_url, name } => database_url_for(admin_url, name),
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
fn database_url_for(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        authql::telemetry::init(authql::config::LogFormat::Text);
    }
}
