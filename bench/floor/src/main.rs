//! The floor of `bench/load.sh`: what any poem service pays before doing
//! work. One route answers a constant JSON body shaped like authql's answer
//! to `{ me { id username } }`, on the runtime authql uses (`#[tokio::main]`:
//! one worker per core), with poem's own server and no middleware.
//!
//! `authql-bench-floor [ADDRESS]` (default `127.0.0.1:0`) prints
//! `listening on ADDRESS` once bound, then serves until killed.

use poem::listener::{Acceptor as _, Listener as _, TcpListener};
use poem::{get, handler, Route, Server};

const BODY: &str = r#"{"data":{"me":{"id":"1","username":"bench_me"}}}"#;

#[handler]
fn constant() -> poem::Response {
    poem::Response::builder()
        .content_type("application/json")
        .body(BODY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let acceptor = TcpListener::bind(address).into_acceptor().await?;
    for local in acceptor.local_addr() {
        if let Some(socket) = local.as_socket_addr() {
            println!("listening on {socket}");
        }
    }
    Server::new_with_acceptor(acceptor)
        .run(Route::new().at("/", get(constant)))
        .await
}
