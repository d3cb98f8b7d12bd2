//! The command line: `authql [serve | migrate | user … | schema]`.
//!
//! Each command takes only the settings it uses (`authql user create
//! --help` lists no server flag); `authql` without a command, or with only
//! options, is `authql serve`. A value clap refuses becomes a
//! [`SettingError`] naming the flag and its environment variable, and saying
//! which of the two the value came from. Only parsing lives here; `main.rs`
//! dispatches into [`crate::commands`].

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::config::{DatabaseArgs, LogArgs, LogFormat, PasswordArgs, ServeArgs, SettingError};

/// A GraphQL authentication API server.
#[derive(Parser)]
#[command(
    name = "authql",
    version,
    about,
    after_help = "Without a command, authql serves: `authql --listen 0.0.0.0:8000` is \
                  `authql serve --listen 0.0.0.0:8000`. Each command's --help lists its settings."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Parsed once at start and matched once: the size of the `Serve` variant
/// costs nothing worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve (the default).
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
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
        /// 1 to 150 letters, digits or @.+-_ (compared without case).
        username: String,
        /// The user's email address.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        with: SetPasswordArgs,
    },
    /// Set a user's password and revoke all of the user's tokens.
    SetPassword {
        /// The user whose password is set.
        username: String,
        #[command(flatten)]
        with: SetPasswordArgs,
    },
    /// Deactivate a user and revoke all of the user's tokens.
    Deactivate {
        /// The user to deactivate.
        username: String,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Re-activate a deactivated user, who then signs in with the same
    /// password.
    Activate {
        /// The user to activate.
        username: String,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// List users: id, username, email and whether it is verified, active,
    /// two-factor sign-in, last login, live sessions.
    List {
        /// Print a JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Delete a user with its sessions and tokens, mailed links and
    /// recovery codes. Asks for confirmation on a terminal unless --yes.
    Delete {
        /// The user to delete.
        username: String,
        /// Delete without asking (needed when standard input is not a
        /// terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Turn a user's two-factor sign-in (TOTP) off and revoke all of the
    /// user's tokens.
    ResetMfa {
        /// The user whose TOTP is turned off.
        username: String,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        log: LogArgs,
    },
}

/// What the commands that set a password take besides the username.
#[derive(Args)]
pub struct SetPasswordArgs {
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub policy: PasswordArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Why the command line was not accepted.
#[derive(Debug)]
pub enum CliError {
    /// A setting's value was refused: print it and exit with code 2.
    Setting(SettingError),
    /// Anything else, help and version included: clap prints and exits.
    Clap(clap::Error),
}

impl Cli {
    /// Parses `args` (the program name first).
    ///
    /// # Errors
    /// [`CliError::Setting`] for a refused value, [`CliError::Clap`] for the
    /// rest (unknown flags, `--help`, `--version`).
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args = with_default_command(args.into_iter().map(Into::into).collect());
        let mut command = hide_env_values(Self::command());
        command
            .try_get_matches_from_mut(&args)
            .and_then(|matches| Self::from_arg_matches(&matches))
            .map_err(|err| match setting_error(&err, &args) {
                Some(setting) => CliError::Setting(setting),
                None => CliError::Clap(err.format(&mut command)),
            })
    }
}

impl Command {
    /// How this command logs.
    pub fn log_format(&self) -> LogFormat {
        match self {
            Self::Serve(ServeArgs { log, .. })
            | Self::Migrate { log, .. }
            | Self::User(
                UserCommand::Create {
                    with: SetPasswordArgs { log, .. },
                    ..
                }
                | UserCommand::SetPassword {
                    with: SetPasswordArgs { log, .. },
                    ..
                }
                | UserCommand::Deactivate { log, .. }
                | UserCommand::Activate { log, .. }
                | UserCommand::List { log, .. }
                | UserCommand::Delete { log, .. }
                | UserCommand::ResetMfa { log, .. },
            ) => log.log_format,
            Self::Schema => LogFormat::Text,
        }
    }
}

/// Whether the setting `flag` took its value from its environment variable:
/// the flag is not on the command line and the variable is set.
pub fn came_from_env(args: &[OsString], flag: &str, env: &str) -> bool {
    let on_command_line = args
        .iter()
        .skip(1)
        .map(|arg| arg.to_string_lossy())
        .take_while(|arg| arg != "--")
        .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")));
    !on_command_line && std::env::var_os(env).is_some()
}

/// `authql` alone, or followed by an option, means `authql serve …`.
fn with_default_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let first = args.get(1).map(|arg| arg.to_string_lossy().into_owned());
    let serve = match first.as_deref() {
        None => true,
        Some("-h" | "--help" | "-V" | "--version") => false,
        Some(arg) => arg.starts_with('-'),
    };
    if serve {
        args.insert(1.min(args.len()), OsString::from("serve"));
    }
    args
}

/// clap prints `[env: NAME=]` for a variable that is not set, and the value
/// of one that is (which may be a secret): show only the name.
fn hide_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

/// A refused value as a [`SettingError`]; `None` for other errors.
fn setting_error(err: &clap::Error, args: &[OsString]) -> Option<SettingError> {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--token-ttl <SECONDS>": the flag is the first word.
    let flag = arg.split_whitespace().next()?;
    if !flag.starts_with("--") {
        return None;
    }
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.as_str(),
        _ => "",
    };
    let problem = match (
        err.get(ContextKind::ValidValue),
        std::error::Error::source(err),
    ) {
        (Some(ContextValue::Strings(valid)), _) if !valid.is_empty() => {
            format!("expected one of {}", valid.join(", "))
        }
        (_, Some(source)) => source.to_string(),
        _ if value.is_empty() => "a value is required".to_owned(),
        _ => "not a valid value".to_owned(),
    };
    let mut setting = SettingError::new(flag, value, problem);
    let from_env = setting
        .env()
        .is_some_and(|env| came_from_env(args, flag, env));
    setting.set_from_env(from_env);
    Some(setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, CliError> {
        Cli::try_parse_args(std::iter::once("authql").chain(args.iter().copied()))
    }

    #[test]
    fn no_command_or_only_options_means_serve() {
        for args in [&[][..], &["--listen", "127.0.0.1:9"][..]] {
            let cli = parse(args).unwrap_or_else(|_| panic!("{args:?} refused"));
            assert!(matches!(cli.command, Command::Serve(_)), "{args:?}");
        }
        assert!(matches!(
            parse(&["schema"]).ok().map(|c| c.command),
            Some(Command::Schema)
        ));
    }

    #[test]
    fn user_commands_take_no_server_flag() {
        let refused = parse(&["user", "deactivate", "bob", "--listen", "127.0.0.1:9"]);
        assert!(matches!(refused, Err(CliError::Clap(_))));
        let cli = parse(&[
            "user",
            "create",
            "bob",
            "--password-stdin",
            "--bcrypt-cost",
            "4",
            "--database-url",
            "sqlite://x.db",
        ])
        .expect("accepted");
        let Command::User(UserCommand::Create { with, .. }) = cli.command else {
            panic!("not user create");
        };
        assert_eq!(with.policy.bcrypt_cost, 4);
        assert_eq!(with.database.database_url, "sqlite://x.db");
    }

    #[test]
    fn a_refused_value_names_the_flag_and_the_variable() {
        let Err(CliError::Setting(err)) = parse(&["serve", "--token-ttl", "soon"]) else {
            panic!("accepted");
        };
        let text = err.to_string();
        assert!(text.starts_with("--token-ttl 'soon'"), "{text}");
        assert!(text.contains("AUTHQL_TOKEN_TTL"), "{text}");
        assert!(text.contains("whole number of seconds"), "{text}");

        let Err(CliError::Setting(err)) = parse(&["--log-format", "xml"]) else {
            panic!("accepted");
        };
        assert!(
            err.to_string().contains("expected one of text, json"),
            "{err}"
        );
    }
}
