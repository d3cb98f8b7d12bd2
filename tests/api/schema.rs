use authql::graphql;

#[test]
fn schema_graphql_is_the_served_sdl() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql at the repository root");
    assert_eq!(
        committed,
        graphql::sdl(),
        "schema.graphql differs from the served schema: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn the_binary_prints_the_same_sdl() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_authql"))
        .arg("schema")
        .output()
        .expect("authql runs");
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), graphql::sdl());
}
