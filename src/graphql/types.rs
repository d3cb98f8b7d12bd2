//! The GraphQL object types, converted by hand from the domain's types so
//! that no column a client should not see can leak through.

use async_graphql::{SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::auth;

/// A user account.
#[derive(SimpleObject)]
#[graphql(name = "User")]
pub struct UserObject {
    pub id: ID,
    pub username: String,
    pub email: Option<String>,
    pub is_active: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

impl From<&auth::User> for UserObject {
    fn from(user: &auth::User) -> Self {
        Self {
            id: ID(user.id.to_string()),
            username: user.username.clone(),
            email: user.email.clone(),
            is_active: user.is_active,
            date_joined: user.date_joined,
            last_login: user.last_login,
        }
    }
}

/// A signed-in device: one live token.
#[derive(SimpleObject)]
#[graphql(name = "Session")]
pub struct SessionObject {
    pub id: ID,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// True for the session whose token made this request.
    pub current: bool,
}

impl SessionObject {
    pub fn new(session: auth::Session, current_id: i64) -> Self {
        Self {
            id: ID(session.id.to_string()),
            current: session.id == current_id,
            created_at: session.created_at,
            expires_at: session.expires_at,
            user_agent: session.user_agent,
            ip: session.ip,
        }
    }
}

/// A new bearer token and its user.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send it as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: UserObject,
}

impl From<auth::Issued> for AuthPayload {
    fn from(issued: auth::Issued) -> Self {
        Self {
            token: issued.token.expose().to_owned(),
            expires_at: issued.expires_at,
            user: UserObject::from(&issued.user),
        }
    }
}
