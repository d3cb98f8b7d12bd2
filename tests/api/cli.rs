use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn authql(args: &[&str], database_url: &str, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_authql"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("AUTHQL_BCRYPT_COST", "4")
        .env_remove("AUTHQL_LISTEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("authql runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

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
    let created = authql(
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

    let again = authql(
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
    let output = authql(
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
    let output = authql(&["user", "create", "erin"], &db, None);
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
    let output = authql(
        &["user", "create", "two words", "--password-stdin"],
        &db,
        Some("a fine long passphrase\n"),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("INVALID_CHARACTERS"));
    let output = authql(
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
fn set_password_and_deactivate_name_an_unknown_user() {
    let (_dir, db) = temp_db();
    for args in [
        &["user", "set-password", "ghost", "--password-stdin"][..],
        &["user", "deactivate", "ghost"][..],
    ] {
        let output = authql(args, &db, Some("a fine long passphrase\n"));
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("no such user"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn an_invalid_setting_stops_the_program_and_names_the_flag() {
    let (_dir, db) = temp_db();
    for (flag, value) in [
        ("--token-ttl", "soon"),
        ("--login-rate", "ten per minute"),
        ("--bcrypt-cost", "99"),
        ("--password-min-length", "4"),
        ("--captcha-min-score", "2"),
        ("--listen", "not-an-address"),
        ("--cors-origins", "example.com/path"),
    ] {
        let output = authql(&["migrate", flag, value], &db, None);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        assert!(
            stderr(&output).contains(flag),
            "{flag}: {}",
            stderr(&output)
        );
    }
    // The environment variables are checked the same way.
    let output = Command::new(env!("CARGO_BIN_EXE_authql"))
        .arg("migrate")
        .env("DATABASE_URL", &db)
        .env("AUTHQL_TOKEN_TTL", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--token-ttl"));
}

#[test]
fn an_unreachable_database_is_a_clear_start_up_error() {
    let output = authql(&["migrate"], "postgres://nobody@127.0.0.1:1/nothing", None);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot connect to the database"),
        "{}",
        stderr(&output)
    );
    let output = authql(&["migrate"], "mysterydb://what", None);
    assert!(!output.status.success());
    // Neither a refused connection nor a malformed URL prints the password.
    for url in [
        "postgres://nobody:hunter2secret@127.0.0.1:1/nothing",
        "postgress://app:hunter2secret@db/auth",
        "postgres://127.0.0.1:1/db?password=hunter2secret",
    ] {
        let output = authql(&["migrate"], url, None);
        assert!(!output.status.success());
        assert!(
            !stderr(&output).contains("hunter2secret"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn migrate_creates_the_tables_and_is_idempotent() {
    let (_dir, db) = temp_db();
    for _ in 0..2 {
        let output = authql(&["migrate"], &db, None);
        assert!(output.status.success(), "{}", stderr(&output));
    }
}

#[test]
fn serve_on_a_database_without_users_says_how_to_create_one() {
    use std::io::BufRead as _;
    let (_dir, db) = temp_db();
    let mut server = Command::new(env!("CARGO_BIN_EXE_authql"))
        .args(["serve", "--listen", "127.0.0.1:0", "--bcrypt-cost", "4"])
        .env("DATABASE_URL", &db)
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut hint = None;
    while hint.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = received.recv_timeout(std::time::Duration::from_millis(200)) {
            if line.contains("authql user create") {
                hint = Some(line);
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(hint.is_some(), "no hint on how to create a user");
}
