//! Settings: every flag with its environment variable, grouped by who needs
//! it (the database for every command, the password policy for the server
//! and the user commands, the rest for the server alone), parsed into typed,
//! validated values once at start, then flattened into [`Settings`].
//!
//! A value that cannot be used becomes a [`SettingError`], whether clap
//! refused it or it failed later (a database that does not answer, a port
//! in use): it names the flag and the environment variable, shows the value
//! with any password masked, and the program exits with code 2.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, FromArgMatches, ValueEnum};
use secrecy::SecretString;

/// The database every command that touches data works on.
#[derive(Args, Clone)]
pub struct DatabaseArgs {
    /// Database URL: sqlite://FILE?mode=rwc (mode=rwc creates the file) or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://authql.db?mode=rwc",
        value_name = "URL"
    )]
    pub database_url: String,
}

/// How new passwords are checked and hashed: the server and the user
/// commands that set a password.
#[derive(Args, Clone)]
pub struct PasswordArgs {
    /// bcrypt cost for new hashes; stored hashes of another cost are
    /// re-hashed at the next successful login.
    #[arg(long, env = "AUTHQL_BCRYPT_COST", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,

    /// Fewest characters (Unicode code points) in a new password.
    #[arg(long, env = "AUTHQL_PASSWORD_MIN_LENGTH", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(8..=72))]
    pub password_min_length: u32,
}

