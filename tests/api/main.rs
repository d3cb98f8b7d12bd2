//! One integration binary: every test starts the real server and talks
//! GraphQL over HTTP.

mod helpers;

mod account_guards;
mod accounts;
mod cache;
mod captcha;
mod change_password;
mod cli;
mod cookie;
mod cors;
mod docs;
mod forward_auth;
mod fuzz;
mod graphiql;
mod graphql_http;
mod hostile;
mod http;
mod instances;
mod last_used;
mod login;
mod mfa;
mod nginx;
mod observability;
mod schema;
mod sessions;
mod shared_throttle;
mod smtp;
mod stale_request;
mod throttle;
mod tokens;
mod upgrade;
