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
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{SDLExportOptions, ServerResult, Value};

/// The `DateTime` scalar, for the people who read the schema.
pub const DATE_TIME: &str = "A moment in time: an RFC 3339 date and time in UTC, such as \
                             `2025-01-31T09:30:00.123456+00:00`.";

/// How the SDL is printed: with `@specifiedBy`, as introspection reports it.
pub fn sdl_options() -> SDLExportOptions {
    SDLExportOptions::new().include_specified_by()
}

/// True when `document` selects `__schema` anywhere, in an operation or a
/// fragment, at any depth: only such a document can reach the field
/// [`NoSchemaDescription`] answers. (The recursion follows the text's
/// nesting, which `super::shape::check_nesting` bounds before the parse.)
pub fn selects_schema(document: &ExecutableDocument) -> bool {
    fn in_set(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                field.node.name.node == "__schema" || in_set(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => in_set(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => false,
        })
    }
    document
        .operations
        .iter()
        .any(|(_, operation)| in_set(&operation.node.selection_set.node))
        || document
            .fragments
            .values()
            .any(|fragment| in_set(&fragment.node.selection_set.node))
}

/// Answers `__schema { description }` with null (the schema has none).
///
/// async-graphql calls an extension's resolver hook for every field of
/// every request, so the schema is built twice and only documents that
/// [select `__schema`](selects_schema) run on the build with this hook
/// (see [`super::ServedSchema`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn selects(text: &str) -> bool {
        selects_schema(&async_graphql::parser::parse_query(text).expect("parses"))
    }

    #[test]
    fn a_selection_of_schema_is_found_wherever_it_is_written() {
        assert!(selects("{ __schema { description } }"));
        assert!(selects("{ s: __schema { description } }"));
        assert!(selects("{ ... on Query { __schema { description } } }"));
        assert!(selects(
            "{ ...F } fragment F on Query { __schema { queryType { name } } }"
        ));
        assert!(selects(
            "query A { me { id } } query B { __schema { description } }"
        ));
        assert!(!selects("{ me { id username } }"));
        assert!(!selects("{ __type(name: \"Query\") { description } }"));
        assert!(!selects("{ me { __typename } }"));
    }
}
