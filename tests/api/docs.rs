//! The README stands alone: every link it makes stays inside the
//! repository and points at something there, and the licence files that
//! `Cargo.toml` announces are present.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md")
}

/// The targets of `[text](target)` links.
fn link_targets(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, most
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_link_in_the_readme_stays_in_the_repository() {
    let readme = readme();
    let anchors: Vec<String> = readme
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect();
    let root = Path::new(ROOT).canonicalize().unwrap();

    let targets = link_targets(&readme);

    assert!(!targets.is_empty());
    for target in targets {
        if let Some(fragment) = target.strip_prefix('#') {
            assert!(
                anchors.iter().any(|a| a == fragment),
                "no heading for {target}"
            );
            continue;
        }
        assert!(!target.contains("://"), "{target} leaves the repository");
        let path = root.join(target.split('#').next().unwrap());
        let path = path
            .canonicalize()
            .unwrap_or_else(|_| panic!("{target} does not exist"));
        assert!(
            path.starts_with(&root),
            "{target} is outside the repository"
        );
    }
}

#[test]
fn the_licences_cargo_toml_names_are_in_the_repository() {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"license = "MIT OR Apache-2.0""#));
    let mit = std::fs::read_to_string(Path::new(ROOT).join("LICENSE-MIT")).expect("LICENSE-MIT");
    assert!(
        mit.starts_with("Copyright (c) the authql developers"),
        "{mit}"
    );
    assert!(mit.contains("Permission is hereby granted, free of charge"));
    let apache =
        std::fs::read_to_string(Path::new(ROOT).join("LICENSE-APACHE")).expect("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    let readme = readme();
    assert!(readme.contains("(LICENSE-MIT)") && readme.contains("(LICENSE-APACHE)"));
}

#[test]
fn the_readme_says_how_to_get_the_binary() {
    let readme = readme();
    assert!(
        readme.contains("cargo install --path ."),
        "no install command"
    );
    assert!(
        readme.contains("target/release/authql"),
        "no path to the binary"
    );
}
