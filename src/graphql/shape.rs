//! Bounds on a document's shape, checked before async-graphql sees it.
//!
//! Two checks, both linear in the document and neither recursing beyond a
//! fixed depth:
//!
//! - [`check_nesting`] scans the raw text for brackets before any parser
//!   runs. async-graphql's parser recurses once per nested value, list,
//!   object or selection set, and its own depth limit applies after parsing,
//!   so a few kilobytes of `[[[[…` overflow a worker's stack, which aborts
//!   the process (no panic handler sees a stack overflow). A lexer-level
//!   scan is the strongest guarantee short of a non-recursive parser: every
//!   recursion in the parser, the validator and our own walks is entered
//!   through one of these brackets, so bounding them bounds every stack.
//! - [`measure`] computes what the document costs with its fragments
//!   expanded, memoised per fragment, so that `F0 {...F1 ...F1}`, `F1
//!   {...F2 ...F2}`, … is refused in microseconds instead of costing
//!   async-graphql exponential time in validation (which runs synchronously
//!   on an async worker, where no timeout can stop it). Everything that
//!   passes has at most [`MAX_COMPLEXITY`] selections once expanded, which
//!   bounds the validator's work too.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::Name;

use super::error::Refused;

/// Deepest nesting of brackets (`{`, `[`, `(`) in a document's text. Our
/// own types nest three deep; GraphiQL's introspection query reaches 14.
pub const MAX_NESTING: usize = 48;
/// Deepest selection once fragments are expanded.
pub const MAX_DEPTH: usize = 16;
/// Most selections (fields, fragment spreads and inline fragments) in the
/// document once fragments are expanded; introspection needs about 200.
pub const MAX_COMPLEXITY: usize = 500;
/// Most aliases in the document once fragments are expanded.
pub const MAX_ALIASES: usize = 32;
/// Most fragment definitions in one document.
pub const MAX_FRAGMENTS: usize = 64;
/// Most arguments on one field, directives on one selection and variables
/// of one operation. Our fields take at most three arguments; the limits
/// keep validation linear (async-graphql compares repeated fields'
/// arguments pairwise, and looks each up by a linear scan).
pub const MAX_ARGUMENTS: usize = 16;
pub const MAX_DIRECTIVES: usize = 8;
pub const MAX_VARIABLES: usize = 32;

/// Refuses a text whose brackets nest deeper than [`MAX_NESTING`].
/// Brackets inside strings, block strings and comments do not count.
///
/// # Errors
/// `QUERY_TOO_DEEP` when the nesting is too deep.
pub fn check_nesting(text: &str) -> Result<(), Refused> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Refused::new(
                        "QUERY_TOO_DEEP",
                        format!("the document nests deeper than {MAX_NESTING} levels"),
                    ));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
            }
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                match closing_block_quote(bytes, at + 3) {
                    // Skip to the closing quote's last byte.
                    Some(end) => at = end + 2,
                    // Unterminated, the parser reads `""` (an empty string) and
                    // goes on from the third quote: so does the scan.
                    None => at += 1,
                }
            }
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' && bytes[at] != b'\n' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// Where the `"""` closing a block string whose text starts at `from` is.
fn closing_block_quote(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < bytes.len() {
        if bytes[at..].starts_with(b"\"\"\"") {
            return Some(at);
        }
        // `\"""` is an escaped delimiter inside a block string.
        at += if bytes[at..].starts_with(b"\\\"\"\"") {
            4
        } else {
            1
        };
    }
    None
}

/// What a selection set costs once its fragments are expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Selections: fields, fragment spreads and inline fragments.
    pub complexity: usize,
    /// Deepest chain of fields.
    pub depth: usize,
    pub aliases: usize,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            complexity: self.complexity.saturating_add(other.complexity),
            depth: self.depth.max(other.depth),
            aliases: self.aliases.saturating_add(other.aliases),
        }
    }
}

