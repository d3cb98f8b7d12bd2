//! sea-orm models of the tables. Rows only: the API types that clients see
//! are built from these by hand, so a digest or a hash cannot leak.

pub mod auth_token;
pub mod link_token;
pub mod login_throttle;
pub mod mfa_challenge;
pub mod recovery_code;
pub mod throttle_key;
pub mod user;
