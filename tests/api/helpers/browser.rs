//! Headless Chromium (the Debian `chromium` package), driven over the
//! DevTools protocol: JSON commands on the page's WebSocket, through
//! tokio-tungstenite. A full CDP crate would add minutes of build for the
//! handful of commands a test needs (navigate, evaluate, screenshot).
//!
//! The browser reaches nothing beyond loopback: every other host resolves
//! to nothing, and any request that still tried would go to a dead proxy.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The browser binary: `CHROMIUM`, else `chromium` on the `PATH`.
fn binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Every event received, in order (requests sent, console messages).
    pub events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on a fresh profile and attaches to its first page.
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let child = Command::new(binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1280,800",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {} ({err}): install it (apt-get install chromium) \
                     or set CHROMIUM",
                    binary()
                )
            });
        let port = wait_for_port(profile.path().join("DevToolsActivePort")).await;
        let pages: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .expect("DevTools answers")
            .json()
            .await
            .expect("a page list");
        let url = pages
            .iter()
            .find(|p| p["type"] == "page")
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            .expect("a page to attach to")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("DevTools WebSocket");
        Browser {
            child,
            ws,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// Sends one command and waits for its answer, keeping the events that
    /// arrive meanwhile.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let answer = self.send(method, params).await;
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Sends one command; returns its whole answer, an error included.
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("command sent");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("the browser is connected")
                .expect("a message");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["id"] == id {
                return value;
            }
            self.events.push(value);
        }
    }

    /// Evaluates `expression` in the page; returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is true, for up to `within`. A page
    /// in the middle of a navigation may answer with an error (its context
    /// destroyed) or an exception: both count as "not yet".
    pub async fn wait_for(&mut self, expression: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let answer = self
                .send(
                    "Runtime.evaluate",
                    json!({ "expression": expression, "returnByValue": true }),
                )
                .await;
            if answer["result"]["result"]["value"] == json!(true) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let result = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().expect("image data"))
            .expect("base64")
    }

    /// The URLs of every request the page sent (needs `Network.enable`).
    pub fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium writes its DevTools port to this file once it listens.
async fn wait_for_port(file: PathBuf) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return port;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Chromium did not open its DevTools port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
