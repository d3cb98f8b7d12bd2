//! Fuzzing the document path: random, grammar-shaped and hostile documents
//! (and random edits of them) go through the same entry point as every
//! HTTP request, `authql::graphql::execute`, on a thread with a small
//! stack. Each must be answered, without a panic or a stack overflow (which
//! would abort this test binary), within a bounded time.
//!
//! CI runs a short pass with a fixed seed. A long run:
//! `AUTHQL_FUZZ_SECONDS=1800 cargo test --release --test api fuzz -- --nocapture`
//! (`AUTHQL_FUZZ_SEED` picks the seed; a failing input is printed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use authql::auth::{ClientInfo, Credential};
use authql::graphql::{self, DocumentCache, RequestContext};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};

use crate::helpers::spawn_app;

/// The stack of the thread the documents run on: the worker threads' stack
/// is 2 MiB by default, so this leaves the limits a wide margin (an
/// unoptimised build needs several times the stack of a release build).
const STACK_BYTES: usize = 1024 * 1024;
/// Longest any one document may take, far above what any takes.
const MAX_PER_INPUT: Duration = Duration::from_secs(2);
/// Inputs of the short pass CI runs.
const CI_INPUTS: usize = 1_500;

const FIELDS: &[&str] = &[
    "me",
    "sessions",
    "id",
    "username",
    "email",
    "isActive",
    "lastLogin",
    "__typename",
    "login",
    "logout",
    "nope",
    "__schema",
    "types",
    "name",
    "fields",
    "ofType",
];

struct Generator {
    rng: StdRng,
}

