//! Forward authentication behind a real nginx: `auth_request` to authql's
//! `/auth/verify` in front of an upstream started by the test, which echoes
//! the `X-Authql-User-Id` nginx sets from authql's answer. A signed-in
//! request reaches it as its user (a header the client forged is replaced);
//! a request without a token, with a bad one or with a revoked one gets 401
//! from nginx and never reaches it. nginx must be installed (`.ci/run`
//! installs it): without it the test fails rather than pass unchecked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::listener::{Acceptor as _, Listener as _, TcpListener};
use poem::web::Data;
use poem::{handler, EndpointExt as _, Request, Route, Server};
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

/// What reached the upstream: the `X-Authql-User-Id` of each request.
type Hits = Arc<Mutex<Vec<Option<String>>>>;

#[handler]
fn echo(req: &Request, Data(hits): Data<&Hits>) -> String {
    let user = req
        .headers()
        .get("x-authql-user-id")
        .map(|value| value.to_str().unwrap().to_owned());
    hits.lock().unwrap().push(user.clone());
    format!("upstream saw user {}", user.unwrap_or_default())
}

/// Starts the upstream on a random loopback port.
async fn start_upstream() -> (SocketAddr, Hits) {
    let hits = Hits::default();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("upstream bound");
    let address = *acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("a TCP address");
    let app = Route::new().at("/*path", echo).data(hits.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    (address, hits)
}

/// An nginx process of its own (no daemon, no master), its files in a
/// temporary directory, killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(authql: &str, upstream: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = config(dir.path(), port, authql, upstream);
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let prefix = format!("{}/", dir.path().display());
        let child = Command::new(binary())
            .args(["-p", &prefix, "-c", "nginx.conf", "-e", "stderr", "-g"])
            .arg(format!(
                "daemon off; master_process off; pid {}/nginx.pid;",
                dir.path().display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nginx starts (is the nginx package installed? .ci/run installs it)");
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_until_listening().await;
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn wait_until_listening(&mut self) {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited ({status}):\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx is not listening:\n{}", self.log());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nginx` on the PATH, else where Debian puts it (`/usr/sbin`, which is
/// not on every user's PATH).
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The README's `auth_request` snippet, with the temporary paths an
/// unprivileged (or root, but foreign-directory-free) process needs.
fn config(dir: &Path, port: u16, authql: &str, upstream: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    server {{
        listen 127.0.0.1:{port};

        location = /_auth {{
            internal;
            proxy_pass {authql}/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization $http_authorization;
        }}

        location / {{
            auth_request /_auth;
            auth_request_set $authql_user $upstream_http_x_authql_user_id;
            proxy_set_header X-Authql-User-Id $authql_user;
            proxy_pass http://{upstream};
        }}
    }}
}}
"#
    )
}

async fn through_nginx(
    app: &TestApp,
    nginx: &Nginx,
    token: Option<&str>,
    extra: Option<(&str, &str)>,
) -> (u16, Option<String>, String) {
    let mut request = app.client.get(nginx.url("/api/things"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("nginx answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

#[tokio::test]
async fn nginx_auth_request_lets_only_signed_in_requests_reach_the_upstream() {
    let app = spawn_app().await;
    let (upstream, hits) = start_upstream().await;
    let nginx = Nginx::start(&app.address, upstream).await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let id = app.me(&token).await["data"]["me"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Signed in: the upstream sees the user, even over a forged header.
    let (status, _, body) = through_nginx(&app, &nginx, Some(&token), None).await;
    assert_eq!(status, 200, "{body}\n{}", nginx.log());
    assert_eq!(body, format!("upstream saw user {id}"));
    let (status, _, body) =
        through_nginx(&app, &nginx, Some(&token), Some(("X-Authql-User-Id", "1"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("upstream saw user {id}"));
    assert_eq!(
        *hits.lock().unwrap(),
        vec![Some(id.clone()), Some(id.clone())]
    );

    // No token, a made-up one, another scheme: 401, and nginx passes on
    // authql's challenge.
    let (status, challenge, _) = through_nginx(&app, &nginx, None, None).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
    let (status, challenge, _) = through_nginx(&app, &nginx, Some("aql_nope"), None).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains(r#"error="invalid_token""#));
    let (status, _, _) = through_nginx(
        &app,
        &nginx,
        None,
        Some(("Authorization", "Basic YWxpY2U6c2VjcmV0")),
    )
    .await;
    assert_eq!(status, 401);

    // Revoked: refused at once, though authql had it cached.
    let body = app
        .graphql("mutation { logout }", json!({}), Some(&token))
        .await;
    assert_eq!(body["data"]["logout"], true);
    let (status, challenge, _) = through_nginx(&app, &nginx, Some(&token), None).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains(r#"error="invalid_token""#));

    assert_eq!(
        hits.lock().unwrap().len(),
        2,
        "refused requests reached the upstream"
    );
}
