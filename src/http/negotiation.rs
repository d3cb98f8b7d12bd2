//! Which media type a GraphQL answer is sent as, from the request's
//! `Accept` (the GraphQL-over-HTTP specification's rules):
//!
//! - `application/graphql-response+json` when the client prefers it (a
//!   higher q-value, or an equal one when it names the type itself): the
//!   status then says whether the request ran (200) or was refused before
//!   execution (400);
//! - `application/json` when the client prefers it, accepts it through a
//!   wildcard, or sends no `Accept`: 200 for GraphQL errors, as before the
//!   specification had a media type of its own;
//! - neither: 406.

/// A media type authql answers GraphQL requests in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    GraphqlResponseJson,
    Json,
}

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub const JSON: &str = "application/json";

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
            Self::Json => JSON,
        }
    }
}

/// How well a media range matches a type: its q-value and how specific it
/// was (2 exact, 1 `type/*`, 0 `*/*`).
#[derive(Clone, Copy, PartialEq, PartialOrd)]
struct Match {
    specificity: u8,
    q: f32,
}

/// The media type to answer in, or `None` when `accept` allows neither.
pub fn negotiate(accept: Option<&str>) -> Option<MediaType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(MediaType::Json);
    };
    let graphql = best_match(accept, GRAPHQL_RESPONSE_JSON);
    let json = best_match(accept, JSON);
    let q = |m: Option<Match>| m.map_or(0.0, |m| m.q);
    let (gq, jq) = (q(graphql), q(json));
    if gq <= 0.0 && jq <= 0.0 {
        return None;
    }
    let names_graphql = graphql.is_some_and(|m| m.specificity == 2);
    if gq > jq || (gq == jq && names_graphql) {
        Some(MediaType::GraphqlResponseJson)
    } else {
        Some(MediaType::Json)
    }
}

/// The most specific range of `accept` that covers `media` (RFC 9110
/// §12.5.1: the most specific range decides the q-value).
fn best_match(accept: &str, media: &str) -> Option<Match> {
    let (kind, _) = media.split_once('/')?;
    let mut best: Option<Match> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let specificity = if name == media {
            2
        } else if name.strip_suffix("/*") == Some(kind) {
            1
        } else if name == "*/*" {
            0
        } else {
            continue;
        };
        let mut q = 1.0;
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                if key.trim().eq_ignore_ascii_case("q") {
                    q = value.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
        }
        if best.is_none_or(|b| specificity > b.specificity) {
            best = Some(Match { specificity, q });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_type_wins() {
        use MediaType::*;
        assert_eq!(negotiate(None), Some(Json));
        assert_eq!(negotiate(Some("*/*")), Some(Json));
        assert_eq!(negotiate(Some("application/*")), Some(Json));
        assert_eq!(negotiate(Some("application/json")), Some(Json));
        assert_eq!(
            negotiate(Some("application/graphql-response+json, application/json")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json;q=0.9, application/json"
            )),
            Some(Json)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;q=0.5, application/graphql-response+json"
            )),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some("application/graphql-response+json, */*;q=0.1")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some("text/html,application/xhtml+xml,*/*;q=0.8")),
            Some(Json)
        );
    }

    #[test]
    fn an_accept_allowing_neither_is_refused() {
        assert_eq!(negotiate(Some("text/html")), None);
        assert_eq!(negotiate(Some("application/xml")), None);
        assert_eq!(negotiate(Some("application/json;q=0")), None);
        assert_eq!(
            negotiate(Some(
                "*/*, application/json;q=0, application/graphql-response+json;q=0"
            )),
            None
        );
    }
}
