//! Compile a JSON Schema into a regular expression whose every match is a valid document.
//!
//! `formwork-schema` is the first layer of Formwork's structured generation: the regex it
//! produces is turned into a token-level automaton (`formwork-index`) that masks a language
//! model's choices, so whatever the model writes parses as JSON and validates against the
//! schema.
//!
//! ```
//! use formwork_schema::Compiler;
//! use serde_json::json;
//!
//! let schema = json!({
//!     "type": "object",
//!     "properties": {
//!         "name": {"type": "string", "maxLength": 20},
//!         "age": {"type": "integer", "minimum": 0, "maximum": 150}
//!     },
//!     "required": ["name"]
//! });
//! let regex = Compiler::new().compile(&schema)?;
//! let re = regex_automata::meta::Regex::new(&format!("^(?:{regex})$")).unwrap();
//! assert!(re.is_match(r#"{"name":"Ada","age":36}"#));
//! assert!(re.is_match(r#"{"name":"Ada"}"#));
//! assert!(!re.is_match(r#"{"name":"Ada","age":151}"#));
//! # Ok::<(), formwork_schema::SchemaError>(())
//! ```
//!
//! # What the regex accepts
//!
//! The guarantee is *soundness*: every string the regex matches is a JSON document valid under
//! the schema. Where a keyword cannot be expressed exactly, the compiler accepts a subset of the
//! valid documents (never a superset), and where no sound subset is practical it returns a
//! [`SchemaError`] naming the keyword and its JSON pointer. The choices that make a subset:
//!
//! - **Layout.** Documents are compact (no whitespace; see [`Whitespace`] for a bounded
//!   flexible mode), object members appear in the schema's `properties` order, numbers with
//!   bounds are written without exponents, and strings whose characters JSON requires escaped
//!   use `serde_json`'s escapes where a pattern constrains them.
//! - **Objects are closed** when they declare `properties` or `patternProperties` and leave
//!   `additionalProperties` unset: only declared keys appear (set [`Compiler::open_objects`]
//!   to allow other keys). An explicit `additionalProperties` (`true` or a schema) allows other
//!   keys after the declared ones, never equal to a declared name.
//! - **Missing `type`** is inferred from the keywords present (`properties` means an object,
//!   `minLength` a string...); a schema with no constraining keyword accepts any JSON value,
//!   nested at most [`Compiler::any_depth`] containers deep.
//! - **Composition.** `allOf`, `$ref` beside other keywords, and `dependentSchemas` are merged
//!   into one schema; `anyOf` and `oneOf` are distributed over their siblings (so
//!   `{"type": "object", "oneOf": [...]}` produces only objects). `oneOf` compiles like
//!   `anyOf`: when the compiler cannot prove its branches disjoint it reports
//!   `oneOf` as [`Unenforced`]. `if`/`then`/`else` compiles to "both `then` and `else`", which
//!   satisfies the conditional whatever `if` says.
//! - **Long bounds are capped.** `maxLength` and `maxItems` above [`Compiler::max_count`]
//!   (default 256) are lowered to it (never below the minimum).
//! - **Recursion.** A `$ref` is expanded at most [`Compiler::max_recursion`] times along any
//!   path (default 3); deeper, the recursive position is left out where it is optional. (In
//!   rules mode, [`Compiler::compile_rules`], a reference is a rule of a grammar instead, with
//!   no depth limit.)
//! - **Not enforced**, and reported as [`Unenforced`] in [`Compiled::unenforced`]:
//!   `uniqueItems` (with more than one item allowed), formats the specification does not
//!   define, and `oneOf` exclusivity as above.
//!
//! Everything else in draft 2020-12 and draft-07 that real schemas use is enforced exactly:
//! see the crate README for the table.
//!
//! # Limits
//!
//! Compilation never panics on any input and never allocates without bound: a regex larger than
//! [`Compiler::max_size`] is a [`SchemaError::TooLarge`], and a schema nesting deeper than
//! [`Compiler::max_depth`] a [`SchemaError::TooDeep`].
//!
//! Every regex returned parses under regex-syntax's default limits, which regex-automata and
//! `formwork-index` build with (groups, repetitions and alternations nested at most 250 deep).
//! The shapes that grow with the schema stay shallow: an `enum` is a trie (common prefixes
//! written once, so 100,000 values compile in well under a second), and optional properties
//! nest logarithmically in their number. A schema whose regex would still nest deeper (a
//! hundred levels of optional objects, say) is a [`SchemaError::Regex`] naming the deepest
//! subschema and keyword at fault.

mod compile;
mod error;
mod format;
mod merge;
mod numeric;
mod pattern;
mod rules;
mod text;
mod verdict;

pub use error::{SchemaError, Unenforced};
pub use rules::{CompiledRules, Rule};
pub use text::{FRAGMENTS, STRING_CHAR};

