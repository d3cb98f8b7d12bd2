//! An async-graphql extension that records each operation's latency by its
//! type, tells the document cache which documents validated, and reuses a
//! kept verdict where one applies (see `super::documents`).
//!
//! The bounds on a document's shape (nesting, aliases, fragments, depth and
//! complexity with fragments expanded) are checked before async-graphql
//! sees it, in `super::shape`; async-graphql's own depth and complexity
//! limits stay on as a second line.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

use super::documents::Validated;

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
        let document = next.run(ctx, query, variables).await?;
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

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let Some(validated) = ctx.data_opt::<Validated>() else {
            return next.run(ctx).await;
        };
        let verdict = match validated.earlier_verdict() {
            Some(verdict) => verdict,
            None => {
                let verdict = next.run(ctx).await?;
                validated.keep_verdict(verdict);
                verdict
            }
        };
        validated.mark();
        Ok(verdict)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if let Some(validated) = ctx.data_opt::<Validated>() {
            validated.mark_executing();
        }
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
