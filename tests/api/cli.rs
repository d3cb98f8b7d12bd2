//! The binary as a user runs it: the user commands (against the database
//! of a server running in the test, for the ones about sessions); settings
//! refused with exit code 2 and a message naming the flag and the
//! variable; the start-up hint; host names in `--listen`; each command's
//! `--help`.

use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use authql::auth::tokens::Token;
use authql::db::entities::{auth_token, link_token, user};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, Set,
};
use serde_json::{json, Value};

use crate::helpers::process::{run_authql, run_authql_off_thread};
use crate::helpers::{error_code, error_reason, spawn_app, TestApp, TestUser};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cli.db").display());
    (dir, url)
}

#[test]
fn user_create_reads_the_password_from_stdin_and_refuses_duplicates() {
    let (_dir, db) = temp_db();
    let created = run_authql(
        &[
            "user",
            "create",
            "Carol",
            "--email",
            "carol@example.com",
            "--password-stdin",
        ],
        &db,
        Some("a fine long passphrase\n"),
    );
    assert!(created.status.success(), "{}", stderr(&created));

    let again = run_authql(
        &["user", "create", "carol", "--password-stdin"],
        &db,
        Some("another long passphrase\n"),
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("taken"), "{}", stderr(&again));
}

#[test]
fn user_create_applies_the_password_policy() {
    let (_dir, db) = temp_db();
    let output = run_authql(
        &["user", "create", "dave", "--password-stdin"],
        &db,
        Some("password\n"),
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("TOO_SHORT") && message.contains("COMMON_PASSWORD"),
        "{message}"
    );
    assert!(!message.contains("password\n"));
}

#[test]
fn user_create_without_a_terminal_asks_for_password_stdin() {
    let (_dir, db) = temp_db();
    let output = run_authql(&["user", "create", "erin"], &db, None);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--password-stdin"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bad_username_or_email_is_refused() {
    let (_dir, db) = temp_db();
    let output = run_authql(
        &["user", "create", "two words", "--password-stdin"],
        &db,
        Some("a fine long passphrase\n"),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("INVALID_CHARACTERS"));
    let output = run_authql(
        &[
            "user",
            "create",
            "frank",
            "--email",
            "nope",
            "--password-stdin",
        ],
        &db,
        Some("a fine long passphrase\n"),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("INVALID_EMAIL"));
}

#[test]
fn user_commands_name_an_unknown_user() {
    let (_dir, db) = temp_db();
    for args in [
        &["user", "set-password", "ghost", "--password-stdin"][..],
        &["user", "deactivate", "ghost"][..],
        &["user", "activate", "ghost"][..],
        &["user", "delete", "ghost", "--yes"][..],
    ] {
        let output = run_authql(args, &db, Some("a fine long passphrase\n"));
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("no such user"),
            "{}",
            stderr(&output)
        );
    }
}

/// Asserts that a command succeeded; returns what it wrote to stderr.
fn succeeded(output: &Output) -> String {
    let message = stderr(output);
    assert!(output.status.success(), "{message}");
    message
}