/// The server's own settings.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Address to listen on: IP:PORT or HOST:PORT (a host name is resolved
    /// at start; the first address is used).
    #[arg(long, env = "AUTHQL_LISTEN", default_value = "127.0.0.1:8000", value_parser = parse_listen, value_name = "ADDRESS")]
    pub listen: SocketAddr,

    /// Most database connections this instance opens [default: 10 on
    /// PostgreSQL; on SQLite twice the cores, at most 10]
    #[arg(long, env = "AUTHQL_DB_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub db_max_connections: Option<u32>,

    /// Token lifetime in seconds, from issue (absolute expiry).
    #[arg(long, env = "AUTHQL_TOKEN_TTL", default_value = "86400", value_parser = parse_seconds, value_name = "SECONDS")]
    pub token_ttl: Duration,

    /// Longest time in seconds a resolved token is trusted from the cache.
    #[arg(long, env = "AUTHQL_CACHE_TTL", default_value = "300", value_parser = parse_seconds, value_name = "SECONDS")]
    pub cache_ttl: Duration,

    /// Entries in the token cache; 0 turns the cache off.
    #[arg(long, env = "AUTHQL_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,

    /// Login attempts allowed per client IP and per username: N/second,
    /// N/minute, N/hour or N/day.
    #[arg(
        long,
        env = "AUTHQL_LOGIN_RATE",
        default_value = "10/minute",
        value_name = "RATE"
    )]
    pub login_rate: LoginRate,

    /// bcrypt computations at once [default: the number of CPU cores].
    #[arg(long, env = "AUTHQL_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<NonZeroUsize>,

    /// Most live sessions per user; a login beyond it revokes the oldest.
    /// 0: no cap.
    #[arg(long, env = "AUTHQL_MAX_SESSIONS_PER_USER", default_value_t = 0)]
    pub max_sessions_per_user: u32,

    /// Captcha service checked at login when a secret is set.
    #[arg(long, env = "AUTHQL_CAPTCHA_PROVIDER", value_enum, default_value_t = CaptchaProvider::Recaptcha)]
    pub captcha_provider: CaptchaProvider,

    /// Captcha secret key; unset: no captcha.
    #[arg(long, env = "AUTHQL_CAPTCHA_SECRET", value_name = "SECRET")]
    pub captcha_secret: Option<SecretString>,

    /// Captcha verification URL [default: the provider's siteverify URL].
    #[arg(long, env = "AUTHQL_CAPTCHA_VERIFY_URL", value_parser = parse_http_url, value_name = "URL")]
    pub captcha_verify_url: Option<String>,

    /// Lowest reCAPTCHA v3 score accepted, 0.0 to 1.0.
    #[arg(long, env = "AUTHQL_CAPTCHA_MIN_SCORE", default_value = "0.5", value_parser = parse_score, value_name = "SCORE")]
    pub captcha_min_score: f64,

    /// reCAPTCHA v3 action the answer must carry.
    #[arg(
        long,
        env = "AUTHQL_CAPTCHA_ACTION",
        default_value = "login",
        value_name = "ACTION"
    )]
    pub captcha_action: String,

    /// Serve schema introspection (GraphiQL and codegen need it); false also
    /// turns off field suggestions in errors.
    #[arg(long, env = "AUTHQL_INTROSPECTION", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub introspection: bool,

    /// Serve the GraphiQL page to browsers at GET /graphql [default: the
    /// value of --introspection, which GraphiQL needs].
    #[arg(long, env = "AUTHQL_GRAPHIQL", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub graphiql: Option<bool>,

    /// Take the client IP from the last X-Forwarded-For entry (set it only
    /// behind a proxy that appends that header).
    #[arg(long, env = "AUTHQL_TRUST_FORWARDED_FOR", default_value_t = false,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub trust_forwarded_for: bool,

    /// Comma-separated origins allowed to call from a browser, such as
    /// https://app.example.com.
    #[arg(long, env = "AUTHQL_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin, value_name = "ORIGINS")]
    pub cors_origins: Vec<String>,

    /// Most client connections open at once; more are closed on arrival.
    #[arg(long, env = "AUTHQL_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Seconds a client has to send a request's headers; also how long an
    /// idle kept-alive connection stays open.
    #[arg(long, env = "AUTHQL_HEADER_READ_TIMEOUT", default_value = "10", value_parser = parse_seconds, value_name = "SECONDS")]
    pub header_read_timeout: Duration,

    /// At least 32 random bytes, base64 (`openssl rand -base64 32`): the key
    /// TOTP secrets are encrypted under. Unset: two-factor sign-in is
    /// unavailable.
    #[arg(long, env = "AUTHQL_SECRET_KEY", value_name = "BASE64")]
    pub secret_key: Option<SecretKey>,

    /// Issuer shown by authenticator apps next to the account name.
    #[arg(
        long,
        env = "AUTHQL_MFA_ISSUER",
        default_value = "authql",
        value_name = "NAME"
    )]
    pub mfa_issuer: String,

    /// Seconds a login's second step (its MFA challenge) stays valid.
    #[arg(long, env = "AUTHQL_MFA_CHALLENGE_TTL", default_value = "300", value_parser = parse_seconds, value_name = "SECONDS")]
    pub mfa_challenge_ttl: Duration,

    /// Also hand out each new session as an HttpOnly cookie, read when no
    /// Authorization header is sent: on or off.
    #[arg(long, env = "AUTHQL_SESSION_COOKIE", default_value = "off", value_parser = parse_on_off, value_name = "on|off")]
    pub session_cookie: bool,

    /// The session cookie's name [default: __Host-authql, or authql with
    /// --cookie-secure false].
    #[arg(long, env = "AUTHQL_COOKIE_NAME", value_parser = parse_cookie_name, value_name = "NAME")]
    pub cookie_name: Option<String>,

    /// Mark the session cookie Secure (HTTPS only); false is for plain-HTTP
    /// development.
    #[arg(long, env = "AUTHQL_COOKIE_SECURE", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cookie_secure: bool,

    /// Seconds between two writes of a session's lastUsedAt.
    #[arg(long, env = "AUTHQL_LAST_USED_INTERVAL", default_value = "60", value_parser = parse_seconds, value_name = "SECONDS")]
    pub last_used_interval: Duration,

    /// Seconds a session may go unused before it is refused and removed;
    /// 0: no idle timeout.
    #[arg(long, env = "AUTHQL_TOKEN_IDLE_TIMEOUT", default_value = "0", value_parser = parse_seconds_or_zero, value_name = "SECONDS")]
    pub token_idle_timeout: Duration,
    /// Whether anyone may create an account with `register` (`closed`:
    /// accounts come from `authql user create`).
    #[arg(long, env = "AUTHQL_REGISTRATION", value_enum, default_value_t = Registration::Closed)]
    pub registration: Registration,

    /// `off` sends nothing; `optional` mails a link and lets the account
    /// sign in at once; `required` refuses a login until the address is
    /// verified. Default: `optional` with a mailer, else `off`.
    #[arg(long, env = "AUTHQL_EMAIL_VERIFICATION", value_enum)]
    pub email_verification: Option<EmailVerification>,

    /// SMTP server, in lettre's URL form: `smtps://user:pass@host` (implicit
    /// TLS), `smtp://host?tls=required` (STARTTLS), bare `smtp://host`
    /// (unencrypted). A password in it is a secret.
    #[arg(long, env = "AUTHQL_SMTP_URL", value_name = "URL")]
    pub smtp_url: Option<SecretString>,

    /// Write mails as `.eml` files into this directory instead of sending
    /// them (development and tests).
    #[arg(long, env = "AUTHQL_MAIL_DIR", value_name = "DIR")]
    pub mail_dir: Option<std::path::PathBuf>,

    /// The sender of every mail.
    #[arg(
        long,
        env = "AUTHQL_MAIL_FROM",
        default_value = "authql <no-reply@localhost>",
        value_name = "MAILBOX"
    )]
    pub mail_from: String,

    /// Link template for password-reset mails, holding `{token}`. Unset:
    /// the mail carries the bare token.
    #[arg(long, env = "AUTHQL_RESET_URL", value_parser = parse_link_template, value_name = "URL")]
    pub reset_url: Option<String>,

    /// Link template for verification and email-change mails, holding
    /// `{token}`. Unset: the mail carries the bare token.
    #[arg(long, env = "AUTHQL_VERIFY_URL", value_parser = parse_link_template, value_name = "URL")]
    pub verify_url: Option<String>,

    /// Seconds a password-reset link stays valid.
    #[arg(long, env = "AUTHQL_RESET_TOKEN_TTL", default_value = "3600", value_parser = parse_seconds, value_name = "SECONDS")]
    pub reset_token_ttl: Duration,

    /// Seconds a verification or email-change link stays valid.
    #[arg(long, env = "AUTHQL_VERIFY_TOKEN_TTL", default_value = "86400", value_parser = parse_seconds, value_name = "SECONDS")]
    pub verify_token_ttl: Duration,
}

