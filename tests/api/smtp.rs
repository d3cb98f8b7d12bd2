//! Mail through SMTP to a real SMTP server on loopback (the one in
//! `helpers::smtp_server`, written over a tokio `TcpListener`): the server
//! sees the right recipient and link, after a refused first attempt.

use authql::auth::passwords::Password;
use serde_json::json;

use crate::helpers::smtp_server::{start_smtp, wait_for};
use crate::helpers::spawn_app_with;

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
