//! A stand-in for the captcha services' siteverify endpoint: a real HTTP
//! server on loopback, started by a test and told what to answer, and a
//! `login` that sends a captcha answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authql::config::Settings;
use poem::http::StatusCode;
use poem::listener::{Acceptor as _, TcpAcceptor};
use poem::web::Data;
use poem::{handler, EndpointExt as _, IntoResponse as _, Response, Route, Server};
use serde_json::{json, Value};

use super::{TestApp, TestUser};

/// The secret the server is given; no answer or log may contain it.
pub const SECRET: &str = "stub-secret-must-never-leak-9f3a";

/// `login` with a captcha answer in `$c`.
pub const LOGIN: &str = "mutation($u: String!, $p: String!, $c: String) { login(username: $u, password: $p, captcha: $c) { token user { username } } }";

/// What the stand-in answers.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with a JSON body that would otherwise pass.
    Status(u16),
    /// 200 with this body, as `text/html`.
    Text(&'static str),
    /// Records the request, then answers nothing for a long time.
    Hang,
    /// Records the request, then waits until the test notifies, and
    /// refuses: a verification that lasts exactly as long as a test needs.
    Held(Arc<tokio::sync::Notify>),
}

/// A siteverify stand-in. Records every request's form fields.
pub struct CaptchaStub {
    pub url: String,
    state: Arc<StubState>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

struct StubState {
    reply: Mutex<Reply>,
    requests: Mutex<Vec<HashMap<String, String>>>,
}

impl CaptchaStub {
    pub async fn start(reply: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("stub binds");
        let acceptor = TcpAcceptor::from_tokio(listener).expect("stub acceptor");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a socket address");
        let state = Arc::new(StubState {
            reply: Mutex::new(reply),
            requests: Mutex::new(Vec::new()),
        });
        let app = Route::new()
            .at("/siteverify", poem::post(siteverify))
            .data(state.clone());
        let server = tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self {
            url: format!("http://{addr}/siteverify"),
            state,
            server,
        }
    }

    pub fn reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Settings that point the server at this stub.
    pub fn configure(&self, s: &mut Settings) {
        s.captcha_secret = Some(SECRET.into());
        s.captcha_verify_url = Some(self.url.clone());
    }
}

impl Drop for CaptchaStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[handler]
async fn siteverify(body: String, Data(state): Data<&Arc<StubState>>) -> Response {
    let fields: HashMap<String, String> = reqwest::Url::parse(&format!("http://stub/?{body}"))
        .expect("form body")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    state.requests.lock().unwrap().push(fields);
    let reply = state.reply.lock().unwrap().clone();
    match reply {
        Reply::Json(value) => Response::builder()
            .content_type("application/json")
            .body(value.to_string()),
        Reply::Status(code) => Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .content_type("application/json")
            .body(json!({ "success": true }).to_string()),
        Reply::Text(text) => Response::builder().content_type("text/html").body(text),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json!({ "success": true }).to_string().into_response()
        }
        Reply::Held(gate) => {
            gate.notified().await;
            Response::builder()
                .content_type("application/json")
                .body(json!({ "success": false }).to_string())
        }
    }
}

/// A reCAPTCHA v2 (or Turnstile, hCaptcha) pass.
pub fn passed() -> Reply {
    Reply::Json(json!({
        "success": true,
        "challenge_ts": "2024-05-01T12:00:00Z",
        "hostname": "app.example.com"
    }))
}

/// `login` with a captcha answer; checks the secret is not in the answer.
pub async fn login_with(
    app: &TestApp,
    user: &TestUser,
    password: &str,
    captcha: Option<&str>,
) -> Value {
    let body = app
        .graphql(
            LOGIN,
            json!({ "u": user.username, "p": password, "c": captcha }),
            None,
        )
        .await;
    assert!(
        !body.to_string().contains(SECRET),
        "the captcha secret leaked: {body}"
    );
    body
}