/// How log lines are written: every command that logs.
#[derive(Args, Clone)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "AUTHQL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Everything `serve` takes.
#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub passwords: PasswordArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The validated settings of the server and the domain, one flat value
/// built once from the parsed flags.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    /// `None`: see [`Settings::db_max_connections`].
    pub db_max_connections: Option<u32>,
    pub listen: SocketAddr,
    pub token_ttl: Duration,
    pub cache_ttl: Duration,
    pub cache_capacity: u64,
    pub bcrypt_cost: u32,
    pub login_rate: LoginRate,
    pub hash_concurrency: Option<NonZeroUsize>,
    pub password_min_length: u32,
    pub max_sessions_per_user: u32,
    pub captcha_provider: CaptchaProvider,
    pub captcha_secret: Option<SecretString>,
    pub captcha_verify_url: Option<String>,
    pub captcha_min_score: f64,
    pub captcha_action: String,
    pub introspection: bool,
    /// Serve the GraphiQL page and its assets.
    pub graphiql: bool,
    pub trust_forwarded_for: bool,
    pub cors_origins: Vec<String>,
    pub max_connections: u32,
    pub header_read_timeout: Duration,
    pub secret_key: Option<SecretKey>,
    pub mfa_issuer: String,
    pub mfa_challenge_ttl: Duration,
    pub session_cookie: bool,
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub last_used_interval: Duration,
    /// Zero: none.
    pub token_idle_timeout: Duration,
    pub registration: Registration,
    /// Resolved: `optional` when a mailer is set and the flag is not.
    pub email_verification: EmailVerification,
    pub smtp_url: Option<SecretString>,
    pub mail_dir: Option<std::path::PathBuf>,
    pub mail_from: String,
    pub reset_url: Option<String>,
    pub verify_url: Option<String>,
    pub reset_token_ttl: Duration,
    pub verify_token_ttl: Duration,
}

