//! Checking and parsing GraphQL documents, and keeping the parsed ones that
//! passed validation, by query text.
//!
//! Every document reaches async-graphql already parsed by [`DocumentCache::check`],
//! so no text is parsed without first passing the bounds of
//! [`super::shape`]. Clients send the same few documents over and over, and
//! parsing is about half the work of a cached `me` (see bench/RESULTS.md):
//! a document that validated is kept and later requests skip the parse.
//! async-graphql's verdict on a document is kept with it too, for requests
//! without variables: validation then reads nothing but the document, the
//! operation's name and the schema, so the same three give the same
//! verdict (depth and complexity included). A request with variables is
//! validated every time, as their values are part of it.
//!
//! Only documents that passed validation are kept, each weighed by an upper
//! bound of its memory ([`weight`]), within [`BUDGET_BYTES`]: a stream of
//! distinct hostile documents, all refused, leaves nothing behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::ValidationResult;
use mini_moka::sync::{Cache, ConcurrentCacheExt as _};

use super::error::Refused;
use super::persisted::{Lookup, PersistedQueries};
use super::shape;

/// Memory the kept documents may take, as weighed by [`weight`].
pub const BUDGET_BYTES: u64 = 8 * 1024 * 1024;
/// Longer query texts are parsed every time rather than kept.
pub const MAX_KEPT_QUERY_BYTES: usize = 4 * 1024;
/// Bytes of parsed document per byte of text and per selection, at most:
/// what the `document_weight` test measures over the shapes that cost the
/// most (long lists and objects, many arguments, variables and directives,
/// fields nested in fields), with a margin.
const BYTES_PER_TEXT_BYTE: u64 = 100;
const BYTES_PER_SELECTION: u64 = 800;
/// What every kept entry costs besides: the `Arc`, the cache's bookkeeping.
const ENTRY_OVERHEAD: u64 = 512;

