//! The session cookie (`--session-cookie on`): set with its attributes by
//! every mutation that issues a session, cleared by `logout` and
//! `logoutAll`, read when no `Authorization` header is sent (the header
//! wins), and refused from an origin that may not use it (`Origin`, then
//! `Sec-Fetch-Site`, neither: refused), on `/graphql` and `/auth/verify`
//! alike; credentialed CORS for listed origins only. In headless Chromium,
//! a page on a listed origin signs in with `credentials: "include"` and
//! then calls `me` with no header; a page on another origin cannot.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::browser::Browser;
use crate::helpers::{error_code, error_reason, spawn_app_with, TestApp, TestUser};

const NAME: &str = "__Host-authql";
const SAME_ORIGIN: (&str, &str) = ("Sec-Fetch-Site", "same-origin");

async fn cookie_app() -> TestApp {
    spawn_app_with(|s| s.session_cookie = true).await
}

/// POSTs `query` with `headers`; returns status, `Set-Cookie` lines, body.
async fn post(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> (u16, Vec<String>, Value) {
    app.graphql_with_headers(query, json!({}), headers).await
}

/// Logs in; returns the token and the `Set-Cookie` line.
async fn login(app: &TestApp, user: &TestUser) -> (String, String) {
    let query = format!(
        r#"mutation {{ login(username: "{}", password: "{}") {{ token }} }}"#,
        user.username, user.password
    );
    let (status, cookies, body) = post(app, &query, &[]).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["login"]["token"].as_str().unwrap().to_owned();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    (token, cookies[0].clone())
}

fn cookie(token: &str) -> String {
    format!("{NAME}={token}")
}

#[tokio::test]
async fn login_sets_the_cookie_with_its_attributes() {
    let app = cookie_app().await;
    let user = app.create_user().await;
    let (token, line) = login(&app, &user).await;

    let max_age: u64 = line
        .split("; ")
        .find_map(|part| part.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    let ttl = crate::helpers::test_settings().token_ttl.as_secs();
    assert!(max_age <= ttl && max_age + 5 >= ttl, "{line}");
    assert_eq!(
        line,
        format!("{NAME}={token}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={max_age}")
    );
}

#[tokio::test]
async fn the_cookie_alone_authenticates_a_same_origin_request() {
    let app = cookie_app().await;
    let user = app.create_user().await;
    let (token, _) = login(&app, &user).await;

    let (status, _, body) = post(
        &app,
        "{ me { username } }",
        &[("Cookie", &cookie(&token)), SAME_ORIGIN],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());

    // Origin naming the server itself (https, as the cookie is Secure).
    let host = app.address.trim_start_matches("http://");
    let own = format!("https://{host}");
    let (_, _, body) = post(
        &app,
        "{ me { username } }",
        &[("Cookie", &cookie(&token)), ("Origin", &own)],
    )
    .await;
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());

    // Sec-Fetch-Site none: typed in the address bar.
    let (_, _, body) = post(
        &app,
        "{ me { username } }",
        &[("Cookie", &cookie(&token)), ("Sec-Fetch-Site", "none")],
    )
    .await;
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn the_authorization_header_wins_over_the_cookie() {
    let app = cookie_app().await;
    let alice = app.create_user().await;
    let bob = app.create_user().await;
    let (alice_token, _) = login(&app, &alice).await;
    let (bob_token, _) = login(&app, &bob).await;

    let bearer = format!("Bearer {bob_token}");
    let (_, _, body) = post(
        &app,
        "{ me { username } }",
        &[
            ("Cookie", &cookie(&alice_token)),
            ("Authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(body["data"]["me"]["username"], bob.username.as_str());

    // A refused header is not rescued by a good cookie.
    let (_, _, body) = post(
        &app,
        "{ me { username } }",
        &[
            ("Cookie", &cookie(&alice_token)),
            ("Authorization", "Bearer nope"),
            SAME_ORIGIN,
        ],
    )
    .await;
    assert_eq!(error_reason(&body), "INVALID_TOKEN");
}

#[tokio::test]
async fn a_cookie_from_another_origin_is_forbidden() {
    let app = cookie_app().await;
    let user = app.create_user().await;
    let (token, _) = login(&app, &user).await;
    let jar = cookie(&token);

    for headers in [
        vec![("Cookie", jar.as_str()), ("Origin", "https://evil.example")],
        vec![("Cookie", jar.as_str()), ("Sec-Fetch-Site", "cross-site")],
        vec![("Cookie", jar.as_str()), ("Sec-Fetch-Site", "same-site")],
        // Neither header: refused.
        vec![("Cookie", jar.as_str())],
    ] {
        let (status, _, body) = post(&app, "{ me { username } }", &headers).await;
        assert_eq!(status, 403, "{headers:?}");
        assert_eq!(error_code(&body), "FORBIDDEN");
        assert_eq!(error_reason(&body), "CROSS_ORIGIN");
        assert!(body.get("data").is_none());
    }

    // Forward authentication refuses it the same way.
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .header("Cookie", &jar)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .header("Cookie", &jar)
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-authql-username"],
        user.username.as_str()
    );

    // So does Hasura's webhook.
    for (header, value, status) in [
        ("Origin", "https://evil.example", 403),
        ("Sec-Fetch-Site", "cross-site", 403),
        ("Sec-Fetch-Site", "same-origin", 200),
    ] {
        let response = app
            .client
            .get(app.url("/auth/hasura"))
            .header("Cookie", &jar)
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{header}: {value}");
        let body = response.text().await.unwrap();
        if status == 403 {
            assert!(!body.contains("X-Hasura-User-Id"), "{body}");
        } else {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["X-Hasura-Role"], "user");
        }
    }
}

#[tokio::test]
async fn logout_and_logout_all_clear_the_cookie() {
    let app = cookie_app().await;
    let user = app.create_user().await;
    let cleared = format!("{NAME}=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0");

    for mutation in ["mutation { logout }", "mutation { logoutAll }"] {
        let (token, _) = login(&app, &user).await;
        let jar = cookie(&token);
        let (status, cookies, body) = post(&app, mutation, &[("Cookie", &jar), SAME_ORIGIN]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(cookies, vec![cleared.clone()]);

        let (_, _, body) = post(&app, "{ me { id } }", &[("Cookie", &jar), SAME_ORIGIN]).await;
        assert_eq!(error_reason(&body), "INVALID_TOKEN");
    }
}

#[tokio::test]
async fn change_password_sets_the_new_session_as_the_cookie() {
    let app = cookie_app().await;
    let user = app.create_user().await;
    let (token, _) = login(&app, &user).await;
    let query = format!(
        r#"mutation {{ changePassword(oldPassword: "{}", newPassword: "a brand new long passphrase") {{ token }} }}"#,
        user.password
    );
    let (_, cookies, body) = post(&app, &query, &[("Cookie", &cookie(&token)), SAME_ORIGIN]).await;
    let fresh = body["data"]["changePassword"]["token"].as_str().unwrap();
    assert_eq!(cookies.len(), 1);
    assert!(
        cookies[0].starts_with(&format!("{}; ", cookie(fresh))),
        "{cookies:?}"
    );
}

#[tokio::test]
async fn without_the_setting_no_cookie_is_set_or_read() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.create_user().await;
    let query = format!(
        r#"mutation {{ login(username: "{}", password: "{}") {{ token }} }}"#,
        user.username, user.password
    );
    let (_, cookies, body) = post(&app, &query, &[]).await;
    assert!(cookies.is_empty());
    let token = body["data"]["login"]["token"].as_str().unwrap();
    let (_, _, body) = post(
        &app,
        "{ me { id } }",
        &[("Cookie", &cookie(token)), SAME_ORIGIN],
    )
    .await;
    assert_eq!(error_reason(&body), "MISSING_TOKEN");
}

#[tokio::test]
async fn cookie_secure_false_drops_secure_and_the_host_prefix() {
    let app = spawn_app_with(|s| {
        s.session_cookie = true;
        s.cookie_secure = false;
        s.cookie_name = "authql".into();
    })
    .await;
    let user = app.create_user().await;
    let query = format!(
        r#"mutation {{ login(username: "{}", password: "{}") {{ token }} }}"#,
        user.username, user.password
    );
    let (_, cookies, body) = post(&app, &query, &[]).await;
    let token = body["data"]["login"]["token"].as_str().unwrap();
    assert!(cookies[0].starts_with(&format!(
        "authql={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age="
    )));
    assert!(!cookies[0].contains("Secure"));

    // Plain HTTP: the request's own origin is http://host.
    let own = app.address.clone();
    let (_, _, body) = post(
        &app,
        "{ me { username } }",
        &[("Cookie", &format!("authql={token}")), ("Origin", &own)],
    )
    .await;
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());
}

#[tokio::test]
async fn listed_origins_get_credentialed_cors_and_may_use_the_cookie() {
    let app = spawn_app_with(|s| {
        s.session_cookie = true;
        s.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let user = app.create_user().await;
    let (token, _) = login(&app, &user).await;

    let (status, _, body) = post(
        &app,
        "{ me { username } }",
        &[
            ("Cookie", &cookie(&token)),
            ("Origin", "https://app.example.com"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["me"]["username"], user.username.as_str());

    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

/// Serves a blank page at `/` on a random loopback port; returns its origin.
async fn serve_page() -> String {
    use poem::listener::{Acceptor as _, Listener as _, TcpListener};
    #[poem::handler]
    fn page() -> poem::web::Html<&'static str> {
        poem::web::Html("<!doctype html><title>an app</title><p>an app</p>")
    }
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let address = *acceptor.local_addr()[0].as_socket_addr().unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(poem::Route::new().at("/", page)));
    format!("http://{address}")
}

/// Opens `origin` and runs `script` (an async function body) there.
async fn run_in_page(browser: &mut Browser, origin: &str, script: &str) -> Value {
    let navigation = browser
        .call("Page.navigate", json!({ "url": format!("{origin}/") }))
        .await;
    assert!(navigation["errorText"].is_null(), "{origin}: {navigation}");
    // Both origins serve the same page, so the check names the origin: until
    // the navigation commits, the previous origin's page would pass too.
    let loaded = browser
        .wait_for(
            &format!(
                "location.origin === '{origin}' && document.readyState === 'complete' \
                 && document.title === 'an app'"
            ),
            Duration::from_secs(30),
        )
        .await;
    assert!(loaded, "{origin} did not load");
    let text = browser
        .eval(&format!("(async () => {{ {script} }})()"))
        .await;
    serde_json::from_str(text.as_str().expect("a JSON string")).unwrap()
}

#[tokio::test]
async fn a_browser_signs_in_with_the_cookie_from_a_listed_origin_only() {
    let app_origin = serve_page().await;
    let stranger = serve_page().await;
    let listed = app_origin.clone();
    // Plain HTTP on loopback: no Secure, no __Host- prefix.
    let app = spawn_app_with(move |s| {
        s.session_cookie = true;
        s.cookie_secure = false;
        s.cookie_name = "authql".into();
        s.cors_origins = vec![listed];
    })
    .await;
    let user = app.create_user().await;
    let api = app.url("/graphql");
    let call = format!(
        r#"const call = async (query) => {{
            try {{
                const r = await fetch("{api}", {{ method: "POST", credentials: "include",
                    headers: {{ "Content-Type": "application/json" }},
                    body: JSON.stringify({{ query }}) }});
                return {{ status: r.status, body: await r.json() }};
            }} catch (e) {{ return {{ failed: String(e) }}; }}
        }};"#
    );
    let mut browser = Browser::launch().await;
    browser.call("Page.enable", json!({})).await;

    let login = format!(
        r#"mutation {{ login(username: \"{}\", password: \"{}\") {{ user {{ username }} }} }}"#,
        user.username, user.password
    );
    let signed_in = run_in_page(
        &mut browser,
        &app_origin,
        &format!(
            r#"{call}
            const login = await call("{login}");
            const me = await call("{{ me {{ username }} }}");
            return JSON.stringify({{ login, me, visible: document.cookie }});"#
        ),
    )
    .await;
    assert_eq!(
        signed_in["login"]["body"]["data"]["login"]["user"]["username"],
        user.username.as_str(),
        "{signed_in}"
    );
    // No header: the cookie alone, which the page's script cannot read.
    assert_eq!(
        signed_in["me"]["body"]["data"]["me"]["username"],
        user.username.as_str(),
        "{signed_in}"
    );
    assert_eq!(signed_in["visible"], "", "{signed_in}");

    // The same browser, holding the cookie, on an origin not listed.
    let refused = run_in_page(
        &mut browser,
        &stranger,
        &format!(
            r#"{call}
            const me = await call("{{ me {{ username }} }}");
            return JSON.stringify({{ me, origin: location.origin }});"#
        ),
    )
    .await;
    assert_eq!(refused["origin"], stranger.as_str(), "{refused}");
    assert!(refused["me"]["failed"].is_string(), "{refused}");
}
