//! The compiled form: a context-free grammar over lexemes (small regexes), and the lowering
//! from a [`RuleSet`] to it.
//!
//! Lowering decides the lexemes. A part of a rule body that is regular (no reference, or only
//! references to rules that are themselves regular and not recursive) and small
//! ([`GrammarConfig::lexeme_size`]) becomes one lexeme, matched by one lazily built DFA:
//! inside it, masks come from `formwork-index` at the cost of a table lookup. Larger or
//! recursive parts become productions: an alternation is a nonterminal with one production
//! per branch, a concatenation a sequence (runs of small regular parts merged into one
//! lexeme), `e*` the left-recursive `S → ε | S e` (constant Earley work per repetition) and
//! `e{m,n}` the `m` copies followed by a chain of `n − m` optional ones.
//!
//! The parser reads lexemes byte by byte and lets one end wherever its regex matches (the
//! language of the grammar is exactly the language of the rules: no greedy lexing), so how
//! lowering cuts a body into lexemes changes the cost, never the language.

use std::collections::HashMap;

use regex_syntax::hir::{Hir, HirKind};

use crate::GrammarError;
use crate::expr::{Expr, RuleId, RuleSet};

/// A symbol of a production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Symbol {
    /// A nonterminal ([`Grammar::rule_name`]).
    Rule(u32),
    /// A lexeme ([`Grammar::lexeme`]).
    Lexeme(u32),
}

/// One production: `lhs → rhs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Production {
    /// The nonterminal it defines.
    pub lhs: u32,
    /// What it derives (empty: the empty string).
    pub rhs: Box<[Symbol]>,
}

/// Most [`hir_size`] units of small parts copied into each branch of a large alternation
/// that they follow.
const GLUE_SIZE: usize = 256;

/// A bounded repetition larger than this ([`hir_size`] units; a JSON string counted to more
/// than about 75 characters) is a *long repetition* ([`long_repetition`]).
pub(crate) const LONG_REPETITION: usize = 8192;

/// Regular parts larger than this ([`hir_size`] units) are cut where an object's members
/// begin ([`Lowering::regular`]): a lexeme's automaton is built when the parser first
/// predicts it, and the optional members of a large object are all predicted at once while
/// few of them are ever written. Cut, only a member's key is built until the text takes it.
const SPLIT_SIZE: usize = 8192;

/// Whether `hir` is a long repetition: bounded, over [`LONG_REPETITION`] units. Its automaton
/// holds a copy of its body per count, the costliest kind of lexeme to build, so lowering
/// gives it a lexeme of its own, closed by the one character after it: the same lexeme
/// wherever the same repetition appears (every string property with one `maxLength` shares
/// one automaton), not merged with the key or the members around it.
pub(crate) fn long_repetition(hir: &Hir) -> bool {
    matches!(hir.kind(), HirKind::Repetition(r) if r.max.is_some())
        && hir_size_within(hir, LONG_REPETITION).is_none()
}

/// Whether somewhere in `hir` a long repetition is followed by a literal: the repetition can
/// then be a lexeme of its own, closed by the literal's first character.
pub(crate) fn holds_closed_long_repetition(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Repetition(r) => holds_closed_long_repetition(&r.sub),
        HirKind::Capture(c) => holds_closed_long_repetition(&c.sub),
        HirKind::Concat(parts) => {
            parts
                .windows(2)
                .any(|w| long_repetition(&w[0]) && matches!(w[1].kind(), HirKind::Literal(_)))
                || parts.iter().any(holds_closed_long_repetition)
        }
        HirKind::Alternation(parts) => parts.iter().any(holds_closed_long_repetition),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => false,
    }
}

/// Whether `part` is a long repetition closed by `next`, one character.
fn closed_long(part: &Expr, next: Option<&Expr>) -> bool {
    matches!(part, Expr::Regular(h) if long_repetition(h)) && next.is_some_and(one_character)
}

/// Whether `e` is one character: a literal of one UTF-8 character, or a class.
fn one_character(e: &Expr) -> bool {
    match e {
        Expr::Regular(h) => match h.kind() {
            HirKind::Literal(l) => std::str::from_utf8(&l.0).is_ok_and(|t| t.chars().count() == 1),
            HirKind::Class(_) => true,
            _ => false,
        },
        _ => false,
    }
}

