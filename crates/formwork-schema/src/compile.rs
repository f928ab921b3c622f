//! The compiler: a walk over the schema that builds the regex bottom-up.
//!
//! Every subschema compiles to a *fragment*: `Some(regex)` or `None` for "no document" (a
//! `false` schema, an unsatisfiable conjunction, a recursion cut off at the configured depth).
//! Combinators treat `None` soundly: an optional property or array item that cannot be produced
//! is left out, a required one makes its parent `None`, an `anyOf` branch is dropped.
//!
//! Composition is resolved before keywords are compiled: `$ref`, `allOf`, `then`/`else` and
//! `dependentSchemas` are merged into their parent (see [`crate::merge`]), and `anyOf`/`oneOf`
//! are distributed over the parent's other keywords, so `{"type": "object", "anyOf": [..]}`
//! produces only objects.

use std::borrow::Cow;
use std::collections::HashMap;

use regex_syntax::hir::Hir;
use serde_json::{Map, Value};

use crate::error::{SchemaError, Unenforced};
use crate::format::format_regex;
use crate::merge::{json_eq, merge, normalize};
use crate::numeric::{ANY_NUMBER, Bound, Decimal, integer_regex, number_regex};
use crate::pattern::{
    check_generated, encode_json, full_match_language, full_matcher, pattern_language,
    restrict_length,
};
use crate::rules::{CompiledRules, Rule, number_references, placeholder};
use crate::text::{
    ANY_STRING, STRING_CHAR, literal_alternation, string_excluding, string_literal, value_literal,
};
use crate::{Compiled, Compiler};

type Frag = Option<String>;
type Result<T> = std::result::Result<T, SchemaError>;

/// Keywords that only annotate and never constrain a document.
pub(crate) const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "example",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "$recursiveAnchor",
];

/// Keywords this compiler never enforces and refuses rather than ignores.
const REFUSED: &[&str] = &["$dynamicRef"];

const MAX_ALTERNATIVES: usize = 256;

pub(crate) struct Ctx<'a> {
    cfg: &'a Compiler,
    root: &'a Value,
    ws: String,
    ids: HashMap<String, &'a Value>,
    anchors: HashMap<String, &'a Value>,
    active_refs: HashMap<String, usize>,
    unenforced: Vec<Unenforced>,
    any_cache: Vec<String>,
    /// Fragments of `{"$ref": ...}` schemas, keyed by the reference and the recursion state
    /// they were compiled in (the same state gives the same fragment).
    ref_cache: HashMap<String, Frag>,
    depth: usize,
    /// Whether to parse every fragment as it is built ([`Ctx::checked`]), to find the
    /// subschema whose regex regex-syntax refuses.
    check_fragments: bool,
    /// In rules mode ([`Ctx::new_rules`]), the rules made so far.
    rules: Option<RuleTable<'a>>,
}

/// The rules of rules mode: one per resolved `$ref` target met as a reference-only schema,
/// and one for any value.
#[derive(Default)]
struct RuleTable<'a> {
    names: Vec<String>,
    bodies: Vec<Frag>,
    by_name: HashMap<String, usize>,
    /// Rules still to compile: index, target schema, pointer of the first reference.
    pending: Vec<(usize, &'a Value, String)>,
    any: Option<usize>,
    /// Whether each rule is a shared value ([`Ctx::share`]).
    shared: Vec<bool>,
    /// The shared values by their regex: one rule for a value met at several places.
    shared_by_body: HashMap<String, usize>,
}

impl RuleTable<'_> {
    fn add(&mut self, name: String) -> usize {
        let i = self.names.len();
        self.by_name.insert(name.clone(), i);
        self.names.push(name);
        self.bodies.push(None);
        self.shared.push(false);
        i
    }
}

/// In rules mode, property values and array items whose regex is longer than this are
/// written once as a rule and referred to ([`Ctx::share`]).
const SHARED_BYTES: usize = 512;

fn child(ptr: &str, seg: &str) -> String {
    format!("{ptr}/{}", seg.replace('~', "~0").replace('/', "~1"))
}

fn invalid(ptr: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        pointer: if ptr.is_empty() {
            "#".into()
        } else {
            ptr.into()
        },
        reason: reason.into(),
    }
}

fn unsupported(keyword: &str, ptr: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Unsupported {
        keyword: keyword.into(),
        pointer: if ptr.is_empty() {
            "#".into()
        } else {
            ptr.into()
        },
        reason: reason.into(),
    }
}

fn alternation(alts: Vec<String>) -> Frag {
    match alts.len() {
        0 => None,
        1 => alts.into_iter().next(),
        _ => Some(format!("(?:{})", alts.join("|"))),
    }
}

/// Whether [`Ctx::flatten`] would give back `m` unchanged as its one branch: no reference,
/// composition, conditional, dependency, `not` or `const`, and no boolean exclusive bound
/// (what `normalize` rewrites).
fn is_flat(m: &Map<String, Value>) -> bool {
    const FLATTENED: &[&str] = &[
        "$ref",
        "$recursiveRef",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "then",
        "else",
        "dependentSchemas",
        "dependencies",
        "not",
        "const",
    ];
    !FLATTENED.iter().any(|k| m.contains_key(*k))
        && !["exclusiveMinimum", "exclusiveMaximum"]
            .iter()
            .any(|k| matches!(m.get(*k), Some(Value::Bool(_))))
}

/// The first of `keywords` the schema has, else `"type"`: the keyword to blame for a
/// fragment.
fn first_keyword<'k>(m: &Map<String, Value>, keywords: &[&'k str]) -> &'k str {
    keywords
        .iter()
        .find(|k| m.contains_key(**k))
        .copied()
        .unwrap_or("type")
}

fn non_negative(m: &Map<String, Value>, key: &str, ptr: &str) -> Result<Option<usize>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| invalid(ptr, format!("`{key}` must be a non-negative integer")))?;
            Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
        }
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// What a `not` subschema excludes, as far as the compiler can express it.
#[derive(Default)]
struct Exclusions {
    types: Vec<String>,
    values: Vec<Value>,
    properties: Vec<String>,
    everything: bool,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(cfg: &'a Compiler, root: &'a Value) -> Self {
        let ws = cfg.whitespace.regex();
        let mut ctx = Ctx {
            cfg,
            root,
            ws,
            ids: HashMap::new(),
            anchors: HashMap::new(),
            active_refs: HashMap::new(),
            unenforced: Vec::new(),
            any_cache: Vec::new(),
            ref_cache: HashMap::new(),
            depth: 0,
            check_fragments: false,
            rules: None,
        };
        ctx.index(root, 0);
        ctx
    }

    /// A context in rules mode: reference-only schemas and unconstrained values compile to
    /// references to rules (see [`crate::rules`]).
    pub(crate) fn new_rules(cfg: &'a Compiler, root: &'a Value) -> Self {
        let mut ctx = Ctx::new(cfg, root);
        ctx.rules = Some(RuleTable::default());
        ctx
    }

    fn index(&mut self, v: &'a Value, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Object(m) => {
                for key in ["$id", "id"] {
                    if let Some(Value::String(id)) = m.get(key) {
                        if let Some(anchor) = id.strip_prefix('#') {
                            self.anchors.entry(anchor.to_string()).or_insert(v);
                        } else {
                            let base = id.trim_end_matches('#').to_string();
                            self.ids.entry(base).or_insert(v);
                        }
                    }
                }
                if let Some(Value::String(a)) = m.get("$anchor") {
                    self.anchors.entry(a.clone()).or_insert(v);
                }
                for (k, sub) in m {
                    if !matches!(k.as_str(), "enum" | "const" | "default" | "examples") {
                        self.index(sub, depth + 1);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|s| self.index(s, depth + 1)),
            _ => {}
        }
    }

    pub(crate) fn finish(mut self) -> Result<Compiled> {
        let root = self.root;
        let regex = self
            .schema(root, "")?
            .ok_or_else(|| SchemaError::Unsatisfiable {
                pointer: "#".into(),
            })?;
        let mut seen = std::collections::HashSet::new();
        self.unenforced.retain(|u| seen.insert(u.clone()));
        Ok(Compiled {
            regex,
            unenforced: self.unenforced,
        })
    }

