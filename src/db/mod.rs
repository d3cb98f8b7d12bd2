//! The database: connecting, migrating, and checking that it answers.
//! Queries live with the domain code that needs them (`crate::auth`).

pub mod entities;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use crate::config::SettingError;

/// How long a request waits for a pooled connection before it fails, so that
/// an unreachable database gives an error rather than a hung request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite's page cache per pooled connection, in KiB (SQLite's default is
/// 2000). Each connection keeps its own: once 100,000 sessions had been
/// read, SQLite's part of the heap for ten connections was 11 MiB at 512
/// KiB and 5 MiB at 128 KiB, with the same throughput on the uncached
/// path (bench/RESULTS.md). A lookup by
/// digest reads a path of B-tree pages whose leaves are rarely reused;
/// pages not held are read again from the operating system's cache.
const SQLITE_CACHE_KIB: u32 = 128;

const DATABASE_URL_FLAG: &str = "--database-url";
const URL_FORMS: &str = "use sqlite://FILE?mode=rwc (a file, created when missing) or \
                         postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// Opens a pool on `url`.
///
/// # Errors
/// A [`SettingError`] naming `--database-url` when the URL is malformed or
/// the database cannot be reached (with the driver's own reason, such as
/// "connection refused", and a hint for the common cases).
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    let backend = backend_of(url)?;
    // One connection of our own first: the pool retries a failed connection
    // until its timeout and then reports only "pool timed out", losing the
    // reason ("connection refused", "unable to open database file").
    check_reachable(url, backend).await?;
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|options| {
            options.pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
        });
    // The driver's error can quote the URL, password and all: pass on only
    // its text with the URL redacted.
    let db = Database::connect(options).await.map_err(|err| {
        let reason = err.to_string().replace(url, &redact_url(url));
        SettingError::new(DATABASE_URL_FLAG, url, format!("cannot connect: {reason}"))
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

/// The backend a URL names, or why authql cannot use it.
fn backend_of(url: &str) -> Result<DbBackend, SettingError> {
    if url.starts_with("sqlite:") {
        Ok(DbBackend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DbBackend::Postgres)
    } else {
        let problem = match url.split_once("://") {
            Some((scheme, _)) => format!("authql cannot use {scheme}:// databases"),
            None => "not a database URL".to_owned(),
        };
        Err(SettingError::new(DATABASE_URL_FLAG, url, problem).hint(URL_FORMS))
    }
}

/// Opens and closes one connection, turning a failure into a setting error
/// that keeps the driver's reason.
async fn check_reachable(url: &str, backend: DbBackend) -> Result<(), SettingError> {
    let refused = |problem: String, hint: Option<String>| {
        let err = SettingError::new(DATABASE_URL_FLAG, url, problem);
        match hint {
            Some(hint) => err.hint(hint),
            None => err,
        }
    };
    let attempt = async {
        if backend == DbBackend::Sqlite {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            options.connect().await?.close().await
        } else {
            let options: sqlx::postgres::PgConnectOptions = url.parse()?;
            options.connect().await?.close().await
        }
    };
    match tokio::time::timeout(ACQUIRE_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            let reason = err.to_string().replace(url, &redact_url(url));
            let hint = hint_for(&err, url, backend);
            Err(refused(format!("cannot connect: {reason}"), hint))
        }
        Err(_) => Err(refused(
            format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
            Some(format!(
                "check the host and port ({}) and that no firewall drops the connection",
                host_and_port(url)
            )),
        )),
    }
}

/// How to fix the common failures, in the user's terms.
fn hint_for(err: &sqlx::Error, url: &str, backend: DbBackend) -> Option<String> {
    match err {
        sqlx::Error::Configuration(_) => Some(URL_FORMS.to_owned()),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Some(format!(
            "nothing accepts connections at {}: is PostgreSQL running there, and are the host and port right?",
            host_and_port(url)
        )),
        sqlx::Error::Io(io) if io.to_string().contains("lookup") => {
            Some("the host name does not resolve: check it".to_owned())
        }
        sqlx::Error::Tls(_) => Some(
            "the TLS handshake failed: check sslmode in the URL (sslmode=disable for a server without TLS)"
                .to_owned(),
        ),
        sqlx::Error::Database(db) if backend == DbBackend::Sqlite => {
            (db.code().as_deref() == Some(SQLITE_CANTOPEN)).then(|| sqlite_open_hint(url))
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01" | "28000") => {
                Some("check the user name and password in the URL".to_owned())
            }
            Some("3D000") => Some(
                "the database does not exist: create it (createdb NAME) or fix its name in the URL"
                    .to_owned(),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// SQLite's "unable to open database file".
const SQLITE_CANTOPEN: &str = "14";

/// Why SQLite could not open the file: it does not exist (and the URL does
/// not ask for it to be created), its directory does not exist, or it may
/// not be opened.
fn sqlite_open_hint(url: &str) -> String {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = Path::new(file);
    let creates = query.split('&').any(|pair| pair == "mode=rwc");
    let directory = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    if let Some(dir) = directory.filter(|dir| !dir.exists()) {
        format!(
            "the directory {} does not exist: create it first",
            dir.display()
        )
    } else if !path.exists() && !creates {
        let separator = if query.is_empty() { '?' } else { '&' };
        format!(
            "the file {file} does not exist: add ?mode=rwc to create it ({}{separator}mode=rwc)",
            redact_url(url)
        )
    } else {
        format!("check that {file} and its directory may be read and written")
    }
}

/// `HOST:PORT` of a PostgreSQL URL, for hints.
fn host_and_port(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!(
            "{}:{}",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5432)
        ),
        Err(_) => "the URL's host and port".to_owned(),
    }
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
/// parameter) replaced, for messages and logs; a URL without a password is
/// returned as it was written. Text that does not parse as a URL is masked
/// the same way by position (`scheme://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return mask_unparsed(url);
    };
    let password_in_query = parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if parsed.password().is_none() && !password_in_query {
        return url.to_owned();
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if password_in_query {
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

/// [`redact_url`] for text the URL parser refuses: whatever follows the
/// user name up to the last `@`, and every `password=` value, become `***`.
fn mask_unparsed(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let mut masked = match text[start..].rfind('@') {
        Some(at) => {
            let at = start + at;
            match text[start..at].find(':') {
                Some(colon) => format!("{}***{}", &text[..=start + colon], &text[at..]),
                None => text.to_owned(),
            }
        }
        None => text.to_owned(),
    };
    let mut from = 0;
    while let Some(found) = masked[from..].to_ascii_lowercase().find("password=") {
        let value_start = from + found + "password=".len();
        let value_end = masked[value_start..]
            .find('&')
            .map_or(masked.len(), |i| value_start + i);
        masked.replace_range(value_start..value_end, "***");
        from = value_start + 3;
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_pooled_sqlite_connection_has_the_smaller_page_cache() {
        use sea_orm::{ConnectionTrait as _, Statement};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let db = connect(&url, 3).await.unwrap();
        // Hold several connections at once so the pool opens more than one.
        let reads = (0..3).map(|_| async {
            let txn = sea_orm::TransactionTrait::begin(&db).await.unwrap();
            let row = txn
                .query_one_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "PRAGMA cache_size",
                ))
                .await
                .unwrap()
                .unwrap();
            let size: i64 = row.try_get_by_index(0).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            txn.commit().await.unwrap();
            size
        });
        for size in futures_util::future::join_all(reads).await {
            assert_eq!(size, -i64::from(SQLITE_CACHE_KIB));
        }
    }

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
    fn text_that_is_not_a_url_is_masked_too() {
        assert_eq!(redact_url("garbage"), "garbage");
        assert_eq!(
            redact_url("postgres://app:p@ss w0rd@db/auth"),
            "postgres://app:***@db/auth"
        );
        assert_eq!(
            redact_url("db host=x password=s3cret&a=b"),
            "db host=x password=***&a=b"
        );
    }

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        assert_eq!(
            redact_url("sqlite://authql.db?mode=rwc"),
            "sqlite://authql.db?mode=rwc"
        );
    }
}