/// Limits and choices of [`RuleSet::compile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrammarConfig {
    /// Largest regular part (in [`hir_size`] units, about NFA states) merged into one lexeme.
    pub lexeme_size: usize,
    /// Largest bounded repetition of a regular part kept inside one lexeme, in the same
    /// units; a larger one becomes a chain of productions.
    pub repeat_size: usize,
    /// Most productions the compiled grammar may have.
    pub max_productions: usize,
    /// Most symbols, over all productions.
    pub max_symbols: usize,
    /// Most lexemes.
    pub max_lexemes: usize,
}

impl Default for GrammarConfig {
    fn default() -> Self {
        GrammarConfig {
            lexeme_size: 16384,
            repeat_size: 1 << 17,
            max_productions: 1 << 18,
            max_symbols: 1 << 20,
            max_lexemes: 1 << 16,
        }
    }
}

/// A compiled grammar: nonterminals, productions over nonterminals and lexemes, and each
/// lexeme's regex. Immutable; the parser and guides read it.
#[derive(Debug, Clone)]
pub struct Grammar {
    names: Vec<String>,
    /// Productions of nonterminal `n` are `productions[first[n]..first[n + 1]]`.
    first: Vec<u32>,
    productions: Vec<Production>,
    lexemes: Vec<Lexeme>,
    nullable: Vec<bool>,
    start: u32,
}

/// A lexeme: a regex matched in full over bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexeme {
    /// The regex, parsed (what its automaton is built from; [`Lexeme::regex`] prints it).
    pub hir: Hir,
    /// Whether it matches the empty string.
    pub nullable: bool,
}

impl Lexeme {
    /// The regex, in regex-syntax's syntax.
    pub fn regex(&self) -> String {
        self.hir.to_string()
    }
}

impl Grammar {
    /// The start nonterminal.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Number of nonterminals.
    pub fn rule_count(&self) -> usize {
        self.names.len()
    }

    /// The name of nonterminal `n` (made-up ones hold `#`).
    pub fn rule_name(&self, n: u32) -> &str {
        &self.names[n as usize]
    }

    /// The productions of nonterminal `n`.
    pub fn productions_of(&self, n: u32) -> &[Production] {
        &self.productions[self.first[n as usize] as usize..self.first[n as usize + 1] as usize]
    }

    /// The index range of the productions of `n` in [`Grammar::productions`].
    pub fn production_range(&self, n: u32) -> std::ops::Range<usize> {
        self.first[n as usize] as usize..self.first[n as usize + 1] as usize
    }

    /// Every production, grouped by nonterminal.
    pub fn productions(&self) -> &[Production] {
        &self.productions
    }

    /// Every lexeme.
    pub fn lexemes(&self) -> &[Lexeme] {
        &self.lexemes
    }

    /// Lexeme `l`.
    pub fn lexeme(&self, l: u32) -> &Lexeme {
        &self.lexemes[l as usize]
    }

    /// Whether nonterminal `n` derives the empty string.
    pub fn is_nullable(&self, n: u32) -> bool {
        self.nullable[n as usize]
    }

    /// Whether `symbol` derives the empty string.
    pub fn symbol_nullable(&self, symbol: Symbol) -> bool {
        match symbol {
            Symbol::Rule(n) => self.nullable[n as usize],
            Symbol::Lexeme(l) => self.lexemes[l as usize].nullable,
        }
    }

    /// Approximate heap bytes held.
    pub fn memory_usage(&self) -> usize {
        self.names.iter().map(|n| n.len() + 24).sum::<usize>()
            + self.first.len() * 4
            + self
                .productions
                .iter()
                .map(|p| 24 + p.rhs.len() * 8)
                .sum::<usize>()
            + self
                .lexemes
                .iter()
                // A few words per unit of the parsed form.
                .map(|l| hir_size(&l.hir).saturating_mul(16) + 64)
                .sum::<usize>()
            + self.nullable.len()
    }
}