    /// Rules mode's [`Ctx::finish`]: the start regex, then every rule a reference leads to,
    /// each compiled once, outside any recursion counted so far.
    pub(crate) fn finish_rules(mut self) -> Result<CompiledRules> {
        let root = self.root;
        let start = self
            .schema(root, "")?
            .ok_or_else(|| SchemaError::Unsatisfiable {
                pointer: "#".into(),
            })?;
        while let Some((i, target, ptr)) = self.rules.as_mut().and_then(|r| r.pending.pop()) {
            let outer = std::mem::take(&mut self.active_refs);
            let body = self.schema(target, &ptr);
            self.active_refs = outer;
            let body = body?;
            if let Some(r) = self.rules.as_mut()
                && let Some(slot) = r.bodies.get_mut(i)
            {
                *slot = body;
            }
        }
        let mut seen = std::collections::HashSet::new();
        self.unenforced.retain(|u| seen.insert(u.clone()));
        let table = self.rules.take().unwrap_or_default();
        Ok(CompiledRules {
            start: number_references(&start),
            rules: table
                .names
                .into_iter()
                .zip(table.bodies)
                .zip(table.shared)
                .map(|((name, body), shared)| Rule {
                    name,
                    regex: body.map(|b| number_references(&b)),
                    shared,
                })
                .collect(),
            unenforced: self.unenforced,
        })
    }

    /// Compiles the schema, then checks that regex-syntax parses the regex as `formwork-index`
    /// will. When it does not (nesting past the parser's limit), compiles again parsing every
    /// fragment as it is built, so the error names the deepest subschema and keyword whose
    /// regex is refused.
    pub(crate) fn finish_checked(self) -> Result<Compiled> {
        self.run_checked(Ctx::finish, |c| vec![c.regex.as_str()])
    }

    /// [`Ctx::finish_checked`] in rules mode: every rule's regex is checked.
    pub(crate) fn finish_rules_checked(self) -> Result<CompiledRules> {
        self.run_checked(Ctx::finish_rules, |c| {
            std::iter::once(c.start.as_str())
                .chain(c.rules.iter().filter_map(|r| r.regex.as_deref()))
                .collect()
        })
    }

