//! A row of `login_throttle`: one throttled bucket (a client network or a
//! username), shared by every instance. The key is an HMAC of the bucket,
//! never the IP or the name; times are microseconds since the Unix epoch.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_throttle")]
pub struct Model {
    /// HMAC-SHA256 of the bucket under the key in `throttle_keys`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: Vec<u8>,
    /// GCRA: the theoretical arrival time of the next attempt.
    pub tat: i64,
    /// Whether the latest attempt was admitted.
    pub admitted: bool,
    /// Consecutive failed password checks, for a username with no account.
    pub failures: i32,
    pub last_failure: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