impl std::fmt::Display for Grammar {
    /// One line per production, `name ::= symbols`, lexemes as `/regex/`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.productions {
            write!(f, "{} ::=", self.names[p.lhs as usize])?;
            if p.rhs.is_empty() {
                write!(f, " ε")?;
            }
            for s in p.rhs.iter() {
                match *s {
                    Symbol::Rule(n) => write!(f, " {}", self.names[n as usize])?,
                    Symbol::Lexeme(l) => write!(f, " /{}/", self.lexemes[l as usize].hir)?,
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Whether `hir` opens a member of an object as the compiler writes one: a literal (a key,
/// or the comma before one), or a concatenation or optional part that opens with one.
fn opens_member(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Literal(_) => true,
        HirKind::Concat(parts) => parts.first().is_some_and(opens_member),
        HirKind::Repetition(r) => r.min == 0 && r.max == Some(1) && opens_member(&r.sub),
        _ => false,
    }
}

/// Feeds `hir`'s structure to `state`: equal HIRs hash equally (a cheaper key for finding a
/// lexeme again than its printed text).
fn hash_hir(hir: &Hir, state: &mut impl std::hash::Hasher) {
    use regex_syntax::hir::Class;
    use std::hash::Hash;
    match hir.kind() {
        HirKind::Empty => 0u8.hash(state),
        HirKind::Literal(l) => {
            1u8.hash(state);
            l.0.hash(state);
        }
        HirKind::Class(Class::Unicode(c)) => {
            2u8.hash(state);
            for r in c.ranges() {
                (r.start(), r.end()).hash(state);
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            3u8.hash(state);
            for r in c.ranges() {
                (r.start(), r.end()).hash(state);
            }
        }
        HirKind::Look(l) => {
            4u8.hash(state);
            l.as_repr().hash(state);
        }
        HirKind::Repetition(r) => {
            5u8.hash(state);
            (r.min, r.max, r.greedy).hash(state);
            hash_hir(&r.sub, state);
        }
        HirKind::Capture(c) => {
            6u8.hash(state);
            (c.index, &c.name).hash(state);
            hash_hir(&c.sub, state);
        }
        HirKind::Concat(parts) | HirKind::Alternation(parts) => {
            (if matches!(hir.kind(), HirKind::Concat(_)) {
                7u8
            } else {
                8u8
            })
            .hash(state);
            parts.len().hash(state);
            for p in parts {
                hash_hir(p, state);
            }
        }
    }
}

/// The size of `hir` in rough NFA states: literal bytes, class ranges (Unicode ones count
/// for their UTF-8 sequences), times the repetition counts. Saturates.
pub fn hir_size(hir: &Hir) -> usize {
    // Only a saturated size exceeds an unlimited budget.
    hir_size_within(hir, usize::MAX).unwrap_or(usize::MAX)
}

/// [`hir_size`] of `hir` if it is at most `budget`, else `None`, found without looking at
/// more than about `budget` units of it (a caller that asks at every level of a large HIR
/// stays linear).
pub fn hir_size_within(hir: &Hir, budget: usize) -> Option<usize> {
    let size = match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(l) => l.0.len(),
        HirKind::Class(regex_syntax::hir::Class::Bytes(c)) => c.ranges().len(),
        HirKind::Class(regex_syntax::hir::Class::Unicode(c)) => c.ranges().len().saturating_mul(4),
        HirKind::Repetition(r) => {
            let count = r.max.unwrap_or(r.min.saturating_add(1)).max(1) as usize;
            hir_size_within(&r.sub, budget / count)?.saturating_mul(count)
        }
        HirKind::Capture(c) => hir_size_within(&c.sub, budget)?,
        HirKind::Concat(parts) | HirKind::Alternation(parts) => {
            let mut total = 1usize;
            for p in parts {
                total = total.saturating_add(hir_size_within(p, budget.checked_sub(total)?)?);
            }
            total
        }
    };
    (size <= budget).then_some(size)
}

impl RuleSet {
    /// Lowers the rules reachable from `start` to a [`Grammar`]: checks every reference is
    /// defined and the language is not empty, then cuts the bodies into lexemes and
    /// productions (see the module docs).
    pub fn compile(&self, start: RuleId, config: &GrammarConfig) -> Result<Grammar, GrammarError> {
        Lowering::new(self, config).run(start)
    }
}

/// What lowering knows of a rule's body once inlined.
#[derive(Debug, Clone)]
enum Shape {
    /// Not looked at yet.
    Unknown,
    /// Being looked at (a reference back here is recursion).
    Visiting,
    /// Regular, of this size.
    Regular(usize),
    /// Recursive, or too large to inline.
    Irregular,
}

struct Lowering<'a> {
    set: &'a RuleSet,
    config: &'a GrammarConfig,
    shapes: Vec<Shape>,
    /// The nonterminal of each rule of the set that got one.
    nonterminal: HashMap<RuleId, u32>,
    names: Vec<String>,
    /// Productions per nonterminal, in creation order.
    bodies: Vec<Vec<Vec<Symbol>>>,
    lexemes: Vec<Lexeme>,
    /// Whether each lexeme matches some string (from its HIR, so nothing is parsed again).
    matchable: Vec<bool>,
    /// The lexemes by the hash of their HIR ([`hash_hir`]).
    lexeme_ids: HashMap<u64, Vec<u32>>,
    /// Rules whose nonterminal still needs its productions.
    pending: Vec<RuleId>,
    /// [`Lowering::size`] of each expression node looked at, by address.
    sizes: HashMap<usize, Option<usize>>,
    productions: usize,
    symbols: usize,
    /// Rules being inlined, one inside the other ([`MAX_INLINE_DEPTH`] at most).
    inlining: usize,
    /// Times the depth limit stopped a look inside a rule.
    cuts: usize,
}

/// How deep references are followed to inline a regular rule: a chain longer than this keeps
/// its rules as nonterminals (lowering never recurses once per reference without bound).
const MAX_INLINE_DEPTH: usize = 32;

impl<'a> Lowering<'a> {
    fn new(set: &'a RuleSet, config: &'a GrammarConfig) -> Self {
        Lowering {
            set,
            config,
            shapes: vec![Shape::Unknown; set.len()],
            nonterminal: HashMap::new(),
            names: Vec::new(),
            bodies: Vec::new(),
            lexemes: Vec::new(),
            matchable: Vec::new(),
            lexeme_ids: HashMap::new(),
            pending: Vec::new(),
            sizes: HashMap::new(),
            productions: 0,
            symbols: 0,
            inlining: 0,
            cuts: 0,
        }
    }

    fn run(mut self, start: RuleId) -> Result<Grammar, GrammarError> {
        self.check_defined(start)?;
        let start_nt = self.nonterminal_of(start);
        while let Some(rule) = self.pending.pop() {
            let nt = self.nonterminal[&rule];
            let body = self
                .set
                .body(rule)
                .ok_or_else(|| GrammarError::Undefined(self.set.name(rule).to_owned()))?;
            self.define(nt, body)?;
        }
        self.finish(start_nt)
    }

    /// Every rule reachable from `start` has a body.
    fn check_defined(&self, start: RuleId) -> Result<(), GrammarError> {
        let mut seen = vec![false; self.set.len()];
        let mut stack = vec![start];
        seen[start.index()] = true;
        let mut refs = Vec::new();
        while let Some(r) = stack.pop() {
            let body = self
                .set
                .body(r)
                .ok_or_else(|| GrammarError::Undefined(self.set.name(r).to_owned()))?;
            refs.clear();
            references(body, &mut refs);
            for &x in &refs {
                if !seen[x.index()] {
                    seen[x.index()] = true;
                    stack.push(x);
                }
            }
        }
        Ok(())
    }

    fn new_nonterminal(&mut self, name: String) -> u32 {
        self.names.push(name);
        self.bodies.push(Vec::new());
        (self.names.len() - 1) as u32
    }

    fn nonterminal_of(&mut self, rule: RuleId) -> u32 {
        if let Some(&n) = self.nonterminal.get(&rule) {
            return n;
        }
        let n = self.new_nonterminal(self.set.name(rule).to_owned());
        self.nonterminal.insert(rule, n);
        self.pending.push(rule);
        n
    }

    fn fresh(&mut self, parent: u32, what: &str) -> u32 {
        let name = format!(
            "{}#{}{}",
            self.names[parent as usize],
            what,
            self.names.len()
        );
        self.new_nonterminal(name)
    }

    fn add(&mut self, nt: u32, rhs: Vec<Symbol>) -> Result<(), GrammarError> {
        self.productions += 1;
        self.symbols += rhs.len();
        if self.productions > self.config.max_productions {
            return Err(GrammarError::TooLarge {
                limit: "productions",
                max: self.config.max_productions,
            });
        }
        if self.symbols > self.config.max_symbols {
            return Err(GrammarError::TooLarge {
                limit: "symbols",
                max: self.config.max_symbols,
            });
        }
        self.bodies[nt as usize].push(rhs);
        Ok(())
    }

    /// The productions of `nt` for `body`: one per top-level alternative.
    fn define(&mut self, nt: u32, body: &Expr) -> Result<(), GrammarError> {
        if self.size(body)?.is_some() {
            let seq = self.regular(nt, self.hir(body))?;
            return self.add(nt, seq);
        }
        match body {
            Expr::Alt(alts) => {
                for a in alts {
                    let seq = self.sequence(nt, a)?;
                    self.add(nt, seq)?;
                }
                Ok(())
            }
            other => {
                let seq = self.sequence(nt, other)?;
                self.add(nt, seq)
            }
        }
    }

    /// The symbols deriving `e` in a production of `parent`.
    fn sequence(&mut self, parent: u32, e: &Expr) -> Result<Vec<Symbol>, GrammarError> {
        if self.size(e)?.is_some() {
            return self.regular(parent, self.hir(e));
        }
        match e {
            Expr::Regular(_) => Err(GrammarError::TooLarge {
                // `regular` takes every regex within `repeat_size`.
                limit: "lexeme size",
                max: self.config.repeat_size,
            }),
            Expr::Rule(r) => Ok(vec![Symbol::Rule(self.nonterminal_of(*r))]),
            Expr::Concat(parts) => {
                let parts: Vec<&Expr> = parts.iter().collect();
                self.concat(parent, &parts)
            }
            Expr::Alt(alts) => {
                let n = self.fresh(parent, "alt");
                for a in alts {
                    let seq = self.sequence(n, a)?;
                    self.add(n, seq)?;
                }
                Ok(vec![Symbol::Rule(n)])
            }
            Expr::Repeat { expr, min, max } => self.repeat(parent, expr, *min, *max),
        }
    }

    /// The symbols deriving the concatenation of `parts`. Runs of small regular parts become
    /// one lexeme, up to `lexeme_size`. A long repetition ([`long_repetition`]) is a lexeme
    /// with only the part after it, when that is one character (the reader cuts a literal
    /// after a long repetition so: a string's closing quote). Small parts after a large
    /// alternation or option are copied into each of its branches (`(a|b)c` as `ac|bc`,
    /// `a?c` as `ac|c`). Either way a lexeme does not end where only a delimiter can follow
    /// (a string's body before its closing quote, a property name before `":`): such a lexeme
    /// may end after every byte, and the parser would be asked at every node of every token.
    fn concat(&mut self, parent: u32, parts: &[&Expr]) -> Result<Vec<Symbol>, GrammarError> {
        // Nested concatenations are read as one, so a tail reaches the alternation before it.
        fn flatten<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
            match e {
                Expr::Concat(parts) => parts.iter().for_each(|p| flatten(p, out)),
                _ => out.push(e),
            }
        }
        let mut flat = Vec::with_capacity(parts.len());
        parts.iter().for_each(|p| flatten(p, &mut flat));
        let parts = &flat[..];
        let mut out = Vec::new();
        let mut run: Vec<&Expr> = Vec::new();
        let mut run_size = 0usize;
        let mut k = 0;
        while k < parts.len() {
            let p = parts[k];
            k += 1;
            let size = self.size(p)?;
            let long = closed_long(p, parts.get(k).copied());
            let fits = match size {
                Some(size) if !long && size <= self.config.lexeme_size => {
                    run_size.saturating_add(size) <= self.config.lexeme_size
                }
                // A large repetition that nothing closes goes with what is around it.
                Some(size) if !long => run_size.saturating_add(size) <= self.config.repeat_size,
                _ => false,
            };
            if !fits && !run.is_empty() {
                let hir = self.hir_concat(&run);
                out.extend(self.regular(parent, hir)?);
                run.clear();
                run_size = 0;
            }
            match (size, p) {
                (Some(_), _) if long => {
                    let hir = self.hir_concat(&[p, parts[k]]);
                    k += 1;
                    out.extend(self.regular(parent, hir)?);
                }
                (Some(size), _) => {
                    run.push(p);
                    run_size = run_size.saturating_add(size);
                }
                (
                    None,
                    Expr::Alt(_)
                    | Expr::Repeat {
                        min: 0,
                        max: Some(1),
                        ..
                    },
                ) => {
                    // `(a|b)` has the branches `a` and `b`; `a?` has `a` and nothing.
                    let branches: Vec<Option<&Expr>> = match p {
                        Expr::Alt(alts) => alts.iter().map(Some).collect(),
                        Expr::Repeat { expr, .. } => vec![Some(&**expr), None],
                        _ => Vec::new(),
                    };
                    // The small regular parts that follow, up to `GLUE_SIZE`.
                    let mut tail = Vec::new();
                    let mut tail_size = 0usize;
                    while let Some(&q) = parts.get(k) {
                        match self.size(q)? {
                            Some(s) if tail_size.saturating_add(s) <= GLUE_SIZE => {
                                tail.push(q);
                                tail_size += s;
                                k += 1;
                            }
                            _ => break,
                        }
                    }
                    if tail.is_empty() {
                        out.extend(self.sequence(parent, p)?);
                        continue;
                    }
                    let n = self.fresh(parent, "alt");
                    for a in branches {
                        let mut branch: Vec<&Expr> = a.into_iter().collect();
                        branch.extend(&tail);
                        let seq = self.concat(n, &branch)?;
                        self.add(n, seq)?;
                    }
                    out.push(Symbol::Rule(n));
                }
                (None, _) => out.extend(self.sequence(parent, p)?),
            }
        }
        if !run.is_empty() {
            let hir = self.hir_concat(&run);
            out.extend(self.regular(parent, hir)?);
        }
        Ok(out)
    }

    /// `e{min,max}`: `min` copies, then `S → ε | S e` when unbounded, else a chain of
    /// `max − min` optional copies (`O_k → ε | e O_{k−1}`).
    fn repeat(
        &mut self,
        parent: u32,
        e: &Expr,
        min: u32,
        max: Option<u32>,
    ) -> Result<Vec<Symbol>, GrammarError> {
        if max.is_some_and(|m| m < min) {
            // `e{3,2}` matches nothing.
            let n = self.fresh(parent, "never");
            return Ok(vec![Symbol::Rule(n)]);
        }
        // The item as one symbol (a nonterminal when it takes several).
        let item = {
            let seq = self.sequence(parent, e)?;
            if seq.len() == 1 {
                seq[0]
            } else {
                let n = self.fresh(parent, "item");
                self.add(n, seq)?;
                Symbol::Rule(n)
            }
        };
        let copies = min as usize + max.map_or(0, |m| (m - min) as usize);
        if copies > self.config.max_symbols {
            return Err(GrammarError::TooLarge {
                limit: "symbols",
                max: self.config.max_symbols,
            });
        }
        let mut out = vec![item; min as usize];
        match max {
            None => {
                let s = self.fresh(parent, "star");
                self.add(s, vec![])?;
                self.add(s, vec![Symbol::Rule(s), item])?;
                out.push(Symbol::Rule(s));
            }
            Some(m) if m > min => {
                let mut tail: Option<u32> = None;
                for _ in 0..(m - min) {
                    let o = self.fresh(parent, "opt");
                    self.add(o, vec![])?;
                    let mut rhs = vec![item];
                    rhs.extend(tail.map(Symbol::Rule));
                    self.add(o, rhs)?;
                    tail = Some(o);
                }
                out.extend(tail.map(Symbol::Rule));
            }
            Some(_) => {}
        }
        Ok(out)
    }

    /// A regular part as symbols: one lexeme ([`Lowering::lexeme_seq`]), except that a part
    /// over [`SPLIT_SIZE`] is cut where a member of an object begins: an opening literal
    /// (a key) is a lexeme of its own before the rest, an optional part that opens with one
    /// is a nonterminal (nothing, or the part cut so), and a sequence of such members is cut
    /// before each of them (never after a repetition, which only what follows it closes).
    fn regular(&mut self, parent: u32, hir: Hir) -> Result<Vec<Symbol>, GrammarError> {
        if hir_size_within(&hir, SPLIT_SIZE).is_some() {
            return self.lexeme_seq(hir);
        }
        match hir.kind() {
            HirKind::Concat(parts) if parts.len() > 1 && opens_member(&parts[0]) => {
                let HirKind::Concat(mut parts) = hir.into_kind() else {
                    unreachable!("matched above");
                };
                let rest = Hir::concat(parts.split_off(1));
                let mut out = self.regular(parent, parts.swap_remove(0))?;
                out.extend(self.regular(parent, rest)?);
                Ok(out)
            }
            HirKind::Concat(parts) => {
                // Cut before each later member, where what precedes it is closed.
                let cuts: Vec<usize> = (1..parts.len())
                    .filter(|&k| {
                        opens_member(&parts[k]) && !matches!(parts[k - 1].kind(), HirKind::Repetition(r) if r.max != Some(1))
                    })
                    .collect();
                if cuts.is_empty() {
                    return self.lexeme_seq(hir);
                }
                let HirKind::Concat(mut parts) = hir.into_kind() else {
                    unreachable!("matched above");
                };
                let mut pieces = Vec::with_capacity(cuts.len() + 1);
                for &k in cuts.iter().rev() {
                    pieces.push(Hir::concat(parts.split_off(k)));
                }
                pieces.push(Hir::concat(parts));
                let mut out = Vec::new();
                for piece in pieces.into_iter().rev() {
                    out.extend(self.regular(parent, piece)?);
                }
                Ok(out)
            }
            HirKind::Repetition(r) if r.min == 0 && r.max == Some(1) && opens_member(&r.sub) => {
                let HirKind::Repetition(r) = hir.into_kind() else {
                    unreachable!("matched above");
                };
                let n = self.fresh(parent, "opt");
                self.add(n, Vec::new())?;
                let seq = self.regular(n, *r.sub)?;
                self.add(n, seq)?;
                Ok(vec![Symbol::Rule(n)])
            }
            _ => self.lexeme_seq(hir),
        }
    }

    /// The lexeme for a regular part (nothing for one that only matches the empty string).
    fn lexeme_seq(&mut self, hir: Hir) -> Result<Vec<Symbol>, GrammarError> {
        let props = hir.properties();
        if props.maximum_len() == Some(0) && props.minimum_len() == Some(0) {
            return Ok(Vec::new());
        }
        let key = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            hash_hir(&hir, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        if let Some(&l) = self
            .lexeme_ids
            .get(&key)
            .and_then(|ls| ls.iter().find(|&&l| self.lexemes[l as usize].hir == hir))
        {
            return Ok(vec![Symbol::Lexeme(l)]);
        }
        if self.lexemes.len() >= self.config.max_lexemes {
            return Err(GrammarError::TooLarge {
                limit: "lexemes",
                max: self.config.max_lexemes,
            });
        }
        let l = self.lexemes.len() as u32;
        self.matchable.push(props.minimum_len().is_some());
        self.lexemes.push(Lexeme {
            nullable: props.minimum_len() == Some(0),
            hir,
        });
        self.lexeme_ids.entry(key).or_default().push(l);
        Ok(vec![Symbol::Lexeme(l)])
    }

    /// The size of `e` ([`hir_size`] units) if it is regular and small enough to inline: no
    /// recursion, and within [`GrammarConfig::lexeme_size`] (bounded repetitions of a small
    /// part within [`GrammarConfig::repeat_size`]). Computed once per node (by address:
    /// the bodies do not move while lowering runs), so lowering stays linear.
    fn size(&mut self, e: &Expr) -> Result<Option<usize>, GrammarError> {
        let key = e as *const Expr as usize;
        if let Some(&known) = self.sizes.get(&key) {
            return Ok(known);
        }
        let limit = self.config.lexeme_size;
        let size = match e {
            Expr::Regular(h) => hir_size_within(h, self.config.repeat_size),
            Expr::Rule(r) => self.rule_size(*r)?,
            // A closed long repetition is a lexeme of its own: what holds one is not
            // regular here.
            Expr::Concat(parts)
                if (0..parts.len()).any(|k| closed_long(&parts[k], parts.get(k + 1))) =>
            {
                None
            }
            Expr::Concat(parts) | Expr::Alt(parts) => {
                let mut total = Some(1usize);
                for p in parts {
                    total = match (total, self.size(p)?) {
                        (Some(t), Some(s)) if t.saturating_add(s) <= limit => Some(t + s),
                        _ => None,
                    };
                    if total.is_none() {
                        break;
                    }
                }
                total
            }
            Expr::Repeat { expr, min, max } => match self.size(expr)? {
                Some(s) if s <= limit => {
                    let count = max.unwrap_or(min.saturating_add(1)).max(1) as usize;
                    Some(s.saturating_mul(count)).filter(|&t| t <= self.config.repeat_size)
                }
                _ => None,
            },
        };
        self.sizes.insert(key, size);
        Ok(size)
    }

    /// The regular size of a rule, computed once (recursion makes it irregular).
    fn rule_size(&mut self, r: RuleId) -> Result<Option<usize>, GrammarError> {
        match &self.shapes[r.index()] {
            Shape::Regular(s) => return Ok(Some(*s)),
            Shape::Irregular | Shape::Visiting => {
                self.shapes[r.index()] = Shape::Irregular;
                return Ok(None);
            }
            Shape::Unknown => {}
        }
        if self.set.is_kept(r) {
            self.shapes[r.index()] = Shape::Irregular;
            return Ok(None);
        }
        if self.inlining >= MAX_INLINE_DEPTH {
            // Too deep to look into: a nonterminal (always a sound choice).
            self.cuts += 1;
            return Ok(None);
        }
        let cuts = self.cuts;
        self.shapes[r.index()] = Shape::Visiting;
        let set = self.set;
        let body = set
            .body(r)
            .ok_or_else(|| GrammarError::Undefined(set.name(r).to_owned()))?;
        self.inlining += 1;
        let size = self.size(body);
        self.inlining -= 1;
        let size = size?;
        // A reference back to `r` inside made it irregular; cut short by the depth limit, it
        // stays a nonterminal too (sound, and each rule is looked into once).
        let regular = !(matches!(self.shapes[r.index()], Shape::Irregular)
            || (self.cuts != cuts && size.is_none()));
        self.shapes[r.index()] = match size {
            Some(s) if regular && s <= self.config.lexeme_size => Shape::Regular(s),
            _ => Shape::Irregular,
        };
        Ok(match self.shapes[r.index()] {
            Shape::Regular(s) => Some(s),
            _ => None,
        })
    }

    /// `e` as one HIR, rules inlined; only for parts [`Lowering::size`] found regular.
    fn hir(&self, e: &Expr) -> Hir {
        match e {
            Expr::Regular(h) => h.clone(),
            Expr::Rule(r) => self.set.body(*r).map_or_else(Hir::fail, |b| self.hir(b)),
            Expr::Concat(parts) => Hir::concat(parts.iter().map(|p| self.hir(p)).collect()),
            Expr::Alt(parts) => Hir::alternation(parts.iter().map(|p| self.hir(p)).collect()),
            Expr::Repeat { expr, min, max } => Hir::repetition(regex_syntax::hir::Repetition {
                min: *min,
                max: *max,
                greedy: true,
                sub: Box::new(self.hir(expr)),
            }),
        }
    }

    fn hir_concat(&self, parts: &[&Expr]) -> Hir {
        Hir::concat(parts.iter().map(|p| self.hir(p)).collect())
    }

    /// Drops what derives no string, computes nullability, and lays the productions out.
    fn finish(self, start: u32) -> Result<Grammar, GrammarError> {
        let n = self.names.len();
        let lexeme_ok = &self.matchable;
        // Productive and nullable nonterminals, each by a worklist over the productions
        // (linear: a production is looked at again only when one of its symbols changes).
        let productive = closure(&self.bodies, n, |s| match s {
            Symbol::Lexeme(l) => lexeme_ok[l as usize],
            Symbol::Rule(_) => false,
        });
        let nullable = closure(&self.bodies, n, |s| match s {
            Symbol::Lexeme(l) => self.lexemes[l as usize].nullable,
            Symbol::Rule(_) => false,
        });
        if !productive[start as usize] {
            return Err(GrammarError::Empty(self.names[start as usize].clone()));
        }
        let mut first = Vec::with_capacity(n + 1);
        let mut productions = Vec::with_capacity(self.productions);
        for (nt, prods) in self.bodies.into_iter().enumerate() {
            first.push(productions.len() as u32);
            for rhs in prods {
                let ok = rhs.iter().all(|s| match *s {
                    Symbol::Rule(m) => productive[m as usize],
                    Symbol::Lexeme(l) => lexeme_ok[l as usize],
                });
                if ok {
                    productions.push(Production {
                        lhs: nt as u32,
                        rhs: rhs.into_boxed_slice(),
                    });
                }
            }
        }
        first.push(productions.len() as u32);
        Ok(Grammar {
            names: self.names,
            first,
            productions,
            lexemes: self.lexemes,
            nullable,
            start,
        })
    }
}

/// The least set of nonterminals with a production whose symbols all have the property:
/// lexemes by `lexeme`, nonterminals by membership (productive: `lexeme` is "matches
/// something"; nullable: "matches the empty string").
fn closure(bodies: &[Vec<Vec<Symbol>>], n: usize, lexeme: impl Fn(Symbol) -> bool) -> Vec<bool> {
    let mut yes = vec![false; n];
    // For each production, how many of its nonterminal symbols are not known to have it;
    // for each nonterminal, the productions using it.
    let mut pending: Vec<(usize, usize)> = Vec::new(); // (lhs, missing)
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut work = Vec::new();
    for (nt, prods) in bodies.iter().enumerate() {
        for rhs in prods {
            let id = pending.len();
            let mut missing = 0;
            let mut dead = false;
            for &s in rhs {
                match s {
                    Symbol::Rule(m) => {
                        missing += 1;
                        users[m as usize].push(id);
                    }
                    Symbol::Lexeme(_) => dead |= !lexeme(s),
                }
            }
            // A production with a lexeme lacking the property never counts.
            pending.push((nt, if dead { usize::MAX } else { missing }));
            if !dead && missing == 0 && !yes[nt] {
                yes[nt] = true;
                work.push(nt);
            }
        }
    }
    while let Some(m) = work.pop() {
        for &id in &users[m] {
            let (lhs, missing) = &mut pending[id];
            if *missing == usize::MAX || *missing == 0 {
                continue;
            }
            *missing -= 1;
            if *missing == 0 && !yes[*lhs] {
                yes[*lhs] = true;
                work.push(*lhs);
            }
        }
    }
    yes
}

/// The rules `e` refers to.
fn references(e: &Expr, out: &mut Vec<RuleId>) {
    match e {
        Expr::Regular(_) => {}
        Expr::Rule(r) => out.push(*r),
        Expr::Concat(parts) | Expr::Alt(parts) => parts.iter().for_each(|p| references(p, out)),
        Expr::Repeat { expr, .. } => references(expr, out),
    }
}
