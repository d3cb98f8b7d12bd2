//! An async-graphql extension that refuses documents with too many aliases
//! (one request could otherwise carry hundreds of fields) and records each
//! operation's latency by its type.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{Response, ServerError, ServerResult, Variables};

/// Most aliases in one document.
pub const MAX_ALIASES: usize = 32;

pub struct RequestLimits;

impl ExtensionFactory for RequestLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerRequest::default())
    }
}

#[derive(Default)]
struct PerRequest {
    /// 0: unknown, 1: query, 2: mutation, 3: subscription.
    operation: AtomicU8,
}

#[async_trait::async_trait]
impl Extension for PerRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // The parser's message quotes the offending source line, which may
        // hold a password typed into the document: report only where.
        let document = next.run(ctx, query, variables).await.map_err(|mut err| {
            err.message = match err.locations.first() {
                Some(at) => format!("syntax error at line {}, column {}", at.line, at.column),
                None => "syntax error".to_owned(),
            };
            err.extensions = Some(limit_extensions("GRAPHQL_PARSE_FAILED"));
            err
        })?;
        let aliases = count_aliases(&document);
        if aliases > MAX_ALIASES {
            let mut err = ServerError::new(
                format!("the document has {aliases} aliases; at most {MAX_ALIASES} are allowed"),
                None,
            );
            err.extensions = Some(limit_extensions("TOO_MANY_ALIASES"));
            return Err(err);
        }
        let kind = match &document.operations {
            DocumentOperations::Single(op) => op.node.ty,
            DocumentOperations::Multiple(ops) => match ops.values().next() {
                Some(op) if ops.len() == 1 => op.node.ty,
                _ => OperationType::Query,
            },
        };
        self.operation.store(
            match kind {
                OperationType::Query => 1,
                OperationType::Mutation => 2,
                OperationType::Subscription => 3,
            },
            Ordering::Relaxed,
        );
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let started = Instant::now();
        let response = next.run(ctx, operation_name).await;
        let kind = match self.operation.load(Ordering::Relaxed) {
            1 => "query",
            2 => "mutation",
            3 => "subscription",
            _ => "unknown",
        };
        crate::metrics::operation_latency(kind, started.elapsed());
        response
    }
}

/// `extensions` for a refusal by a limit: BAD_USER_INPUT with its reason.
pub fn limit_extensions(reason: &str) -> async_graphql::ErrorExtensionValues {
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "BAD_USER_INPUT");
    extensions.set("reasons", vec![reason.to_owned()]);
    extensions
}

fn count_aliases(document: &ExecutableDocument) -> usize {
    let in_operations: usize = document
        .operations
        .iter()
        .map(|(_, op)| aliases_in(&op.node.selection_set.node))
        .sum();
    let in_fragments: usize = document
        .fragments
        .values()
        .map(|f| aliases_in(&f.node.selection_set.node))
        .sum();
    in_operations + in_fragments
}

fn aliases_in(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some()) + aliases_in(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => aliases_in(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}
