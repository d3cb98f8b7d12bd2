//! A real SMTP server on loopback, small enough to live here: a tokio
//! `TcpListener` speaking just what lettre sends (EHLO, AUTH, MAIL, RCPT,
//! DATA, QUIT). Written in the tests rather than taken from a crate or a
//! Debian package so that it needs nothing installed, starts on port 0
//! beside each test, and can refuse a delivery on purpose to test retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

/// One mail as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub recipients: Vec<String>,
    pub data: String,
    /// What the client sent after `AUTH` on this connection, if it
    /// authenticated (`PLAIN` and the base64 of `\0user\0password`).
    pub auth: Option<String>,
}

/// Starts the server; it refuses the first `refuse` DATA commands with a
/// temporary failure (451). Returns its port and what it received.
pub async fn start_smtp(refuse: usize) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let refusals = Arc::new(Mutex::new(refuse));
    let (seen, left) = (inbox.clone(), refusals.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (seen, left) = (seen.clone(), left.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 test-smtp ready\r\n").await;
                let mut recipients = Vec::new();
                let mut auth = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-test-smtp\r\n250 AUTH PLAIN LOGIN\r\n"
                    } else if upper.starts_with("HELO") {
                        b"250 test-smtp\r\n"
                    } else if upper.starts_with("AUTH ") {
                        auth = Some(line[5..].to_owned());
                        b"235 authenticated\r\n"
                    } else if upper.starts_with("MAIL FROM") {
                        recipients.clear();
                        b"250 ok\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        recipients.push(line[8..].trim().to_owned());
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        let refuse = {
                            let mut left = left.lock().unwrap();
                            let refuse = *left > 0;
                            *left = left.saturating_sub(1);
                            refuse
                        };
                        if refuse {
                            b"451 try again later\r\n"
                        } else {
                            let _ = write.write_all(b"354 go ahead\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            seen.lock().unwrap().push(Received {
                                recipients: recipients.clone(),
                                data,
                                auth: auth.clone(),
                            });
                            b"250 queued\r\n"
                        }
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, inbox)
}

/// Waits (up to 10 s) for the first mail.
pub async fn wait_for(inbox: &Arc<Mutex<Vec<Received>>>) -> Received {
    wait_for_count(inbox, 1).await.remove(0)
}

/// Waits (up to 10 s) until `count` mails have arrived; returns them all.
pub async fn wait_for_count(inbox: &Arc<Mutex<Vec<Received>>>, count: usize) -> Vec<Received> {
    for _ in 0..200 {
        let received = inbox.lock().unwrap().clone();
        if received.len() >= count {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = inbox.lock().unwrap().len();
    panic!("the SMTP server received {got} of {count} mails");
}
