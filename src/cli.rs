//! The command line: `authql [serve | migrate | user … | schema]`.
//!
//! Only parsing lives here; `main.rs` dispatches into the library.

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// A GraphQL authentication API server.
#[derive(Parser)]
#[command(name = "authql", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the GraphQL schema (SDL).
    Schema,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin, prompts for the password.
    Create {
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password and revoke all of the user's tokens.
    SetPassword {
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Deactivate a user and revoke all of the user's tokens.
    Deactivate { username: String },
}
