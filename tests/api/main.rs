//! One integration binary: every test starts the real server and talks
//! GraphQL over HTTP.

mod helpers;

mod cache;
mod change_password;
mod cli;
mod http;
mod login;
mod schema;
mod sessions;
mod tokens;