use serde_json::Value;

/// Whitespace the regex allows between JSON tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Whitespace {
    /// No whitespace at all: `{"a":1}`. What keeps small models from looping on spaces.
    #[default]
    Compact,
    /// Up to `max` characters of space, tab, CR or LF between any two tokens.
    Flexible {
        /// The most whitespace characters allowed at one place.
        max: usize,
    },
    /// What this regex matches, at every place between two tokens (vLLM's
    /// `whitespace_pattern`, e.g. `[ \n]*`). Build it with [`Whitespace::pattern`], which
    /// checks it; it should match only JSON whitespace (space, tab, CR, LF), or documents
    /// stop being JSON.
    Pattern(String),
}

impl Whitespace {
    /// The whitespace `regex` matches, checked: a regex `regex-syntax` parses, without capture
    /// groups (the compiler's rules use capture groups as references) and without anchors or
    /// look-around. [`SchemaError::Whitespace`] names what is wrong.
    ///
    /// ```
    /// use formwork_schema::{Compiler, Whitespace};
    /// use serde_json::json;
    ///
    /// let ws = Whitespace::pattern(r"[ ]?")?;
    /// let regex = Compiler::new().whitespace(ws).compile(&json!({"type": "array"}))?;
    /// let re = regex_automata::meta::Regex::new(&format!("^(?:{regex})$")).unwrap();
    /// assert!(re.is_match("[ 1, 2 ]"));
    /// assert!(!re.is_match("[1,\n2]"));
    /// # Ok::<(), formwork_schema::SchemaError>(())
    /// ```
    pub fn pattern(regex: &str) -> Result<Whitespace, SchemaError> {
        let bad = |reason: String| SchemaError::Whitespace {
            pattern: regex.to_owned(),
            reason,
        };
        let hir = regex_syntax::Parser::new()
            .parse(regex)
            .map_err(|e| bad(e.to_string()))?;
        if hir.properties().explicit_captures_len() > 0 {
            return Err(bad(
                "capture groups are not allowed (write `(?:...)`)".into()
            ));
        }
        if hir.properties().look_set().iter().next().is_some() {
            return Err(bad("anchors and word boundaries are not allowed".into()));
        }
        Ok(Whitespace::Pattern(regex.to_owned()))
    }

    /// The regex placed between tokens (empty for compact documents).
    pub(crate) fn regex(&self) -> String {
        match self {
            Whitespace::Compact => String::new(),
            Whitespace::Flexible { max } => format!(r"[ \t\n\r]{{0,{max}}}"),
            Whitespace::Pattern(p) => format!("(?:{p})"),
        }
    }
}

/// The result of a compilation: the regex and the keywords it does not enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The regex, in `regex-syntax` syntax, meant to match a whole document (it has no anchors;
    /// wrap it in `^(?:...)$` for a full match with a search API).
    pub regex: String,
    /// Keywords present in the schema that the regex does not enforce, with their pointers.
    pub unenforced: Vec<Unenforced>,
}

/// Compiles JSON Schemas to regexes. Cheap to create; configure with the builder methods.
#[derive(Debug, Clone)]
pub struct Compiler {
    whitespace: Whitespace,
    max_recursion: usize,
    any_depth: usize,
    max_size: usize,
    max_depth: usize,
    max_count: usize,
    open_objects: bool,
}

impl Default for Compiler {
    fn default() -> Self {
        Compiler::new()
    }
}

impl Compiler {
    /// A compiler with the defaults: compact whitespace, recursion depth 3, any-value nesting
    /// depth 2, a 4 MiB regex size limit, closed objects.
    pub fn new() -> Self {
        Compiler {
            whitespace: Whitespace::Compact,
            max_recursion: 3,
            any_depth: 2,
            max_size: 4 << 20,
            max_depth: 128,
            max_count: 256,
            open_objects: false,
        }
    }

    /// Sets the whitespace allowed between tokens.
    pub fn whitespace(mut self, whitespace: Whitespace) -> Self {
        self.whitespace = whitespace;
        self
    }

    /// Sets how many times one `$ref` target may be expanded along a path (default 3).
    pub fn max_recursion(mut self, depth: usize) -> Self {
        self.max_recursion = depth;
        self
    }

    /// Sets how deep arrays and objects may nest inside an unconstrained value (`{}` or
    /// `true`) (default 2).
    pub fn any_depth(mut self, depth: usize) -> Self {
        self.any_depth = depth;
        self
    }

    /// Sets the largest regex, in bytes, the compiler will produce (default 4 MiB).
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// Sets how deeply the compiler follows nested subschemas before giving up (default 128).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Caps `maxLength` and `maxItems` at `count` (default 256), unless the minimum is higher.
    ///
    /// A bound like `maxLength: 32767` is exact as a regex but becomes tens of thousands of
    /// automaton states; capping it accepts a subset of the valid documents (strings and arrays
    /// up to the cap) and keeps the automaton small.
    pub fn max_count(mut self, count: usize) -> Self {
        self.max_count = count;
        self
    }

