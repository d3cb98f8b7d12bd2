//! What each command of the binary does, and how a failure reads on the
//! terminal: a setting that cannot be used exits with code 2 and names its
//! flag and environment variable; anything else exits with code 1. The user
//! commands read the password here (standard input or a prompt without
//! echo); the rules they apply live in `crate::auth`.

use std::ffi::OsString;
use std::io::BufRead;

use anyhow::Context as _;

use crate::auth::AuthService;
use crate::auth::Password;
use crate::cli::{came_from_env, UserCommand};
use crate::clock::Clock;
use crate::config::{DatabaseArgs, PasswordArgs, ServeArgs, SettingError, Settings};
use crate::error::AuthError;
use crate::startup::{shutdown_signal, App};
use crate::{db, graphql};

/// Exit code for a setting that cannot be used (clap's code for usage errors).
pub const EXIT_SETTING: u8 = 2;
/// Exit code for any other failure.
pub const EXIT_FAILURE: u8 = 1;

/// `authql serve`: migrate, then serve until SIGINT or SIGTERM.
///
/// # Errors
/// A [`SettingError`] for a port in use or an unusable database; anything
/// else that stops the server.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    App::build(args.into())
        .await?
        .run_until_stopped(shutdown_signal())
        .await
}

/// `authql migrate`.
///
/// # Errors
/// A [`SettingError`] for an unusable database, or a failed migration.
pub async fn migrate(database: &DatabaseArgs) -> anyhow::Result<()> {
    let db = db::connect(&database.database_url, 1).await?;
    db::migrate(&db).await?;
    eprintln!("migrations applied");
    Ok(())
}

/// `authql schema`: the SDL.
pub fn schema() -> String {
    graphql::sdl()
}

/// `authql user …`.
///
/// # Errors
/// A [`SettingError`] for an unusable database; the domain's refusal (a
/// taken username, a weak password, an unknown user) as a message.
pub async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            username,
            email,
            with,
        } => {
            let auth = open(with.database, with.policy).await?;
            let password = read_password(with.password_stdin)?;
            let user = auth
                .create_user(&username, email.as_deref(), password)
                .await
                .map_err(explain)?;
            eprintln!("created user {} (id {})", user.username, user.id);
        }
        UserCommand::SetPassword { username, with } => {
            let sqlite = is_sqlite(&with.database);
            let auth = open(with.database, with.policy).await?;
            let password = read_password(with.password_stdin)?;
            let revoked = auth
                .set_password(&username, password)
                .await
                .map_err(explain)?;
            eprintln!("password set; {revoked} session(s) revoked");
            warn_about_sqlite_caches(sqlite);
        }
        UserCommand::Deactivate {
            username,
            database,
            log: _,
        } => {
            let sqlite = is_sqlite(&database);
            let auth = open(database, PasswordArgs::default()).await?;
            let revoked = auth.deactivate(&username).await.map_err(explain)?;
            eprintln!("user deactivated; {revoked} session(s) revoked");
            warn_about_sqlite_caches(sqlite);
        }
        UserCommand::ResetMfa {
            username,
            database,
            log: _,
        } => {
            let sqlite = is_sqlite(&database);
            let auth = open(database, PasswordArgs::default()).await?;
            let (was_on, revoked) = auth.reset_mfa(&username).await.map_err(explain)?;
            if was_on {
                eprintln!("two-factor sign-in turned off; {revoked} session(s) revoked");
            } else {
                eprintln!(
                    "two-factor sign-in was not on; {revoked} session(s) revoked all the same"
                );
            }
            warn_about_sqlite_caches(sqlite);
        }
    }
    Ok(())
}

/// The domain over a migrated database, for one command.
async fn open(database: DatabaseArgs, policy: PasswordArgs) -> anyhow::Result<AuthService> {
    let settings = Settings::for_command(database, policy);
    let db = db::connect(&settings.database_url, 2).await?;
    db::migrate(&db).await?;
    AuthService::new(db, &settings, Clock::default()).await
}

fn is_sqlite(database: &DatabaseArgs) -> bool {
    database.database_url.starts_with("sqlite:")
}

/// On SQLite a running server hears nothing from this process.
fn warn_about_sqlite_caches(sqlite: bool) {
    if sqlite {
        eprintln!(
            "note: a server already running on this SQLite database may accept the revoked tokens \
             from its cache for up to its --cache-ttl (300 s by default); PostgreSQL instances \
             are told at once"
        );
    }
}

/// The password from the first line of stdin, or typed twice at a prompt
/// without echo.
fn read_password(from_stdin: bool) -> anyhow::Result<Password> {
    if from_stdin {
        return first_line_password(std::io::stdin().lock());
    }
    let first = rpassword::prompt_password("Password: ")
        .context("cannot prompt for a password (no terminal?); use --password-stdin")?;
    let second = rpassword::prompt_password("Password (again): ")
        .context("cannot prompt for a password (no terminal?); use --password-stdin")?;
    anyhow::ensure!(first == second, "the two passwords differ");
    Ok(Password::new(&first))
}

/// The first line of `input`, without its line ending, as a password.
fn first_line_password(mut input: impl BufRead) -> anyhow::Result<Password> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    anyhow::ensure!(!line.is_empty(), "no password on standard input");
    Ok(Password::new(line))
}

/// A domain error as a message for the terminal: the client's message,
/// with the reasons' codes, and the cause of an internal error in full.
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

/// The text to print for a command's failure, and the exit code. `args`
/// (the command line) tell whether a setting's value came from its flag or
/// its environment variable.
pub fn describe_failure(mut err: anyhow::Error, args: &[OsString]) -> (String, u8) {
    if let Some(setting) = err.downcast_mut::<SettingError>() {
        let from_env = setting
            .env()
            .is_some_and(|env| came_from_env(args, setting.flag(), env));
        setting.set_from_env(from_env);
        return (format!("error: {setting}"), EXIT_SETTING);
    }
    let code = if err.chain().any(|cause| cause.is::<SettingError>()) {
        EXIT_SETTING
    } else {
        EXIT_FAILURE
    };
    (format!("error: {err:#}"), code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_first_line_without_its_ending() {
        for input in [
            "a long passphrase\n",
            "a long passphrase\r\nmore",
            "a long passphrase",
        ] {
            let password = first_line_password(input.as_bytes()).unwrap();
            assert_eq!(password.expose(), "a long passphrase", "{input:?}");
        }
        assert!(first_line_password("\n".as_bytes()).is_err());
        assert!(first_line_password("".as_bytes()).is_err());
    }

    #[test]
    fn domain_errors_read_as_sentences_with_their_reasons() {
        let refused = explain(AuthError::bad_input(
            "the new password was refused",
            vec!["TOO_SHORT".into()],
        ));
        assert_eq!(
            refused.to_string(),
            "the new password was refused (TOO_SHORT)"
        );
        assert_eq!(explain(AuthError::NotFound).to_string(), "no such user");
    }

    #[test]
    fn a_setting_error_exits_with_two_and_anything_else_with_one() {
        let args = vec![OsString::from("authql")];
        let setting = anyhow::Error::new(SettingError::new("--listen", "x", "bad"));
        let (text, code) = describe_failure(setting, &args);
        assert_eq!(code, EXIT_SETTING);
        assert!(text.starts_with("error: --listen 'x'"), "{text}");
        let (text, code) = describe_failure(anyhow::anyhow!("boom"), &args);
        assert_eq!((text.as_str(), code), ("error: boom", EXIT_FAILURE));
    }
}
