//! Accounts: when each user's email was verified, email addresses unique
//! compared case-insensitively, and the one-time link tokens (verification,
//! password reset, email change) as SHA-256 digests only.
//!
//! Existing duplicates. Before this step nothing stopped two users from
//! sharing an address (in any case). The unique index cannot be built over
//! them, and refusing to migrate would leave an operator with a server that
//! does not start. So the oldest account (lowest id) keeps the address and
//! every later holder's `email` becomes NULL: that account still signs in
//! by username, and its operator can give it an address again with care.
//! Addresses that existed before this step were typed by an operator
//! (`authql user create --email`), who vouches for them: they count as
//! verified from the day their account joined.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Later holders of an address an older account has: their email is cleared.
const CLEAR_DUPLICATES: &str = "UPDATE users SET email = NULL WHERE email IS NOT NULL \
AND EXISTS (SELECT 1 FROM users AS older \
WHERE LOWER(older.email) = LOWER(users.email) AND older.id < users.id)";

const UNIQUE_EMAIL: &str = "CREATE UNIQUE INDEX idx_users_email_lower ON users (LOWER(email))";

const VOUCHED: &str = "UPDATE users SET email_verified_at = date_joined WHERE email IS NOT NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(Users::EmailVerifiedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(CLEAR_DUPLICATES).await?;
        db.execute_unprepared(VOUCHED).await?;
        db.execute_unprepared(UNIQUE_EMAIL).await?;

        manager
            .create_table(
                Table::create()
                    .table(LinkTokens::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LinkTokens::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LinkTokens::UserId).big_integer().not_null())
                    .col(
                        ColumnDef::new(LinkTokens::Purpose)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LinkTokens::Digest)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(LinkTokens::Email).string_len(320).null())
                    .col(
                        ColumnDef::new(LinkTokens::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LinkTokens::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_link_tokens_user_id")
                            .from(LinkTokens::Table, LinkTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_link_tokens_user_purpose")
                    .table(LinkTokens::Table)
                    .col(LinkTokens::UserId)
                    .col(LinkTokens::Purpose)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_link_tokens_expires_at")
                    .table(LinkTokens::Table)
                    .col(LinkTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LinkTokens::Table).to_owned())
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX idx_users_email_lower")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::EmailVerifiedAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    EmailVerifiedAt,
}

#[derive(DeriveIden)]
enum LinkTokens {
    Table,
    Id,
    UserId,
    Purpose,
    Digest,
    Email,
    CreatedAt,
    ExpiresAt,
}