impl From<ServeArgs> for Settings {
    fn from(args: ServeArgs) -> Self {
        let ServeArgs {
            database,
            passwords,
            server,
            log: _,
        } = args;
        Self {
            database_url: database.database_url,
            bcrypt_cost: passwords.bcrypt_cost,
            password_min_length: passwords.password_min_length,
            listen: server.listen,
            db_max_connections: server.db_max_connections,
            token_ttl: server.token_ttl,
            cache_ttl: server.cache_ttl,
            cache_capacity: server.cache_capacity,
            login_rate: server.login_rate,
            hash_concurrency: server.hash_concurrency,
            max_sessions_per_user: server.max_sessions_per_user,
            captcha_provider: server.captcha_provider,
            captcha_secret: server.captcha_secret,
            captcha_verify_url: server.captcha_verify_url,
            captcha_min_score: server.captcha_min_score,
            captcha_action: server.captcha_action,
            introspection: server.introspection,
            graphiql: server.graphiql.unwrap_or(server.introspection),
            trust_forwarded_for: server.trust_forwarded_for,
            cors_origins: server.cors_origins,
            max_connections: server.max_connections,
            header_read_timeout: server.header_read_timeout,
            secret_key: server.secret_key,
            mfa_issuer: server.mfa_issuer,
            mfa_challenge_ttl: server.mfa_challenge_ttl,
            session_cookie: server.session_cookie,
            cookie_name: server.cookie_name.unwrap_or_else(|| {
                if server.cookie_secure {
                    "__Host-authql"
                } else {
                    "authql"
                }
                .to_owned()
            }),
            cookie_secure: server.cookie_secure,
            last_used_interval: server.last_used_interval,
            token_idle_timeout: server.token_idle_timeout,
            registration: server.registration,
            email_verification: server.email_verification.unwrap_or(
                if server.smtp_url.is_some() || server.mail_dir.is_some() {
                    EmailVerification::Optional
                } else {
                    EmailVerification::Off
                },
            ),
            smtp_url: server.smtp_url,
            mail_dir: server.mail_dir,
            mail_from: server.mail_from,
            reset_url: server.reset_url,
            verify_url: server.verify_url,
            reset_token_ttl: server.reset_token_ttl,
            verify_token_ttl: server.verify_token_ttl,
        }
    }
}

impl Settings {
    /// The settings with every default, then `args` (flags as on the command
    /// line). The environment is not read, so a developer's shell cannot
    /// change a test. Used by tests and benches.
    ///
    /// # Panics
    /// When `args` are not valid flags.
    pub fn from_args(args: &[&str]) -> Self {
        parse_without_env::<ServeArgs>(args).into()
    }

    /// The settings of a command that is not the server: its database and
    /// password policy, the server's settings at their defaults (their flags
    /// and variables are not read: they do not apply).
    pub fn for_command(database: DatabaseArgs, passwords: PasswordArgs) -> Self {
        ServeArgs {
            database,
            passwords,
            server: parse_without_env(&[]),
            log: parse_without_env(&[]),
        }
        .into()
    }

