//! The document cache weighs each kept document by `documents::weight`, an
//! upper bound of its memory derived from the text's length and its number
//! of selections. This test
//! measures what parsed documents really take, with a counting allocator
//! (hence a test binary of its own), over the shapes that cost the most per
//! byte of text, and checks that the bound holds for every one of them.

use std::sync::Mutex;

use authql::graphql::documents::{DocumentCache, MAX_KEPT_QUERY_BYTES};

mod counting;

/// Only one measurement at a time: the counter is global.
static MEASURING: Mutex<()> = Mutex::new(());

/// Bytes still allocated after checking `text` and keeping its document,
/// and the weight the cache gives it.
fn bytes_kept(text: &str) -> (usize, usize) {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let text = text.to_owned();
    let before = counting::live_bytes();
    let checked = DocumentCache::default().check(&text);
    let kept = checked.ok();
    let after = counting::live_bytes();
    let weighed = kept.as_ref().map(|k| k.weight() as usize);
    drop(kept);
    let weighed = weighed.unwrap_or_else(|| panic!("the document passed the bounds: {text}"));
    (after.saturating_sub(before), weighed)
}

fn fill(prefix: &str, unit: &str, suffix: &str) -> String {
    let room = MAX_KEPT_QUERY_BYTES - prefix.len() - suffix.len();
    format!("{prefix}{}{suffix}", unit.repeat(room / unit.len()))
}

#[test]
fn the_weight_of_a_document_bounds_its_memory() {
    let shapes = [
        ("a small query", "{ me { id username } }".to_owned()),
        (
            "a long list of ints",
            fill("{ me(x: [", "1,", "]) { id } }"),
        ),
        (
            "a long list of lists",
            fill("{ me(x: [", "[],", "]) { id } }"),
        ),
        ("many objects", fill("{ me(x: [", "{a:1},", "]) { id } }")),
        ("many short fields", format!("{{ {}}}", "a ".repeat(490))),
        // As wide as the bounds admit: 16 arguments a field, 8 directives
        // a selection, 32 variables an operation.
        (
            "many arguments",
            fill(
                "{ ",
                "me(a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1 a:1) ",
                "}",
            ),
        ),
        ("many variables", {
            let variables: String = (0..32).map(|i| format!("$v{i}:Int ")).collect();
            (0..10)
                .map(|n| format!("query Q{n}({variables}) {{ id }} "))
                .collect()
        }),
        (
            "many directives",
            fill("{ ", "me @a @a @a @a @a @a @a @a ", "}"),
        ),
        (
            "many fragments",
            format!(
                "{{ a }}{}",
                (0..64)
                    .map(|i| format!(" fragment F{i} on Q {{ a }}"))
                    .collect::<String>()
            ),
        ),
        (
            "inline fragments",
            format!("{{ {}}}", "...{a} ".repeat(240)),
        ),
        (
            "fields with sub-selections",
            format!("{{ {}}}", "a{b} ".repeat(240)),
        ),
        (
            "nested selections",
            format!("{{ {}a{} }}", "a{".repeat(14), "}".repeat(14)),
        ),
    ];
    for (shape, text) in &shapes {
        let (measured, bound) = bytes_kept(text);
        println!(
            "{shape}: {} bytes of text take {measured} bytes; weighed {bound}",
            text.len()
        );
        assert!(
            measured <= bound,
            "{shape}: {measured} bytes measured, weighed only {bound}"
        );
    }
}