/// `authql user args…` against the database of `app`, a running server.
async fn user_command(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Output {
    let args: Vec<&str> = std::iter::once("user")
        .chain(args.iter().copied())
        .collect();
    run_authql_off_thread(&app.database_url, &args, stdin.map(str::to_owned)).await
}

/// The user's id, as `me` gives it.
async fn id_of(app: &TestApp, token: &str) -> i64 {
    let me = app.me(token).await;
    me["data"]["me"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id: {me}"))
}

/// How many rows the user has in `users`, `auth_tokens` and `link_tokens`.
async fn count_rows_of(app: &TestApp, user_id: i64) -> (u64, u64, u64) {
    let db = app.auth.db();
    (
        user::Entity::find_by_id(user_id).count(db).await.unwrap(),
        auth_token::Entity::find()
            .filter(auth_token::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
        link_token::Entity::find()
            .filter(link_token::Column::UserId.eq(user_id))
            .count(db)
            .await
            .unwrap(),
    )
}

/// Stores a session of `user_id` that expired an hour ago.
async fn insert_expired_session(app: &TestApp, user_id: i64) {
    let now = app.clock.now();
    auth_token::ActiveModel {
        user_id: Set(user_id),
        digest: Set(Token::generate().digest().to_hex()),
        created_at: Set(now - chrono::Duration::hours(2)),
        expires_at: Set(now - chrono::Duration::hours(1)),
        ..Default::default()
    }
    .insert(app.auth.db())
    .await
    .expect("expired session stored");
}

#[tokio::test]
async fn user_list_shows_each_user_as_a_table_and_as_json_with_live_sessions_only() {
    let app = spawn_app().await;
    let signed_in = app.create_user().await;
    let first = app.login(&signed_in).await;
    app.login(&signed_in).await;
    let signed_in_id = id_of(&app, &first).await;
    insert_expired_session(&app, signed_in_id).await;
    let idle = app.create_user().await;
    succeeded(&user_command(&app, &["deactivate", &idle.username], None).await);
    let no_email = "no_address_user";
    app.auth
        .create_user(
            no_email,
            None,
            authql::auth::Password::new("a fine long passphrase"),
        )
        .await
        .expect("user created");

    let as_json = user_command(&app, &["list", "--json"], None).await;
    let as_table = user_command(&app, &["list"], None).await;

    succeeded(&as_json);
    let listed: Value = serde_json::from_slice(&as_json.stdout).expect("a JSON list");
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let find = |name: &str| {
        listed
            .iter()
            .find(|u| u["username"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {listed:?}"))
            .clone()
    };
    let mut active = find(&signed_in.username);
    let last_login: chrono::DateTime<chrono::Utc> = active["lastLogin"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no lastLogin: {active}"));
    assert!(
        (app.clock.now() - last_login).num_seconds().abs() < 60,
        "{active}"
    );
    active["lastLogin"] = json!("checked");
    assert_eq!(
        active,
        json!({
            "id": signed_in_id,
            "username": signed_in.username,
            "email": format!("{}@example.com", signed_in.username),
            "emailVerified": true,
            "isActive": true,
            "mfaEnabled": false,
            "lastLogin": "checked",
            "liveSessions": 2,
        })
    );
    let inactive = find(&idle.username);
    assert_eq!(inactive["isActive"], false);
    assert_eq!(inactive["liveSessions"], 0);
    assert_eq!(inactive["lastLogin"], Value::Null);
    let bare = find(no_email);
    assert_eq!(bare["email"], Value::Null);
    assert_eq!(bare["emailVerified"], false);

    succeeded(&as_table);
    let table = String::from_utf8(as_table.stdout).expect("text");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "USERNAME", "EMAIL", "VERIFIED", "ACTIVE", "MFA", "LAST", "LOGIN", "SESSIONS"],
        "{table}"
    );
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                line.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.get(1).map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{name} not in the table:\n{table}"))
    };
    let active = row(&signed_in.username);
    assert_eq!(active[0], signed_in_id.to_string());
    assert_eq!(&active[3..6], ["yes", "yes", "off"], "{table}");
    assert!(
        active[6].parse::<chrono::DateTime<chrono::Utc>>().is_ok(),
        "{table}"
    );
    assert_eq!(active[7], "2", "{table}");
    assert_eq!(
        &row(&idle.username)[4..],
        ["no", "off", "never", "0"],
        "{table}"
    );
    assert_eq!(&row(no_email)[2..4], ["-", "-"], "{table}");
}

#[tokio::test]
async fn user_activate_lets_a_deactivated_user_sign_in_again_with_the_same_password() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    succeeded(&user_command(&app, &["deactivate", &user.username], None).await);
    assert_eq!(
        error_code(&app.login_as(&user.username, &user.password).await),
        "INVALID_CREDENTIALS"
    );

    let activated = user_command(&app, &["activate", &user.username], None).await;

    let message = succeeded(&activated);
    assert!(message.contains("user activated"), "{message}");
    let session = app.login(&user).await;
    // Activating an active user changes nothing and signs no one out.
    let again = user_command(&app, &["activate", &user.username], None).await;
    let message = succeeded(&again);
    assert!(message.contains("already active"), "{message}");
    assert!(app.me(&session).await["data"]["me"].is_object());
}

#[tokio::test]
async fn user_delete_off_a_terminal_without_yes_refuses_and_deletes_nothing() {
    let app = spawn_app().await;
    let user = app.create_user().await;

    // No input at all, and a "y" piped in: neither is someone confirming.
    for stdin in [None, Some("y\n")] {
        let output = user_command(&app, &["delete", &user.username], stdin).await;

        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains("not a terminal") && message.contains("--yes"),
            "{message}"
        );
    }
    assert!(app.login(&user).await.starts_with("aql_"));
}

#[tokio::test]
async fn user_delete_with_yes_removes_the_user_its_sessions_and_its_links() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let other = app.create_user().await;
    // The id from the login rather than from `me`, which would cache the
    // token: a server on SQLite hears nothing from the command (it says
    // so; tests/api/instances.rs shows PostgreSQL instances hearing it).
    let login = app.login_as(&user.username, &user.password).await;
    let token = login["data"]["login"]["token"].as_str().unwrap().to_owned();
    let user_id: i64 = login["data"]["login"]["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id: {login}"));
    let other_token = app.login(&other).await;
    let now = app.clock.now();
    link_token::ActiveModel {
        user_id: Set(user_id),
        purpose: Set("reset".into()),
        digest: Set(Token::generate_with("aqr_").digest().to_hex()),
        email: Set(Some(format!("{}@example.com", user.username))),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::hours(1)),
        ..Default::default()
    }
    .insert(app.auth.db())
    .await
    .expect("link stored");
    assert_eq!(count_rows_of(&app, user_id).await, (1, 1, 1));

    let output = user_command(&app, &["delete", &user.username, "--yes"], None).await;

    let message = succeeded(&output);
    let said = format!("user {} deleted; 1 session(s) revoked", user.username);
    assert!(message.contains(&said), "{message}");
    assert_eq!(count_rows_of(&app, user_id).await, (0, 0, 0));
    assert_eq!(error_reason(&app.me(&token).await), "INVALID_TOKEN");
    assert_eq!(
        error_code(&app.login_as(&user.username, &user.password).await),
        "INVALID_CREDENTIALS"
    );
    // Nobody else is touched, and the name is free again.
    assert!(app.me(&other_token).await["data"]["me"].is_object());
    let again = TestUser {
        username: user.username.clone(),
        password: "a different long passphrase".into(),
    };
    app.auth
        .create_user(
            &again.username,
            None,
            authql::auth::Password::new(&again.password),
        )
        .await
        .expect("the name can be taken again");
}