    /// Refuses combinations no single flag can: `email-verification
    /// required` needs a mailer.
    ///
    /// # Errors
    /// The setting at fault, named.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.email_verification == EmailVerification::Required
            && self.smtp_url.is_none()
            && self.mail_dir.is_none()
        {
            return Err(SettingError::new(
                "--email-verification",
                "required",
                "needs a mailer to send the links",
            )
            .hint("set --smtp-url or --mail-dir, or choose optional or off"));
        }
        Ok(())
    }

    /// The pool's size. SQLite runs each query on the connection's own
    /// thread, in this process: past twice the cores, a connection adds a
    /// thread, a page cache and about half a MiB, and no throughput
    /// (bench/RESULTS.md). A PostgreSQL query waits on the network, so
    /// more connections overlap more of them.
    pub fn db_max_connections(&self) -> u32 {
        const MOST_BY_DEFAULT: u32 = 10;
        self.db_max_connections.unwrap_or_else(|| {
            if self.database_url.starts_with("sqlite:") {
                let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
                u32::try_from(cores.saturating_mul(2))
                    .map_or(MOST_BY_DEFAULT, |n| n.min(MOST_BY_DEFAULT))
            } else {
                MOST_BY_DEFAULT
            }
        })
    }

    /// bcrypt computations allowed at once.
    pub fn hash_concurrency(&self) -> usize {
        self.hash_concurrency
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(2, NonZeroUsize::get)
    }
}

impl Default for PasswordArgs {
    /// The defaults, for commands that set no password.
    fn default() -> Self {
        parse_without_env(&[])
    }
}

/// `T` from `args` and the defaults, ignoring the environment.
///
/// # Panics
/// When `args` are not valid flags for `T`.
fn parse_without_env<T: Args + FromArgMatches>(args: &[&str]) -> T {
    let command = T::augment_args(clap::Command::new("authql").no_binary_name(true))
        .mut_args(|arg| arg.env(None));
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| T::from_arg_matches(&matches));
    parsed.unwrap_or_else(|err| panic!("invalid settings {args:?}: {err}"))
}

