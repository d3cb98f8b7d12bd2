//! Settings: every flag with its environment variable, parsed into typed,
//! validated values once at start. A bad value stops the program with a
//! message that names the flag (clap does the naming).

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

/// Every setting of the server and the `user` commands.
#[derive(Args, Clone)]
pub struct Settings {
    /// Database URL: sqlite://FILE?mode=rwc or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://authql.db?mode=rwc",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Most database connections this instance opens.
    #[arg(long, env = "AUTHQL_DB_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub db_max_connections: u32,

    /// Address to listen on.
    #[arg(
        long,
        env = "AUTHQL_LISTEN",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub listen: SocketAddr,

    /// Token lifetime in seconds, from issue (absolute expiry).
    #[arg(long, env = "AUTHQL_TOKEN_TTL", default_value = "86400", value_parser = parse_seconds, global = true)]
    pub token_ttl: Duration,

    /// Longest time in seconds a resolved token is trusted from the cache.
    #[arg(long, env = "AUTHQL_CACHE_TTL", default_value = "300", value_parser = parse_seconds, global = true)]
    pub cache_ttl: Duration,

    /// Entries in the token cache; 0 turns the cache off.
    #[arg(
        long,
        env = "AUTHQL_CACHE_CAPACITY",
        default_value_t = 100_000,
        global = true
    )]
    pub cache_capacity: u64,

    /// bcrypt cost for new hashes; stored hashes of another cost are
    /// re-hashed at the next successful login.
    #[arg(long, env = "AUTHQL_BCRYPT_COST", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31), global = true)]
    pub bcrypt_cost: u32,

    /// Login attempts allowed per client IP and per username: N/second,
    /// N/minute, N/hour or N/day.
    #[arg(
        long,
        env = "AUTHQL_LOGIN_RATE",
        default_value = "10/minute",
        global = true
    )]
    pub login_rate: LoginRate,

    /// bcrypt computations at once [default: the number of CPU cores].
    #[arg(long, env = "AUTHQL_HASH_CONCURRENCY", global = true)]
    pub hash_concurrency: Option<NonZeroUsize>,

    /// Fewest characters (Unicode code points) in a new password.
    #[arg(long, env = "AUTHQL_PASSWORD_MIN_LENGTH", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(8..=72), global = true)]
    pub password_min_length: u32,

    /// Most live sessions per user; a login beyond it revokes the oldest.
    /// 0: no cap.
    #[arg(
        long,
        env = "AUTHQL_MAX_SESSIONS_PER_USER",
        default_value_t = 0,
        global = true
    )]
    pub max_sessions_per_user: u32,

    /// Captcha service checked at login when a secret is set.
    #[arg(long, env = "AUTHQL_CAPTCHA_PROVIDER", value_enum, default_value_t = CaptchaProvider::Recaptcha, global = true)]
    pub captcha_provider: CaptchaProvider,

    /// Captcha secret key; unset: no captcha.
    #[arg(
        long,
        env = "AUTHQL_CAPTCHA_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub captcha_secret: Option<SecretString>,

    /// Captcha verification URL [default: the provider's siteverify URL].
    #[arg(long, env = "AUTHQL_CAPTCHA_VERIFY_URL", value_parser = parse_http_url, global = true)]
    pub captcha_verify_url: Option<String>,

    /// Lowest reCAPTCHA v3 score accepted, 0.0 to 1.0.
    #[arg(long, env = "AUTHQL_CAPTCHA_MIN_SCORE", default_value = "0.5", value_parser = parse_score, global = true)]
    pub captcha_min_score: f64,

    /// reCAPTCHA v3 action the answer must carry.
    #[arg(
        long,
        env = "AUTHQL_CAPTCHA_ACTION",
        default_value = "login",
        global = true
    )]
    pub captcha_action: String,

    /// Serve schema introspection (GraphiQL and codegen need it); false also
    /// turns off field suggestions in errors.
    #[arg(long, env = "AUTHQL_INTROSPECTION", default_value_t = true,
          action = clap::ArgAction::Set, global = true)]
    pub introspection: bool,

    /// Take the client IP from the last X-Forwarded-For entry (set it only
    /// behind a proxy that appends that header).
    #[arg(long, env = "AUTHQL_TRUST_FORWARDED_FOR", default_value_t = false,
          action = clap::ArgAction::Set, global = true)]
    pub trust_forwarded_for: bool,

    /// Comma-separated origins allowed to call from a browser, such as
    /// https://app.example.com.
    #[arg(long, env = "AUTHQL_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin, global = true)]
    pub cors_origins: Vec<String>,

    /// Log format.
    #[arg(long, env = "AUTHQL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl Settings {
    /// The settings with every default, then `args` (flags as on the command
    /// line). Used by tests and benches.
    ///
    /// # Panics
    /// When `args` are not valid flags.
    pub fn from_args(args: &[&str]) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: Settings,
        }
        let argv = std::iter::once("authql").chain(args.iter().copied());
        <Wrapper as clap::Parser>::parse_from(argv).settings
    }

    /// bcrypt computations allowed at once.
    pub fn hash_concurrency(&self) -> usize {
        self.hash_concurrency
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(2, NonZeroUsize::get)
    }
}

/// Written by hand: the database URL may hold a password, and the captcha
/// secret must not be printed.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &crate::db::redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("token_ttl", &self.token_ttl)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("login_rate", &self.login_rate)
            .field(
                "captcha",
                &self.captcha_secret.as_ref().map(|_| self.captcha_provider),
            )
            .finish_non_exhaustive()
    }
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

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 second".to_owned()),
        Ok(secs) if secs <= 10 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        Ok(_) => Err("must be at most ten years".to_owned()),
        Err(_) => Err("expected a whole number of seconds".to_owned()),
    }
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
    fn debug_output_hides_secrets() {
        let mut settings = Settings::from_args(&["--captcha-secret", "hush-hush"]);
        settings.database_url = "postgres://u:pw123@h/db".into();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hush-hush"));
        assert!(!printed.contains("pw123"));
    }
}
