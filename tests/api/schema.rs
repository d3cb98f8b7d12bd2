//! The schema: `schema.graphql` is what the server serves, compared both
//! with the SDL printer and through introspection over HTTP (what GraphiQL
//! and codegen tools read), and its descriptions are plain words for
//! frontend developers.

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{
    InputValueDefinition, TypeDefinition, TypeKind, TypeSystemDefinition,
};
use async_graphql::Value as GqlValue;
use authql::graphql;
use serde_json::{json, Value};

use crate::helpers::spawn_app;

fn committed_schema() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql at the repository root")
}

#[test]
fn schema_graphql_is_the_served_sdl() {
    assert_eq!(
        committed_schema(),
        graphql::sdl(),
        "schema.graphql differs from the served schema: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn the_binary_prints_the_same_sdl() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_authql"))
        .arg("schema")
        .output()
        .expect("authql runs");
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), graphql::sdl());
}

#[tokio::test]
async fn introspection_over_http_says_what_schema_graphql_says() {
    let app = spawn_app().await;

    let body = app.graphql(INTROSPECTION_QUERY, json!({}), None).await;

    assert!(body["errors"].is_null(), "{body}");
    let served = print_introspection(&body["data"]["__schema"]);
    let committed = print_sdl(&committed_schema());
    assert_eq!(
        served, committed,
        "introspection and schema.graphql differ (left: introspection)"
    );
}