/// Written by hand: the database URL may hold a password, and the captcha
/// secret must not be printed.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &crate::db::redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("db_max_connections", &self.db_max_connections())
            .field("token_ttl", &self.token_ttl)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("login_rate", &self.login_rate)
            .field(
                "captcha",
                &self.captcha_secret.as_ref().map(|_| self.captcha_provider),
            )
            .field("secret_key", &self.secret_key)
            .field("mfa_issuer", &self.mfa_issuer)
            .field("session_cookie", &self.session_cookie)
            .field("cookie_name", &self.cookie_name)
            .field("cookie_secure", &self.cookie_secure)
            .field("registration", &self.registration)
            .field("email_verification", &self.email_verification)
            .field("smtp", &self.smtp_url.as_ref().map(|_| "[redacted]"))
            .field("mail_dir", &self.mail_dir)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot be used: which one (flag and environment
/// variable), the value (passwords masked), what is wrong with it and, for
/// the common cases, how to fix it.
#[derive(Debug)]
pub struct SettingError(Box<Refused>);

/// Boxed: an error is rare, and a `Result` carrying it stays small.
#[derive(Debug)]
struct Refused {
    flag: String,
    env: Option<String>,
    from_env: bool,
    value: String,
    problem: String,
    hint: Option<String>,
}

impl SettingError {
    /// `flag` is the long flag (`--token-ttl`); its environment variable is
    /// looked up among authql's settings. `value` is shown with any password
    /// masked.
    pub fn new(flag: &str, value: &str, problem: impl Into<String>) -> Self {
        let value = if SECRET_FLAGS.contains(&flag) {
            "[redacted]".to_owned()
        } else {
            crate::db::redact_url(value)
        };
        Self(Box::new(Refused {
            flag: flag.to_owned(),
            env: env_var_of(flag),
            from_env: false,
            value,
            problem: problem.into(),
            hint: None,
        }))
    }

    /// Adds a line on how to fix it.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    /// Says whether the value came from the environment variable rather
    /// than the flag, which decides the one the message leads with.
    pub fn set_from_env(&mut self, from_env: bool) {
        self.0.from_env = from_env && self.0.env.is_some();
    }

    pub fn flag(&self) -> &str {
        &self.0.flag
    }

    pub fn env(&self) -> Option<&str> {
        self.0.env.as_deref()
    }

    /// The address to listen on cannot be bound.
    pub fn listen(addr: SocketAddr, err: &std::io::Error) -> Self {
        let error = Self::new(
            "--listen",
            &addr.to_string(),
            format!("cannot listen there: {err}"),
        );
        match err.kind() {
            std::io::ErrorKind::AddrInUse => error.hint(
                "another program (or another authql) uses this port: stop it, or choose another port",
            ),
            std::io::ErrorKind::AddrNotAvailable => {
                error.hint("this machine has no such address: use 127.0.0.1, 0.0.0.0 or one of its own")
            }
            std::io::ErrorKind::PermissionDenied => {
                error.hint("ports below 1024 need privileges: choose a port of 1024 or more")
            }
            _ => error,
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refused {
            flag,
            env,
            from_env,
            value,
            problem,
            hint,
        } = &*self.0;
        match (env, from_env) {
            (Some(env), true) => write!(
                f,
                "{env}='{value}' (the environment variable for {flag}): {problem}"
            )?,
            (Some(env), false) => write!(
                f,
                "{flag} '{value}' (or the environment variable {env}): {problem}"
            )?,
            (None, _) => write!(f, "{flag} '{value}': {problem}")?,
        }
        if let Some(hint) = hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingError {}

/// Flags whose value is a secret as a whole: an error about one never shows it.
const SECRET_FLAGS: &[&str] = &["--secret-key", "--captcha-secret"];

/// The fewest bytes a `secret-key` decodes to.
pub const SECRET_KEY_MIN_BYTES: usize = 32;

/// `secret-key`: at least 32 bytes, given in base64 (standard or URL-safe,
/// padded or not). Its `Debug` is redacted, it has no `Display`, and the
/// bytes are reachable only through [`SecretKey::expose`].
#[derive(Clone)]
pub struct SecretKey(std::sync::Arc<[u8]>);

impl SecretKey {
    /// The key's bytes, for deriving the encryption key and nothing else.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl FromStr for SecretKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use base64::alphabet::{STANDARD, URL_SAFE};
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        use base64::Engine as _;
        let lenient =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let text = s.trim();
        let bytes = GeneralPurpose::new(&STANDARD, lenient)
            .decode(text)
            .or_else(|_| GeneralPurpose::new(&URL_SAFE, lenient).decode(text))
            .map_err(|_| "not base64; make one with `openssl rand -base64 32`".to_owned())?;
        if bytes.len() < SECRET_KEY_MIN_BYTES {
            return Err(format!(
                "decodes to {} bytes; at least {SECRET_KEY_MIN_BYTES} random bytes are needed \
                 (`openssl rand -base64 32` makes a key)",
                bytes.len()
            ));
        }
        Ok(Self(bytes.into()))
    }
}

/// The environment variable of the setting whose long flag is `flag`, as
/// declared on the flag itself.
pub fn env_var_of(flag: &str) -> Option<String> {
    let long = flag.strip_prefix("--")?;
    let command = ServeArgs::augment_args(clap::Command::new("authql"));
    let arg = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))?;
    arg.get_env().map(|env| env.to_string_lossy().into_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CaptchaProvider {
    Recaptcha,
    Hcaptcha,
    Turnstile,
}

impl CaptchaProvider {
    /// The provider's documented siteverify endpoint.
    pub fn default_verify_url(self) -> &'static str {
        match self {
            Self::Recaptcha => "https://www.google.com/recaptcha/api/siteverify",
            Self::Hcaptcha => "https://api.hcaptcha.com/siteverify",
            Self::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        }
    }
}

/// Whether `register` is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Registration {
    Closed,
    Open,
}

/// What is asked of an address before its account may sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmailVerification {
    Off,
    Optional,
    Required,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `N/second`, `N/minute`, `N/hour` or `N/day`, with N at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginRate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl FromStr for LoginRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = "expected N/second, N/minute, N/hour or N/day with N at least 1";
        let (count, unit) = s.split_once('/').ok_or(expected)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| expected)?;
        let per = match unit.trim() {
            "second" => Duration::from_secs(1),
            "minute" => Duration::from_secs(60),
            "hour" => Duration::from_secs(3600),
            "day" => Duration::from_secs(86_400),
            _ => return Err(expected.to_owned()),
        };
        Ok(Self { count, per })
    }
}

