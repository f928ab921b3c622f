//! Rules mode: a schema as named regexes that refer to each other, for a grammar.
//!
//! [`Compiler::compile_rules`](crate::Compiler::compile_rules) compiles every schema that is
//! only a `$ref` (plus annotations) to a *reference*: an empty named capture group
//! `(?P<fwref_{rule}_{n}>)` standing for the language of rule `rule` of
//! [`CompiledRules::rules`], whose body is compiled once per resolved target. Unconstrained
//! values refer to one recursive rule (`any`). So recursion is a reference, of unbounded depth,
//! and a large schema is many small regexes rather than one large one. A grammar front end
//! (`formwork_grammar::json_schema`) parses each regex and turns each reference back into its
//! rule with [`CompiledRules::reference`].
//!
//! No schema can produce such a group by itself: property names, enum values and constants
//! are escaped, and `pattern`s lose their capture groups when they are re-spelled as JSON
//! string bodies.

use crate::error::Unenforced;

/// The prefix of a reference group's name.
const PREFIX: &str = "fwref_";

/// One rule of [`CompiledRules`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A name for people: the resolved reference (`#/$defs/Node`), `any` for the
    /// unconstrained value, or the JSON pointer of a shared value (below). Unique among the
    /// rules.
    pub name: String,
    /// The rule's language as a regex with references (see [`CompiledRules`]); `None` when it
    /// accepts no document (its schema is unsatisfiable as compiled).
    pub regex: Option<String>,
    /// A large property value or array item written once and referred to wherever the
    /// object's or array's encoding repeats it (an object's optional properties appear in
    /// several alternatives): a grammar should keep it a rule of its own rather than copy it
    /// back into every place.
    pub shared: bool,
}

/// The result of [`Compiler::compile_rules`](crate::Compiler::compile_rules): a start regex and
/// the rules its references lead to.
///
/// Every regex is in `regex-syntax` syntax, meant to match in full. Its only capture groups are
/// references: empty named groups whose name [`CompiledRules::reference`] decodes to an index
/// of [`CompiledRules::rules`] (names are unique within each regex, so each parses as is). A
/// reference matches exactly the strings its rule matches; substituting the rules for their
/// references (forever, for recursive ones) gives the language the regex compiler would
/// produce with unbounded recursion and unconstrained values of unbounded depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRules {
    /// The document's regex.
    pub start: String,
    /// The rules, referred to by index.
    pub rules: Vec<Rule>,
    /// Keywords present in the schema that the rules do not enforce, with their pointers.
    pub unenforced: Vec<Unenforced>,
}

impl CompiledRules {
    /// The rule a capture group named `name` refers to, if it is a reference.
    ///
    /// ```
    /// use formwork_schema::{CompiledRules, Compiler};
    /// use serde_json::json;
    ///
    /// let schema = json!({
    ///     "type": "object",
    ///     "properties": {"next": {"$ref": "#"}},
    ///     "required": []
    /// });
    /// let rules = Compiler::new().compile_rules(&schema)?;
    /// // The start regex refers to the rule of `#`, which refers to itself.
    /// let root = rules.rules.iter().position(|r| r.name == "#").unwrap();
    /// assert!(rules.start.contains(&format!("(?P<fwref_{root}_0>)")));
    /// assert_eq!(CompiledRules::reference(&format!("fwref_{root}_0")), Some(root));
    /// assert_eq!(CompiledRules::reference("year"), None);
    /// # Ok::<(), formwork_schema::SchemaError>(())
    /// ```
    pub fn reference(name: &str) -> Option<usize> {
        let rest = name.strip_prefix(PREFIX)?;
        let index = rest.split_once('_').map_or(rest, |(i, _)| i);
        index.parse().ok()
    }
}

/// The reference to rule `index` as the compiler writes it into fragments (unnumbered: the
/// same fragment may be written several times into one regex; [`number_references`] makes the
/// names unique once a regex is complete).
pub(crate) fn placeholder(index: usize) -> String {
    format!("(?P<{PREFIX}{index}>)")
}

/// `regex` with every reference's name made unique (`fwref_{rule}_{n}`, `n` counting from 0).
pub(crate) fn number_references(regex: &str) -> String {
    let marker = format!("(?P<{PREFIX}");
    let mut out = String::with_capacity(regex.len() + regex.len() / 16);
    let mut rest = regex;
    let mut n = 0usize;
    while let Some(at) = rest.find(&marker) {
        let after = &rest[at + marker.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let escaped = rest[..at].ends_with('\\');
        if digits == 0 || escaped || !after[digits..].starts_with(">)") {
            out.push_str(&rest[..at + marker.len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at + marker.len() + digits]);
        out.push_str(&format!("_{n}>)"));
        n += 1;
        rest = &after[digits + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_numbered_apart_and_decode_to_their_rule() {
        let r = format!("a{}b{}{}", placeholder(3), placeholder(3), placeholder(12));
        let numbered = number_references(&r);
        assert_eq!(numbered, "a(?P<fwref_3_0>)b(?P<fwref_3_1>)(?P<fwref_12_2>)");
        let hir = regex_syntax::parse(&numbered).unwrap();
        assert_eq!(hir.properties().explicit_captures_len(), 3);
        assert_eq!(CompiledRules::reference("fwref_12_2"), Some(12));
        assert_eq!(CompiledRules::reference("fwref_3"), Some(3));
        assert_eq!(CompiledRules::reference("fwref_x_1"), None);
        assert_eq!(CompiledRules::reference("group"), None);
    }

    #[test]
    fn an_escaped_marker_is_left_alone() {
        let r = r"\(?P<fwref_3>)";
        assert_eq!(number_references(r), r);
    }
}
