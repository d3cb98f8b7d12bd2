//! The GraphiQL page in a real browser: headless Chromium with no network
//! beyond loopback loads it from authql alone, under its
//! Content-Security-Policy, and runs `{ me { username } }` with a bearer
//! header typed into the headers pane, as a user would.
//!
//! The test saves a screenshot to `target/tmp/graphiql.png` (cargo's
//! `CARGO_TARGET_TMPDIR`, which exists wherever the target directory is),
//! or to the path in `GRAPHIQL_SCREENSHOT` (the README's
//! `docs/graphiql.png` is made so).

use std::time::Duration;

use serde_json::json;

use crate::helpers::browser::Browser;
use crate::helpers::spawn_app;

/// Records every Content-Security-Policy violation of the page.
const RECORD_VIOLATIONS: &str = "window.__violations = []; \
    document.addEventListener('securitypolicyviolation', \
    e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));";

/// Sets the text of the CodeMirror editor inside `selector`.
fn set_editor(selector: &str, text: &str) -> String {
    format!(
        "document.querySelector({}).CodeMirror.setValue({})",
        json!(selector),
        json!(text)
    )
}

#[tokio::test]
async fn graphiql_renders_offline_and_runs_me_with_a_bearer_header() {
    let app = spawn_app().await;
    let user = app.create_user().await;
    let token = app.login(&user).await;
    let mut browser = Browser::launch().await;
    browser.call("Network.enable", json!({})).await;
    browser.call("Page.enable", json!({})).await;
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": RECORD_VIOLATIONS }),
        )
        .await;

    browser
        .call("Page.navigate", json!({ "url": app.url("/graphql") }))
        .await;
    let rendered = browser
        .wait_for(
            "!!document.querySelector('.graphiql-query-editor .CodeMirror')",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        rendered,
        "GraphiQL did not render: {}",
        browser.eval("document.body.innerText").await
    );
    let example = browser
        .eval("document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()")
        .await;
    assert!(
        example.as_str().unwrap().contains("Authorization: Bearer")
            || example
                .as_str()
                .unwrap()
                .contains("\"Authorization\": \"Bearer"),
        "the example explains the header: {example}"
    );

    browser
        .eval(&set_editor(
            ".graphiql-query-editor .CodeMirror",
            "{ me { username } }",
        ))
        .await;
    browser
        .eval(
            "[...document.querySelectorAll('.graphiql-editor-tools button')]\
             .find(b => b.textContent.trim() === 'Headers').click()",
        )
        .await;
    assert!(
        browser
            .wait_for(
                "!!document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror') \
                 && document.querySelector('.graphiql-editor-tool').getAttribute('aria-label') === 'Headers'",
                Duration::from_secs(5),
            )
            .await,
        "the headers pane opened"
    );
    let headers = format!("{{\n  \"Authorization\": \"Bearer {token}\"\n}}");
    browser
        .eval(&set_editor(
            ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror",
            &headers,
        ))
        .await;
    let shown = format!(
        "(document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() ?? '')\
         .includes({})",
        json!(user.username)
    );
    // GraphiQL takes an editor's text into its state after a short debounce,
    // and ignores a click while it is still busy (fetching the schema): as a
    // person would, press run again until the answer shows, for a while.
    let mut ran = false;
    for _ in 0..10 {
        browser
            .eval("document.querySelector('.graphiql-execute-button').click()")
            .await;
        if browser.wait_for(&shown, Duration::from_secs(2)).await {
            ran = true;
            break;
        }
    }
    let screenshot = browser.screenshot().await;
    let path = std::env::var("GRAPHIQL_SCREENSHOT")
        .unwrap_or_else(|_| concat!(env!("CARGO_TARGET_TMPDIR"), "/graphiql.png").to_owned());
    std::fs::write(&path, screenshot).expect("screenshot written");
    assert!(
        ran,
        "the response shows the user (screenshot in {path}): {}",
        browser
            .eval("document.querySelector('.graphiql-response')?.innerText ?? ''")
            .await
    );

    let violations = browser.eval("window.__violations").await;
    assert_eq!(violations, json!([]), "CSP violations");
    let elsewhere: Vec<_> = browser
        .requested_urls()
        .into_iter()
        .filter(|url| !url.starts_with(&app.address) && !url.starts_with("data:"))
        .collect();
    assert!(elsewhere.is_empty(), "requests elsewhere: {elsewhere:?}");
}