fn parse_link_template(s: &str) -> Result<String, String> {
    if s.contains("{token}") {
        Ok(s.to_owned())
    } else {
        Err("must hold {token}, where the link's token goes".to_owned())
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 second".to_owned()),
        Ok(secs) if secs <= 10 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        Ok(_) => Err("must be at most ten years".to_owned()),
        Err(_) => Err("expected a whole number of seconds".to_owned()),
    }
}

fn parse_seconds_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_seconds(s)
}

fn parse_score(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(score) if (0.0..=1.0).contains(&score) => Ok(score),
        _ => Err("expected a number from 0.0 to 1.0".to_owned()),
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(s.to_owned()),
        _ => Err("expected an http:// or https:// URL".to_owned()),
    }
}

/// An origin as browsers send it in `Origin`: scheme and host lower-cased,
/// the default port dropped, no path (`https://App.Example.com:443/` is
/// `https://app.example.com`), so that comparing texts compares origins.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got {s}")),
    }
}

/// An RFC 6265 cookie name: a token, no separators or controls.
fn parse_cookie_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a cookie name (letters, digits, - _ . and the like), got {s}"
        ))
    }
}

fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    let expected = || format!("expected an origin such as https://app.example.com, got {s}");
    let url = reqwest::Url::parse(s).map_err(|_| expected())?;
    let bare = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
        return Err(expected());
    }
    Ok(url.origin().ascii_serialization())
}