    /// When `true`, objects that declare `properties` but leave `additionalProperties` unset
    /// also accept other keys, as the specification says; when `false` (the default) only the
    /// declared keys are produced.
    pub fn open_objects(mut self, open: bool) -> Self {
        self.open_objects = open;
        self
    }

    /// Compiles a schema to a regex (see [`Compiler::compile_detailed`] for the keywords the
    /// regex does not enforce).
    pub fn compile(&self, schema: &Value) -> Result<String, SchemaError> {
        self.compile_detailed(schema).map(|c| c.regex)
    }

    /// Compiles a schema to a regex and the list of keywords it does not enforce.
    ///
    /// When the regex would exceed [`Compiler::max_size`] or nest deeper than regex-syntax's
    /// parser allows, the compiler retries with recursion unrolled less deeply and
    /// unconstrained values nested less deeply (each retry accepts a subset of what the
    /// previous one would have); only when the shallowest attempt still fails does it return
    /// [`SchemaError::TooLarge`] or [`SchemaError::Regex`].
    pub fn compile_detailed(&self, schema: &Value) -> Result<Compiled, SchemaError> {
        self.retrying(|cfg| compile::Ctx::new(cfg, schema).finish_checked())
    }

    /// Compiles a schema to rules: regexes that refer to each other, for a grammar (see
    /// [`CompiledRules`]; `formwork_grammar::json_schema` builds the grammar).
    ///
    /// Every keyword is compiled as by [`Compiler::compile_detailed`], with two differences
    /// that make the language larger, never unsound:
    ///
    /// - a schema that is only a `$ref` (plus annotations), and an `anyOf`/`oneOf` branch or
    ///   a lone `allOf` item that is one, is a reference to the rule of the resolved target,
    ///   compiled once: recursion through it has no depth limit ([`Compiler::max_recursion`]
    ///   still bounds a `$ref` merged with sibling keywords, which is expanded in place);
    /// - an unconstrained value (`true`, `{}`, the members of an object that says nothing of
    ///   them, the items of an array that says nothing of them) refers to one recursive rule
    ///   for any JSON value: [`Compiler::any_depth`] does not apply.
    ///
    /// [`Compiler::max_size`] applies to each regex alone. When one is too large or nests
    /// too deeply, the compiler retries with merged references unrolled less deeply, as
    /// [`Compiler::compile_detailed`] does.
    ///
    /// ```
    /// use formwork_schema::Compiler;
    /// use serde_json::json;
    ///
    /// let tree = json!({
    ///     "type": "object",
    ///     "properties": {
    ///         "name": {"type": "string"},
    ///         "children": {"type": "array", "items": {"$ref": "#"}}
    ///     },
    ///     "required": ["name", "children"]
    /// });
    /// let rules = Compiler::new().compile_rules(&tree)?;
    /// // One rule, for `#`: the start regex and the rule's body both refer to it.
    /// assert_eq!(rules.rules.len(), 1);
    /// assert_eq!(rules.rules[0].name, "#");
    /// assert!(rules.rules[0].regex.as_deref().unwrap().contains("(?P<fwref_0_0>)"));
    /// # Ok::<(), formwork_schema::SchemaError>(())
    /// ```
    pub fn compile_rules(&self, schema: &Value) -> Result<CompiledRules, SchemaError> {
        self.retrying(|cfg| compile::Ctx::new_rules(cfg, schema).finish_rules_checked())
    }

    /// Runs `compile` with this configuration, then, while it fails on size or nesting, with
    /// recursion and unconstrained values nested one level less (down to 1).
    fn retrying<T>(
        &self,
        compile: impl Fn(&Compiler) -> Result<T, SchemaError>,
    ) -> Result<T, SchemaError> {
        let mut cfg = self.clone();
        loop {
            match compile(&cfg) {
                Err(SchemaError::TooLarge { .. } | SchemaError::Regex { .. })
                    if cfg.max_recursion > 1 || cfg.any_depth > 1 =>
                {
                    cfg.max_recursion = cfg.max_recursion.saturating_sub(1).max(1);
                    cfg.any_depth = cfg.any_depth.saturating_sub(1).max(1);
                }
                other => return other,
            }
        }
    }

    /// Compiles a schema given as JSON text.
    pub fn compile_str(&self, schema: &str) -> Result<Compiled, SchemaError> {
        let value: Value = serde_json::from_str(schema).map_err(|e| SchemaError::Invalid {
            pointer: "#".into(),
            reason: format!("not JSON: {e}"),
        })?;
        self.compile_detailed(&value)
    }
}
