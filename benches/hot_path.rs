//! Where the time of an authenticated request goes, in-process (no HTTP):
//!
//! - `token/parse_and_checksum`: `Token::parse` (shape, base64, SHA-256
//!   checksum) on every request that carries a token;
//! - `token/digest` and `token/digest_hex`: the SHA-256 cache key, and its
//!   hex form (the database path only);
//! - `cache/hit`: `TokenCache::get` of a live entry;
//! - `authenticate/cached`: `AuthService::authenticate`, the whole cached
//!   path (parse, digest, cache, expiry);
//! - `authenticate/database_sqlite`: the same with `--cache-capacity 0` on a
//!   SQLite file in a temporary directory (one sea-orm query per call);
//! - `schema/me_cached` and `schema/me_database_sqlite`: executing
//!   `{ me { id username } }` on the schema, as the HTTP handler does.
//!
//! - `schema/me_cached_preparsed` and `schema/parse_only`: the same with a
//!   document parsed once (what a cache of parsed documents would give),
//!   and parsing `{ me { id username } }` alone;
//! - `runtime/block_on_ready`: what driving a ready future costs, included
//!   in every async figure above.
//!
//! Run with `cargo bench --bench hot_path`. Speed is measured here and in
//! `bench/load.sh`, never asserted in the test suite.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use authql::auth::passwords::Password;
use authql::auth::tokens::Token;
use authql::auth::{AuthService, ClientInfo, Credential};
use authql::clock::Clock;
use authql::config::Settings;
use authql::graphql::{build_schema, RequestContext};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;

const USERNAME: &str = "bench_user";
const PASSWORD: &str = "bench hot path correct horse staple";
const ME: &str = "{ me { id username } }";

/// A service over a fresh SQLite file, a user, and a token of that user.
struct Fixture {
    auth: Arc<AuthService>,
    token: String,
    _dir: tempfile::TempDir,
}

fn fixture(runtime: &Runtime, cache_capacity: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let mut settings = Settings::from_args(&[
        "--bcrypt-cost",
        "4",
        "--login-rate",
        "1000000/second",
        "--cache-capacity",
        cache_capacity,
    ]);
    settings.database_url = url.clone();
    // The server installs its Prometheus recorder; so do we, so that the
    // metrics each resolution records cost what they cost in production.
    let _ = authql::metrics::handle();
    runtime.block_on(async {
        let db = authql::db::connect(&url, settings.db_max_connections())
            .await
            .expect("database");
        authql::db::migrate(&db).await.expect("migrations");
        let auth = Arc::new(
            AuthService::new(db, &settings, Clock::default())
                .await
                .expect("auth service"),
        );
        auth.create_user(USERNAME, None, Password::new(PASSWORD))
            .await
            .expect("user");
        let issued = auth
            .login(
                USERNAME,
                &Password::new(PASSWORD),
                None,
                &ClientInfo::default(),
            )
            .await
            .expect("login");
        Fixture {
            auth,
            token: issued.token.expose().to_owned(),
            _dir: dir,
        }
    })
}

fn credential(token: &str) -> Credential {
    Credential::Token(token.to_owned().into())
}

fn token_benches(c: &mut Criterion) {
    let token = Token::generate();
    let text = token.expose().to_owned();
    let mut group = c.benchmark_group("token");
    group.bench_function("parse_and_checksum", |b| {
        b.iter(|| Token::parse(black_box(&text)).expect("parses"));
    });
    group.bench_function("digest", |b| b.iter(|| black_box(&token).digest()));
    group.bench_function("digest_hex", |b| {
        b.iter(|| black_box(&token).digest().to_hex());
    });
    group.finish();
}

fn cache_and_authenticate(c: &mut Criterion) {
    // block_on on a current-thread runtime: the least overhead per call
    // (measured below as `runtime/block_on_ready`, to subtract).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cached = fixture(&runtime, "100000");
    let uncached = fixture(&runtime, "0");

    // One resolution fills the cache.
    let cred = credential(&cached.token);
    runtime
        .block_on(cached.auth.authenticate(&cred))
        .expect("token resolves");
    let digest = Token::parse(&cached.token).expect("parses").digest();
    let now = cached.auth.clock().now();
    assert!(matches!(
        cached.auth.cache().get(&digest, now),
        authql::auth::cache::Lookup::Hit(_)
    ));

    let mut group = c.benchmark_group("runtime");
    group.bench_function("block_on_ready", |b| {
        b.iter(|| runtime.block_on(async { black_box(1) }));
    });
    group.finish();

    let mut group = c.benchmark_group("cache");
    group.bench_function("hit", |b| {
        b.iter(|| cached.auth.cache().get(black_box(&digest), now));
    });
    group.finish();

    let mut group = c.benchmark_group("authenticate");
    group.bench_function("cached", |b| {
        b.iter(|| {
            runtime
                .block_on(cached.auth.authenticate(black_box(&cred)))
                .expect("resolves")
        });
    });
    let uncached_cred = credential(&uncached.token);
    group.bench_function("database_sqlite", |b| {
        b.iter(|| {
            runtime
                .block_on(uncached.auth.authenticate(black_box(&uncached_cred)))
                .expect("resolves")
        });
    });
    group.finish();

    let schema = build_schema(true);
    let run_me = |auth: &Arc<AuthService>, token: &str| {
        let context = Arc::new(RequestContext::new(
            auth.clone(),
            credential(token),
            ClientInfo::default(),
        ));
        let response =
            runtime.block_on(schema.execute(async_graphql::Request::new(ME).data(context)));
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        response
    };
    let mut group = c.benchmark_group("schema");
    group.bench_function("me_cached", |b| {
        b.iter(|| run_me(&cached.auth, &cached.token));
    });
    group.bench_function("me_database_sqlite", |b| {
        b.iter(|| run_me(&uncached.auth, &uncached.token));
    });
    // What a cache of parsed documents would save: the same execution with
    // the document parsed once (`Request::set_parsed_query` with a clone),
    // next to parsing alone.
    let parsed = async_graphql::parser::parse_query(ME).expect("parses");
    group.bench_function("me_cached_preparsed", |b| {
        b.iter(|| {
            let context = Arc::new(RequestContext::new(
                cached.auth.clone(),
                credential(&cached.token),
                ClientInfo::default(),
            ));
            let mut request = async_graphql::Request::new(ME).data(context);
            request.set_parsed_query(parsed.clone());
            let response = runtime.block_on(schema.execute(request));
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            response
        });
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| async_graphql::parser::parse_query(black_box(ME)).expect("parses"));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = token_benches, cache_and_authenticate
}
criterion_main!(benches);
