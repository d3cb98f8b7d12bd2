//! The session cookie (`--session-cookie on`): where a request's credential
//! comes from (the `Authorization` header wins, then the cookie), the
//! same-origin rule for a cookie-authenticated request, and the
//! `Set-Cookie` lines that hand out and clear the session.

use poem::http::{header, HeaderValue};
use poem::Request;
use secrecy::{ExposeSecret as _, SecretString};

use super::client_ip::credential;
use crate::auth::Credential;
use crate::graphql::SessionCookie;
use crate::state::AppState;

/// The cookie's settings.
#[derive(Clone, Debug)]
pub struct CookieSettings {
    pub name: String,
    pub secure: bool,
}

/// A cookie-authenticated request from an origin that may not use it.
#[derive(Debug)]
pub struct CrossOrigin;

/// The request's credential: the `Authorization` header if sent, else the
/// session cookie (when on), which only the request's own origin or one of
/// `--cors-origins` may use.
///
/// # Errors
/// `CrossOrigin` for a cookie sent from anywhere else.
pub fn request_credential(req: &Request, state: &AppState) -> Result<Credential, CrossOrigin> {
    // An `Authorization` header, when sent, decides alone.
    let sent = credential(req);
    if !matches!(sent, Credential::Missing) {
        return Ok(sent);
    }
    let Some(settings) = &state.cookie else {
        return Ok(Credential::Missing);
    };
    let Some(token) = read(req, &settings.name) else {
        return Ok(Credential::Missing);
    };
    if is_allowed_origin(req, state, settings) {
        Ok(Credential::Token(token))
    } else {
        Err(CrossOrigin)
    }
}

/// The value of the cookie `name`, from any `Cookie` header.
fn read(req: &Request, name: &str) -> Option<SecretString> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| SecretString::from(value.trim_matches('"').to_owned()))
        .filter(|value| !value.expose_secret().is_empty())
}

/// `Origin` is the request's own (scheme and `Host`) or a listed one; with
/// no `Origin`, `Sec-Fetch-Site` is `same-origin` or `none`; with neither,
/// refused (every current browser sends one of them).
fn is_allowed_origin(req: &Request, state: &AppState, settings: &CookieSettings) -> bool {
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        return own_origin(req, state, settings)
            .is_some_and(|own| own.eq_ignore_ascii_case(origin))
            || state.cors_origins.iter().any(|allowed| allowed == origin);
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|site| matches!(site.as_bytes(), b"same-origin" | b"none"))
}

/// The origin the request was sent to: the `Host` header, and the scheme
/// the browser used: `X-Forwarded-Proto` behind a trusted proxy, else
/// https when the cookie is Secure (a browser sends it over HTTPS only),
/// else http.
fn own_origin(req: &Request, state: &AppState, settings: &CookieSettings) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let forwarded = state
        .trust_forwarded_for
        .then(|| req.headers().get("x-forwarded-proto"))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .filter(|proto| matches!(*proto, "http" | "https"));
    let scheme = forwarded.unwrap_or(if settings.secure { "https" } else { "http" });
    Some(format!("{scheme}://{host}"))
}

/// The `Set-Cookie` value for a change a mutation made.
pub fn set_cookie(settings: &CookieSettings, change: &SessionCookie) -> Option<HeaderValue> {
    let secure = if settings.secure { "; Secure" } else { "" };
    let line = match change {
        SessionCookie::Set { token, max_age } => format!(
            "{}={}; HttpOnly{secure}; SameSite=Lax; Path=/; Max-Age={}",
            settings.name,
            token.expose_secret(),
            max_age.as_secs()
        ),
        SessionCookie::Clear => format!(
            "{}=; HttpOnly{secure}; SameSite=Lax; Path=/; Max-Age=0",
            settings.name
        ),
    };
    HeaderValue::from_str(&line).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_cookie_carries_the_attributes() {
        let settings = CookieSettings {
            name: "__Host-authql".into(),
            secure: true,
        };
        let set = SessionCookie::Set {
            token: SecretString::from("aql_x"),
            max_age: Duration::from_secs(60),
        };
        assert_eq!(
            set_cookie(&settings, &set).unwrap(),
            "__Host-authql=aql_x; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=60"
        );
        let plain = CookieSettings {
            name: "authql".into(),
            secure: false,
        };
        assert_eq!(
            set_cookie(&plain, &SessionCookie::Clear).unwrap(),
            "authql=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
        );
    }
}