    fn run_checked<T>(
        self,
        finish: fn(Ctx<'a>) -> Result<T>,
        regexes: impl Fn(&T) -> Vec<&str>,
    ) -> Result<T> {
        let (cfg, root, rules) = (self.cfg, self.root, self.rules.is_some());
        let compiled = finish(self)?;
        let Some(reason) = regexes(&compiled)
            .into_iter()
            .find_map(|r| check_generated(r).err())
        else {
            return Ok(compiled);
        };
        let mut ctx = if rules {
            Ctx::new_rules(cfg, root)
        } else {
            Ctx::new(cfg, root)
        };
        ctx.check_fragments = true;
        Err(match finish(ctx) {
            Err(e) => e,
            Ok(_) => SchemaError::Regex {
                pointer: "#".into(),
                keyword: "type".into(),
                reason,
            },
        })
    }

    /// In checking mode, refuses a fragment regex-syntax would not parse, naming `keyword` at
    /// `ptr` as its origin.
    fn checked(&self, frag: Frag, keyword: &str, ptr: &str) -> Result<Frag> {
        if let (true, Some(f)) = (self.check_fragments, &frag)
            && let Err(reason) = self.check_text(f)
        {
            return Err(SchemaError::Regex {
                pointer: if ptr.is_empty() {
                    "#".into()
                } else {
                    ptr.into()
                },
                keyword: keyword.into(),
                reason,
            });
        }
        Ok(frag)
    }

    /// [`check_generated`] of a fragment, its references numbered first in rules mode.
    fn check_text(&self, frag: &str) -> std::result::Result<(), String> {
        if self.rules.is_some() {
            check_generated(&number_references(frag))
        } else {
            check_generated(frag)
        }
    }

    /// Checks a fragment against the size limit.
    fn grow(&self, frag: &Frag) -> Result<()> {
        match frag {
            Some(s) if s.len() > self.cfg.max_size => Err(SchemaError::TooLarge {
                size: s.len(),
                limit: self.cfg.max_size,
            }),
            _ => Ok(()),
        }
    }

    fn warn(&mut self, keyword: &str, ptr: &str) {
        self.unenforced.push(Unenforced {
            keyword: keyword.into(),
            pointer: if ptr.is_empty() {
                "#".into()
            } else {
                ptr.into()
            },
        });
    }

    /// In rules mode, a long fragment (a property value, an array item) as a reference to a
    /// rule holding it: an object's encoding repeats each optional property in several
    /// alternatives, so nested objects would otherwise copy their values' regexes again at
    /// every level. Elsewhere, and for short fragments, the fragment itself.
    fn share(&mut self, frag: Frag, ptr: &str) -> Frag {
        match (&mut self.rules, frag) {
            (Some(rules), Some(text)) if text.len() > SHARED_BYTES => {
                if let Some(&i) = rules.shared_by_body.get(&text) {
                    return Some(placeholder(i));
                }
                let i = rules.add(format!(
                    "{}@{}",
                    if ptr.is_empty() { "#" } else { ptr },
                    rules.names.len()
                ));
                rules.shared_by_body.insert(text.clone(), i);
                rules.bodies[i] = Some(text);
                rules.shared[i] = true;
                Some(placeholder(i))
            }
            (_, frag) => frag,
        }
    }

    /// Any JSON value nested at most `depth` containers deep; in rules mode, a reference to
    /// the rule of any value, nested without bound.
    fn any_value(&mut self, depth: usize) -> String {
        if let Some(rules) = &mut self.rules {
            if let Some(i) = rules.any {
                return placeholder(i);
            }
            let i = rules.add("any".into());
            rules.any = Some(i);
            rules.bodies[i] = Some(any_containing(&self.ws, &placeholder(i)));
            return placeholder(i);
        }
        while self.any_cache.len() <= depth {
            let next = match self.any_cache.last() {
                None => format!("(?:null|true|false|{ANY_NUMBER}|{ANY_STRING})"),
                Some(inner) => any_containing(&self.ws, inner),
            };
            self.any_cache.push(next);
        }
        self.any_cache[depth].clone()
    }

    // ----- schemas and composition -------------------------------------------------------

    fn schema(&mut self, s: &Value, ptr: &str) -> Result<Frag> {
        self.depth += 1;
        if self.depth > self.cfg.max_depth {
            self.depth -= 1;
            return Err(SchemaError::TooDeep {
                pointer: ptr.into(),
                limit: self.cfg.max_depth,
            });
        }
        if self.rules.is_some()
            && let Some(reference) = reference_only(s)
        {
            let out = self.rule_reference(reference, ptr);
            self.depth -= 1;
            return out.map(Some);
        }
        let key = self.ref_cache_key(s);
        if let Some(hit) = key.as_ref().and_then(|k| self.ref_cache.get(k)) {
            self.depth -= 1;
            return Ok(hit.clone());
        }
        let out = self.schema_inner(s, ptr);
        self.depth -= 1;
        if let (Some(k), Ok(frag)) = (key, &out) {
            self.ref_cache.insert(k, frag.clone());
        }
        let out = out?;
        self.grow(&out)?;
        Ok(out)
    }

    /// Rules mode: the reference to the rule of `reference`'s target, declared (and queued
    /// for compiling) the first time the target is met.
    fn rule_reference(&mut self, reference: &str, ptr: &str) -> Result<String> {
        let (name, target) = self.resolve(reference, ptr)?;
        let Some(rules) = self.rules.as_mut() else {
            return Err(invalid(ptr, "a rule reference outside rules mode"));
        };
        if let Some(&i) = rules.by_name.get(&name) {
            return Ok(placeholder(i));
        }
        let i = rules.add(name);
        rules.pending.push((i, target, child(ptr, "$ref")));
        Ok(placeholder(i))
    }

    /// Rules mode: a schema that is only `anyOf`/`oneOf` with a reference-only branch, or
    /// `allOf` of one reference-only schema (plus annotations), compiled branch by branch, so
    /// that those branches stay references (flattening would expand them in place, unrolled
    /// to [`Compiler::max_recursion`]). `None` for any other schema.
    fn composition_of_references(
        &mut self,
        m: &Map<String, Value>,
        ptr: &str,
    ) -> Result<Option<Frag>> {
        let mut keys = m.keys().filter(|k| !ANNOTATIONS.contains(&k.as_str()));
        let (Some(key), None) = (keys.next(), keys.next()) else {
            return Ok(None);
        };
        let Some(Value::Array(items)) = m.get(key) else {
            return Ok(None);
        };
        let refers = |s: &Value| reference_only(s).is_some();
        let applies = match key.as_str() {
            "anyOf" | "oneOf" => items.iter().any(refers),
            "allOf" => items.len() == 1 && items.iter().all(refers),
            _ => false,
        };
        if !applies {
            return Ok(None);
        }
        let p = child(ptr, key);
        if key == "oneOf" {
            let mut expanded = Vec::new();
            self.flatten_branches(items, &p, true, &mut expanded);
            self.release(expanded);
        }
        let mut alts = Vec::new();
        let mut first_err = None;
        for (i, s) in items.iter().enumerate() {
            match self.schema(s, &child(&p, &i.to_string())) {
                Ok(Some(f)) if !alts.contains(&f) => alts.push(f),
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if key == "oneOf" && first_err.is_some() {
            // A dropped branch may accept what the others accept: exclusivity is not proven.
            self.warn("oneOf", &p);
        }
        match (alts.is_empty(), first_err) {
            (true, Some(e)) => Err(e),
            _ => self.checked(alternation(alts), key, ptr).map(Some),
        }
    }

    /// Ends the expansions of `expanded` (see [`Ctx::flatten`]).
    fn release(&mut self, expanded: Vec<String>) {
        for r in expanded {
            if let Some(c) = self.active_refs.get_mut(&r) {
                *c -= 1;
            }
        }
    }

    /// The cache key of a schema that is only a reference (plus annotations), else `None`.
    fn ref_cache_key(&self, s: &Value) -> Option<String> {
        let r = reference_only(s)?;
        let mut active: Vec<(&String, &usize)> =
            self.active_refs.iter().filter(|(_, c)| **c > 0).collect();
        active.sort();
        let mut key = r.to_string();
        for (name, count) in active {
            key.push_str(&format!("\0{name}={count}"));
        }
        Some(key)
    }

    fn schema_inner(&mut self, s: &Value, ptr: &str) -> Result<Frag> {
        let m = match s {
            Value::Bool(true) => return Ok(Some(self.any_value(self.cfg.any_depth))),
            Value::Bool(false) => return Ok(None),
            Value::Object(m) => m,
            _ => return Err(invalid(ptr, "a schema must be an object or a boolean")),
        };
        if self.rules.is_some()
            && let Some(frag) = self.composition_of_references(m, ptr)?
        {
            return Ok(frag);
        }
        let mut expanded = Vec::new();
        // Most schemas need no flattening: then `m` is the one branch, not a copy of it (a
        // copy is deep, so copying at every level would cost the subtree's size per level).
        let flat = if is_flat(m) {
            Ok(vec![Cow::Borrowed(m)])
        } else {
            self.flatten(m, ptr, &mut expanded)
                .map(|branches| branches.into_iter().map(Cow::Owned).collect())
        };
        let result = match flat {
            Ok(branches) => {
                let mut alts = Vec::new();
                // The values of every `enum` branch, written as one trie.
                let mut literals = Vec::new();
                let mut first_err = None;
                let n = branches.len();
                for b in branches {
                    if let Some(Value::Array(values)) = b.get("enum") {
                        self.enum_literals(&b, values, &mut literals);
                        continue;
                    }
                    match self.branch(&b, ptr) {
                        Ok(Some(r)) => {
                            if !alts.contains(&r) {
                                alts.push(r)
                            }
                        }
                        Ok(None) => {}
                        // With several alternatives, one we cannot express is dropped (the
                        // others still accept only valid documents).
                        Err(e) if n > 1 => {
                            first_err.get_or_insert(e);
                        }
                        Err(e) => {
                            first_err = Some(e);
                            break;
                        }
                    }
                }
                alts.extend(literal_alternation(literals, &self.ws));
                match (alts.is_empty(), first_err) {
                    (true, Some(e)) => Err(e),
                    _ => {
                        let keyword =
                            first_keyword(m, &["anyOf", "oneOf", "allOf", "$ref", "enum"]);
                        self.checked(alternation(alts), keyword, ptr)
                    }
                }
            }
            Err(e) => Err(e),
        };
        self.release(expanded);
        result
    }

    /// Resolves `$ref` and merges or distributes composition keywords, returning alternatives
    /// (a disjunction) of schema objects without composition keywords. Each reference expanded
    /// is pushed to `expanded` and stays active until the caller has compiled the result.
    fn flatten(
        &mut self,
        m: &Map<String, Value>,
        ptr: &str,
        expanded: &mut Vec<String>,
    ) -> Result<Vec<Map<String, Value>>> {
        for k in REFUSED {
            if m.contains_key(*k) {
                return Err(unsupported(k, ptr, "dynamic references are not supported"));
            }
        }
        let mut base = m.clone();
        let mut conj: Vec<(Value, String)> = Vec::new();
        let mut disj: Vec<(Vec<Value>, String, bool)> = Vec::new();
        for key in ["$ref", "$recursiveRef"] {
            if let Some(r) = base.remove(key) {
                let r = r
                    .as_str()
                    .ok_or_else(|| invalid(ptr, "`$ref` must be a string"))?;
                let (name, target) = self.resolve(r, ptr)?;
                let count = self.active_refs.entry(name.clone()).or_insert(0);
                if *count >= self.cfg.max_recursion {
                    // Recursion cut off: this branch produces nothing.
                    return Ok(Vec::new());
                }
                *count += 1;
                expanded.push(name);
                conj.push((target.clone(), child(ptr, key)));
            }
        }
        if let Some(all) = base.remove("allOf") {
            let items = all
                .as_array()
                .ok_or_else(|| invalid(ptr, "`allOf` must be an array"))?;
            for (i, s) in items.iter().enumerate() {
                conj.push((s.clone(), child(&child(ptr, "allOf"), &i.to_string())));
            }
        }
        // if/then/else: a document satisfying both `then` and `else` satisfies the
        // conditional whatever `if` says, so both are required (a sound subset).
        if base.remove("if").is_some() {
            for key in ["then", "else"] {
                if let Some(s) = base.remove(key) {
                    conj.push((s, child(ptr, key)));
                }
            }
        } else {
            base.remove("then");
            base.remove("else");
        }
        // dependentSchemas / schema-valued dependencies: applied unconditionally (subset).
        for key in ["dependentSchemas", "dependencies"] {
            if let Some(Value::Object(deps)) = base.get(key).cloned() {
                let mut arrays = Map::new();
                for (name, dep) in deps {
                    if dep.is_array() {
                        arrays.insert(name, dep);
                    } else {
                        conj.push((dep, child(&child(ptr, key), &name)));
                    }
                }
                if key == "dependencies" && !arrays.is_empty() {
                    base.insert("dependentRequired".into(), Value::Object(arrays));
                }
                base.remove(key);
            }
        }
        // not (not X) is X.
        if let Some(Value::Object(n)) = base.get("not")
            && let (1, Some(inner)) = (n.len(), n.get("not"))
        {
            conj.push((inner.clone(), child(&child(ptr, "not"), "not")));
            base.remove("not");
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(v) = base.remove(key) {
                let items = v
                    .as_array()
                    .ok_or_else(|| invalid(ptr, format!("`{key}` must be an array")))?;
                disj.push((items.clone(), child(ptr, key), key == "oneOf"));
            }
        }
        normalize(&mut base);
        let mut alts = vec![base];
        for (s, p) in conj {
            let parts = self.flatten_value(&s, &p, expanded)?;
            alts = self.product(alts, parts, &p, true)?;
            if alts.is_empty() {
                return Ok(alts);
            }
        }
        for (items, p, exclusive) in disj {
            let mut options = Vec::new();
            let (flat_items, first_err) = self.flatten_branches(&items, &p, exclusive, expanded);
            for parts in flat_items {
                options.extend(parts);
            }
            if options.is_empty()
                && let Some(e) = first_err
            {
                return Err(e);
            }
            alts = self.product(alts, options, &p, false)?;
            if alts.is_empty() {
                return Ok(alts);
            }
        }
        Ok(alts)
    }

    /// The branches of an `anyOf` (or a `oneOf`, when `exclusive`) at `p`, each flattened (a
    /// branch that fails is empty; the first failure is returned beside). A `oneOf` whose
    /// branches are not proven disjoint is reported as not enforced.
    fn flatten_branches(
        &mut self,
        items: &[Value],
        p: &str,
        exclusive: bool,
        expanded: &mut Vec<String>,
    ) -> (Vec<Vec<Map<String, Value>>>, Option<SchemaError>) {
        let mut first_err = None;
        let mut flat_items = Vec::new();
        for (i, s) in items.iter().enumerate() {
            let ip = child(p, &i.to_string());
            match self.flatten_value(s, &ip, expanded) {
                Ok(parts) => flat_items.push(parts),
                Err(e) => {
                    first_err.get_or_insert(e);
                    flat_items.push(Vec::new());
                }
            }
        }
        // A branch that flattened to nothing may still accept documents (what it dropped was
        // a subset), so exclusivity is only proven when every branch is accounted for.
        let literally_false = |v: &Value| v == &Value::Bool(false);
        let all_present = items
            .iter()
            .zip(&flat_items)
            .all(|(s, f)| !f.is_empty() || literally_false(s));
        if exclusive && (!all_present || !self.disjoint(&flat_items)) {
            self.warn("oneOf", p);
        }
        (flat_items, first_err)
    }

    fn flatten_value(
        &mut self,
        s: &Value,
        ptr: &str,
        expanded: &mut Vec<String>,
    ) -> Result<Vec<Map<String, Value>>> {
        match s {
            Value::Bool(true) => Ok(vec![Map::new()]),
            Value::Bool(false) => Ok(Vec::new()),
            Value::Object(m) => self.flatten(m, ptr, expanded),
            _ => Err(invalid(ptr, "a schema must be an object or a boolean")),
        }
    }

    fn product(
        &mut self,
        left: Vec<Map<String, Value>>,
        right: Vec<Map<String, Value>>,
        ptr: &str,
        strict: bool,
    ) -> Result<Vec<Map<String, Value>>> {
        if left.len().saturating_mul(right.len()) > MAX_ALTERNATIVES {
            return Err(unsupported(
                "anyOf",
                ptr,
                format!("more than {MAX_ALTERNATIVES} alternatives after distributing composition"),
            ));
        }
        let mut out = Vec::new();
        let mut first_err = None;
        for a in &left {
            for b in &right {
                match merge(a, b, ptr) {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => {}
                    Err(e) if strict => return Err(e),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// Whether no document can satisfy two different alternatives of a `oneOf` as compiled:
    /// the compiled alternatives are checked against the *schemas* of the others.
    fn disjoint(&self, items: &[Vec<Map<String, Value>>]) -> bool {
        if items.iter().filter(|i| !i.is_empty()).count() <= 1 {
            return true;
        }
        for (i, a) in items.iter().enumerate() {
            for (j, b) in items.iter().enumerate() {
                if i >= j {
                    continue;
                }
                for x in a {
                    for y in b {
                        if !self.pair_disjoint(x, y) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    fn pair_disjoint(&self, a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
        let (ta, tb) = (self.types_of(a), self.types_of(b));
        let types_overlap = ta.iter().any(|t| {
            tb.iter().any(|u| {
                t == u || (t == "integer" && u == "number") || (t == "number" && u == "integer")
            })
        });
        if !types_overlap {
            return true;
        }
        if let (Some(Value::Array(x)), Some(Value::Array(y))) = (a.get("enum"), b.get("enum"))
            && !x.iter().any(|v| y.iter().any(|w| json_eq(v, w)))
        {
            return true;
        }
        // Objects only overlap if they are objects on both sides; then a discriminating
        // property with disjoint constants, or a property one side requires that the other
        // never produces and forbids, separates them.
        if ta.iter().all(|t| t == "object") || tb.iter().all(|t| t == "object") {
            let props =
                |m: &Map<String, Value>| m.get("properties").and_then(Value::as_object).cloned();
            let (pa, pb) = (props(a).unwrap_or_default(), props(b).unwrap_or_default());
            let (ra, rb) = (
                string_list(a.get("required")),
                string_list(b.get("required")),
            );
            for (k, va) in &pa {
                if let Some(vb) = pb.get(k) {
                    let consts = |v: &Value| -> Option<Vec<Value>> {
                        let o = v.as_object()?;
                        o.get("enum")
                            .and_then(Value::as_array)
                            .cloned()
                            .or_else(|| o.get("const").map(|c| vec![c.clone()]))
                    };
                    if let (Some(x), Some(y)) = (consts(va), consts(vb))
                        && (ra.contains(k) || rb.contains(k))
                        && ra.contains(k) == rb.contains(k)
                        && !x.iter().any(|v| y.iter().any(|w| json_eq(v, w)))
                    {
                        return true;
                    }
                }
            }
            // a's documents carry all of `ra`; b forbids extra keys and does not know one.
            let closed =
                |m: &Map<String, Value>| m.get("additionalProperties") == Some(&Value::Bool(false));
            if closed(b) && ra.iter().any(|k| !pb.contains_key(k)) {
                return true;
            }
            if closed(a) && rb.iter().any(|k| !pa.contains_key(k)) {
                return true;
            }
        }
        false
    }

    /// The target of a reference, if it resolves.
    pub(crate) fn resolve_ref(&self, reference: &str) -> Option<&'a Value> {
        self.resolve(reference, "").ok().map(|(_, v)| v)
    }

    fn resolve(&self, reference: &str, ptr: &str) -> Result<(String, &'a Value)> {
        let unresolved = || SchemaError::UnresolvedRef {
            pointer: if ptr.is_empty() {
                "#".into()
            } else {
                ptr.into()
            },
            reference: reference.into(),
        };
        let (base, frag) = match reference.find('#') {
            Some(i) => (&reference[..i], &reference[i + 1..]),
            None => (reference, ""),
        };
        let doc: &'a Value = if base.is_empty() {
            self.root
        } else if let Some(v) = self.ids.get(base) {
            v
        } else {
            let root_id = self.root.get("$id").and_then(Value::as_str).unwrap_or("");
            let tail = |s: &str| s.rsplit('/').next().unwrap_or("").to_string();
            let hit = self
                .ids
                .iter()
                .find(|(id, _)| tail(id) == tail(base) && !tail(base).is_empty())
                .map(|(_, v)| *v);
            match hit {
                Some(v) => v,
                None if !root_id.is_empty() && tail(root_id) == tail(base) => self.root,
                None => return Err(unresolved()),
            }
        };
        let frag = percent_decode(frag);
        let target = if frag.is_empty() {
            doc
        } else if frag.starts_with('/') {
            doc.pointer(&frag).ok_or_else(unresolved)?
        } else {
            self.anchors
                .get(frag.as_str())
                .copied()
                .ok_or_else(unresolved)?
        };
        Ok((format!("{base}#{frag}"), target))
    }

    // ----- one flattened branch ----------------------------------------------------------

    fn types_of(&self, m: &Map<String, Value>) -> Vec<String> {
        let types: Vec<String> = match m.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            _ => {
                let has = |keys: &[&str]| keys.iter().any(|k| m.contains_key(*k));
                let mut t = Vec::new();
                if has(&[
                    "properties",
                    "required",
                    "additionalProperties",
                    "patternProperties",
                    "minProperties",
                    "maxProperties",
                    "propertyNames",
                    "dependentRequired",
                    "unevaluatedProperties",
                ]) {
                    t.push("object".to_string());
                }
                if has(&[
                    "items",
                    "prefixItems",
                    "additionalItems",
                    "minItems",
                    "maxItems",
                    "contains",
                    "uniqueItems",
                    "unevaluatedItems",
                ]) {
                    t.push("array".into());
                }
                let string_format = m
                    .get("format")
                    .and_then(Value::as_str)
                    .is_some_and(|f| format_regex(f).is_some());
                if has(&["pattern", "minLength", "maxLength"]) || string_format {
                    t.push("string".into());
                }
                if has(&[
                    "minimum",
                    "maximum",
                    "exclusiveMinimum",
                    "exclusiveMaximum",
                    "multipleOf",
                ]) {
                    t.push("number".into());
                }
                if t.is_empty()
                    && let Some(Value::Array(values)) = m.get("enum")
                {
                    for v in values {
                        let ty = match v {
                            Value::Null => "null",
                            Value::Bool(_) => "boolean",
                            Value::Number(_) => "number",
                            Value::String(_) => "string",
                            Value::Array(_) => "array",
                            Value::Object(_) => "object",
                        };
                        if !t.iter().any(|x| x == ty) {
                            t.push(ty.into());
                        }
                    }
                }
                if t.is_empty() {
                    TYPES
                        .iter()
                        .filter(|t| **t != "integer")
                        .map(|t| t.to_string())
                        .collect()
                } else {
                    t
                }
            }
        };
        types
    }

    fn exclusions(&self, not: &Value, ptr: &str, out: &mut Exclusions) -> Result<()> {
        let m = match not {
            Value::Bool(b) => {
                out.everything |= *b;
                return Ok(());
            }
            Value::Object(m) => m,
            _ => return Err(invalid(ptr, "`not` must be a schema")),
        };
        let meaningful: Vec<&String> = m
            .keys()
            .filter(|k| !ANNOTATIONS.contains(&k.as_str()))
            .collect();
        if meaningful.is_empty() {
            out.everything = true;
            return Ok(());
        }
        if let Some(Value::Array(alts)) = m.get("anyOf")
            && meaningful.len() == 1
        {
            for (i, a) in alts.iter().enumerate() {
                self.exclusions(a, &child(ptr, &i.to_string()), out)?;
            }
            return Ok(());
        }
        // not (A and B) holds whenever not A holds: exclude the one conjunct we can express.
        if let Some(e) = m.get("enum").and_then(Value::as_array) {
            out.values.extend(e.iter().cloned());
        } else if let Some(c) = m.get("const") {
            out.values.push(c.clone());
        } else if let Some(first) = string_list(m.get("required")).into_iter().next() {
            // `required` holds vacuously for non-objects, so `not` of it rejects them.
            out.properties.push(first);
            out.types.extend(
                TYPES
                    .iter()
                    .filter(|t| **t != "object")
                    .map(|t| t.to_string()),
            );
        } else if meaningful.iter().all(|k| *k == "type") {
            let t = self.types_of(m);
            out.types.extend(t.iter().cloned());
            if t.iter().any(|t| t == "number") {
                out.types.push("integer".into());
            }
        } else {
            return Err(unsupported(
                "not",
                ptr,
                "only `not` of a type, an enum/const or required properties can be expressed",
            ));
        }
        Ok(())
    }

    fn branch(&mut self, m: &Map<String, Value>, ptr: &str) -> Result<Frag> {
        if let Some(values) = m.get("enum") {
            let values = values
                .as_array()
                .ok_or_else(|| invalid(ptr, "`enum` must be an array"))?;
            let mut literals = Vec::new();
            self.enum_literals(m, values, &mut literals);
            return self.checked(literal_alternation(literals, &self.ws), "enum", ptr);
        }
        let mut ex = Exclusions::default();
        if let Some(n) = m.get("not") {
            self.exclusions(n, &child(ptr, "not"), &mut ex)?;
        }
        if ex.everything {
            return Ok(None);
        }
        let mut types = self.types_of(m);
        types.retain(|t| !ex.types.contains(t));
        if types.iter().any(|t| t == "number") {
            types.retain(|t| t != "integer");
        }
        let mut alts = Vec::new();
        for t in &types {
            let frag = match t.as_str() {
                "null" => Some("null".to_string()),
                "boolean" => {
                    let bools: Vec<String> = ["true", "false"]
                        .into_iter()
                        .filter(|b| !ex.values.contains(&Value::Bool(*b == "true")))
                        .map(String::from)
                        .collect();
                    alternation(bools)
                }
                "integer" | "number" => {
                    let frag = self.number(m, t == "integer", ptr)?;
                    self.checked(frag, first_keyword(m, &["multipleOf"]), ptr)?
                }
                "string" => {
                    let frag = self.string(m, &ex, ptr)?;
                    self.checked(frag, first_keyword(m, &["pattern", "format"]), ptr)?
                }
                "array" => {
                    let frag = self.array(m, ptr)?;
                    let keywords = ["prefixItems", "items", "contains"];
                    self.checked(frag, first_keyword(m, &keywords), ptr)?
                }
                "object" => {
                    let frag = self.object(m, &ex, ptr)?;
                    let keywords = ["properties", "patternProperties", "additionalProperties"];
                    self.checked(frag, first_keyword(m, &keywords), ptr)?
                }
                other => {
                    return Err(invalid(ptr, format!("unknown type {other:?}")));
                }
            };
            if let Some(f) = frag {
                alts.push(f);
            }
        }
        if ex
            .values
            .iter()
            .any(|v| matches!(v, Value::Number(_) | Value::Array(_) | Value::Object(_)))
            && types
                .iter()
                .any(|t| matches!(t.as_str(), "number" | "integer" | "array" | "object"))
        {
            return Err(unsupported(
                "not",
                ptr,
                "excluding number, array or object values is not supported",
            ));
        }
        if ex.values.contains(&Value::Null) {
            alts.retain(|a| a != "null");
        }
        self.checked(alternation(alts), "type", ptr)
    }

    /// The literals of the values of an `enum` that the rest of the schema accepts (checked
    /// exactly by [`Ctx::verdict`]; a value it cannot decide is left out), for
    /// [`literal_alternation`].
    fn enum_literals(&self, m: &Map<String, Value>, values: &[Value], out: &mut Vec<String>) {
        let mut rest = m.clone();
        rest.remove("enum");
        let rest = Value::Object(rest);
        out.extend(
            values
                .iter()
                .filter(|v| self.verdict(&rest, v, 0) == crate::verdict::Verdict::Valid)
                .map(|v| value_literal(v, &self.ws)),
        );
    }

    // ----- numbers -----------------------------------------------------------------------

    fn bound(
        &self,
        m: &Map<String, Value>,
        incl: &str,
        excl: &str,
        lower: bool,
        ptr: &str,
    ) -> Result<Option<Bound>> {
        let get = |k: &str| -> Result<Option<Decimal>> {
            match m.get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => Decimal::from_json(n)
                    .map(Some)
                    .ok_or_else(|| invalid(ptr, format!("`{k}` is not a usable number"))),
                Some(_) => Err(invalid(ptr, format!("`{k}` must be a number"))),
            }
        };
        let a = get(incl)?.map(|value| Bound {
            value,
            exclusive: false,
        });
        let b = get(excl)?.map(|value| Bound {
            value,
            exclusive: true,
        });
        Ok(match (a, b) {
            (Some(a), Some(b)) => {
                let pick_b = if lower {
                    b.value >= a.value
                } else {
                    b.value <= a.value
                };
                Some(if pick_b { b } else { a })
            }
            (a, b) => a.or(b),
        })
    }

    fn number(&mut self, m: &Map<String, Value>, integer: bool, ptr: &str) -> Result<Frag> {
        let lo = self.bound(m, "minimum", "exclusiveMinimum", true, ptr)?;
        let hi = self.bound(m, "maximum", "exclusiveMaximum", false, ptr)?;
        let multiple = match m.get("multipleOf") {
            None => None,
            Some(Value::Number(n)) => {
                let d = Decimal::from_json(n)
                    .filter(|d| !d.neg && !d.is_zero())
                    .ok_or_else(|| invalid(ptr, "`multipleOf` must be a positive number"))?;
                Some(d)
            }
            Some(_) => return Err(invalid(ptr, "`multipleOf` must be a number")),
        };
        let Some(k) = multiple else {
            return Ok(if integer {
                integer_regex(lo.as_ref(), hi.as_ref())
            } else {
                number_regex(lo.as_ref(), hi.as_ref(), None)
            });
        };
        // multipleOf 10^-j for numbers: at most j fraction digits.
        if !integer
            && k.int == "0"
            && k.frac.ends_with('1')
            && k.frac[..k.frac.len() - 1].bytes().all(|b| b == b'0')
        {
            return Ok(number_regex(lo.as_ref(), hi.as_ref(), Some(k.frac.len())));
        }
        if !k.frac.is_empty() {
            // A fractional step: integers are multiples when 1/k is an integer.
            let inverse = 1.0 / m["multipleOf"].as_f64().unwrap_or(0.0);
            if integer && inverse.fract() == 0.0 {
                return Ok(integer_regex(lo.as_ref(), hi.as_ref()));
            }
            return Err(unsupported(
                "multipleOf",
                ptr,
                "a fractional multipleOf other than 10^-n",
            ));
        }
        // An integer step: integers only.
        if k.int == "1" {
            return Ok(integer_regex(lo.as_ref(), hi.as_ref()));
        }
        let step: i128 = k
            .int
            .parse()
            .map_err(|_| unsupported("multipleOf", ptr, "multipleOf too large"))?;
        let to_i128 = |b: &Option<Bound>, lower: bool| -> Option<i128> {
            let b = b.as_ref()?;
            let v: f64 = format!(
                "{}{}.{}0",
                if b.value.neg { "-" } else { "" },
                b.value.int,
                b.value.frac
            )
            .parse()
            .ok()?;
            let v = if lower { v.ceil() } else { v.floor() };
            if v.abs() > 1e30 {
                return None;
            }
            let mut v = v as i128;
            if b.exclusive && b.value.frac.is_empty() {
                v += if lower { 1 } else { -1 };
            }
            Some(v)
        };
        if let (Some(a), Some(b)) = (to_i128(&lo, true), to_i128(&hi, false)) {
            let first = a.div_euclid(step) * step + if a.rem_euclid(step) == 0 { 0 } else { step };
            if b < first {
                return Ok(None);
            }
            if (b - first) / step <= 1024 {
                let alts: Vec<String> = (0..=(b - first) / step)
                    .map(|i| (first + i * step).to_string())
                    .collect();
                return Ok(literal_alternation(alts, ""));
            }
        }
        if lo.is_none() && hi.is_none() {
            let zeros = k.int.trim_start_matches('1');
            if k.int.starts_with('1') && zeros.bytes().all(|b| b == b'0') {
                return Ok(Some(format!("(?:0|-?[1-9][0-9]*0{{{}}})", zeros.len())));
            }
            match k.int.as_str() {
                "2" => return Ok(Some("(?:0|-?(?:[1-9][0-9]*[02468]|[2468]))".into())),
                "5" => return Ok(Some("(?:0|-?(?:[1-9][0-9]*[05]|5))".into())),
                _ => {}
            }
        }
        Err(unsupported(
            "multipleOf",
            ptr,
            format!("multipleOf {} over an unbounded or large range", k.int),
        ))
    }

    // ----- strings -----------------------------------------------------------------------

    fn string_language(&mut self, m: &Map<String, Value>, ptr: &str) -> Result<Option<Hir>> {
        let pattern = match m.get("pattern") {
            None => None,
            Some(Value::String(p)) => {
                Some(pattern_language(p).map_err(|reason| SchemaError::Pattern {
                    pointer: if ptr.is_empty() {
                        "#".into()
                    } else {
                        ptr.into()
                    },
                    pattern: p.clone(),
                    reason,
                })?)
            }
            Some(_) => return Err(invalid(ptr, "`pattern` must be a string")),
        };
        let format = match m.get("format") {
            Some(Value::String(f)) => match format_regex(f) {
                Some(re) => {
                    Some(
                        full_match_language(&re).map_err(|reason| SchemaError::Pattern {
                            pointer: ptr.into(),
                            pattern: re.clone(),
                            reason,
                        })?,
                    )
                }
                None => {
                    self.warn(&format!("format:{f}"), ptr);
                    None
                }
            },
            _ => None,
        };
        match (pattern, format) {
            (Some(_), Some(_)) => Err(unsupported(
                "format",
                ptr,
                "`format` together with `pattern` (the intersection is not expressible)",
            )),
            (p, f) => Ok(p.or(f)),
        }
    }

    fn string(&mut self, m: &Map<String, Value>, ex: &Exclusions, ptr: &str) -> Result<Frag> {
        let min = non_negative(m, "minLength", ptr)?.unwrap_or(0);
        let max = non_negative(m, "maxLength", ptr)?;
        if max.is_some_and(|mx| mx < min) {
            return Ok(None);
        }
        let max = max.map(|mx| mx.min(min.max(self.cfg.max_count)));
        let excluded: Vec<&str> = ex.values.iter().filter_map(Value::as_str).collect();
        let language = self.string_language(m, ptr)?;
        if !excluded.is_empty() {
            if language.is_some() || min > 0 || max.is_some() {
                return Err(unsupported(
                    "not",
                    ptr,
                    "excluding strings from a constrained string",
                ));
            }
            return Ok(Some(string_excluding(excluded)));
        }
        match language {
            Some(hir) => {
                let hir = restrict_length(hir, min, max).map_err(|reason| {
                    unsupported("maxLength", ptr, format!("with pattern/format: {reason}"))
                })?;
                let body = encode_json(&hir);
                if body.properties().minimum_len().is_none() {
                    return Ok(None);
                }
                Ok(Some(format!("\"{body}\"")))
            }
            None => Ok(Some(match (min, max) {
                (0, None) => ANY_STRING.to_string(),
                (a, None) => format!("\"{STRING_CHAR}{{{a},}}\""),
                (a, Some(b)) if a == b => format!("\"{STRING_CHAR}{{{a}}}\""),
                (a, Some(b)) => format!("\"{STRING_CHAR}{{{a},{b}}}\""),
            })),
        }
    }

    /// Whether a property name surely satisfies a `propertyNames` schema.
    fn name_allowed(&self, names: &Value, name: &str) -> bool {
        self.verdict(names, &Value::String(name.to_string()), 0) == crate::verdict::Verdict::Valid
    }

    /// Whether a property name might satisfy a `propertyNames` schema.
    fn name_possible(&self, names: &Value, name: &str) -> bool {
        self.verdict(names, &Value::String(name.to_string()), 0) != crate::verdict::Verdict::Invalid
    }

    // ----- arrays ------------------------------------------------------------------------

    fn array(&mut self, m: &Map<String, Value>, ptr: &str) -> Result<Frag> {
        let min = non_negative(m, "minItems", ptr)?.unwrap_or(0);
        let max = non_negative(m, "maxItems", ptr)?;
        if max.is_some_and(|mx| mx < min) {
            return Ok(None);
        }
        let max = max.map(|mx| mx.min(min.max(self.cfg.max_count)));
        let (prefix, rest): (Vec<Value>, Option<Value>) =
            match (m.get("prefixItems"), m.get("items")) {
                (Some(Value::Array(p)), items) => (p.clone(), items.cloned()),
                (None, Some(Value::Array(p))) => (p.clone(), m.get("additionalItems").cloned()),
                (None, Some(items)) => (Vec::new(), Some(items.clone())),
                (None, None) => (Vec::new(), None),
                (Some(_), _) => return Err(invalid(ptr, "`prefixItems` must be an array")),
            };
        let rest = rest.or(m.get("unevaluatedItems").cloned());
        // An array that says nothing of its items holds any values, nested one level less.
        let any_items = prefix.is_empty() && rest.is_none();
        let rest = if any_items { None } else { rest };
        if m.get("uniqueItems") == Some(&Value::Bool(true)) && max.is_none_or(|mx| mx > 1) {
            self.warn("uniqueItems", ptr);
        }
        let ws = self.ws.clone();
        let sep = format!("{ws},{ws}");
        let open = format!(r"\[{ws}");
        let close = format!(r"{ws}\]");

        let min_contains = non_negative(m, "minContains", ptr)?.unwrap_or(1);
        if let Some(contains) = m.get("contains").filter(|_| min_contains > 0) {
            if !prefix.is_empty() {
                return Err(unsupported("contains", ptr, "`contains` with tuple items"));
            }
            if m.contains_key("maxContains") {
                return Err(unsupported(
                    "maxContains",
                    ptr,
                    "an upper bound on matching items",
                ));
            }
            let item_schema = rest.clone().unwrap_or(Value::Bool(true));
            let item = self.schema(&item_schema, &child(ptr, "items"))?;
            let item = self.share(item, &child(ptr, "items"));
            let both = serde_json::json!({ "allOf": [item_schema, contains] });
            let special = self.schema(&both, &child(ptr, "contains"))?;
            let Some(special) = special else {
                return Ok(None);
            };
            // The matching items come first, then any items (a subset of the valid arrays).
            let lead = min_contains;
            if max.is_some_and(|mx| mx < lead) {
                return Ok(None);
            }
            let mut body = special.clone();
            for _ in 1..lead {
                body.push_str(&sep);
                body.push_str(&special);
            }
            let extra_min = min.saturating_sub(lead);
            let extra_max = max.map(|mx| mx - lead);
            if let Some(item) = item {
                body.push_str(&repeat_tail(&sep, &item, extra_min, extra_max));
            } else if extra_min > 0 {
                return Ok(None);
            }
            return Ok(Some(format!("{open}{body}{close}")));
        }

        // Compile tuple positions; the first one that cannot be produced ends the tuple.
        let mut items = Vec::new();
        for (i, s) in prefix.iter().enumerate() {
            if max.is_some_and(|mx| i >= mx) {
                break;
            }
            match self.schema(s, &child(&child(ptr, "prefixItems"), &i.to_string()))? {
                Some(f) => items.push(f),
                None if i < min => return Ok(None),
                None => break,
            }
        }
        let tuple_complete = items.len() == prefix.len();
        let rest_frag = match (&rest, tuple_complete) {
            _ if any_items => Some(self.any_value(self.cfg.any_depth.saturating_sub(1))),
            (_, false) => None,
            (Some(r), true) => {
                let item = self.schema(r, &child(ptr, "items"))?;
                self.share(item, &child(ptr, "items"))
            }
            // Items after a tuple are allowed by default; produced only when minItems needs them.
            (None, true) if min > prefix.len() => Some(self.any_value(self.cfg.any_depth)),
            (None, true) => None,
        };
        let n = items.len();
        if n < min && rest_frag.is_none() {
            return Ok(None);
        }
        // Tail after the tuple.
        let tail_min = min.saturating_sub(n);
        let tail_max = max.map(|mx| mx.saturating_sub(n));
        let body = if n == 0 {
            match rest_frag {
                Some(item) => match (tail_min, tail_max) {
                    (_, Some(0)) => String::new(),
                    (0, mx) => format!(
                        "(?:{item}{})?",
                        repeat_tail(&sep, &item, 0, mx.map(|m| m - 1))
                    ),
                    (a, mx) => format!(
                        "{item}{}",
                        repeat_tail(&sep, &item, a - 1, mx.map(|m| m - 1))
                    ),
                },
                None => String::new(),
            }
        } else {
            let tail = match rest_frag {
                Some(item) => repeat_tail(&sep, &item, tail_min, tail_max),
                None => String::new(),
            };
            // Positions >= min are optional, and each needs the ones before it.
            let mut acc = tail;
            for i in (0..n).rev() {
                let piece = if i == 0 {
                    items[i].clone()
                } else {
                    format!("{sep}{}", items[i])
                };
                acc = if i >= min {
                    format!("(?:{piece}{acc})?")
                } else {
                    format!("{piece}{acc}")
                };
                if acc.len() > self.cfg.max_size {
                    return Err(SchemaError::TooLarge {
                        size: acc.len(),
                        limit: self.cfg.max_size,
                    });
                }
            }
            acc
        };
        Ok(Some(format!("{open}{body}{close}")))
    }

    // ----- objects -----------------------------------------------------------------------

    fn object(&mut self, m: &Map<String, Value>, ex: &Exclusions, ptr: &str) -> Result<Frag> {
        let min_props = non_negative(m, "minProperties", ptr)?.unwrap_or(0);
        let max_props = non_negative(m, "maxProperties", ptr)?;
        if max_props.is_some_and(|mx| mx < min_props) {
            return Ok(None);
        }
        // Borrowed, not copied: a property's schema is a whole subtree.
        let declared: Vec<(&String, &Value)> = match m.get("properties") {
            None => Vec::new(),
            Some(Value::Object(p)) => p.iter().collect(),
            Some(_) => return Err(invalid(ptr, "`properties` must be an object")),
        };
        let mut required = string_list(m.get("required"));
        let patterns: Vec<(String, Value)> = match m.get("patternProperties") {
            None => Vec::new(),
            Some(Value::Object(p)) => p.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => return Err(invalid(ptr, "`patternProperties` must be an object")),
        };
        let additional = m
            .get("additionalProperties")
            .or_else(|| m.get("unevaluatedProperties"))
            .cloned();
        let names_schema = m.get("propertyNames").cloned();
        // Dependencies: a property's dependents become required whenever it can appear.
        if let Some(Value::Object(deps)) = m.get("dependentRequired") {
            let mut changed = true;
            while changed {
                changed = false;
                for (name, list) in deps {
                    if declared.iter().any(|(k, _)| *k == name) || required.contains(name) {
                        for d in string_list(Some(list)) {
                            if !required.contains(&d) {
                                required.push(d);
                                changed = true;
                            }
                        }
                    }
                }
            }
        }
        let pattern_langs: Vec<(Hir, Value)> = patterns
            .iter()
            .map(|(p, s)| {
                pattern_language(p)
                    .map(|h| (h, s.clone()))
                    .map_err(|reason| SchemaError::Pattern {
                        pointer: child(ptr, "patternProperties"),
                        pattern: p.clone(),
                        reason,
                    })
            })
            .collect::<Result<_>>()?;
        // Each pattern is built into a matcher once, then tested against every name.
        let key_matchers: Vec<Option<regex_automata::meta::Regex>> =
            pattern_langs.iter().map(|(h, _)| full_matcher(h)).collect();
        let key_matches =
            |i: usize, name: &str| key_matchers[i].as_ref().is_some_and(|re| re.is_match(name));
        // Declared properties, then required names that are not declared.
        let mut props: Vec<(Cow<str>, Cow<Value>)> = declared
            .iter()
            .map(|&(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v)))
            .collect();
        for r in &required {
            if !props.iter().any(|(k, _)| k == r) {
                let from_patterns: Vec<Value> = pattern_langs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| key_matches(*i, r))
                    .map(|(_, (_, s))| s.clone())
                    .collect();
                let schema = if !from_patterns.is_empty() {
                    serde_json::json!({ "allOf": from_patterns })
                } else {
                    additional.clone().unwrap_or(Value::Bool(true))
                };
                props.push((Cow::Owned(r.clone()), Cow::Owned(schema)));
            }
        }
        let mut pieces: Vec<(String, bool)> = Vec::new();
        let ws = self.ws.clone();
        for (name, schema) in &props {
            let name: &str = name;
            let is_required = required.iter().any(|r| r == name);
            let pp = child(&child(ptr, "properties"), name);
            let forbidden = ex.properties.iter().any(|p| p == name)
                || match &names_schema {
                    Some(ns) => !self.name_allowed(ns, name),
                    None => false,
                };
            if forbidden {
                if is_required {
                    return Ok(None);
                }
                continue;
            }
            let matching: Vec<Value> = pattern_langs
                .iter()
                .enumerate()
                .filter(|(i, _)| key_matches(*i, name))
                .map(|(_, (_, s))| s.clone())
                .collect();
            let schema = if matching.is_empty() {
                Cow::Borrowed(&**schema)
            } else {
                let mut all = vec![schema.clone().into_owned()];
                all.extend(matching);
                Cow::Owned(serde_json::json!({ "allOf": all }))
            };
            let value = self.schema(&schema, &pp)?;
            match self.share(value, &pp) {
                Some(v) => {
                    pieces.push((format!("{}{ws}:{ws}{v}", string_literal(name)), is_required))
                }
                None if is_required => return Ok(None),
                None => {}
            }
        }
        // Keys beyond the declared ones.
        let known: Vec<&str> = props
            .iter()
            .map(|(k, _)| &**k)
            .chain(ex.properties.iter().map(String::as_str))
            .collect();
        let open_default = declared.is_empty() && patterns.is_empty() || self.cfg.open_objects;
        let extra: Option<String> = if !pattern_langs.is_empty() {
            let clash = known
                .iter()
                .any(|k| (0..pattern_langs.len()).any(|i| key_matches(i, k)));
            if clash || names_schema.is_some() {
                None
            } else {
                let schemas: Vec<Value> = pattern_langs.iter().map(|(_, s)| s.clone()).collect();
                let value = self.schema(
                    &serde_json::json!({ "allOf": schemas }),
                    &child(ptr, "patternProperties"),
                )?;
                let keys =
                    Hir::alternation(pattern_langs.iter().map(|(h, _)| encode_json(h)).collect());
                value.map(|v| format!("\"{keys}\"{ws}:{ws}{v}"))
            }
        } else {
            let value_schema = match &additional {
                Some(Value::Bool(false)) => None,
                Some(s) => Some(s.clone()),
                None if open_default => Some(Value::Bool(true)),
                None => None,
            };
            match value_schema {
                None => None,
                Some(s) => {
                    let key = match &names_schema {
                        None => Some(string_excluding(known.iter().copied())),
                        Some(ns) => {
                            let clash = known.iter().any(|k| self.name_possible(ns, k));
                            let mut ns_map = ns.as_object().cloned().unwrap_or_default();
                            ns_map
                                .entry("type")
                                .or_insert(Value::String("string".into()));
                            if clash {
                                None
                            } else {
                                self.schema(&Value::Object(ns_map), &child(ptr, "propertyNames"))?
                            }
                        }
                    };
                    let value =
                        if additional.is_none() && declared.is_empty() && patterns.is_empty() {
                            // An object that says nothing of its values: any values, nested one
                            // level less.
                            Some(self.any_value(self.cfg.any_depth.saturating_sub(1)))
                        } else {
                            self.schema(&s, &child(ptr, "additionalProperties"))?
                        };
                    match (key, value) {
                        // The encoding repeats the extra member in several places; in rules
                        // mode a long one (the key that avoids many declared names) is
                        // written once.
                        (Some(k), Some(v)) => self.share(
                            Some(format!("{k}{ws}:{ws}{v}")),
                            &child(ptr, "additionalProperties"),
                        ),
                        _ => None,
                    }
                }
            }
        };
        if extra.is_some() && min_props > pieces.len() {
            // Extra members could repeat a key (`{"k":1,"k":2}`), which a parser reads as one
            // member: the regex cannot guarantee the count.
            return Err(unsupported(
                "minProperties",
                ptr,
                "reaching minProperties needs undeclared members, whose keys a regex cannot keep distinct",
            ));
        }
        let body = self.assemble(&pieces, extra.as_deref(), min_props, max_props)?;
        Ok(body.map(|b| format!(r"\{{{ws}{b}{ws}\}}")))
    }

    /// The members of an object: declared pieces in order (each required or optional), then
    /// any number of extra members, with commas only between members and the member count
    /// within `min..=max`.
    fn assemble(
        &mut self,
        pieces: &[(String, bool)],
        extra: Option<&str>,
        min: usize,
        max: Option<usize>,
    ) -> Result<Frag> {
        let sep = format!("{0},{0}", self.ws);
        if max.is_none() && min <= pieces.iter().filter(|p| p.1).count() {
            return Ok(Some(self.assemble_linear(pieces, extra, &sep)?));
        }
        let n = pieces.len();
        // Counts that matter: 0 vs "some" for commas, and exact counts up to the bounds.
        let cap = match max {
            Some(mx) => mx + 1,
            None => min.max(1),
        };
        // table[c] = regex for members from position i on, given c members so far (c capped).
        let mut next: Vec<Frag> = (0..=cap)
            .map(|c| {
                if max.is_some_and(|mx| c > mx) {
                    return None;
                }
                let lo = min.saturating_sub(c);
                let hi = max.map(|mx| mx - c);
                match extra {
                    None => (lo == 0).then(String::new),
                    Some(x) => {
                        if c == 0 {
                            match (lo, hi) {
                                (_, Some(0)) => (lo == 0).then(String::new),
                                (0, h) => Some(format!(
                                    "(?:{x}{})?",
                                    repeat_tail(&sep, x, 0, h.map(|h| h - 1))
                                )),
                                (l, h) => Some(format!(
                                    "{x}{}",
                                    repeat_tail(&sep, x, l - 1, h.map(|h| h - 1))
                                )),
                            }
                        } else {
                            Some(repeat_tail(&sep, x, lo, hi))
                        }
                    }
                }
            })
            .collect();
        // When only "zero or some" matters (no max, min <= 1), counts 1.. share a suffix.
        for i in (0..n).rev() {
            let (piece, required) = (&pieces[i].0, pieces[i].1);
            let mut cur: Vec<Frag> = Vec::with_capacity(cap + 1);
            for c in 0..=cap {
                if max.is_some_and(|mx| c > mx) {
                    cur.push(None);
                    continue;
                }
                let c1 = (c + 1).min(cap);
                let lead = if c == 0 {
                    piece.clone()
                } else {
                    format!("{sep}{piece}")
                };
                let take = next[c1].as_ref().map(|rest| format!("{lead}{rest}"));
                let frag = if required {
                    take
                } else if c1 == c {
                    next[c].as_ref().map(|rest| format!("(?:{lead})?{rest}"))
                } else {
                    match (take, next[c].clone()) {
                        (Some(t), Some(s)) if s.is_empty() => Some(format!("(?:{t})?")),
                        (Some(t), Some(s)) => Some(format!("(?:{t}|{s})")),
                        (t, s) => t.or(s),
                    }
                };
                self.grow(&frag)?;
                cur.push(frag);
            }
            next = cur;
        }
        Ok(next[0].take())
    }
}

impl Ctx<'_> {
    /// [`Ctx::assemble`] without count bounds: the optional members before the first required
    /// one as [`ordered_subsets`], the members after it each optional in turn.
    fn assemble_linear(
        &mut self,
        pieces: &[(String, bool)],
        extra: Option<&str>,
        sep: &str,
    ) -> Result<String> {
        let first_required = pieces.iter().position(|p| p.1);
        let lead_end = first_required.unwrap_or(pieces.len());
        // Non-empty ordered subsets of the optional members before the first required one.
        let lead: Vec<&str> = pieces[..lead_end].iter().map(|p| p.0.as_str()).collect();
        let lead_size: usize = lead.iter().map(|p| p.len()).sum();
        if lead_size > self.cfg.max_size {
            return Err(SchemaError::TooLarge {
                size: lead_size,
                limit: self.cfg.max_size,
            });
        }
        let head = (!lead.is_empty()).then(|| ordered_subsets(&lead, sep));
        self.grow(&head)?;
        let mut tail = String::new();
        if let Some(r) = first_required {
            for (piece, required) in &pieces[r + 1..] {
                if *required {
                    tail.push_str(&format!("{sep}{piece}"));
                } else {
                    tail.push_str(&format!("(?:{sep}{piece})?"));
                }
            }
            if let Some(x) = extra {
                tail.push_str(&format!("(?:{sep}{x})*"));
            }
            let body = match head {
                Some(h) => format!("(?:{h}{sep})?{}{tail}", pieces[r].0),
                None => format!("{}{tail}", pieces[r].0),
            };
            return Ok(body);
        }
        // No required member: possibly nothing at all.
        Ok(match (head, extra) {
            (None, None) => String::new(),
            (Some(h), None) => format!("(?:{h})?"),
            (None, Some(x)) => format!("(?:{x}(?:{sep}{x})*)?"),
            (Some(h), Some(x)) => format!("(?:{h}(?:{sep}{x})*|{x}(?:{sep}{x})*)?"),
        })
    }
}

/// Members per level of [`ordered_subsets`]: each level nests the regex about three times this
/// deep (regex-syntax counts a group, its alternation and a concatenation).
const SUBSET_FAN_OUT: usize = 8;

/// A regex for the non-empty ordered subsets of `pieces`, joined by `sep`.
///
/// For members p1..pn, `H(j) = (?:H(j-1)(?:,pj)?|pj)` writes each member twice, never once per
/// later member as the naive "which member comes first" alternation would, but nests once per
/// member, and regex-syntax refuses more than 250 levels (about 80 members). So the members
/// are cut into at most [`SUBSET_FAN_OUT`] consecutive blocks, themselves cut the same way:
/// over blocks, `H(B1..Bb) = (?:H(B1..Bb-1)(?:,p)?..(?:,p)?|H(Bb))` with one optional
/// `(?:,p)?` per member of `Bb`. A member is written once per level plus once more (four times
/// for up to 512 members), and the regex nests about `3 * SUBSET_FAN_OUT` levels per level of
/// blocks (a logarithmic depth). Up to `SUBSET_FAN_OUT` members this is exactly `H(n)`.
fn ordered_subsets(pieces: &[&str], sep: &str) -> String {
    if let [one] = pieces {
        return (*one).to_string();
    }
    let mut block = 1;
    while pieces.len().div_ceil(block) > SUBSET_FAN_OUT {
        block *= SUBSET_FAN_OUT;
    }
    let mut head: Option<String> = None;
    for members in pieces.chunks(block) {
        let sub = ordered_subsets(members, sep);
        head = Some(match head {
            None => sub,
            Some(h) => {
                let tail: String = members.iter().map(|p| format!("(?:{sep}{p})?")).collect();
                format!("(?:{h}{tail}|{sub})")
            }
        });
    }
    head.unwrap_or_default()
}

/// The reference of a schema that is only a `$ref` (plus annotations), else `None`.
fn reference_only(s: &Value) -> Option<&str> {
    let m = s.as_object()?;
    let r = m.get("$ref")?.as_str()?;
    m.keys()
        .all(|k| k == "$ref" || ANNOTATIONS.contains(&k.as_str()))
        .then_some(r)
}

/// Any JSON value whose array items and object member values are `inner`.
fn any_containing(ws: &str, inner: &str) -> String {
    format!(
        r"(?:null|true|false|{ANY_NUMBER}|{ANY_STRING}|\[{ws}(?:{inner}(?:{ws},{ws}{inner})*)?{ws}\]|\{{{ws}(?:{ANY_STRING}{ws}:{ws}{inner}(?:{ws},{ws}{ANY_STRING}{ws}:{ws}{inner})*)?{ws}\}})"
    )
}

/// `(?:sep item){lo,hi}` with `hi = None` unbounded.
fn repeat_tail(sep: &str, item: &str, lo: usize, hi: Option<usize>) -> String {
    match (lo, hi) {
        (_, Some(0)) => String::new(),
        (0, None) => format!("(?:{sep}{item})*"),
        (l, None) => format!("(?:{sep}{item}){{{l},}}"),
        (l, Some(h)) if l == h => format!("(?:{sep}{item}){{{l}}}"),
        (l, Some(h)) => format!("(?:{sep}{item}){{{l},{h}}}"),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}
