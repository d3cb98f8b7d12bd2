//! Who is calling: the client IP, the user agent and the credential, taken
//! from the request once, for throttling, captcha, sessions and logs.

use std::net::{IpAddr, SocketAddr};

use poem::http::{header, HeaderName};
use poem::Request;
use secrecy::SecretString;

use crate::auth::{ClientInfo, Credential};

const AUTHORIZATION_SCHEMES: [&str; 2] = ["Bearer", "Token"];
const MAX_USER_AGENT_BYTES: usize = 512;
/// Header names as constants: a name given as text is parsed on every
/// lookup.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client IP: from the socket, or, behind a trusted proxy, from the
/// last `X-Forwarded-For` entry (the one that proxy appended; the entries
/// before it are whatever the client sent, so they are ignored).
pub fn client_ip(req: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get_all(X_FORWARDED_FOR)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(parse_ip);
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip().to_canonical())
}

fn parse_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

pub fn client_info(req: &Request, trust_forwarded_for: bool) -> ClientInfo {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
        .map(|ua| truncate(&ua, MAX_USER_AGENT_BYTES).to_owned())
        .filter(|ua| !ua.is_empty());
    ClientInfo {
        ip: client_ip(req, trust_forwarded_for),
        user_agent,
    }
}

/// `Authorization: Bearer <token>`, or Django REST Framework's
/// `Authorization: Token <token>`.
pub fn credential(req: &Request) -> Credential {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Credential::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Credential::Unsupported;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Credential::Unsupported;
    };
    if AUTHORIZATION_SCHEMES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(scheme))
    {
        Credential::Token(SecretString::from(token.trim()))
    } else {
        Credential::Unsupported
    }
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.finish()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_trusted() {
        let req = request(&[("x-forwarded-for", "203.0.113.7")]);
        assert_ne!(client_ip(&req, false), Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn the_last_forwarded_entry_is_the_proxys() {
        let req = request(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7")]);
        assert_eq!(client_ip(&req, true), Some("203.0.113.7".parse().unwrap()));
        let req = request(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        assert_eq!(client_ip(&req, true), Some("198.51.100.2".parse().unwrap()));
    }

    #[test]
    fn both_schemes_are_accepted_case_insensitively() {
        for header in ["Bearer abc", "bearer abc", "Token abc", "TOKEN  abc "] {
            assert!(
                matches!(
                    credential(&request(&[("authorization", header)])),
                    Credential::Token(_)
                ),
                "{header}"
            );
        }
        assert!(matches!(
            credential(&request(&[("authorization", "Basic abc")])),
            Credential::Unsupported
        ));
        assert!(matches!(credential(&request(&[])), Credential::Missing));
    }

    #[test]
    fn a_long_user_agent_is_cut_on_a_character_boundary() {
        let ua = "é".repeat(400);
        let info = client_info(&request(&[("user-agent", &ua)]), false);
        assert!(info.user_agent.unwrap().len() <= MAX_USER_AGENT_BYTES);
    }
}