/// Single-quotes `arg` for `sh -c`.
fn shell_quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `authql args…` with a terminal as its standard input: a pty made by
/// `script` (util-linux, on every Debian system), onto which `typed` is
/// typed. Returns the exit status and everything the terminal showed.
fn run_on_terminal(args: &[&str], database_url: &str, typed: &str) -> (ExitStatus, String) {
    use std::io::Write as _;
    let command = std::iter::once(env!("CARGO_BIN_EXE_authql"))
        .chain(args.iter().copied())
        .map(shell_quoted)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("DATABASE_URL", database_url)
        .env("AUTHQL_BCRYPT_COST", "4")
        .env_remove("AUTHQL_LISTEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
    (output.status, shown)
}

#[tokio::test]
async fn user_delete_on_a_terminal_asks_and_deletes_only_after_yes() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let user_id = id_of(&app, &token).await;
    let delete = |typed: &'static str| {
        let (url, name) = (app.database_url.clone(), user.username.clone());
        tokio::task::spawn_blocking(move || {
            run_on_terminal(&["user", "delete", &name], &url, typed)
        })
    };

    let (declined, shown) = delete("n\n").await.unwrap();

    assert_eq!(declined.code(), Some(1), "{shown}");
    let question = format!(
        "Delete user {} (id {user_id}, email {}@example.com, 1 live session(s))? This cannot be undone. [y/N]",
        user.username, user.username
    );
    assert!(shown.contains(&question), "{shown}");
    assert!(shown.contains("nothing deleted"), "{shown}");
    assert_eq!(count_rows_of(&app, user_id).await, (1, 1, 0));

    let (confirmed, shown) = delete("y\n").await.unwrap();

    assert!(confirmed.success(), "{shown}");
    assert!(shown.contains(&question), "{shown}");
    assert!(shown.contains("deleted; 1 session(s) revoked"), "{shown}");
    assert_eq!(count_rows_of(&app, user_id).await, (0, 0, 0));
}

