//! A row of `users`.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub username: String,
    pub email: Option<String>,
    /// When the address was shown to be the user's (a link followed, a
    /// reset done, or an operator vouching for it).
    pub email_verified_at: Option<DateTimeUtc>,
    pub password_hash: String,
    pub is_active: bool,
    pub date_joined: DateTimeUtc,
    pub last_login: Option<DateTimeUtc>,
    /// Consecutive failed password checks, reset by a success.
    pub failed_logins: i32,
    pub last_failed_login: Option<DateTimeUtc>,
    /// The TOTP secret, sealed under `secret-key`; set while TOTP is on.
    pub totp_secret: Option<String>,
    /// The sealed secret of an enrolment awaiting `confirmTotp`.
    pub totp_pending: Option<String>,
    /// The last TOTP step accepted (Unix time / 30): no step is accepted twice.
    pub totp_last_step: Option<i64>,
}

/// Written by hand so that the password hash never reaches a log.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::auth_token::Entity")]
    AuthTokens,
}

impl Related<super::auth_token::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AuthTokens.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
