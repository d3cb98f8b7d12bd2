//! The GraphQL schema: types, resolvers, and the limits every request is
//! held to. Resolvers are thin; the rules live in `crate::auth`.

pub mod context;
pub mod documents;
pub mod error;
pub mod introspection;
pub mod limits;
pub mod mutation;
pub mod query;
pub mod shape;
pub mod types;

use async_graphql::{EmptySubscription, Schema};
use chrono::{DateTime, Utc};

pub use context::RequestContext;
use documents::Validated;
pub use documents::{Checked, DocumentCache};
use mutation::Mutation;
use query::Query;
pub use shape::{MAX_ALIASES, MAX_COMPLEXITY, MAX_DEPTH, MAX_NESTING};

pub type AuthqlSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema as served, printed by `authql schema`, and tested.
pub fn build_schema(introspection: bool) -> AuthqlSchema {
    let builder = Schema::build(Query, Mutation, EmptySubscription)
        .override_output_type_description::<DateTime<Utc>>(introspection::DATE_TIME)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(limits::RequestLimits)
        .extension(introspection::NoSchemaDescription);
    if introspection {
        builder.finish()
    } else {
        builder
            .disable_introspection()
            .disable_suggestions()
            .finish()
    }
}

/// The SDL of the schema, as introspection reports it.
pub fn sdl() -> String {
    build_schema(true).sdl_with_options(introspection::sdl_options())
}

/// Runs one request: its document is checked against every bound and
/// parsed by [`DocumentCache::check`] first, so async-graphql never parses
/// or validates an unchecked text. This is the one entry point of every
/// transport (POST, GET, each request of a batch).
pub async fn execute(
    schema: &AuthqlSchema,
    documents: &DocumentCache,
    request: async_graphql::Request,
) -> async_graphql::Response {
    match documents.check(&request.query) {
        Ok(checked) => execute_checked(schema, documents, request, checked).await,
        Err(refused) => refused.into_response(),
    }
}

/// [`execute`] for a document the caller checked already (GET looks at it
/// to refuse mutations).
pub async fn execute_checked(
    schema: &AuthqlSchema,
    documents: &DocumentCache,
    mut request: async_graphql::Request,
    checked: Checked,
) -> async_graphql::Response {
    let validated = Validated::default();
    request.set_parsed_query(checked.document());
    let response = schema.execute(request.data(validated.clone())).await;
    documents.keep_if_valid(checked, &validated);
    response
}