/// Measures every operation and fragment of `document` with fragments
/// expanded, refusing one over a limit. Returns the total over operations.
///
/// Fragments are costed in rounds, each costing the fragments whose spreads
/// are all costed already, so the work is at most [`MAX_FRAGMENTS`] passes
/// over the document and the recursion follows only the text's own nesting
/// (bounded by [`check_nesting`]). Fragments left over form a cycle.
///
/// # Errors
/// `TOO_MANY_FRAGMENTS`, `FRAGMENT_CYCLE`, `QUERY_TOO_COMPLEX`,
/// `QUERY_TOO_DEEP` or `TOO_MANY_ALIASES`.
pub fn measure(document: &ExecutableDocument) -> Result<Cost, Refused> {
    if document.fragments.len() > MAX_FRAGMENTS {
        return Err(Refused::new(
            "TOO_MANY_FRAGMENTS",
            format!(
                "the document defines {} fragments; at most {MAX_FRAGMENTS} are allowed",
                document.fragments.len()
            ),
        ));
    }
    check_widths(document)?;
    let mut costed: HashMap<&Name, Cost> = HashMap::with_capacity(document.fragments.len());
    while costed.len() < document.fragments.len() {
        let before = costed.len();
        for (name, fragment) in &document.fragments {
            if costed.contains_key(name) {
                continue;
            }
            if let Some(cost) = cost_of(&fragment.node.selection_set.node, document, &costed) {
                check_limits(cost)?;
                costed.insert(name, cost);
            }
        }
        if costed.len() == before {
            return Err(Refused::new(
                "FRAGMENT_CYCLE",
                "the document's fragments spread each other in a cycle".to_owned(),
            ));
        }
    }
    let total = document
        .operations
        .iter()
        .filter_map(|(_, op)| cost_of(&op.node.selection_set.node, document, &costed))
        .fold(Cost::default(), Cost::add);
    check_limits(total)?;
    Ok(total)
}

/// Refuses a field with too many arguments, a selection with too many
/// directives, or an operation with too many variables, as written (no
/// expansion needed: each is counted where it stands).
fn check_widths(document: &ExecutableDocument) -> Result<(), Refused> {
    for (_, operation) in document.operations.iter() {
        let operation = &operation.node;
        let variables = operation.variable_definitions.len();
        if variables > MAX_VARIABLES {
            return Err(Refused::new(
                "TOO_MANY_VARIABLES",
                format!("an operation declares {variables} variables; at most {MAX_VARIABLES} are allowed"),
            ));
        }
        check_directives(operation.directives.len())?;
        check_set_widths(&operation.selection_set.node)?;
    }
    for fragment in document.fragments.values() {
        check_directives(fragment.node.directives.len())?;
        check_set_widths(&fragment.node.selection_set.node)?;
    }
    Ok(())
}

fn check_set_widths(set: &SelectionSet) -> Result<(), Refused> {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let arguments = field.node.arguments.len();
                if arguments > MAX_ARGUMENTS {
                    return Err(Refused::new(
                        "TOO_MANY_ARGUMENTS",
                        format!("a field has {arguments} arguments; at most {MAX_ARGUMENTS} are allowed"),
                    ));
                }
                check_directives(field.node.directives.len())?;
                check_set_widths(&field.node.selection_set.node)?;
            }
            Selection::InlineFragment(fragment) => {
                check_directives(fragment.node.directives.len())?;
                check_set_widths(&fragment.node.selection_set.node)?;
            }
            Selection::FragmentSpread(spread) => check_directives(spread.node.directives.len())?,
        }
    }
    Ok(())
}

fn check_directives(count: usize) -> Result<(), Refused> {
    if count > MAX_DIRECTIVES {
        return Err(Refused::new(
            "TOO_MANY_DIRECTIVES",
            format!("a selection has {count} directives; at most {MAX_DIRECTIVES} are allowed"),
        ));
    }
    Ok(())
}

fn check_limits(cost: Cost) -> Result<(), Refused> {
    if cost.complexity > MAX_COMPLEXITY {
        return Err(Refused::new(
            "QUERY_TOO_COMPLEX",
            format!("the document selects more than {MAX_COMPLEXITY} fields once its fragments are expanded"),
        ));
    }
    if cost.depth > MAX_DEPTH {
        return Err(Refused::new(
            "QUERY_TOO_DEEP",
            format!("the document's selections nest deeper than {MAX_DEPTH} fields"),
        ));
    }
    if cost.aliases > MAX_ALIASES {
        return Err(Refused::new(
            "TOO_MANY_ALIASES",
            format!(
                "the document has {} aliases once its fragments are expanded; at most {MAX_ALIASES} are allowed",
                cost.aliases
            ),
        ));
    }
    Ok(())
}