/// `IP:PORT`, or `HOST:PORT` with the host name resolved now (the first
/// address it resolves to), so `localhost:8000` works.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let expected = "expected IP:PORT or HOST:PORT, such as 127.0.0.1:8000 or localhost:8000";
    let (host, port) = s.rsplit_once(':').ok_or(expected)?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{expected}; the port must be a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(expected.to_owned());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve the host name {host}: {err}"))?
        .next()
        .ok_or_else(|| format!("the host name {host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_rate_reads_each_unit() {
        let rate: LoginRate = "10/minute".parse().unwrap();
        assert_eq!(rate.count.get(), 10);
        assert_eq!(rate.per, Duration::from_secs(60));
        assert_eq!(
            "3/day".parse::<LoginRate>().unwrap().per,
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn login_rate_refuses_nonsense() {
        for bad in [
            "",
            "10",
            "0/minute",
            "x/minute",
            "10/fortnight",
            "-1/second",
        ] {
            assert!(bad.parse::<LoginRate>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn seconds_must_be_positive_whole_numbers() {
        assert_eq!(parse_seconds("60"), Ok(Duration::from_secs(60)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("1.5").is_err());
        assert!(parse_seconds("-3").is_err());
    }

    #[test]
    fn score_is_between_zero_and_one() {
        assert_eq!(parse_score("0.7"), Ok(0.7));
        assert!(parse_score("1.5").is_err());
        assert!(parse_score("NaN").is_err());
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://app.example.com/").unwrap(),
            "https://app.example.com"
        );
        assert!(parse_origin("https://app.example.com/path").is_err());
        assert!(parse_origin("https://app.example.com?x=1").is_err());
        assert!(parse_origin("https://user@app.example.com").is_err());
        assert!(parse_origin("app.example.com").is_err());
        assert!(parse_origin("null").is_err());
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        for (given, sent) in [
            ("https://App.Example.COM", "https://app.example.com"),
            ("HTTPS://app.example.com:443/", "https://app.example.com"),
            ("http://localhost:80", "http://localhost"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ] {
            assert_eq!(parse_origin(given).unwrap(), sent, "{given}");
        }
    }

    #[test]
    fn listen_takes_addresses_and_host_names() {
        assert_eq!(
            parse_listen("127.0.0.1:8000"),
            Ok("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(parse_listen("[::1]:9").unwrap().port(), 9);
        let localhost = parse_listen("localhost:8000").unwrap();
        assert!(localhost.ip().is_loopback(), "{localhost}");
        assert_eq!(localhost.port(), 8000);
        for bad in [
            "",
            "8000",
            "localhost",
            "localhost:http",
            ":8000",
            "no-such-host.invalid:1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn setting_errors_name_flag_and_variable_and_mask_passwords() {
        let err = SettingError::new(
            "--database-url",
            "postgres://app:s3cret@db/auth",
            "cannot connect",
        )
        .hint("is it running?");
        let text = err.to_string();
        assert!(text.contains("--database-url"), "{text}");
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(text.contains("postgres://app:***@db/auth"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("hint: is it running?"), "{text}");
        let mut from_env = SettingError::new("--token-ttl", "abc", "bad");
        from_env.set_from_env(true);
        assert!(
            from_env.to_string().starts_with("AUTHQL_TOKEN_TTL='abc'"),
            "{from_env}"
        );
    }

    #[test]
    fn every_setting_has_its_variable_and_from_args_ignores_the_environment() {
        assert_eq!(env_var_of("--listen").as_deref(), Some("AUTHQL_LISTEN"));
        assert_eq!(
            env_var_of("--database-url").as_deref(),
            Some("DATABASE_URL")
        );
        assert_eq!(env_var_of("--nonsense"), None);
        let settings = Settings::from_args(&["--token-ttl", "60"]);
        assert_eq!(settings.token_ttl, Duration::from_secs(60));
        assert_eq!(settings.database_url, "sqlite://authql.db?mode=rwc");
    }

    #[test]
    fn the_pool_defaults_to_twice_the_cores_on_sqlite_and_ten_on_postgres() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let sqlite = Settings::from_args(&[]);
        assert_eq!(sqlite.db_max_connections(), (2 * cores).min(10) as u32);
        let postgres = Settings::from_args(&["--database-url", "postgres://db/authql"]);
        assert_eq!(postgres.db_max_connections(), 10);
        let chosen = Settings::from_args(&["--db-max-connections", "17"]);
        assert_eq!(chosen.db_max_connections(), 17);
    }

    #[test]
    fn the_secret_key_is_base64_of_at_least_32_bytes() {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        assert_eq!(key.parse::<SecretKey>().unwrap().expose().len(), 32);
        assert!(key.trim_end_matches('=').parse::<SecretKey>().is_ok());
        let short = "c2hvcnQ=".parse::<SecretKey>().unwrap_err();
        assert!(short.contains("decodes to 5 bytes"), "{short}");
        assert!("not base64!"
            .parse::<SecretKey>()
            .unwrap_err()
            .contains("not base64"));
        let err = SettingError::new("--secret-key", "c2hvcnQ=", short);
        let text = err.to_string();
        assert!(text.contains("AUTHQL_SECRET_KEY"), "{text}");
        assert!(!text.contains("c2hvcnQ"), "{text}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let settings = Settings::from_args(&["--secret-key", key]);
        assert!(!format!("{settings:?}").contains("MDEy"));
        let mut settings = Settings::from_args(&["--captcha-secret", "hush-hush"]);
        settings.database_url = "postgres://u:pw123@h/db".into();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hush-hush"));
        assert!(!printed.contains("pw123"));
    }

    #[test]
    fn debug_output_hides_the_smtp_password_and_says_smtp_is_set() {
        let settings = Settings::from_args(&[
            "--smtp-url",
            "smtps://mailer:smtp-s3cret@mail.example.com:465",
        ]);
        let printed = format!("{settings:?}");
        assert!(!printed.contains("smtp-s3cret"), "{printed}");
        assert!(!printed.contains("mailer:"), "{printed}");
        assert!(printed.contains("smtp: Some(\"[redacted]\")"), "{printed}");
    }
}