impl Generator {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn value(&mut self, depth: usize) -> String {
        match self.rng.random_range(0..if depth > 6 { 6 } else { 10 }) {
            0 => self.rng.random_range(-5..100_000).to_string(),
            1 => "\"[{( \\\" ]\"".to_owned(),
            2 => "\"\"\"block \\\"\"\" [[[ \"\"\"".to_owned(),
            3 => self
                .pick(&["true", "false", "null", "ENUM", "1.5e3"])
                .to_owned(),
            4 => "$v".to_owned(),
            5 => format!("\"{}\"", "x".repeat(self.rng.random_range(0..64))),
            6 | 7 => {
                let items: Vec<String> = (0..self.rng.random_range(0..4))
                    .map(|_| self.value(depth + 1))
                    .collect();
                format!("[{}]", items.join(", "))
            }
            _ => {
                let items: Vec<String> = (0..self.rng.random_range(0..3))
                    .map(|i| format!("k{i}: {}", self.value(depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }

    fn selection_set(&mut self, depth: usize, fragments: usize) -> String {
        let mut out = String::from("{");
        for _ in 0..self.rng.random_range(1..5) {
            match self.rng.random_range(0..10) {
                0 if fragments > 0 => {
                    out.push_str(&format!(" ...F{}", self.rng.random_range(0..fragments + 1)));
                }
                1 if depth < 8 => {
                    out.push_str(" ... on Query ");
                    out.push_str(&self.selection_set(depth + 1, fragments));
                }
                _ => {
                    if self.rng.random_bool(0.2) {
                        out.push_str(&format!(" a{}:", self.rng.random_range(0..40)));
                    }
                    out.push(' ');
                    out.push_str(self.pick(FIELDS));
                    if self.rng.random_bool(0.3) {
                        out.push_str(&format!("(x: {}, password: \"p\")", self.value(0)));
                    }
                    if self.rng.random_bool(0.15) {
                        out.push_str(&format!(" @skip(if: {})", self.value(5)));
                    }
                    if depth < 8 && self.rng.random_bool(0.4) {
                        out.push(' ');
                        out.push_str(&self.selection_set(depth + 1, fragments));
                    }
                }
            }
            if self.rng.random_bool(0.05) {
                out.push_str(" # comment {[(\n");
            }
        }
        out.push_str(" }");
        out
    }

    fn grammar_shaped(&mut self) -> String {
        let fragments = self.rng.random_range(0..6);
        let mut out = match self.rng.random_range(0..4) {
            0 => String::new(),
            1 => "query Q($v: [[Int!]]) ".to_owned(),
            2 => "mutation M ".to_owned(),
            _ => "query ".to_owned(),
        };
        out.push_str(&self.selection_set(0, fragments));
        for i in 0..fragments {
            let set = self.selection_set(1, fragments);
            out.push_str(&format!(" fragment F{i} on Query {set}"));
        }
        out
    }

    fn hostile(&mut self) -> String {
        let n = self.rng.random_range(1..6_000);
        match self.rng.random_range(0..7) {
            0 => format!("{{ me(x: {}1{}) {{ id }} }}", "[".repeat(n), "]".repeat(n)),
            1 => format!(
                "{{ me(x: {}1{}) {{ id }} }}",
                "{a:".repeat(n),
                "}".repeat(n)
            ),
            2 => format!(
                "{{ me @include(if: {}true{}) {{ id }} }}",
                "[".repeat(n),
                "]".repeat(n)
            ),
            3 => format!("{{ me {}id{} }}", "{ a ".repeat(n), " }".repeat(n + 1)),
            4 => {
                let depth = n % 40;
                let mut text = String::from("{ ...F0 }");
                for level in 0..depth {
                    let next = level + 1;
                    text.push_str(&format!(
                        " fragment F{level} on Query {{ ...F{next} ...F{next} }}"
                    ));
                }
                text.push_str(&format!(" fragment F{depth} on Query {{ __typename }}"));
                text
            }
            5 => format!("{{ {} }}", "__typename ".repeat(n)),
            _ => format!(
                "query($v: {}Int{}) {{ __typename }}",
                "[".repeat(n),
                "]".repeat(n)
            ),
        }
    }

    /// Random edits: cut, repeat a slice, insert punctuation.
    fn mutate(&mut self, text: String) -> String {
        let mut bytes = text.into_bytes();
        for _ in 0..self.rng.random_range(1..4) {
            if bytes.is_empty() {
                break;
            }
            let at = self.rng.random_range(0..bytes.len());
            match self.rng.random_range(0..3) {
                0 => bytes.truncate(at),
                1 => {
                    let end = (at + self.rng.random_range(1..32)).min(bytes.len());
                    let slice = bytes[at..end].to_vec();
                    for _ in 0..self.rng.random_range(1..50) {
                        bytes.splice(at..at, slice.iter().copied());
                    }
                }
                _ => {
                    let punct = b"{}[]()\"#\\:$@!.,=|&\n";
                    bytes.insert(at, punct[self.rng.random_range(0..punct.len())]);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn next_document(&mut self) -> String {
        let document = match self.rng.random_range(0..3) {
            0 => self.grammar_shaped(),
            1 => self.hostile(),
            _ => (0..self.rng.random_range(1..200))
                .map(|_| {
                    self.pick(&[
                        "{", "}", "[", "]", "(", ")", "\"", "a", ":", "...", "#", "\n", "$", " ",
                    ])
                })
                .collect(),
        };
        if self.rng.random_bool(0.3) {
            self.mutate(document)
        } else {
            document
        }
    }
}

#[test]
fn documents_of_any_shape_are_answered_within_bounds_on_a_small_stack() {
    let seconds: Option<u64> = std::env::var("AUTHQL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("AUTHQL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if seconds.is_some() {
            rand::random()
        } else {
            0x5eed
        });
    let worker = std::thread::Builder::new()
        .name("fuzz".to_owned())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(run(seed, seconds))
        })
        .expect("fuzz thread");
    let (inputs, slowest) = worker.join().expect("the fuzz pass ran to its end");
    println!("fuzz: seed {seed}, {inputs} inputs, slowest {slowest:?}");
}

async fn run(seed: u64, seconds: Option<u64>) -> (usize, Duration) {
    let app = spawn_app().await;
    let schema = graphql::ServedSchema::new(true);
    let documents = DocumentCache::default();
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
    };
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut slowest = Duration::ZERO;
    let mut inputs = 0;
    loop {
        let done = match deadline {
            Some(deadline) => Instant::now() >= deadline,
            None => inputs >= CI_INPUTS,
        };
        if done {
            break;
        }
        let document = generator.next_document();
        let context = Arc::new(RequestContext::new(
            app.auth.clone(),
            Credential::Missing,
            ClientInfo::default(),
        ));
        let request = async_graphql::Request::new(document.clone()).data(context);
        let started = Instant::now();
        let response = graphql::execute(&schema, &documents, request)
            .await
            .response;
        let elapsed = started.elapsed();
        assert!(
            elapsed < MAX_PER_INPUT,
            "seed {seed}, input {inputs} took {elapsed:?}: {document:?}"
        );
        assert!(
            response.errors.iter().all(|e| !e.message.is_empty()),
            "an error without a message for {document:?}"
        );
        slowest = slowest.max(elapsed);
        inputs += 1;
    }
    (inputs, slowest)
}
