//! What the schema says about itself beyond the resolvers' doc comments, so
//! that a frontend developer reads plain words and the served introspection
//! prints what `schema.graphql` says: the `DateTime` scalar's description
//! (async-graphql's reads "Implement the DateTime<Utc> scalar"), its
//! `@specifiedBy` URL printed in the SDL as introspection reports it, and no
//! schema description (async-graphql answers `__schema { description }`
//! with a fixed paragraph of its own that no SDL of ours can carry: its SDL
//! printer and parser have no schema description).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{SDLExportOptions, ServerResult, Value};

/// The `DateTime` scalar, for the people who read the schema.
pub const DATE_TIME: &str = "A moment in time: an RFC 3339 date and time in UTC, such as \
                             `2025-01-31T09:30:00.123456+00:00`.";

/// How the SDL is printed: with `@specifiedBy`, as introspection reports it.
pub fn sdl_options() -> SDLExportOptions {
    SDLExportOptions::new().include_specified_by()
}

/// Answers `__schema { description }` with null (the schema has none).
pub struct NoSchemaDescription;

impl ExtensionFactory for NoSchemaDescription {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NoSchemaDescription)
    }
}

#[async_trait::async_trait]
impl Extension for NoSchemaDescription {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.parent_type == "__Schema" && info.name == "description" {
            return Ok(Some(Value::Null));
        }
        next.run(ctx, info).await
    }
}
