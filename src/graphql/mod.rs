//! The GraphQL schema: types, resolvers, and the limits every request is
//! held to. Resolvers are thin; the rules live in `crate::auth`.

pub mod context;
pub mod documents;
pub mod error;
pub mod introspection;
pub mod limits;
pub mod mutation;
pub mod persisted;
pub mod query;
pub mod shape;
pub mod types;

use async_graphql::{EmptySubscription, Schema};
use chrono::{DateTime, Utc};

pub use context::{RequestContext, SessionCookie};
use documents::Validated;
pub use documents::{Checked, DocumentCache};
use mutation::Mutation;
use query::Query;
pub use shape::{MAX_ALIASES, MAX_COMPLEXITY, MAX_DEPTH, MAX_NESTING};

pub type AuthqlSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema as served to documents that select `__schema`, printed by
/// `authql schema`, and tested.
pub fn build_schema(introspection: bool) -> AuthqlSchema {
    build(introspection, true)
}

/// `describing`: with the hook that answers `__schema { description }`.
fn build(introspection: bool, describing: bool) -> AuthqlSchema {
    let mut builder = Schema::build(Query, Mutation, EmptySubscription)
        .override_output_type_description::<DateTime<Utc>>(introspection::DATE_TIME)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(limits::RequestLimits);
    if describing {
        builder = builder.extension(introspection::NoSchemaDescription);
    }
    if introspection {
        builder.finish()
    } else {
        builder
            .disable_introspection()
            .disable_suggestions()
            .finish()
    }
}

/// The schema as served, built twice: a document that
/// [selects `__schema`](introspection::selects_schema) runs on the build
/// with [`introspection::NoSchemaDescription`], every other document on
/// the build without it. That hook sits on every field async-graphql
/// resolves, so it cost every request (bench/RESULTS.md); the two builds
/// answer every other field alike.
#[derive(Clone)]
pub struct ServedSchema {
    plain: AuthqlSchema,
    describing: AuthqlSchema,
}

impl ServedSchema {
    pub fn new(introspection: bool) -> Self {
        Self {
            plain: build(introspection, false),
            describing: build(introspection, true),
        }
    }

    fn for_document(&self, checked: &Checked) -> &AuthqlSchema {
        if checked.selects_schema() {
            &self.describing
        } else {
            &self.plain
        }
    }
}

/// The SDL of the schema, as introspection reports it.
pub fn sdl() -> String {
    build_schema(true).sdl_with_options(introspection::sdl_options())
}

/// How far a request got, which decides its HTTP status under the
/// GraphQL-over-HTTP media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// Refused before execution: a bound, a parse or validation error,
    /// bad variables, an unknown operation, a wrong persisted-query hash.
    Refusal,
    /// A hash-only request for a query this server does not hold (Apollo's
    /// clients then send the text).
    PersistedQueryNotFound,
    /// The operation ran (its errors, if any, are field errors).
    Execution,
}

/// The answer to one request, and how far it got.
pub struct Outcome {
    pub response: async_graphql::Response,
    pub reached: Reached,
}

impl Outcome {
    pub fn refused(refused: error::Refused) -> Self {
        let reached = if refused.is_persisted_query_not_found() {
            Reached::PersistedQueryNotFound
        } else {
            Reached::Refusal
        };
        Self {
            response: refused.into_response(),
            reached,
        }
    }
}

/// Runs one request: its document (its query, or the persisted text its
/// `persistedQuery` extension names) is checked against every bound and
/// parsed by [`DocumentCache::check`] first, so async-graphql never parses
/// or validates an unchecked text. This is the one entry point of every
/// transport (POST, GET, each request of a batch).
pub async fn execute(
    schema: &ServedSchema,
    documents: &DocumentCache,
    mut request: async_graphql::Request,
) -> Outcome {
    match documents.check_request(&mut request) {
        Ok(checked) => execute_checked(schema, documents, request, checked).await,
        Err(refused) => Outcome::refused(refused),
    }
}

/// [`execute`] for a request whose document the caller checked already
/// with [`DocumentCache::check_request`] (GET looks at it to refuse
/// mutations).
pub async fn execute_checked(
    schema: &ServedSchema,
    documents: &DocumentCache,
    mut request: async_graphql::Request,
    checked: Checked,
) -> Outcome {
    let schema = schema.for_document(&checked);
    let validated = Validated::for_request(&checked, &request);
    request.set_parsed_query(checked.document());
    // Boxed: async-graphql's execution future is kilobytes, and the HTTP
    // layers above would otherwise hold and copy it on every request.
    let response = Box::pin(schema.execute(request.data(validated.clone()))).await;
    let reached = if validated.is_executing() {
        Reached::Execution
    } else {
        Reached::Refusal
    };
    documents.keep_if_valid(checked, &validated);
    Outcome { response, reached }
}
