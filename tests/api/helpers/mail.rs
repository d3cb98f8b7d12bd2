//! Mails as a server with `--mail-dir` writes them: `.eml` files in a
//! directory, read back by the tests that follow a mailed link.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `.eml` files in `dir`, sorted by name.
pub fn mails(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Waits (up to 10 s) until `count` whole mails are in `dir`; returns
/// their text, with quoted-printable soft breaks and `=3D` undone.
///
/// lettre's file transport creates a mail's file and then writes it, so a
/// file can be seen empty or half written: a mail counts once it ends with
/// its multipart body's closing delimiter (`--boundary--`).
pub async fn wait_for_mails(dir: &Path, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let whole = whole_mails(dir);
        if whole.len() >= count {
            return whole
                .iter()
                .map(|text| text.replace("=\r\n", "").replace("=3D", "="))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {count} whole mails in {}, found {} ({} files)",
        dir.display(),
        whole_mails(dir).len(),
        mails(dir).len()
    );
}

/// The text of every mail in `dir`, or none while any file is still being
/// written (or cannot be read yet).
fn whole_mails(dir: &Path) -> Vec<String> {
    let mut texts = Vec::new();
    for path in mails(dir) {
        match std::fs::read_to_string(&path) {
            Ok(text) if text.ends_with("--\r\n") => texts.push(text),
            _ => return Vec::new(),
        }
    }
    texts
}

/// The first token with `prefix` in a mail.
pub fn token_in(mail: &str, prefix: &str) -> String {
    let start = mail.find(prefix).expect("a token in the mail");
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The token with `prefix` in a mail of `mails` that is not `known`: the
/// newer of two links (the files are named at random, not in order).
pub fn other_token(mails: &[String], prefix: &str, known: &str) -> String {
    mails
        .iter()
        .map(|mail| token_in(mail, prefix))
        .find(|token| token != known)
        .expect("a second link")
}
