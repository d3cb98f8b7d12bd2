//! One integration binary: every test starts the real server and talks
//! GraphQL over HTTP.

mod helpers;

mod accounts;
mod cache;
mod captcha;
mod change_password;
mod cli;
mod cors;
mod docs;
mod fuzz;
mod graphiql;
mod graphql_http;
mod hostile;
mod http;
mod instances;
mod login;
mod mfa;
mod observability;
mod schema;
mod sessions;
mod shared_throttle;
mod smtp;
mod stale_request;
mod throttle;
mod tokens;
mod upgrade;
