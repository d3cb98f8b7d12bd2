//! Parsed GraphQL documents, kept by query text. Clients send the same few
//! documents over and over, and parsing is about half the work of a cached
//! `me` (see bench/RESULTS.md). A document from here still goes through
//! every check: async-graphql runs the `parse_query` extension hook (our
//! alias limit), depth and complexity validation on it as on a fresh one.

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;
use mini_moka::sync::Cache;

/// Documents kept at once.
const CAPACITY: u64 = 1_000;
/// Longer query texts are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 4 * 1024;

#[derive(Clone)]
pub struct DocumentCache {
    documents: Cache<String, Arc<ExecutableDocument>>,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            documents: Cache::new(CAPACITY),
        }
    }
}

impl DocumentCache {
    /// Gives `request` its parsed document, from here or parsed now and
    /// kept. A text that does not parse is left to the executor, which
    /// reports why.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        if let Some(document) = self.documents.get(&request.query) {
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return;
        }
        if let Ok(document) = async_graphql::parser::parse_query(&request.query) {
            self.documents
                .insert(request.query.clone(), Arc::new(document.clone()));
            request.set_parsed_query(document);
        }
    }
}