/// Runs authql with `args` and `envs` (and none of the test's own AUTHQL_*
/// or DATABASE_URL), killing it if it has not exited after 30 s (a setting
/// that should have been refused would otherwise serve forever).
fn authql_with_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authql"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AUTHQL_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("authql runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Every kind of refused value, with a command that takes the setting.
const INVALID_SETTINGS: &[(&str, &str, &str, &[&str])] = &[
    ("--token-ttl", "AUTHQL_TOKEN_TTL", "abc", &["serve"]),
    ("--cache-ttl", "AUTHQL_CACHE_TTL", "0", &["serve"]),
    (
        "--login-rate",
        "AUTHQL_LOGIN_RATE",
        "ten per minute",
        &["serve"],
    ),
    (
        "--bcrypt-cost",
        "AUTHQL_BCRYPT_COST",
        "99",
        &["user", "create", "zed", "--password-stdin"],
    ),
    (
        "--password-min-length",
        "AUTHQL_PASSWORD_MIN_LENGTH",
        "4",
        &["serve"],
    ),
    (
        "--captcha-min-score",
        "AUTHQL_CAPTCHA_MIN_SCORE",
        "2",
        &["serve"],
    ),
    (
        "--captcha-provider",
        "AUTHQL_CAPTCHA_PROVIDER",
        "google",
        &["serve"],
    ),
    (
        "--captcha-verify-url",
        "AUTHQL_CAPTCHA_VERIFY_URL",
        "ftp://files",
        &["serve"],
    ),
    ("--listen", "AUTHQL_LISTEN", "not-an-address", &["serve"]),
    // No command: the default, serve.
    ("--listen", "AUTHQL_LISTEN", "localhost:99999", &[]),
    (
        "--cors-origins",
        "AUTHQL_CORS_ORIGINS",
        "example.com/path",
        &["serve"],
    ),
    (
        "--introspection",
        "AUTHQL_INTROSPECTION",
        "maybe",
        &["serve"],
    ),
    (
        "--db-max-connections",
        "AUTHQL_DB_MAX_CONNECTIONS",
        "0",
        &["serve"],
    ),
    (
        "--cache-capacity",
        "AUTHQL_CACHE_CAPACITY",
        "lots",
        &["serve"],
    ),
    (
        "--hash-concurrency",
        "AUTHQL_HASH_CONCURRENCY",
        "0",
        &["serve"],
    ),
    (
        "--max-sessions-per-user",
        "AUTHQL_MAX_SESSIONS_PER_USER",
        "many",
        &["serve"],
    ),
    ("--log-format", "AUTHQL_LOG_FORMAT", "xml", &["migrate"]),
];

#[test]
fn an_invalid_flag_exits_2_naming_the_flag_and_its_variable() {
    let (_dir, db) = temp_db();
    for (flag, env, value, command) in INVALID_SETTINGS {
        let mut args = command.to_vec();
        args.extend([*flag, *value]);

        let output = authql_with_env(&args, &[("DATABASE_URL", &db)]);

        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.starts_with(&format!("error: {flag} '{value}'")),
            "{args:?}: {message}"
        );
        assert!(message.contains(env), "{args:?}: {message}");
    }
}

#[test]
fn an_invalid_environment_variable_exits_2_naming_the_variable_first() {
    let (_dir, db) = temp_db();
    for (flag, env, value, command) in INVALID_SETTINGS {
        let output = authql_with_env(command, &[("DATABASE_URL", &db), (env, value)]);

        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{env}={value}: {message}");
        let expected = format!("error: {env}='{value}' (the environment variable for {flag})");
        assert!(message.starts_with(&expected), "{env}={value}: {message}");
    }
}

#[test]
fn a_refused_value_is_shown_with_its_password_masked() {
    let output = authql_with_env(
        &[
            "serve",
            "--captcha-verify-url",
            "ftp://bot:hunter2secret@files.example",
        ],
        &[],
    );

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("ftp://bot:***@files.example"), "{message}");
    assert!(!message.contains("hunter2secret"), "{message}");
}

