//! Building the application from settings, and running it until a shutdown
//! signal. Tests and the binary share this path: tests bind port 0 and read
//! the address back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::DbBackend;

use crate::auth::{last_used, listener, sweeper, AuthService};
use crate::clock::Clock;
use crate::config::{SettingError, Settings};
use crate::state::{AppState, Shared};
use crate::{db, graphql, http, metrics};

/// A connection that reads and writes nothing for this long is closed
/// (above the longest a request may run, see `http::graphql`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for requests in flight once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub struct App {
    listener: tokio::net::TcpListener,
    state: AppState,
    settings: Settings,
}

impl App {
    /// Binds the listening socket, connects and migrates.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated, or the address
    /// cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::default()).await
    }

    /// [`build`](Self::build) with a given clock (tests move it).
    ///
    /// # Errors
    /// As `build`.
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        settings.validate()?;
        // Bind first: a port in use is found before the database is touched.
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|err| SettingError::listen(settings.listen, &err))?;
        let db = db::connect(&settings.database_url, settings.db_max_connections()).await?;
        db::migrate(&db).await?;
        let auth = Arc::new(AuthService::new(db, &settings, clock).await?);
        if auth.db().get_database_backend() == DbBackend::Postgres {
            // Until LISTEN works, other instances' revocations are unheard.
            auth.cache().set_bypassed(true);
        }
        let state = AppState::new(Shared {
            schema: graphql::ServedSchema::new(settings.introspection),
            documents: graphql::DocumentCache::default(),
            metrics: metrics::handle(),
            trust_forwarded_for: settings.trust_forwarded_for,
            graphiql: settings.graphiql,
            cache_ttl: settings.cache_ttl,
            cookie: settings
                .session_cookie
                .then(|| crate::http::cookie::CookieSettings {
                    name: settings.cookie_name.clone(),
                    secure: settings.cookie_secure,
                }),
            cors_origins: settings.cors_origins.clone(),
            auth,
        });
        Ok(Self {
            listener,
            state,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the
    /// requests in flight finish (for up to 30 s), stops the background
    /// tasks, writes the `lastUsedAt` notes not yet written and closes the
    /// database pool.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let auth = self.state.auth.clone();
        self.report(auth.count_users().await.unwrap_or(0));
        let mut background = vec![
            tokio::spawn(sweeper::run(auth.clone())),
            tokio::spawn(last_used::run(auth.clone())),
            tokio::spawn(metrics::run_upkeep(self.state.metrics.clone())),
        ];
        if auth.db().get_database_backend() == DbBackend::Postgres {
            background.push(tokio::spawn(listener::run(
                self.settings.database_url.clone(),
                auth.cache().clone(),
            )));
        }
        let app = http::routes(self.state, &self.settings.cors_origins);
        let limits = http::server::ConnectionLimits {
            max_connections: self.settings.max_connections as usize,
            header_read_timeout: self.settings.header_read_timeout,
            idle_timeout: IDLE_TIMEOUT,
        };
        let served =
            http::server::serve(self.listener, app, limits, shutdown, SHUTDOWN_GRACE).await;
        for task in background {
            task.abort();
            // Until it is dropped: a flush cut short puts its notes back.
            let _ = task.await;
        }
        // The uses noted since the last flush.
        if let Err(err) = auth.last_used().flush(auth.db(), auth.clock().now()).await {
            tracing::warn!(error = %err, "writing lastUsedAt failed");
        }
        if let Err(err) = auth.db().clone().close().await {
            tracing::warn!(error = %err, "closing the database pool failed");
        }
        tracing::info!("stopped");
        served.context("the HTTP server failed")
    }

    fn report(&self, users: u64) {
        let s = &self.settings;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            listen = %self.local_addr(),
            backend = ?self.state.auth.db().get_database_backend(),
            database = %db::redact_url(&s.database_url),
            db_max_connections = s.db_max_connections(),
            token_ttl_secs = s.token_ttl.as_secs(),
            cache_capacity = s.cache_capacity,
            cache_ttl_secs = s.cache_ttl.as_secs(),
            captcha = if s.captcha_secret.is_some() { format!("{:?}", s.captcha_provider) } else { "off".to_owned() },
            cors = !s.cors_origins.is_empty(),
            "authql serving"
        );
        if users == 0 {
            tracing::info!(
                "no users yet: create one with `authql user create USERNAME --database-url '{}'`",
                db::redact_url(&s.database_url)
            );
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
