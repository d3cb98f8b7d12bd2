//! The shared login throttle: one row per throttled bucket (a client IP or
//! network, a username), keyed by a keyed hash of the bucket so that the
//! table never holds an IP or a typed name; and the one-row table holding
//! that hash's key, which every instance reads at start.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Times are whole microseconds since the Unix epoch: plain integers
        // compare and add the same way in SQLite and PostgreSQL.
        manager
            .create_table(
                Table::create()
                    .table(LoginThrottle::Table)
                    .col(
                        ColumnDef::new(LoginThrottle::Key)
                            .blob()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LoginThrottle::Tat)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(LoginThrottle::Admitted)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(
                        ColumnDef::new(LoginThrottle::Failures)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(LoginThrottle::LastFailure)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_throttle_tat")
                    .table(LoginThrottle::Table)
                    .col(LoginThrottle::Tat)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ThrottleKeys::Table)
                    .col(
                        ColumnDef::new(ThrottleKeys::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ThrottleKeys::Key).blob().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ThrottleKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(LoginThrottle::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LoginThrottle {
    Table,
    /// HMAC-SHA256 of the bucket under the deployment's key.
    Key,
    /// GCRA's theoretical arrival time of the next attempt.
    Tat,
    /// Whether the latest attempt was admitted (what `RETURNING` reports).
    Admitted,
    /// Consecutive failed password checks of an unknown username.
    Failures,
    LastFailure,
}

#[derive(DeriveIden)]
enum ThrottleKeys {
    Table,
    Id,
    Key,
}
