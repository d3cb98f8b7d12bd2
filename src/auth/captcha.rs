//! Captcha verification: Google reCAPTCHA (v2 and v3), hCaptcha and
//! Cloudflare Turnstile, whose siteverify endpoints all take the form fields
//! `secret`, `response` and `remoteip` and answer JSON with `success`.
//!
//! It fails closed: an unreachable, slow, failing or incoherent service
//! refuses the login (`CAPTCHA_UNAVAILABLE`).

use std::net::IpAddr;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::config::{CaptchaProvider, Settings};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest answer read from the service.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// The verdict on one captcha answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Refused,
    Unavailable,
}

pub struct CaptchaVerifier {
    client: reqwest::Client,
    provider: CaptchaProvider,
    secret: SecretString,
    verify_url: String,
    min_score: f64,
    action: String,
}

/// The fields of a siteverify answer that matter here. reCAPTCHA v3 adds
/// `score` and `action`; hCaptcha Enterprise also sends a `score`, but there a
/// high score means a bot, so scores are read for reCAPTCHA only.
#[derive(Deserialize)]
struct Answer {
    success: bool,
    score: Option<f64>,
    action: Option<String>,
    #[serde(rename = "error-codes", default)]
    error_codes: Vec<String>,
}

impl CaptchaVerifier {
    /// `None` when no captcha secret is configured.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let Some(secret) = settings.captcha_secret.clone() else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .build()?;
        let verify_url = settings
            .captcha_verify_url
            .clone()
            .unwrap_or_else(|| settings.captcha_provider.default_verify_url().to_owned());
        Ok(Some(Self {
            client,
            provider: settings.captcha_provider,
            secret,
            verify_url,
            min_score: settings.captcha_min_score,
            action: settings.captcha_action.clone(),
        }))
    }

    pub async fn verify(&self, response: &str, remote_ip: Option<IpAddr>) -> Verdict {
        self.verify_for(response, remote_ip, &self.action).await
    }

    /// [`verify`](Self::verify) for another reCAPTCHA v3 action than
    /// `captcha-action` (the login's): `register`, `password_reset`.
    pub async fn verify_for(
        &self,
        response: &str,
        remote_ip: Option<IpAddr>,
        action: &str,
    ) -> Verdict {
        let remote_ip = remote_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let form = [
            ("secret", self.secret.expose_secret()),
            ("response", response),
            ("remoteip", remote_ip.as_str()),
        ];
        let answer = match self.client.post(&self.verify_url).form(&form).send().await {
            Ok(reply) if reply.status().is_success() => read_answer(reply).await,
            Ok(reply) => {
                tracing::warn!(
                    status = reply.status().as_u16(),
                    "captcha service answered an error"
                );
                return Verdict::Unavailable;
            }
            Err(err) => {
                // reqwest's error names the URL, never the form body.
                tracing::warn!(error = %err.without_url(), "captcha service unreachable");
                return Verdict::Unavailable;
            }
        };
        let Some(answer) = answer else {
            tracing::warn!("captcha service answered something that is not a verdict");
            return Verdict::Unavailable;
        };
        self.judge_for(&answer, action)
    }

    #[cfg(test)]
    fn judge(&self, answer: &Answer) -> Verdict {
        self.judge_for(answer, &self.action)
    }

    fn judge_for(&self, answer: &Answer, action: &str) -> Verdict {
        if !answer.success {
            // A bad secret is our misconfiguration, not the user's failure.
            if answer
                .error_codes
                .iter()
                .any(|code| code == "invalid-input-secret" || code == "missing-input-secret")
            {
                tracing::error!("the captcha service refused our secret; check --captcha-secret");
                return Verdict::Unavailable;
            }
            return Verdict::Refused;
        }
        if self.provider == CaptchaProvider::Recaptcha {
            if let Some(score) = answer.score {
                if score < self.min_score || answer.action.as_deref() != Some(action) {
                    return Verdict::Refused;
                }
            }
        }
        Verdict::Passed
    }
}

async fn read_answer(reply: reqwest::Response) -> Option<Answer> {
    if reply
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return None;
    }
    let body = reply.bytes().await.ok()?;
    if body.len() > MAX_RESPONSE_BYTES {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(provider: &str) -> CaptchaVerifier {
        let settings =
            Settings::from_args(&["--captcha-secret", "s", "--captcha-provider", provider]);
        CaptchaVerifier::from_settings(&settings).unwrap().unwrap()
    }

    fn judge(provider: &str, json: &str) -> Verdict {
        verifier(provider).judge(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn recaptcha_v2_success_passes() {
        assert_eq!(
            judge("recaptcha", r#"{"success":true,"hostname":"x"}"#),
            Verdict::Passed
        );
        assert_eq!(
            judge(
                "recaptcha",
                r#"{"success":false,"error-codes":["invalid-input-response"]}"#
            ),
            Verdict::Refused
        );
    }

    #[test]
    fn recaptcha_v3_checks_score_and_action() {
        assert_eq!(
            judge(
                "recaptcha",
                r#"{"success":true,"score":0.9,"action":"login"}"#
            ),
            Verdict::Passed
        );
        assert_eq!(
            judge(
                "recaptcha",
                r#"{"success":true,"score":0.5,"action":"login"}"#
            ),
            Verdict::Passed
        );
        assert_eq!(
            judge(
                "recaptcha",
                r#"{"success":true,"score":0.1,"action":"login"}"#
            ),
            Verdict::Refused
        );
        assert_eq!(
            judge(
                "recaptcha",
                r#"{"success":true,"score":0.9,"action":"signup"}"#
            ),
            Verdict::Refused
        );
        assert_eq!(
            judge("recaptcha", r#"{"success":true,"score":0.9}"#),
            Verdict::Refused
        );
    }

    #[test]
    fn hcaptcha_enterprise_scores_are_not_read_as_recaptcha_scores() {
        assert_eq!(
            judge("hcaptcha", r#"{"success":true,"score":0.1}"#),
            Verdict::Passed
        );
        assert_eq!(judge("hcaptcha", r#"{"success":false}"#), Verdict::Refused);
    }

    #[test]
    fn turnstile_answers_are_read() {
        assert_eq!(
            judge(
                "turnstile",
                r#"{"success":true,"action":"anything","cdata":""}"#
            ),
            Verdict::Passed
        );
        assert_eq!(
            judge(
                "turnstile",
                r#"{"success":false,"error-codes":["timeout-or-duplicate"]}"#
            ),
            Verdict::Refused
        );
    }

    #[test]
    fn a_refused_secret_is_our_fault_not_the_users() {
        assert_eq!(
            judge(
                "recaptcha",
                r#"{"success":false,"error-codes":["invalid-input-secret"]}"#
            ),
            Verdict::Unavailable
        );
    }

    #[test]
    fn each_provider_has_its_documented_endpoint() {
        assert_eq!(
            verifier("recaptcha").verify_url,
            "https://www.google.com/recaptcha/api/siteverify"
        );
        assert_eq!(
            verifier("hcaptcha").verify_url,
            "https://api.hcaptcha.com/siteverify"
        );
        assert_eq!(
            verifier("turnstile").verify_url,
            "https://challenges.cloudflare.com/turnstile/v0/siteverify"
        );
    }
}