#[tokio::test]
async fn the_schema_has_no_description_however_the_document_asks() {
    let app = spawn_app().await;
    // async-graphql answers `__schema { description }` with a paragraph of
    // its own; authql answers null, through aliases and fragments too.
    let asked = [
        ("{ __schema { description } }", "/__schema/description"),
        ("{ s: __schema { d: description } }", "/s/d"),
        (
            "{ ... on Query { __schema { ...D } } } fragment D on __Schema { description }",
            "/__schema/description",
        ),
        (
            "{ ...R } fragment R on Query { x: __schema { description } }",
            "/x/description",
        ),
    ];
    for (document, path) in asked {
        let body = app.graphql(document, json!({}), None).await;
        assert!(body["errors"].is_null(), "{document}: {body}");
        let data = &body["data"];
        let description = data
            .pointer(path)
            .unwrap_or_else(|| panic!("{document}: {body}"));
        assert!(description.is_null(), "{document}: {body}");
    }
    // Beside it, the rest of the schema answers as ever.
    let body = app
        .graphql(
            "{ __schema { queryType { name } description } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );
}

#[tokio::test]
async fn descriptions_are_plain_words() {
    let app = spawn_app().await;

    let body = app.graphql(INTROSPECTION_QUERY, json!({}), None).await;

    let schema = &body["data"]["__schema"];
    let date_time = own_types(schema)
        .into_iter()
        .find(|ty| ty["name"] == "DateTime")
        .expect("a DateTime scalar");
    assert!(
        date_time["description"]
            .as_str()
            .is_some_and(|d| d.contains("RFC 3339")),
        "{date_time}"
    );
    for ty in own_types(schema) {
        let name = ty["name"].as_str().unwrap();
        let mut described = vec![(name.to_owned(), ty["description"].clone())];
        for field in ty["fields"].as_array().into_iter().flatten() {
            described.push((
                format!("{name}.{}", field["name"].as_str().unwrap()),
                field["description"].clone(),
            ));
        }
        for (what, description) in described {
            let Some(text) = description.as_str() else {
                // The roots' own descriptions are optional; every other type
                // and every field says what it is.
                assert!(
                    ["Query", "Mutation"].contains(&what.as_str()),
                    "{what} has no description"
                );
                continue;
            };
            for rust in [
                "<Utc>",
                "DateTime<",
                "Option<",
                "Vec<",
                "::",
                "Implement the",
            ] {
                assert!(!text.contains(rust), "{what}: {text:?} reads as Rust");
            }
        }
    }
}

/// graphql-js's `getIntrospectionQuery` with descriptions, `specifiedByURL`,
/// `isRepeatable` and the schema's description: what GraphiQL and codegen
/// tools send.
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    description
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType {
    kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

/// Scalars every GraphQL schema has, and directives every server knows:
/// SDL printers (graphql-js's too) leave them out.
const BUILT_IN_SCALARS: [&str; 5] = ["String", "Int", "Float", "Boolean", "ID"];
const BUILT_IN_DIRECTIVES: [&str; 5] = ["include", "skip", "deprecated", "specifiedBy", "oneOf"];

fn own_types(schema: &Value) -> Vec<&Value> {
    schema["types"]
        .as_array()
        .expect("types")
        .iter()
        .filter(|ty| {
            let name = ty["name"].as_str().unwrap_or_default();
            !name.starts_with("__") && !BUILT_IN_SCALARS.contains(&name)
        })
        .collect()
}

/// One line per fact, in the same words for both sides: the schema's
/// description and roots; each type (sorted by name) with its kind,
/// description and `@specifiedBy`; its fields, arguments, input fields and
/// enum values in order, with types, defaults, descriptions and
/// deprecation; each directive that is not built in.
fn print_introspection(schema: &Value) -> String {
    let root = |key: &str| schema[key]["name"].as_str().unwrap_or("-").to_owned();
    let mut lines = vec![format!(
        "schema {:?} query={} mutation={} subscription={}",
        schema["description"].as_str(),
        root("queryType"),
        root("mutationType"),
        root("subscriptionType")
    )];
    let mut types = own_types(schema);
    types.sort_by_key(|ty| ty["name"].as_str().unwrap_or_default().to_owned());
    for ty in types {
        lines.push(format!(
            "{} {} {:?} specifiedBy={:?}",
            ty["kind"].as_str().unwrap(),
            ty["name"].as_str().unwrap(),
            ty["description"].as_str(),
            ty["specifiedByURL"].as_str()
        ));
        for interface in ty["interfaces"].as_array().into_iter().flatten() {
            lines.push(format!("  implements {}", type_ref(interface)));
        }
        for member in ty["possibleTypes"].as_array().into_iter().flatten() {
            lines.push(format!("  member {}", type_ref(member)));
        }
        for field in ty["fields"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  field {}: {} {:?} deprecated={:?}",
                field["name"].as_str().unwrap(),
                type_ref(&field["type"]),
                field["description"].as_str(),
                field["deprecationReason"].as_str()
            ));
            for arg in field["args"].as_array().into_iter().flatten() {
                lines.push(format!("    arg {}", input_value(arg)));
            }
        }
        for input in ty["inputFields"].as_array().into_iter().flatten() {
            lines.push(format!("  input {}", input_value(input)));
        }
        for value in ty["enumValues"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  value {} {:?} deprecated={:?}",
                value["name"].as_str().unwrap(),
                value["description"].as_str(),
                value["deprecationReason"].as_str()
            ));
        }
    }
    for directive in schema["directives"].as_array().expect("directives") {
        let name = directive["name"].as_str().unwrap();
        if BUILT_IN_DIRECTIVES.contains(&name) {
            continue;
        }
        let locations: Vec<&str> = directive["locations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        lines.push(format!(
            "directive @{name} {:?} repeatable={} on {}",
            directive["description"].as_str(),
            directive["isRepeatable"],
            locations.join("|")
        ));
        for arg in directive["args"].as_array().into_iter().flatten() {
            lines.push(format!("  arg {}", input_value(arg)));
        }
    }
    lines.join("\n")
}

fn type_ref(ty: &Value) -> String {
    match ty["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_ref(&ty["ofType"])),
        Some("LIST") => format!("[{}]", type_ref(&ty["ofType"])),
        _ => ty["name"].as_str().unwrap_or("?").to_owned(),
    }
}

fn input_value(value: &Value) -> String {
    format!(
        "{}: {} default={:?} {:?}",
        value["name"].as_str().unwrap(),
        type_ref(&value["type"]),
        value["defaultValue"].as_str(),
        value["description"].as_str()
    )
}

