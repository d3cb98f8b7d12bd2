//! Mail through SMTP to a real SMTP server on loopback: a small one written
//! here over a tokio `TcpListener`, speaking just what lettre sends (EHLO,
//! MAIL, RCPT, DATA, QUIT). Written in the test rather than a crate or a
//! Debian package so that it needs nothing installed, starts on port 0
//! beside each test, and can refuse a delivery on purpose to test retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use authql::auth::passwords::Password;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use crate::helpers::spawn_app_with;

/// One mail as the server received it.
#[derive(Clone, Debug)]
struct Received {
    recipients: Vec<String>,
    data: String,
}

/// Starts the server; it refuses the first `refuse` DATA commands with a
/// temporary failure (451). Returns its port and what it received.
async fn start_smtp(refuse: usize) -> (u16, Arc<Mutex<Vec<Received>>>) {
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
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 test-smtp\r\n"
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

async fn wait_for(inbox: &Arc<Mutex<Vec<Received>>>) -> Received {
    for _ in 0..200 {
        if let Some(mail) = inbox.lock().unwrap().first().cloned() {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the SMTP server received no mail");
}

#[tokio::test]
async fn a_reset_mail_reaches_a_real_smtp_server_with_the_right_recipient_and_link_after_a_retry() {
    let (port, inbox) = start_smtp(1).await;
    let app = spawn_app_with(|s| {
        s.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        s.email_verification = authql::config::EmailVerification::Optional;
        s.reset_url = Some("https://app.example.test/reset?token={token}".into());
    })
    .await;
    app.auth
        .create_user(
            "smtp_user",
            Some("smtp.user@example.com"),
            Password::new("an old passphrase that is long enough"),
        )
        .await
        .expect("user created");

    let body = app
        .graphql(
            "mutation { requestPasswordReset(email: \"smtp.user@example.com\") }",
            json!({}),
            None,
        )
        .await;

    assert_eq!(body["data"]["requestPasswordReset"], true);
    let mail = wait_for(&inbox).await;
    assert_eq!(mail.recipients, ["<smtp.user@example.com>"]);
    let data = mail.data.replace("=\n", "").replace("=3D", "=");
    assert!(
        data.contains("https://app.example.test/reset?token=aqr_"),
        "{data}"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("authql_mails_total{outcome=\"retried\",template=\"reset\"}"));
    assert!(metrics.contains("authql_mails_total{outcome=\"sent\",template=\"reset\"}"));
}
