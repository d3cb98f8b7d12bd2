//! On PostgreSQL, hears the revocations of every instance (`LISTEN`) and
//! drops the affected users' cache entries.
//!
//! While not listening, this instance cannot know what others revoked, so
//! its cache is bypassed (every request reads the database) until `LISTEN`
//! is back, and cleared when it is: nothing cached before or during the gap
//! is trusted.

use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;

use super::cache::TokenCache;
use super::revocation::CHANNEL;

/// Wait between attempts to listen again.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// After this long without a notification the connection is checked, and
/// a check unanswered for this long counts as a lost connection: a silent
/// connection keeps the cache trusted for at most twice this.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs until the task is aborted.
pub async fn run(database_url: String, cache: TokenCache) {
    loop {
        match listen(&database_url).await {
            Ok(mut listener) => {
                cache.set_bypassed(false);
                tracing::info!("listening for revocations from other instances");
                follow(&mut listener, &cache).await;
                cache.set_bypassed(true);
                tracing::warn!(
                    "lost the revocation channel; bypassing the token cache until it is back"
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for revocations; retrying");
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

async fn listen(database_url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    // By default a lost connection is re-established inside `try_recv`
    // before it reports the loss, retrying for up to 30 s while the cache is
    // still trusted. Report the loss at once instead, so that the cache is
    // bypassed while this instance is deaf.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The heartbeat, as pg_stat_activity shows it.
pub const HEARTBEAT_QUERY: &str = "SELECT 1 AS authql_listener_heartbeat";

/// Applies notifications until the connection fails.
async fn follow(listener: &mut PgListener, cache: &TokenCache) {
    loop {
        let Ok(received) = tokio::time::timeout(HEARTBEAT, listener.try_recv()).await else {
            // Quiet for a while: make sure the connection still answers. One
            // that died without a word (a network partition) would
            // otherwise keep the cache trusted until its entries expire.
            // Named, so that an operator (and a test) looking at
            // pg_stat_activity tells this connection from the pool's.
            let ping = sea_orm::sqlx::query(HEARTBEAT_QUERY).execute(&mut *listener);
            match tokio::time::timeout(HEARTBEAT, ping).await {
                Ok(Ok(_)) => continue,
                Ok(Err(err)) => tracing::warn!(error = %err, "revocation channel failed"),
                Err(_) => tracing::warn!("the revocation channel stopped answering"),
            }
            return;
        };
        match received {
            Ok(Some(notification)) => match notification.payload().parse::<i64>() {
                Ok(user_id) => cache.revoke_user(user_id),
                Err(_) => {
                    tracing::warn!("unreadable revocation notice; clearing the token cache");
                    cache.clear();
                }
            },
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "revocation channel failed");
                return;
            }
        }
    }
}
