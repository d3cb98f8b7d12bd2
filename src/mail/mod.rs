//! Mail delivery, off the request path: the domain hands a [`Mail`] to the
//! [`Mailer`]'s outbox (a bounded channel) and carries on; a worker task
//! renders it from the templates in `templates/` (a plain-text and an HTML
//! part) and delivers it through lettre, SMTP or a directory of `.eml`
//! files, retrying a failed delivery with exponential backoff. A delivery
//! never decides an answer: failures are logged (without the link) and
//! counted in `/metrics`, and a full outbox drops the mail the same way.
//!
//! This module knows no rule of the domain: which mail to send and when is
//! decided in `crate::auth`.

use std::time::Duration;

use anyhow::Context as _;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::metrics;

/// Mails waiting for the worker; beyond this, new mails are dropped.
const OUTBOX_CAPACITY: usize = 1024;
/// Deliveries tried per mail before it is given up.
const MAX_ATTEMPTS: u32 = 5;
/// The wait before the first retry; doubled before each next one.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Which mail, and what goes into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// A link to `resetPassword`.
    Reset,
    /// A link to `verifyEmail` after registering (or `resendVerification`).
    Verify,
    /// To the owner of an address someone tried to register again.
    AddressTaken,
    /// A link to `verifyEmail`, to the new address of an email change.
    EmailChange,
    /// To the old address of an email change.
    EmailChangeNotice,
}

impl Template {
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Reset => (
                "Reset your password",
                include_str!("../../templates/reset.txt"),
                include_str!("../../templates/reset.html"),
            ),
            Self::Verify => (
                "Confirm your email address",
                include_str!("../../templates/verify.txt"),
                include_str!("../../templates/verify.html"),
            ),
            Self::AddressTaken => (
                "Someone tried to register with your email address",
                include_str!("../../templates/address_taken.txt"),
                include_str!("../../templates/address_taken.html"),
            ),
            Self::EmailChange => (
                "Confirm your new email address",
                include_str!("../../templates/email_change.txt"),
                include_str!("../../templates/email_change.html"),
            ),
            Self::EmailChangeNotice => (
                "Your email address is being changed",
                include_str!("../../templates/email_change_notice.txt"),
                include_str!("../../templates/email_change_notice.html"),
            ),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Verify => "verify",
            Self::AddressTaken => "address_taken",
            Self::EmailChange => "email_change",
            Self::EmailChangeNotice => "email_change_notice",
        }
    }
}

/// One mail to send. Its `Debug` hides the link, which holds a token.
pub struct Mail {
    pub to: String,
    pub template: Template,
    pub username: String,
    /// The link (or bare token) the mail carries: a secret.
    pub link: Option<SecretString>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(AsyncFileTransport<Tokio1Executor>),
}

/// The outbox: cheap to clone, never blocks a request.
#[derive(Clone)]
pub struct Mailer {
    outbox: mpsc::Sender<Mail>,
}

impl Mailer {
    /// The mailer of the settings and its worker task, or `None` when no
    /// mailer is configured. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// An SMTP URL lettre cannot use, a bad `mail-from`, or a mail
    /// directory that cannot be created.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let transport = if let Some(url) = &settings.smtp_url {
            warn_if_plaintext_password(url.expose_secret());
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                .map_err(|_| {
                    crate::config::SettingError::new(
                        "--smtp-url",
                        "[redacted]",
                        "is not an SMTP URL lettre understands",
                    )
                })?
                .build();
            Transport::Smtp(transport)
        } else if let Some(dir) = &settings.mail_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the mail directory {}", dir.display()))?;
            Transport::Dir(AsyncFileTransport::new(dir))
        } else {
            return Ok(None);
        };
        let from: Mailbox = settings.mail_from.parse().map_err(|_| {
            crate::config::SettingError::new(
                "--mail-from",
                &settings.mail_from,
                "is not a mailbox like `authql <no-reply@example.com>`",
            )
        })?;
        let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
        tokio::spawn(run_worker(transport, from, inbox));
        Ok(Some(Self { outbox }))
    }

    /// Queues a mail; never waits and never fails the caller.
    pub fn send(&self, mail: Mail) {
        let label = mail.template.label();
        if self.outbox.try_send(mail).is_err() {
            tracing::error!(template = label, "mail outbox full or closed; mail dropped");
            metrics::mail("dropped", label);
        }
    }
}

