//! What each command of the binary does, and how a failure reads on the
//! terminal: a setting that cannot be used exits with code 2 and names its
//! flag and environment variable; anything else exits with code 1. The user
//! commands read the password here (standard input or a prompt without
//! echo); the rules they apply live in `crate::auth`.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal as _, Write};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::auth::AuthService;
use crate::auth::{Password, UserListing};
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
        UserCommand::Activate {
            username,
            database,
            log: _,
        } => {
            let auth = open(database, PasswordArgs::default()).await?;
            if auth.activate(&username).await.map_err(explain)? {
                eprintln!("user activated; it signs in with its password again");
            } else {
                eprintln!("user {username} is already active; nothing changed");
            }
        }
        UserCommand::List {
            json,
            database,
            log: _,
        } => {
            let auth = open(database, PasswordArgs::default()).await?;
            let users = auth.list_users().await.map_err(explain)?;
            let text = if json {
                listing_json(&users)?
            } else {
                listing_table(&users)
            };
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("cannot write the list")?;
        }
        UserCommand::Delete {
            username,
            yes,
            database,
            log: _,
        } => {
            // Refused before the database is touched: a script that forgot
            // --yes learns it whether or not the user exists.
            anyhow::ensure!(
                yes || std::io::stdin().is_terminal(),
                "not deleting {username}: standard input is not a terminal, so there is no one \
                 to confirm; pass --yes to delete without asking"
            );
            let sqlite = is_sqlite(&database);
            let auth = open(database, PasswordArgs::default()).await?;
            let target = auth.describe_user(&username).await.map_err(explain)?;
            if !yes {
                let question = deletion_question(&target);
                let confirmed = ask(&question, std::io::stdin().lock(), std::io::stderr())?;
                anyhow::ensure!(confirmed, "not confirmed; nothing deleted");
            }
            let revoked = auth.delete_user(target.user.id).await.map_err(explain)?;
            eprintln!(
                "user {} deleted; {revoked} session(s) revoked",
                target.user.username
            );
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

/// A user in `authql user list --json`: the names of the GraphQL `User`
/// type's fields, plus `liveSessions`; the id is a number.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedUser<'a> {
    id: i64,
    username: &'a str,
    email: Option<&'a str>,
    email_verified: bool,
    is_active: bool,
    mfa_enabled: bool,
    last_login: Option<String>,
    live_sessions: u64,
}

/// The list as a JSON array, one object per user, ending in a newline.
fn listing_json(users: &[UserListing]) -> anyhow::Result<String> {
    let listed: Vec<ListedUser<'_>> = users
        .iter()
        .map(
            |UserListing {
                 user,
                 live_sessions,
             }| ListedUser {
                id: user.id,
                username: &user.username,
                email: user.email.as_deref(),
                email_verified: user.email_verified,
                is_active: user.is_active,
                mfa_enabled: user.mfa_enabled,
                last_login: user.last_login.map(timestamp),
                live_sessions: *live_sessions,
            },
        )
        .collect();
    let mut text = serde_json::to_string_pretty(&listed).context("cannot write JSON")?;
    text.push('\n');
    Ok(text)
}

const LIST_HEADER: [&str; 8] = [
    "ID",
    "USERNAME",
    "EMAIL",
    "VERIFIED",
    "ACTIVE",
    "MFA",
    "LAST LOGIN",
    "SESSIONS",
];

/// The list as a table with a header line, columns padded to their widest
/// cell. Control characters are escaped: an address registered by anyone
/// must not drive the operator's terminal.
fn listing_table(users: &[UserListing]) -> String {
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    let mut rows = vec![LIST_HEADER.map(str::to_owned)];
    for UserListing {
        user,
        live_sessions,
    } in users
    {
        rows.push([
            user.id.to_string(),
            user.username.escape_debug().to_string(),
            user.email
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| e.escape_debug().to_string()),
            // No address, nothing to verify.
            if user.email.is_some() {
                yes_no(user.email_verified).to_owned()
            } else {
                "-".to_owned()
            },
            yes_no(user.is_active).to_owned(),
            if user.mfa_enabled { "on" } else { "off" }.to_owned(),
            user.last_login
                .map_or_else(|| "never".to_owned(), timestamp),
            live_sessions.to_string(),
        ]);
    }
    let mut widths = [0; LIST_HEADER.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// RFC 3339 in UTC, to the second.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What `user delete` asks before it deletes.
fn deletion_question(target: &UserListing) -> String {
    let user = &target.user;
    format!(
        "Delete user {} (id {}, email {}, {} live session(s))? This cannot be undone. [y/N] ",
        user.username,
        user.id,
        user.email.as_deref().unwrap_or("none").escape_debug(),
        target.live_sessions
    )
}

/// Writes `question` to `output` and reads one line of `input`: true for
/// `y` or `yes` in any case; anything else, an empty line or the end of
/// input is a no.
fn ask(question: &str, mut input: impl BufRead, mut output: impl Write) -> anyhow::Result<bool> {
    output
        .write_all(question.as_bytes())
        .and_then(|()| output.flush())
        .context("cannot ask for confirmation")?;
    let mut answer = String::new();
    input
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
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
    fn only_y_or_yes_confirms() {
        for (typed, confirmed) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \r\n", true),
            ("n\n", false),
            ("\n", false),
            ("", false),
            ("yes please\n", false),
        ] {
            let mut shown = Vec::new();
            let answer = ask("Delete? [y/N] ", typed.as_bytes(), &mut shown).unwrap();
            assert_eq!(answer, confirmed, "{typed:?}");
            assert_eq!(shown, b"Delete? [y/N] ");
        }
    }

    fn listing(email: Option<&str>) -> UserListing {
        UserListing {
            user: crate::auth::User {
                id: 7,
                username: "alice".into(),
                email: email.map(str::to_owned),
                email_verified: email.is_some(),
                mfa_enabled: true,
                is_active: true,
                date_joined: DateTime::UNIX_EPOCH,
                last_login: None,
            },
            live_sessions: 2,
        }
    }

    #[test]
    fn the_table_aligns_its_columns_and_escapes_control_characters() {
        let table = listing_table(&[listing(Some("a\u{1b}[2J@example.com")), listing(None)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ID  USERNAME  EMAIL                   VERIFIED  ACTIVE  MFA  LAST LOGIN  SESSIONS"
        );
        assert_eq!(
            lines[1],
            "7   alice     a\\u{1b}[2J@example.com  yes       yes     on   never       2"
        );
        assert_eq!(
            lines[2],
            "7   alice     -                       -         yes     on   never       2"
        );
        assert!(!table.contains('\u{1b}'));
    }

    #[test]
    fn the_json_list_has_stable_field_names() {
        let text = listing_json(&[listing(None)]).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!([{
                "id": 7,
                "username": "alice",
                "email": null,
                "emailVerified": false,
                "isActive": true,
                "mfaEnabled": true,
                "lastLogin": null,
                "liveSessions": 2,
            }])
        );
        assert!(listing_json(&[]).unwrap().starts_with("[]"));
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