/// [`print_introspection`] for an SDL document.
fn print_sdl(sdl: &str) -> String {
    let document = parse_schema(sdl).expect("schema.graphql parses");
    let mut schema_line = None;
    let mut types: Vec<&TypeDefinition> = Vec::new();
    let mut directives = Vec::new();
    for definition in &document.definitions {
        match definition {
            TypeSystemDefinition::Schema(schema) => {
                let root = |name: &Option<async_graphql::Positioned<async_graphql::Name>>| {
                    name.as_ref().map_or("-".to_owned(), |n| n.node.to_string())
                };
                // The SDL has no schema description: introspection must say none.
                schema_line = Some(format!(
                    "schema None query={} mutation={} subscription={}",
                    root(&schema.node.query),
                    root(&schema.node.mutation),
                    root(&schema.node.subscription)
                ));
            }
            TypeSystemDefinition::Type(ty) => types.push(&ty.node),
            TypeSystemDefinition::Directive(directive) => directives.push(&directive.node),
        }
    }
    let mut lines = vec![schema_line.expect("a schema definition")];
    types.sort_by_key(|ty| ty.name.node.to_string());
    for ty in types {
        let (kind, specified_by) = match &ty.kind {
            TypeKind::Scalar => (
                "SCALAR",
                directive_argument(&ty.directives, "specifiedBy", "url"),
            ),
            TypeKind::Object(_) => ("OBJECT", None),
            TypeKind::Interface(_) => ("INTERFACE", None),
            TypeKind::Union(_) => ("UNION", None),
            TypeKind::Enum(_) => ("ENUM", None),
            TypeKind::InputObject(_) => ("INPUT_OBJECT", None),
        };
        lines.push(format!(
            "{kind} {} {:?} specifiedBy={:?}",
            ty.name.node,
            description(&ty.description),
            specified_by.as_deref()
        ));
        let (implements, fields) = match &ty.kind {
            TypeKind::Object(object) => (&object.implements[..], &object.fields[..]),
            TypeKind::Interface(interface) => (&interface.implements[..], &interface.fields[..]),
            _ => (&[][..], &[][..]),
        };
        for interface in implements {
            lines.push(format!("  implements {}", interface.node));
        }
        if let TypeKind::Union(union) = &ty.kind {
            for member in &union.members {
                lines.push(format!("  member {}", member.node));
            }
        }
        for field in fields {
            let field = &field.node;
            lines.push(format!(
                "  field {}: {} {:?} deprecated={:?}",
                field.name.node,
                field.ty.node,
                description(&field.description),
                deprecation(&field.directives).as_deref()
            ));
            for arg in &field.arguments {
                lines.push(format!("    arg {}", sdl_input_value(&arg.node)));
            }
        }
        if let TypeKind::InputObject(input) = &ty.kind {
            for field in &input.fields {
                lines.push(format!("  input {}", sdl_input_value(&field.node)));
            }
        }
        if let TypeKind::Enum(enumeration) = &ty.kind {
            for value in &enumeration.values {
                lines.push(format!(
                    "  value {} {:?} deprecated={:?}",
                    value.node.value.node,
                    description(&value.node.description),
                    deprecation(&value.node.directives).as_deref()
                ));
            }
        }
    }
    for directive in directives {
        let name = directive.name.node.as_str();
        if BUILT_IN_DIRECTIVES.contains(&name) {
            continue;
        }
        let locations: Vec<String> = directive
            .locations
            .iter()
            .map(|l| screaming_snake(&format!("{:?}", l.node)))
            .collect();
        lines.push(format!(
            "directive @{name} {:?} repeatable={} on {}",
            description(&directive.description),
            directive.is_repeatable,
            locations.join("|")
        ));
        for arg in &directive.arguments {
            lines.push(format!("  arg {}", sdl_input_value(&arg.node)));
        }
    }
    lines.join("\n")
}

fn description(description: &Option<async_graphql::Positioned<String>>) -> Option<&str> {
    description.as_ref().map(|d| d.node.as_str())
}

fn sdl_input_value(value: &InputValueDefinition) -> String {
    let default = value.default_value.as_ref().map(|v| v.node.to_string());
    format!(
        "{}: {} default={:?} {:?}",
        value.name.node,
        value.ty.node,
        default.as_deref(),
        description(&value.description)
    )
}

/// The string argument `argument` of the directive `name`, if applied.
fn directive_argument(
    directives: &[async_graphql::Positioned<async_graphql::parser::types::ConstDirective>],
    name: &str,
    argument: &str,
) -> Option<String> {
    let directive = directives.iter().find(|d| d.node.name.node == name)?;
    match directive.node.get_argument(argument).map(|v| &v.node) {
        Some(GqlValue::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
        None => None,
    }
}

/// The reason of `@deprecated`, with the default reason when none is given.
fn deprecation(
    directives: &[async_graphql::Positioned<async_graphql::parser::types::ConstDirective>],
) -> Option<String> {
    directives
        .iter()
        .any(|d| d.node.name.node == "deprecated")
        .then(|| {
            directive_argument(directives, "deprecated", "reason")
                .unwrap_or_else(|| "No longer supported".to_owned())
        })
}

/// `FragmentSpread` → `FRAGMENT_SPREAD`, introspection's spelling.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
