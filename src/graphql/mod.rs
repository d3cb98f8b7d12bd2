//! The GraphQL schema: types, resolvers, and the limits every request is
//! held to. Resolvers are thin; the rules live in `crate::auth`.

pub mod context;
pub mod documents;
pub mod introspection;
pub mod limits;
pub mod mutation;
pub mod query;
pub mod types;

use async_graphql::{EmptySubscription, Schema};
use chrono::{DateTime, Utc};

pub use context::RequestContext;
pub use documents::DocumentCache;
use mutation::Mutation;
use query::Query;

pub type AuthqlSchema = Schema<Query, Mutation, EmptySubscription>;

/// Deepest selection accepted. Our own types nest three deep; GraphiQL's
/// introspection query needs about thirteen.
pub const MAX_DEPTH: usize = 16;
/// Most fields (weighted) in one operation; introspection needs ~200.
pub const MAX_COMPLEXITY: usize = 500;

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
