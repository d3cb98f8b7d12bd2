//! Readiness: whether the service can do its work now, for `/readyz`.

use std::time::Duration;

use super::AuthService;

impl AuthService {
    /// True when the database answers within `within`.
    pub async fn is_ready(&self, within: Duration) -> bool {
        tokio::time::timeout(within, crate::db::ping(self.db()))
            .await
            .unwrap_or(false)
    }
}
