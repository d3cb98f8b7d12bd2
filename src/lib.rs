//! authql: a GraphQL authentication API server.
//!
//! Layers, each knowing one thing: `http` speaks poem, `graphql` speaks
//! async-graphql, `auth` holds every rule of the spec, `db` the tables.

/// mimalloc as the global allocator, through its fast path.
pub mod allocator;
/// Every rule about users, passwords, tokens, sessions and throttling.
pub mod auth;
/// The command line.
pub mod cli;
/// "Now", movable in tests.
pub mod clock;
/// What each command does; how failures read and exit.
pub mod commands;
/// Settings parsed and validated at start; errors that name them.
pub mod config;
/// Connecting, migrating and pinging the database; the entities.
pub mod db;
/// The domain error and its mapping to GraphQL error extensions.
pub mod error;
/// The GraphQL schema, its resolvers and limits.
pub mod graphql;
/// Routes, request ids, CORS, GraphQL over HTTP.
pub mod http;
/// Mail delivery through lettre, off the request path.
pub mod mail;
/// Prometheus metrics.
pub mod metrics;
/// Building and running the server.
pub mod startup;
/// The state shared by handlers.
pub mod state;
/// Logging and the blocking-pool helper.
pub mod telemetry;