/// Runs `args` with DATABASE_URL=`url`; asserts exit code 2 and a message
/// leading with DATABASE_URL and naming --database-url; returns the message.
fn refused_database(args: &[&str], url: &str) -> String {
    let output = authql_with_env(args, &[("DATABASE_URL", url)]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{url}: {message}");
    assert!(
        message.starts_with("error: DATABASE_URL='")
            && message.contains("(the environment variable for --database-url)"),
        "{url}: {message}"
    );
    message
}

#[test]
fn a_database_url_that_is_not_one_exits_2_with_the_forms_to_use() {
    for url in ["nonsense://", "garbage", "mysql://app@db/auth"] {
        for command in [
            &["migrate"][..],
            &["serve", "--listen", "127.0.0.1:0"][..],
            &["user", "deactivate", "someone"][..],
        ] {
            let message = refused_database(command, url);
            assert!(message.contains(&format!("'{url}'")), "{message}");
            assert!(
                message.contains("hint: use sqlite://FILE?mode=rwc"),
                "{command:?} {url}: {message}"
            );
        }
    }
}

#[test]
fn a_missing_sqlite_file_without_mode_rwc_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("missing.db");
    let url = format!("sqlite://{}", file.display());

    let message = refused_database(&["migrate"], &url);

    assert!(
        message.contains("unable to open database file"),
        "{message}"
    );
    let hint = format!(
        "hint: the file {} does not exist: add ?mode=rwc",
        file.display()
    );
    assert!(message.contains(&hint), "{message}");
    assert!(!file.exists());

    let in_missing_dir = format!("sqlite://{}/nowhere/x.db?mode=rwc", dir.path().display());
    let message = refused_database(&["migrate"], &in_missing_dir);
    assert!(message.contains("nowhere does not exist"), "{message}");
}