/// An upper bound of the memory a kept document of `text` with
/// `selections` (fields, spreads, inline fragments) takes, key included.
pub fn weight(text: &str, selections: usize) -> u32 {
    let text_len = text.len() as u64;
    let bytes = text_len * (BYTES_PER_TEXT_BYTE + 1)
        + selections as u64 * BYTES_PER_SELECTION
        + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// A parsed document with its weight.
struct Kept {
    document: ExecutableDocument,
    weight: u32,
    /// It selects `__schema` (see `super::ServedSchema`).
    selects_schema: bool,
    /// async-graphql's verdict for a request without variables, with the
    /// operation name it was given for (the first such request sets it).
    verdict: OnceLock<(Option<String>, ValidationResult)>,
}

#[derive(Clone)]
pub struct DocumentCache {
    documents: Cache<String, Arc<Kept>>,
    /// Query texts by hash, for automatic persisted queries.
    persisted: PersistedQueries,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

/// A document that passed the bounds, ready to execute.
pub struct Checked {
    kept: Arc<Kept>,
    /// The text, when the document was parsed now and may be kept once it
    /// validates.
    keep_as: Option<String>,
    /// The hash to persist the text under once it validates, when the
    /// client registered it as a persisted query.
    persist_as: Option<(String, String)>,
}

impl Checked {
    /// True when the operation that would run is a mutation.
    pub fn selects_mutation(&self, operation_name: Option<&str>) -> bool {
        self.kept.document.operations.iter().any(|(name, op)| {
            op.node.ty == OperationType::Mutation
                && (operation_name.is_none() || name.map(|n| n.as_str()) == operation_name)
        })
    }

    /// True when the document selects `__schema` somewhere.
    pub fn selects_schema(&self) -> bool {
        self.kept.selects_schema
    }

    /// What the document weighs in the cache (see [`weight`]).
    pub fn weight(&self) -> u32 {
        self.kept.weight
    }

    /// The parsed document, for async-graphql (which takes ownership).
    pub fn document(&self) -> ExecutableDocument {
        ExecutableDocument::clone(&self.kept.document)
    }
}

/// Set by the hooks of `super::limits`: when a request's document passed
/// async-graphql's validation, and when its operation started to execute
/// (after validation, variables and the choice of operation).
#[derive(Clone, Default)]
pub struct Validated {
    validated: Arc<AtomicBool>,
    executing: Arc<AtomicBool>,
    /// The document and operation name, when the request has no variables
    /// and its verdict may be reused or kept.
    reusable: Option<(Arc<Kept>, Option<String>)>,
}

impl Validated {
    /// For `request`, whose document is `checked`. A verdict is reused or
    /// kept only for a request without variables whose operation name, if
    /// any, is one of the document's: async-graphql validates before it
    /// looks the name up, and a kept name must be no larger than the text
    /// the cache weighed.
    pub fn for_request(checked: &Checked, request: &async_graphql::Request) -> Self {
        let names_an_operation = request.operation_name.as_deref().is_none_or(|wanted| {
            checked
                .kept
                .document
                .operations
                .iter()
                .any(|(name, _)| name.is_some_and(|name| name.as_str() == wanted))
        });
        let reusable = (request.variables.is_empty() && names_an_operation)
            .then(|| (Arc::clone(&checked.kept), request.operation_name.clone()));
        Self {
            reusable,
            ..Self::default()
        }
    }

    /// The verdict of an earlier request like this one, when kept.
    pub fn earlier_verdict(&self) -> Option<ValidationResult> {
        let (kept, operation_name) = self.reusable.as_ref()?;
        let (for_name, verdict) = kept.verdict.get()?;
        (for_name == operation_name).then_some(*verdict)
    }

    /// Keeps this request's passing verdict for later ones like it.
    pub fn keep_verdict(&self, verdict: ValidationResult) {
        if let Some((kept, operation_name)) = &self.reusable {
            let _ = kept.verdict.set((operation_name.clone(), verdict));
        }
    }

    pub fn mark(&self) {
        self.validated.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.validated.load(Ordering::Relaxed)
    }

    pub fn mark_executing(&self) {
        self.executing.store(true, Ordering::Relaxed);
    }

    pub fn is_executing(&self) -> bool {
        self.executing.load(Ordering::Relaxed)
    }
}

impl DocumentCache {
    pub fn with_budget(bytes: u64) -> Self {
        Self {
            documents: Cache::builder()
                .max_capacity(bytes)
                .weigher(|_, kept: &Arc<Kept>| kept.weight)
                .build(),
            persisted: PersistedQueries::default(),
        }
    }

    /// The document of `request`: its query, or the persisted text its
    /// `persistedQuery` extension names (then set as its query), checked by
    /// [`check`](Self::check) as any other.
    ///
    /// # Errors
    /// As `check`, and as [`PersistedQueries::lookup`].
    pub fn check_request(&self, request: &mut async_graphql::Request) -> Result<Checked, Refused> {
        let lookup = self
            .persisted
            .lookup(request.extensions.get("persistedQuery"), &request.query)?;
        let persist_as = match lookup {
            Lookup::None => None,
            Lookup::Found(text) => {
                request.query = text.to_string();
                None
            }
            Lookup::Register { hash } => Some((hash, request.query.clone())),
        };
        let mut checked = self.check(&request.query)?;
        checked.persist_as = persist_as;
        Ok(checked)
    }

    /// The parsed document of `text`, kept or parsed now, once the text and
    /// the document passed every bound of [`shape`].
    ///
    /// # Errors
    /// The bound that refused it, or the parser's error (reported by line
    /// and column only: the parser's message quotes the source line, which
    /// may hold a password typed into the document).
    // `&String`, not `&str`: mini-moka looks keys up through `Arc<String>`,
    // which borrows as `String` only.
    #[allow(clippy::ptr_arg)]
    pub fn check(&self, text: &String) -> Result<Checked, Refused> {
        if let Some(kept) = self.documents.get(text) {
            return Ok(Checked {
                kept,
                keep_as: None,
                persist_as: None,
            });
        }
        shape::check_nesting(text)?;
        let document = async_graphql::parser::parse_query(text).map_err(|err| {
            let at = err.positions().next();
            let message = match at {
                Some(at) => format!("syntax error at line {}, column {}", at.line, at.column),
                None => "syntax error".to_owned(),
            };
            Refused::new("GRAPHQL_PARSE_FAILED", message)
        })?;
        let cost = shape::measure(&document)?;
        Ok(Checked {
            kept: Arc::new(Kept {
                selects_schema: super::introspection::selects_schema(&document),
                document,
                weight: weight(text, cost.complexity),
                verdict: OnceLock::new(),
            }),
            keep_as: (text.len() <= MAX_KEPT_QUERY_BYTES).then(|| text.clone()),
            persist_as: None,
        })
    }

    /// Keeps `checked` for later requests when it was parsed now and its
    /// request passed validation.
    /// Persists its text too when the client registered it.
    pub fn keep_if_valid(&self, checked: Checked, validated: &Validated) {
        if !validated.is_set() {
            return;
        }
        if let Some((hash, text)) = checked.persist_as {
            self.persisted.keep(hash, &text);
        }
        if let Some(text) = checked.keep_as {
            self.documents.insert(text, checked.kept);
        }
    }

    /// The persisted query texts.
    pub fn persisted(&self) -> &PersistedQueries {
        &self.persisted
    }

    /// How many documents are kept (after pending housekeeping).
    pub fn len(&self) -> u64 {
        self.documents.sync();
        self.documents.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The summed weight of the kept documents.
    pub fn weighed_bytes(&self) -> u64 {
        self.documents.sync();
        self.documents.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_kept_only_once_validated() {
        let cache = DocumentCache::default();
        let checked = cache.check(&"{ me { id } }".to_owned()).unwrap();
        cache.keep_if_valid(checked, &Validated::default());
        assert!(cache.is_empty());
        let checked = cache.check(&"{ me { id } }".to_owned()).unwrap();
        let validated = Validated::default();
        validated.mark();
        cache.keep_if_valid(checked, &validated);
        assert_eq!(cache.len(), 1);
        assert!(cache
            .check(&"{ me { id } }".to_owned())
            .unwrap()
            .keep_as
            .is_none());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let cache = DocumentCache::with_budget(64 * 1024);
        let validated = Validated::default();
        validated.mark();
        for i in 0..1000 {
            let text = format!("{{ me {{ id username email }} a{i}: sessions {{ id }} }}");
            cache.keep_if_valid(cache.check(&text).unwrap(), &validated);
        }
        assert!(cache.weighed_bytes() <= 64 * 1024);
        assert!(!cache.is_empty());
    }

    #[test]
    fn parse_errors_do_not_quote_the_document() {
        let refused = DocumentCache::default()
            .check(&"{ login(username: \"a\", password: \"hunter2-secret\" }".to_owned())
            .err()
            .expect("refused");
        assert_eq!(refused.reason, "GRAPHQL_PARSE_FAILED");
        assert!(!refused.message.contains("hunter2"));
    }

    #[tokio::test]
    async fn a_verdict_is_reused_only_without_variables_and_for_the_same_operation() {
        let schema = crate::graphql::build_schema(false);
        let cache = DocumentCache::default();
        let text = "query A { __typename } query B { __typename }".to_owned();
        let run = |operation: &str, variables: serde_json::Value| {
            let checked = cache.check(&text).unwrap();
            let request = async_graphql::Request::new(text.clone())
                .operation_name(operation)
                .variables(async_graphql::Variables::from_json(variables));
            let validated = Validated::for_request(&checked, &request);
            (checked, request, validated)
        };
        let (checked, mut request, validated) = run("A", serde_json::json!({}));
        assert!(validated.earlier_verdict().is_none());
        request.set_parsed_query(checked.document());
        let response = schema.execute(request.data(validated.clone())).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert!(validated.is_set());
        cache.keep_if_valid(checked, &validated);

        let (_, _, again) = run("A", serde_json::json!({}));
        assert!(again.earlier_verdict().is_some());
        let (_, _, other_operation) = run("B", serde_json::json!({}));
        assert!(other_operation.earlier_verdict().is_none());
        let (_, _, with_variables) = run("A", serde_json::json!({ "x": 1 }));
        assert!(with_variables.earlier_verdict().is_none());
    }

    #[tokio::test]
    async fn an_operation_name_the_document_lacks_keeps_no_verdict() {
        let schema = crate::graphql::build_schema(false);
        let cache = DocumentCache::default();
        let text = "{ __typename }".to_owned();
        let checked = cache.check(&text).unwrap();
        let mut request =
            async_graphql::Request::new(text.clone()).operation_name("x".repeat(60_000));
        let validated = Validated::for_request(&checked, &request);
        request.set_parsed_query(checked.document());
        let response = schema.execute(request.data(validated.clone())).await;
        assert!(
            !response.errors.is_empty(),
            "an unknown operation is refused"
        );
        assert!(validated.earlier_verdict().is_none());
        assert!(checked.kept.verdict.get().is_none(), "no name was kept");

        // The document's own (unnamed) operation still gets its verdict kept.
        let request = async_graphql::Request::new(text.clone());
        let validated = Validated::for_request(&checked, &request);
        let mut request = request;
        request.set_parsed_query(checked.document());
        let response = schema.execute(request.data(validated.clone())).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert!(checked
            .kept
            .verdict
            .get()
            .is_some_and(|(name, _)| name.is_none()));
    }

    #[test]
    fn mutations_are_told_apart() {
        let cache = DocumentCache::default();
        let doc = cache
            .check(&"query Q { me { id } } mutation M { logout }".to_owned())
            .unwrap();
        assert!(doc.selects_mutation(None));
        assert!(doc.selects_mutation(Some("M")));
        assert!(!doc.selects_mutation(Some("Q")));
    }
}
