//! Upgrading in place: a SQLite database written by authql 0.1.0 (described
//! in `tests/fixtures/README.md`) is migrated and served by this build with
//! its users, passwords and sessions intact. SQLite only: that is where
//! timestamps are text in the format of the driver that wrote them.

use std::path::Path;

use authql::auth::sweeper::sweep_expired;
use sea_orm::{ConnectionTrait as _, DatabaseConnection, Statement};
use serde_json::json;

use crate::helpers::{error_code, spawn_app_on_copy_of, TestApp};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/authql-v0.1.db");
const ALICE_PASSWORD: &str = "plum orchard telescope winter";
const BOB_PASSWORD: &str = "granite ferry lullaby meadow";
/// Alice's live session in the fixture (token 2).
const ALICE_TOKEN: &str = "aql_Qr3OuiHY9059ZPC8Ayi9erau4pqGa3O8YwjilBuVHeAxuf3uA";
const ME: &str = "{ me { id username email isActive dateJoined lastLogin } }";

async fn spawn_old_release() -> TestApp {
    spawn_app_on_copy_of(Path::new(FIXTURE)).await
}

/// The first column of every row of `sql`, as text.
async fn texts(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query runs")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a text column"))
        .collect()
}

/// What SQLite stores and enforces, one line per fact: each column's type
/// affinity (the spelling of a type does not change how its values are
/// kept: sea-query 1.0 declares 64-bit integers `integer` where 0.32 wrote
/// `bigint`), nullability, default and key; each index, foreign key and
/// AUTOINCREMENT table (an index over an expression, such as
/// `LOWER(email)`, lists `<expression>` for that column).
async fn schema_of(db: &DatabaseConnection) -> Vec<String> {
    const QUERIES: [&str; 4] = [
        "SELECT m.name || '.' || p.name || ' ' || \
           CASE WHEN upper(p.type) LIKE '%INT%' THEN 'INTEGER' \
                WHEN upper(p.type) LIKE '%CHAR%' OR upper(p.type) LIKE '%CLOB%' \
                  OR upper(p.type) LIKE '%TEXT%' THEN 'TEXT' \
                WHEN upper(p.type) LIKE '%BLOB%' OR p.type = '' THEN 'BLOB' \
                WHEN upper(p.type) LIKE '%REAL%' OR upper(p.type) LIKE '%FLOA%' \
                  OR upper(p.type) LIKE '%DOUB%' THEN 'REAL' \
                ELSE 'NUMERIC' END || \
           ' notnull=' || p.\"notnull\" || ' default=' || COALESCE(p.dflt_value, '-') || \
           ' pk=' || p.pk \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' ORDER BY m.name, p.cid",
        "SELECT m.name || ' index ' || i.name || ' unique=' || i.\"unique\" || ' ' || \
           i.origin || ' (' || (SELECT group_concat(COALESCE(c.name, '<expression>')) FROM pragma_index_info(i.name) c) || ')' \
         FROM sqlite_master m JOIN pragma_index_list(m.name) i \
         WHERE m.type = 'table' ORDER BY m.name, i.name",
        "SELECT m.name || '.' || f.\"from\" || ' -> ' || f.\"table\" || '.' || f.\"to\" || \
           ' on delete ' || f.on_delete \
         FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
         WHERE m.type = 'table' ORDER BY m.name, f.id",
        "SELECT name || ' autoincrement' FROM sqlite_master \
         WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%' ORDER BY name",
    ];
    let mut facts = Vec::new();
    for sql in QUERIES {
        facts.extend(texts(db, sql).await);
    }
    facts
}

#[tokio::test]
async fn the_old_schema_is_migrated_in_place_to_the_one_a_fresh_database_gets() {
    let app = spawn_old_release().await;
    let fresh_dir = tempfile::tempdir().expect("temporary directory");
    let fresh_url = format!(
        "sqlite://{}?mode=rwc",
        fresh_dir.path().join("fresh.db").display()
    );
    let fresh = authql::db::connect(&fresh_url, 1).await.expect("fresh db");
    authql::db::migrate(&fresh)
        .await
        .expect("fresh db migrated");

    let applied = "SELECT version FROM seaql_migrations ORDER BY version";
    assert_eq!(
        texts(app.auth.db(), applied).await,
        texts(&fresh, applied).await
    );
    let upgraded = schema_of(app.auth.db()).await;
    assert!(upgraded.len() > 20, "{upgraded:#?}");
    assert_eq!(upgraded, schema_of(&fresh).await);
}

#[tokio::test]
async fn an_old_user_logs_in_with_the_old_password_and_keeps_their_data() {
    let app = spawn_old_release().await;
    let before = app.auth.clock().now();

    let body = app.login_as("alice", ALICE_PASSWORD).await;

    let token = body["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login failed: {body}"));
    let me = app.graphql(ME, json!({}), Some(token)).await;
    let me = &me["data"]["me"];
    assert_eq!(me["id"], "1");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["isActive"], true);
    assert_eq!(me["dateJoined"], "2026-12-01T07:50:24.966045+00:00");
    let last_login: chrono::DateTime<chrono::Utc> =
        me["lastLogin"].as_str().unwrap().parse().unwrap();
    assert!(last_login >= before, "{me}");
}

#[tokio::test]
async fn an_old_deactivated_user_still_cannot_log_in() {
    let app = spawn_old_release().await;

    let body = app.login_as("bob", BOB_PASSWORD).await;

    assert_eq!(error_code(&body), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn an_old_session_stays_signed_in_and_an_expired_one_is_swept() {
    let app = spawn_old_release().await;

    let me = app.graphql(ME, json!({}), Some(ALICE_TOKEN)).await;
    let sessions = app
        .graphql(
            "{ sessions { id createdAt expiresAt userAgent ip current } }",
            json!({}),
            Some(ALICE_TOKEN),
        )
        .await;
    sweep_expired(app.auth.db(), app.auth.clock().now())
        .await
        .expect("sweep runs");

    assert_eq!(me["data"]["me"]["username"], "alice", "{me}");
    assert_eq!(
        me["data"]["me"]["lastLogin"],
        "2026-12-01T07:50:34.057172+00:00"
    );
    assert_eq!(
        sessions["data"]["sessions"],
        json!([{
            "id": "2",
            "createdAt": "2026-12-01T07:50:34.057172+00:00",
            "expiresAt": "2036-11-28T07:50:34.057172+00:00",
            "userAgent": "fixture-client/0.1",
            "ip": "127.0.0.1",
            "current": true,
        }])
    );
    // The expired token (id 1) is gone, by our sweep.
    assert_eq!(
        texts(
            app.auth.db(),
            "SELECT CAST(id AS TEXT) FROM auth_tokens ORDER BY id"
        )
        .await,
        ["2"]
    );
}