/// The cost of `set`, or `None` while a fragment it spreads is not costed
/// yet. A spread of an undefined fragment costs one selection (validation
/// refuses it anyway).
fn cost_of(
    set: &SelectionSet,
    document: &ExecutableDocument,
    costed: &HashMap<&Name, Cost>,
) -> Option<Cost> {
    let mut total = Cost::default();
    for item in &set.items {
        let cost = match &item.node {
            Selection::Field(field) => {
                let inner = cost_of(&field.node.selection_set.node, document, costed)?;
                Cost {
                    complexity: inner.complexity.saturating_add(1),
                    depth: inner.depth + 1,
                    aliases: inner
                        .aliases
                        .saturating_add(usize::from(field.node.alias.is_some())),
                }
            }
            Selection::InlineFragment(fragment) => {
                let inner = cost_of(&fragment.node.selection_set.node, document, costed)?;
                Cost {
                    complexity: inner.complexity.saturating_add(1),
                    ..inner
                }
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let inner = match costed.get(name) {
                    Some(cost) => *cost,
                    None if document.fragments.contains_key(name) => return None,
                    None => Cost::default(),
                };
                Cost {
                    complexity: inner.complexity.saturating_add(1),
                    ..inner
                }
            }
        };
        total = total.add(cost);
        // Stop early: the caller refuses this anyway.
        if total.complexity > MAX_COMPLEXITY {
            return Some(total);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(text).expect("test document parses")
    }

    #[test]
    fn nesting_counts_every_kind_of_bracket() {
        let lists = format!(
            "{{ me(x: {}1{}) {{ id }} }}",
            "[".repeat(60),
            "]".repeat(60)
        );
        assert_eq!(check_nesting(&lists).unwrap_err().reason, "QUERY_TOO_DEEP");
        let objects = format!(
            "{{ me(x: {}) {{ id }} }}",
            "{a:".repeat(60) + &"}".repeat(60)
        );
        assert_eq!(
            check_nesting(&objects).unwrap_err().reason,
            "QUERY_TOO_DEEP"
        );
        let selections = format!("{}{}", "{ a ".repeat(60), "}".repeat(60));
        assert_eq!(
            check_nesting(&selections).unwrap_err().reason,
            "QUERY_TOO_DEEP"
        );
        let admitted = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert_eq!(check_nesting(&admitted), Ok(()));
        let one_more = format!("[{admitted}]");
        assert!(check_nesting(&one_more).is_err());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let deep = "[".repeat(1000);
        assert_eq!(check_nesting(&format!("{{ a(x: \"{deep}\") }}")), Ok(()));
        assert_eq!(
            check_nesting(&format!("{{ a(x: \"\\\"{deep}\") }}")),
            Ok(())
        );
        assert_eq!(
            check_nesting(&format!("{{ a(x: \"\"\"{deep}\\\"\"\"{deep}\"\"\") }}")),
            Ok(())
        );
        assert_eq!(check_nesting(&format!("# {deep}\n{{ a }}")), Ok(()));
        // An unterminated string ends at the line; what follows counts.
        assert!(check_nesting(&format!("{{ a(x: \"oops\n{deep}")).is_err());
    }

    #[test]
    fn an_unterminated_block_string_does_not_hide_what_follows() {
        // The parser reads `""` and goes on: the brackets after count.
        let text = format!("{{ a(x: [\"\"\" \" {}", "[".repeat(100));
        assert_eq!(check_nesting(&text).unwrap_err().reason, "QUERY_TOO_DEEP");
        let text = format!("{{ a(x: \"\"\"{}\"\"\") }}", "[".repeat(100));
        assert_eq!(check_nesting(&text), Ok(()));
    }

    #[test]
    fn unterminated_text_is_scanned_without_panicking() {
        for text in ["\"", "\"\"\"", "\"\\", "\"\"\"\\\"\"", "#", "{[("] {
            let _ = check_nesting(text);
        }
    }

    #[test]
    fn fragments_are_costed_once_expanded() {
        let text = "{ ...F0 } fragment F0 on Query { ...F1 ...F1 } fragment F1 on Query { me { id username } }";
        let cost = measure(&parse(text)).unwrap();
        // F1 = 1 (me) + 2 = 3; F0 = 2 spreads + 2 × 3; the operation adds its spread.
        assert_eq!(cost.complexity, 1 + 2 + 2 * 3);
        assert_eq!(cost.depth, 2);
    }

    #[test]
    fn doubling_fragments_are_refused_quickly() {
        let depth = 40;
        let mut text = String::from("{ ...F0 }");
        for level in 0..depth {
            let next = level + 1;
            text.push_str(&format!(
                " fragment F{level} on Query {{ ...F{next} ...F{next} }}"
            ));
        }
        text.push_str(&format!(" fragment F{depth} on Query {{ me {{ id }} }}"));
        let started = std::time::Instant::now();
        let refused = measure(&parse(&text)).unwrap_err();
        assert_eq!(refused.reason, "QUERY_TOO_COMPLEX");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn aliases_are_counted_through_fragments() {
        let aliases: String = (0..20).map(|i| format!(" a{i}: me {{ id }}")).collect();
        let text = format!("{{ ...F ...F }} fragment F on Query {{{aliases} }}");
        assert_eq!(
            measure(&parse(&text)).unwrap_err().reason,
            "TOO_MANY_ALIASES"
        );
    }

    #[test]
    fn depth_is_counted_through_fragments() {
        let mut text = String::from("{ ...F0 }");
        for level in 0..20 {
            text.push_str(&format!(
                " fragment F{level} on Query {{ a {{ ...F{} }} }}",
                level + 1
            ));
        }
        text.push_str(" fragment F20 on Query { a }");
        assert_eq!(measure(&parse(&text)).unwrap_err().reason, "QUERY_TOO_DEEP");
    }

    #[test]
    fn cycles_and_undefined_fragments_are_handled() {
        let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert_eq!(measure(&parse(cycle)).unwrap_err().reason, "FRAGMENT_CYCLE");
        let undefined = "{ ...Nowhere me { id } }";
        assert_eq!(measure(&parse(undefined)).unwrap().complexity, 3);
    }

    #[test]
    fn wide_fields_directives_and_variable_lists_are_refused() {
        let arguments: String = (0..=MAX_ARGUMENTS).map(|i| format!(" a{i}: 0")).collect();
        let text = format!("{{ me({arguments}) {{ id }} me({arguments}) {{ id }} }}");
        assert_eq!(
            measure(&parse(&text)).unwrap_err().reason,
            "TOO_MANY_ARGUMENTS"
        );
        let directives = " @a".repeat(MAX_DIRECTIVES + 1);
        let text = format!("{{ ...F }} fragment F on Query {{ me{directives} {{ id }} }}");
        assert_eq!(
            measure(&parse(&text)).unwrap_err().reason,
            "TOO_MANY_DIRECTIVES"
        );
        let variables: String = (0..=MAX_VARIABLES)
            .map(|i| format!(" $v{i}: Int"))
            .collect();
        let text = format!("query({variables}) {{ me {{ id }} }}");
        assert_eq!(
            measure(&parse(&text)).unwrap_err().reason,
            "TOO_MANY_VARIABLES"
        );
        let fine = "query($v: Int) { me(a: 1, b: 2) @skip(if: false) { id } }";
        assert!(measure(&parse(fine)).is_ok());
    }

    #[test]
    fn unused_fragments_are_bounded_too() {
        let fields: String = (0..MAX_COMPLEXITY + 1).map(|i| format!(" f{i}")).collect();
        let text = format!("{{ me {{ id }} }} fragment Unused on Query {{{fields} }}");
        assert_eq!(
            measure(&parse(&text)).unwrap_err().reason,
            "QUERY_TOO_COMPLEX"
        );
    }
}
