//! The real `authql` binary as its own process, for the tests that need
//! what an in-process server shares with the test (the metrics recorder,
//! the log, signals, the process's memory).

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

/// The `authql` binary serving, its stderr captured.
pub struct Server {
    pub child: Child,
    pub address: String,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub client: reqwest::Client,
}

pub fn authql_command(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authql"));
    command
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env("AUTHQL_BCRYPT_COST", "4")
        .env_remove("AUTHQL_LISTEN")
        .env_remove("AUTHQL_LOG_FORMAT");
    command
}

/// Runs `authql args…` to its end against `database_url` (cheap bcrypt, no
/// `AUTHQL_LISTEN` of the test's own), with `stdin` as its input when given.
pub fn run_authql(args: &[&str], database_url: &str, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_authql"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("AUTHQL_BCRYPT_COST", "4")
        .env_remove("AUTHQL_LISTEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("authql runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// [`run_authql`] off the async thread, so that a server in this process
/// keeps answering while the command runs.
pub async fn run_authql_off_thread(
    database_url: &str,
    args: &[&str],
    stdin: Option<String>,
) -> Output {
    let database_url = database_url.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_authql(&args, &database_url, stdin.as_deref())
    })
    .await
    .expect("cli task")
}

/// A fresh SQLite file holding one user; returns its directory and URL.
pub fn database_with_user(username: &str, password: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("authql.db").display()
    );
    let mut child = authql_command(&url)
        .args(["user", "create", username, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("authql runs");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("password written");
    let output = child.wait_with_output().expect("user create finishes");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (dir, url)
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Server {
    /// Starts `authql serve --log-format json` on a free port with `args`,
    /// and waits until it answers `/healthz`.
    pub async fn start(database_url: &str, args: &[&str]) -> Self {
        Self::start_with_format(database_url, "json", args).await
    }

    /// [`start`](Self::start) with extra environment variables.
    pub async fn start_with_env(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(database_url, "json", args, env).await
    }

    pub async fn start_with_format(database_url: &str, log_format: &str, args: &[&str]) -> Self {
        Self::launch(database_url, log_format, args, &[]).await
    }

    async fn launch(
        database_url: &str,
        log_format: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let address = format!("127.0.0.1:{}", free_port());
            let mut child = authql_command(database_url)
                .args(["serve", "--listen", &address, "--log-format", log_format])
                .args(["--login-rate", "1000/second", "--hash-concurrency", "2"])
                .args(args)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("authql serve runs");
            let log = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().expect("stderr");
            let lines = log.clone();
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
            let mut server = Self {
                child,
                address: format!("http://{address}"),
                log,
                reader: Some(reader),
                client: client.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(response) = client.get(server.url("/healthz")).send().await {
                    if response.status() == 200 {
                        return server;
                    }
                }
                if server.child.try_wait().expect("child status").is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server did not start: {:?}",
                    server.log_lines()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // It exited: unless someone took the port meanwhile, that is a
            // failure.
            let log = server.finish().await.1;
            assert!(
                attempts < 3 && log.iter().any(|l| l.contains("cannot listen")),
                "the server exited at start: {log:?}"
            );
        }
    }

    /// The process's resident memory in KiB (`VmRSS` of /proc/PID/status).
    pub fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        self.graphql_with(query, variables, token, None).await.1
    }

    /// Posts one operation, with `X-Request-Id` when given; returns the
    /// response's `X-Request-Id` and body.
    pub async fn graphql_with(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
        request_id: Option<&str>,
    ) -> (String, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .header("user-agent", "audit-test/1.0")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), 200);
        let id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (id, response.json().await.expect("JSON body"))
    }

    pub fn signal_terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its status and log.
    pub async fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the server did not exit: {:?}", self.log_lines());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        (status, self.log_lines())
    }

    /// SIGTERM, then the exit status and the whole log.
    pub async fn stop(mut self) -> (ExitStatus, Vec<String>) {
        self.signal_terminate();
        self.finish().await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every log line as JSON: `--log-format json` writes one object a line.
pub fn json_lines(log: &[String]) -> Vec<Value> {
    log.iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            assert!(value.is_object(), "not a JSON object: {line}");
            value
        })
        .collect()
}
