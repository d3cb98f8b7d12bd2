//! The database schema of authql, as an ordered list of migrations.
//!
//! Each step is a file of its own and is never edited once released: a later
//! schema change is a new step, so an existing database upgrades in place.
//! The same steps run on SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_create_users_and_tokens;
mod m20250101_000002_add_login_backoff;
mod m20261201_000001_create_throttle;
mod m20261201_000002_add_totp;
mod m20261201_000003_add_last_used_at;
mod m20261201_000004_accounts;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_create_users_and_tokens::Migration),
            Box::new(m20250101_000002_add_login_backoff::Migration),
            Box::new(m20261201_000001_create_throttle::Migration),
            Box::new(m20261201_000002_add_totp::Migration),
            Box::new(m20261201_000003_add_last_used_at::Migration),
            Box::new(m20261201_000004_accounts::Migration),
        ]
    }
}
