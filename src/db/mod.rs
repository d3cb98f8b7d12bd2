//! The database: connecting, migrating, and checking that it answers.
//! Queries live with the domain code that needs them (`crate::auth`).

pub mod entities;

use std::time::Duration;

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

/// How long a request waits for a pooled connection before it fails, so that
/// an unreachable database gives an error rather than a hung request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool on `url`.
///
/// # Errors
/// When the URL is malformed or the database cannot be reached.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .sqlx_logging(false);
    // The driver's error can quote the URL, password and all: pass on only
    // its text with the URL redacted.
    let db = Database::connect(options).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot connect to the database at {}: {}",
            redact_url(url),
            err.to_string().replace(url, &redact_url(url))
        )
    })?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets readers go on while one connection writes; the mode is
        // stored in the file, so one connection setting it is enough. (sqlx
        // already turns on foreign keys and a busy timeout per connection.)
        db.execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .context("cannot configure SQLite")?;
    }
    Ok(db)
}

/// Applies every pending migration.
///
/// # Errors
/// When a migration fails; the database is left at the last step that succeeded.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("cannot apply database migrations")
}

/// True when the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

/// The URL with any password (in the authority or as a `password=` query
/// parameter) replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "[unparseable database URL]".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_password_in_the_url_is_hidden() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/auth"),
            "postgres://app:***@db:5432/auth"
        );
    }

    #[test]
    fn a_password_in_the_query_is_hidden() {
        let redacted = redact_url("postgres://db/auth?user=app&password=s3cret&sslmode=require");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("sslmode=require"));
    }

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        assert_eq!(
            redact_url("sqlite://authql.db?mode=rwc"),
            "sqlite://authql.db?mode=rwc"
        );
    }
}
