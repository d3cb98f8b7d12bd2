//! The `authql` binary: parse the command line, start logging, dispatch into
//! the library. Everything else lives in the library so tests share it.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use authql::auth::passwords::Password;
use authql::auth::AuthService;
use authql::cli::{Cli, Command, UserCommand};
use authql::clock::Clock;
use authql::config::Settings;
use authql::error::AuthError;
use authql::startup::{shutdown_signal, App};
use authql::{db, graphql, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.settings.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            App::build(settings)
                .await?
                .run_until_stopped(shutdown_signal())
                .await
        }
        Command::Migrate => {
            let db = db::connect(&settings.database_url, 1).await?;
            db::migrate(&db).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::User(command) => manage_user(&settings, command).await,
    }
}

async fn manage_user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let db = db::connect(&settings.database_url, 2).await?;
    db::migrate(&db).await?;
    let auth = AuthService::new(db, settings, Clock::default()).await?;
    match command {
        UserCommand::Create {
            username,
            email,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let user = auth
                .create_user(&username, email.as_deref(), password)
                .await
                .map_err(explain)?;
            eprintln!("created user {} (id {})", user.username, user.id);
        }
        UserCommand::SetPassword {
            username,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let revoked = auth
                .set_password(&username, password)
                .await
                .map_err(explain)?;
            eprintln!("password set; {revoked} session(s) revoked");
            warn_about_sqlite_caches(settings);
        }
        UserCommand::Deactivate { username } => {
            let revoked = auth.deactivate(&username).await.map_err(explain)?;
            eprintln!("user deactivated; {revoked} session(s) revoked");
            warn_about_sqlite_caches(settings);
        }
    }
    Ok(())
}

/// On SQLite a running server hears nothing from this process.
fn warn_about_sqlite_caches(settings: &Settings) {
    if settings.database_url.starts_with("sqlite:") {
        eprintln!(
            "note: a server already running on this SQLite database may accept the revoked tokens \
             from its cache for up to --cache-ttl ({} s); PostgreSQL instances are told at once",
            settings.cache_ttl.as_secs()
        );
    }
}

/// The password from the first line of stdin, or typed twice at a prompt
/// without echo.
fn read_password(from_stdin: bool) -> anyhow::Result<Password> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        anyhow::ensure!(!line.is_empty(), "no password on standard input");
        return Ok(Password::new(line));
    }
    let first = rpassword::prompt_password("Password: ")
        .context("cannot prompt for a password (no terminal?); use --password-stdin")?;
    let second = rpassword::prompt_password("Password (again): ")
        .context("cannot prompt for a password (no terminal?); use --password-stdin")?;
    anyhow::ensure!(first == second, "the two passwords differ");
    Ok(Password::new(&first))
}

/// A domain error as a message for the terminal.
fn explain(err: AuthError) -> anyhow::Error {
    match err {
        AuthError::Internal(cause) => cause,
        AuthError::NotFound => anyhow::anyhow!("no such user"),
        AuthError::BadUserInput { message, reasons } => {
            anyhow::anyhow!("{message} ({})", reasons.join(", "))
        }
        other => anyhow::anyhow!(other.message()),
    }
}
