//! The state every handler shares, built once at start and cheap to clone
//! (one reference count): the routes hold it and lend it to each handler.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::AuthService;
use crate::graphql::{DocumentCache, ServedSchema};

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every copy of [`AppState`] points to.
pub struct Shared {
    pub auth: Arc<AuthService>,
    pub schema: ServedSchema,
    /// Parsed documents by query text.
    pub documents: DocumentCache,
    pub metrics: PrometheusHandle,
    /// Serve the GraphiQL page and its assets.
    pub graphiql: bool,
    /// Take the client IP from the last `X-Forwarded-For` entry.
    pub trust_forwarded_for: bool,
    /// How long a resolved token may be trusted without the database: also
    /// the longest `max-age` `/auth/hasura` gives.
    pub cache_ttl: std::time::Duration,
    /// The session cookie's settings, when it is on.
    pub cookie: Option<crate::http::cookie::CookieSettings>,
    /// The origins allowed to call from a browser (and to use the cookie).
    pub cors_origins: Vec<String>,
}
