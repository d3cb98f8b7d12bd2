//! A row of `link_tokens`: a one-time link mailed to a user (verification,
//! password reset, email change). It holds the token's SHA-256 digest, never
//! the token.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "link_tokens")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i64,
    /// `verify`, `reset` or `email_change`.
    pub purpose: String,
    /// Lower-case hex SHA-256 of the token.
    #[sea_orm(unique)]
    pub digest: String,
    /// The address the link was mailed to (the new one for an email change).
    pub email: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