/// A bare `smtp://` URL (no `tls=required`) sends its password in clear:
/// fine on loopback, worth a warning anywhere else. Never logs the URL.
fn warn_if_plaintext_password(url: &str) {
    let Some(rest) = url.strip_prefix("smtp://") else {
        return;
    };
    if url.contains("tls=required") || url.contains("tls=opportunistic") {
        return;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return;
    };
    if !userinfo.contains(':') {
        return;
    }
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        tracing::warn!(
            "--smtp-url sends its password unencrypted to a host that is not loopback; use smtps:// or ?tls=required"
        );
    }
}

/// Delivers queued mails until every [`Mailer`] is dropped.
async fn run_worker(transport: Transport, from: Mailbox, mut inbox: mpsc::Receiver<Mail>) {
    while let Some(mail) = inbox.recv().await {
        let label = mail.template.label();
        let message = match render(&from, &mail) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(template = label, error = %err, "mail could not be built; dropped");
                metrics::mail("failed", label);
                continue;
            }
        };
        let mut wait = FIRST_RETRY;
        for attempt in 1..=MAX_ATTEMPTS {
            let sent = match &transport {
                Transport::Smtp(smtp) => smtp
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Transport::Dir(dir) => dir
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match sent {
                Ok(()) => {
                    tracing::info!(
                        event = "mail_sent",
                        template = label,
                        attempt,
                        "mail delivered"
                    );
                    metrics::mail("sent", label);
                    break;
                }
                Err(err) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(template = label, attempt, error = %err, retry_in_ms = wait.as_millis() as u64, "mail delivery failed; will retry");
                    metrics::mail("retried", label);
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(err) => {
                    tracing::error!(template = label, attempt, error = %err, "mail delivery failed; given up");
                    metrics::mail("failed", label);
                }
            }
        }
    }
}

/// The mail as a message: a subject, a plain-text part and an HTML part.
fn render(from: &Mailbox, mail: &Mail) -> anyhow::Result<Message> {
    let (subject, text, html) = mail.template.parts();
    let link = mail.link.as_ref().map_or("", |l| l.expose_secret());
    let text = fill(text, &mail.username, link);
    let html = fill(html, &escape_html(&mail.username), &escape_html(link));
    Message::builder()
        .from(from.clone())
        .to(mail.to.parse().context("recipient")?)
        .subject(subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(unwrapped(text)),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(unwrapped(html)),
                ),
        )
        .context("building the message")
}

/// The body with CRLF line ends, so that lettre keeps its lines as lines:
/// 7bit or 8bit when every line is short (a bare token stays greppable in
/// an `.eml` file), quoted-printable with soft breaks only for long lines.
fn unwrapped(text: String) -> Body {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    Body::new_with_encoding(text, ContentTransferEncoding::EightBit).unwrap_or_else(Body::new)
}

fn fill(template: &str, username: &str, link: &str) -> String {
    template
        .replace("{username}", username)
        .replace("{link}", link)
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_parts_escape_what_they_insert() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn an_smtp_url_lettre_refuses_is_named_without_its_password() {
        let mut settings = Settings::from_args(&[]);
        settings.smtp_url = Some("smtpx://mailer:smtp-s3cret@mail.example.com".into());
        let Err(err) = Mailer::from_settings(&settings) else {
            panic!("accepted");
        };
        for text in [format!("{err:#}"), format!("{err:?}")] {
            assert!(!text.contains("smtp-s3cret"), "{text}");
            assert!(text.contains("--smtp-url"), "{text}");
        }
    }

    #[test]
    fn debug_output_hides_the_link() {
        let mail = Mail {
            to: "a@example.com".into(),
            template: Template::Reset,
            username: "a".into(),
            link: Some("aqr_secret".to_owned().into()),
        };
        assert!(!format!("{mail:?}").contains("aqr_secret"));
    }
}