#[test]
fn a_closed_postgres_port_says_connection_refused_with_the_password_masked() {
    let url = "postgres://nobody:hunter2secret@127.0.0.1:1/nothing";

    let message = refused_database(&["migrate"], url);

    assert!(
        message.contains("'postgres://nobody:***@127.0.0.1:1/nothing'"),
        "{message}"
    );
    assert!(!message.contains("hunter2secret"), "{message}");
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    assert!(!message.contains("timed out"), "{message}");
    assert!(
        message.contains("hint: nothing accepts connections at 127.0.0.1:1"),
        "{message}"
    );
    // Given as a flag, the message leads with the flag.
    let output = authql_with_env(&["migrate", "--database-url", url], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("error: --database-url 'postgres://nobody:***@"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unreachable_database_never_prints_the_password() {
    for url in [
        "postgress://app:hunter2secret@db/auth",
        "postgres://127.0.0.1:1/db?password=hunter2secret",
        "postgres://app:hunter2 secret@127.0.0.1:1/db",
    ] {
        let output = run_authql(&["migrate"], url, None);
        assert_eq!(output.status.code(), Some(2), "{url}");
        assert!(!stderr(&output).contains("hunter2"), "{}", stderr(&output));
    }
}

#[test]
fn a_busy_port_is_found_before_the_database_is_created() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("untouched.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());

    let output = authql_with_env(&["serve", "--listen", &address], &[("DATABASE_URL", &url)]);

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    let expected =
        format!("error: --listen '{address}' (or the environment variable AUTHQL_LISTEN)");
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("hint: another program"), "{message}");
    assert!(
        !file.exists(),
        "the database was created before the port was tried"
    );
}

#[test]
fn migrate_creates_the_tables_and_is_idempotent() {
    let (_dir, db) = temp_db();
    for _ in 0..2 {
        let output = run_authql(&["migrate"], &db, None);
        assert!(output.status.success(), "{}", stderr(&output));
    }
}

/// Serves with `args` and `envs` until a log line contains `wanted` (or 60 s
/// pass), then stops the server; returns that line.
fn serve_until_logged(args: &[&str], envs: &[(&str, &str)], wanted: &str) -> Option<String> {
    use std::io::BufRead as _;
    let mut server = Command::new(env!("CARGO_BIN_EXE_authql"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("AUTHQL_LISTEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("authql serves");
    let stderr = server.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            if line.contains(wanted) {
                found = Some(line);
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    found
}

#[test]
fn serve_on_a_database_without_users_says_how_to_create_one_there() {
    let (_dir, db) = temp_db();

    let hint = serve_until_logged(
        &["serve", "--listen", "127.0.0.1:0", "--bcrypt-cost", "4"],
        &[("DATABASE_URL", &db)],
        "authql user create",
    )
    .expect("no hint on how to create a user");

    let command = format!("authql user create USERNAME --database-url '{db}'");
    assert!(hint.contains(&command), "{hint}");
    // The hinted command works, whatever DATABASE_URL says.
    let created = run_authql(
        &[
            "user",
            "create",
            "first",
            "--database-url",
            &db,
            "--password-stdin",
        ],
        "sqlite:///nowhere/else.db",
        Some("a fine long passphrase\n"),
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let again = run_authql(
        &["user", "create", "first", "--password-stdin"],
        &db,
        Some("a fine long passphrase\n"),
    );
    assert!(stderr(&again).contains("taken"), "{}", stderr(&again));
}

#[test]
fn listen_takes_a_host_name_and_serves_without_a_command() {
    let (_dir, db) = temp_db();

    let line = serve_until_logged(
        &["--listen", "localhost:0", "--bcrypt-cost", "4"],
        &[("DATABASE_URL", &db)],
        "authql serving",
    )
    .expect("the server did not start");

    let address = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("listen="))
        .unwrap_or_else(|| panic!("no listen address in {line}"));
    let address: std::net::SocketAddr = address.parse().expect("an address");
    assert!(address.ip().is_loopback(), "{address}");
}

/// Flags only the server takes.
const SERVER_FLAGS: &[&str] = &[
    "--listen",
    "--db-max-connections",
    "--token-ttl",
    "--cache-ttl",
    "--cache-capacity",
    "--login-rate",
    "--hash-concurrency",
    "--max-sessions-per-user",
    "--captcha-provider",
    "--captcha-secret",
    "--introspection",
    "--trust-forwarded-for",
    "--cors-origins",
];

fn help(command: &[&str]) -> String {
    let mut args = command.to_vec();
    args.push("--help");
    let output = authql_with_env(&args, &[("AUTHQL_LISTEN", "127.0.0.1:9")]);
    assert!(output.status.success(), "{args:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn each_command_s_help_lists_only_its_own_settings() {
    for command in [
        &["user"][..],
        &["user", "create"][..],
        &["user", "set-password"][..],
        &["user", "deactivate"][..],
        &["user", "activate"][..],
        &["user", "list"][..],
        &["user", "delete"][..],
        &["migrate"][..],
        &["schema"][..],
    ] {
        let text = help(command);
        for flag in SERVER_FLAGS {
            assert!(
                !text.contains(flag),
                "{command:?} --help lists {flag}:\n{text}"
            );
        }
    }
    for command in [&["user", "create"][..], &["user", "set-password"][..]] {
        let text = help(command);
        for flag in [
            "--database-url",
            "--bcrypt-cost",
            "--password-min-length",
            "--password-stdin",
        ] {
            assert!(
                text.contains(flag),
                "{command:?} --help lacks {flag}:\n{text}"
            );
        }
    }
    let deactivate = help(&["user", "deactivate"]);
    assert!(deactivate.contains("--database-url"), "{deactivate}");
    assert!(!deactivate.contains("--bcrypt-cost"), "{deactivate}");
    assert!(help(&["migrate"]).contains("[env: DATABASE_URL]"));

    let serve = help(&["serve"]);
    for flag in SERVER_FLAGS
        .iter()
        .chain(&["--database-url", "--bcrypt-cost"])
    {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
    // Variables are named, never followed by `=` and their value.
    assert!(serve.contains("[env: AUTHQL_LISTEN]"), "{serve}");
    assert!(!serve.contains("=]"), "{serve}");
    assert!(!serve.contains("127.0.0.1:9"), "{serve}");
}
