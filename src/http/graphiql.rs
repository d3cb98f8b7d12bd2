//! The GraphiQL page, served entirely from the binary: pinned production
//! builds of GraphiQL, React and ReactDOM (vendored in `assets/graphiql/`
//! by `scripts/update-graphiql.sh`, licences beside them), authql's own
//! init script and style, and a favicon. Nothing comes from another origin,
//! and the page's `Content-Security-Policy` says so to the browser.
//!
//! The vendored files carry their versions in their names, so they are
//! cached for a year as immutable; authql's own small files change with
//! authql and are revalidated.

use poem::http::{header, HeaderValue, StatusCode};
use poem::{IntoResponse as _, Response};

use crate::state::AppState;

/// The page's policy: scripts, styles and requests from this origin only;
/// no inline script or style, no `eval`. GraphiQL's stylesheet embeds its
/// fonts and a few images as `data:` URLs, hence `data:` for those two.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; font-src 'self' data:; img-src 'self' data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal, $cache_control:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            cache_control: $cache_control,
            body: include_bytes!(concat!("../../assets/graphiql/", $name)),
        }
    };
}

/// Every file the page loads. The versions in the names are the ones
/// pinned in `scripts/update-graphiql.sh`.
const ASSETS: &[Asset] = &[
    asset!(
        "react-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        IMMUTABLE
    ),
    asset!(
        "react-dom-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        IMMUTABLE
    ),
    asset!(
        "graphiql-3.9.0.min.js",
        "text/javascript; charset=utf-8",
        IMMUTABLE
    ),
    asset!(
        "graphiql-3.9.0.min.css",
        "text/css; charset=utf-8",
        IMMUTABLE
    ),
    asset!(
        "authql-graphiql.js",
        "text/javascript; charset=utf-8",
        REVALIDATE
    ),
    asset!("authql-graphiql.css", "text/css; charset=utf-8", REVALIDATE),
    asset!("favicon.svg", "image/svg+xml", REVALIDATE),
];

/// The page. Its links are relative (`graphql/assets/…` from `/graphql`),
/// so it also works behind a proxy that mounts authql under a prefix.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>authql · GraphiQL</title>
<link rel="icon" href="graphql/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="graphql/assets/graphiql-3.9.0.min.css">
<link rel="stylesheet" href="graphql/assets/authql-graphiql.css">
</head>
<body>
<div id="graphiql">Loading…</div>
<script src="graphql/assets/react-18.3.1.production.min.js"></script>
<script src="graphql/assets/react-dom-18.3.1.production.min.js"></script>
<script src="graphql/assets/graphiql-3.9.0.min.js"></script>
<script src="graphql/assets/authql-graphiql.js"></script>
</body>
</html>
"#;

/// The GraphiQL page, with its policy.
pub fn page() -> Response {
    let mut response = Response::builder()
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, REVALIDATE)
        .body(PAGE);
    protect(&mut response);
    response
}

/// `GET /graphql/assets/NAME`: one of [`ASSETS`], or 404 (also when the
/// page is turned off).
pub fn asset(name: &str, state: &AppState) -> Response {
    let found = ASSETS.iter().find(|asset| asset.name == name);
    let Some(asset) = found.filter(|_| state.graphiql) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = Response::builder()
        .content_type(asset.content_type)
        .header(header::CACHE_CONTROL, asset.cache_control)
        .body(asset.body);
    protect(&mut response);
    response
}

fn protect(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_files() {
        for link in PAGE.split(['"']).filter(|s| s.starts_with("graphql/")) {
            let name = link.trim_start_matches("graphql/assets/");
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{link} is not embedded"
            );
        }
        assert!(!PAGE.contains("//"), "an absolute URL in the page");
        assert!(!PAGE.contains("<script>"), "an inline script");
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
