//! The Earley parser: one item set per byte, lexemes read by their DFAs inside the sets.
//!
//! An item is either a production with a dot (`A → α • β`, from set `origin`) or a lexeme in
//! progress (lexeme `l` in DFA state `s`, from set `origin`). A byte moves every lexeme item
//! one DFA step; a lexeme item that reaches an accepting state completes the lexeme there (the
//! items of its origin set waiting on it advance) and also stays, so a lexeme may end at any
//! length where its regex matches: the parser recognizes exactly the grammar's language,
//! with no longest-match lexing. Nullable symbols are skipped at prediction (Aycock and
//! Horspool), so completions never have to look at the set being built.
//!
//! Sets live in one arena, in order, so undoing bytes is a truncation: the guide rolls back
//! tokens, and the mask computation pushes and pops the sets of the bytes it tries.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use formwork_index::{ByteDfa, StateId};

use crate::{Grammar, GrammarError, Symbol};

/// Sets up to this size are searched for duplicates rather than hashed.
const SMALL_SET: usize = 32;

/// Marks a lexeme item in [`Item::what`].
const LEXEME: u32 = 1 << 31;

/// An Earley item: a production `what` with the dot at `pos`, or (with [`LEXEME`] set) a
/// lexeme `what & !LEXEME` in DFA state `pos`; both started at set `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Item {
    what: u32,
    pos: u32,
    origin: u32,
}

impl Item {
    fn rule(prod: u32, dot: u32, origin: u32) -> Item {
        Item {
            what: prod,
            pos: dot,
            origin,
        }
    }

    fn lexeme(l: u32, state: StateId, origin: u32) -> Item {
        Item {
            what: l | LEXEME,
            pos: state,
            origin,
        }
    }

    /// The production, dot and origin, for a production item.
    pub(crate) fn as_rule(self) -> Option<(u32, u32, u32)> {
        (self.what & LEXEME == 0).then_some((self.what, self.pos, self.origin))
    }

    /// The lexeme and its state, for a lexeme item.
    pub(crate) fn as_lexeme(self) -> Option<(u32, StateId, u32)> {
        (self.what & LEXEME != 0).then_some((self.what & !LEXEME, self.pos, self.origin))
    }
}

/// The grammar laid out for the parser: flat right-hand sides.
#[derive(Debug)]
pub(crate) struct Tables {
    /// Production `p`'s right-hand side is `rhs[rhs_start[p]..rhs_start[p + 1]]`.
    rhs_start: Vec<u32>,
    rhs: Vec<Symbol>,
    lhs: Vec<u32>,
    /// Productions of nonterminal `n`: `prods[n]`.
    prods: Vec<std::ops::Range<u32>>,
    nullable: Vec<bool>,
    lexeme_nullable: Vec<bool>,
    start: u32,
}

impl Tables {
    pub(crate) fn new(g: &Grammar) -> Tables {
        let mut rhs_start = Vec::with_capacity(g.productions().len() + 1);
        let mut rhs = Vec::new();
        let mut lhs = Vec::with_capacity(g.productions().len());
        for p in g.productions() {
            rhs_start.push(rhs.len() as u32);
            rhs.extend_from_slice(&p.rhs);
            lhs.push(p.lhs);
        }
        rhs_start.push(rhs.len() as u32);
        let prods = (0..g.rule_count() as u32)
            .map(|n| {
                let r = g.production_range(n);
                r.start as u32..r.end as u32
            })
            .collect();
        Tables {
            rhs_start,
            rhs,
            lhs,
            prods,
            nullable: (0..g.rule_count() as u32)
                .map(|n| g.is_nullable(n))
                .collect(),
            lexeme_nullable: g.lexemes().iter().map(|l| l.nullable).collect(),
            start: g.start(),
        }
    }

    /// The symbol after the dot, or `None` when the item is complete.
    #[inline]
    pub(crate) fn next_symbol(&self, prod: u32, dot: u32) -> Option<Symbol> {
        let at = self.rhs_start[prod as usize] + dot;
        (at < self.rhs_start[prod as usize + 1]).then(|| self.rhs[at as usize])
    }

    /// The right-hand side of production `prod`.
    pub(crate) fn rhs(&self, prod: u32) -> &[Symbol] {
        &self.rhs
            [self.rhs_start[prod as usize] as usize..self.rhs_start[prod as usize + 1] as usize]
    }

    /// The nonterminal production `prod` defines.
    pub(crate) fn lhs(&self, prod: u32) -> u32 {
        self.lhs[prod as usize]
    }

    /// The start nonterminal.
    pub(crate) fn start(&self) -> u32 {
        self.start
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.rhs_start.len() * 4
            + self.rhs.len() * 8
            + self.lhs.len() * 4
            + self.prods.len() * 8
            + self.nullable.len()
            + self.lexeme_nullable.len()
    }
}

/// The lexeme automata the parser steps: lexeme `l`'s start state, transitions (to
/// [`ByteDfa::DEAD`] when no match is possible) and accepting states.
pub(crate) trait Lexemes {
    fn start(&self, l: u32) -> Result<StateId, GrammarError>;
    fn next(&self, l: u32, state: StateId, byte: u8) -> Result<StateId, GrammarError>;
    fn accepting(&self, l: u32, state: StateId) -> Result<bool, GrammarError>;
    /// Whether some byte leads on from `state`.
    fn can_continue(&self, l: u32, state: StateId) -> Result<bool, GrammarError>;
}

/// A set: its items are `items[start..end]` of the chart's arena.
#[derive(Debug, Clone, Copy)]
struct Set {
    start: u32,
    end: u32,
    /// The start symbol is complete here, from set 0.
    accepts: bool,
    /// Some lexeme is in progress here (more bytes may come).
    open: bool,
}

/// FxHash: items are three small integers; SipHash would dominate set building.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;

/// The Earley chart: sets in order over one item arena.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    items: Vec<Item>,
    sets: Vec<Set>,
    /// Scratch: the items of the set being built.
    seen: FxSet<Item>,
    max_items: usize,
    /// For large closed sets, the positions of the items waiting on each symbol, built
    /// the first time a completion looks into the set (one entry per set, `None` until then).
    waiting: Vec<Option<std::sync::Arc<Waiting>>>,
    /// Scratch for completions.
    advanced: Vec<Item>,
}

/// The items of one set waiting on each symbol (the symbol after their dot).
type Waiting = std::collections::HashMap<Symbol, Vec<u32>, BuildHasherDefault<FxHasher>>;

/// Sets larger than this get a [`Waiting`] index once a completion looks into them.
const INDEXED_SET: usize = 48;

/// A place in the chart to come back to ([`Chart::truncate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    sets: usize,
    items: usize,
}

impl Chart {
    /// A chart holding the first set (the start symbol predicted).
    pub(crate) fn new(
        t: &Tables,
        lex: &impl Lexemes,
        max_items: usize,
    ) -> Result<Chart, GrammarError> {
        let mut chart = Chart {
            items: Vec::new(),
            sets: Vec::new(),
            seen: FxSet::default(),
            max_items,
            waiting: Vec::new(),
            advanced: Vec::new(),
        };
        chart.begin();
        for p in t.prods[t.start as usize].clone() {
            chart.add(Item::rule(p, 0, 0))?;
        }
        chart.close(t, lex)?;
        Ok(chart)
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            sets: self.sets.len(),
            items: self.items.len(),
        }
    }

    pub(crate) fn truncate(&mut self, mark: Mark) {
        self.sets.truncate(mark.sets);
        self.items.truncate(mark.items);
        self.waiting.truncate(mark.sets);
    }

    fn last(&self) -> Set {
        self.sets[self.sets.len() - 1]
    }

    /// Whether the text read so far is in the language.
    pub(crate) fn accepts(&self) -> bool {
        self.last().accepts
    }

    /// Whether more bytes may follow (some lexeme is in progress).
    pub(crate) fn is_open(&self) -> bool {
        self.last().open
    }

    /// Whether the last set allows anything: an end or more bytes.
    pub(crate) fn is_viable(&self) -> bool {
        let s = self.last();
        s.accepts || s.open
    }

    /// Number of sets (bytes read + 1).
    pub(crate) fn set_count(&self) -> usize {
        self.sets.len()
    }

    /// The items of set `j` (empty past the last set).
    pub(crate) fn set_items(&self, j: usize) -> &[Item] {
        self.sets
            .get(j)
            .map_or(&[], |s| &self.items[s.start as usize..s.end as usize])
    }

    /// The lexeme items of the last set: (lexeme, state, origin).
    pub(crate) fn open_lexemes(&self) -> impl Iterator<Item = (u32, StateId, u32)> + '_ {
        let s = self.last();
        self.items[s.start as usize..s.end as usize]
            .iter()
            .filter_map(|it| it.as_lexeme())
    }

    fn begin(&mut self) {
        let at = self.items.len() as u32;
        self.sets.push(Set {
            start: at,
            end: at,
            accepts: false,
            open: false,
        });
        if !self.seen.is_empty() {
            self.seen.clear();
        }
        self.waiting.push(None);
    }

    #[inline]
    fn add(&mut self, item: Item) -> Result<(), GrammarError> {
        let start = self.sets[self.sets.len() - 1].start as usize;
        let size = self.items.len() - start;
        // Small sets (most of them) are searched; larger ones hashed.
        let new = if size < SMALL_SET {
            !self.items[start..].contains(&item)
        } else {
            if size == SMALL_SET && self.seen.is_empty() {
                self.seen.extend(self.items[start..].iter().copied());
            }
            self.seen.insert(item)
        };
        if new {
            self.items.push(item);
            if size + 1 > self.max_items {
                return Err(GrammarError::Ambiguous(self.max_items));
            }
        }
        Ok(())
    }

    /// Adds to the set being built the items of set `origin` waiting on `symbol`, advanced.
    fn advance_waiting(
        &mut self,
        t: &Tables,
        origin: u32,
        symbol: Symbol,
    ) -> Result<(), GrammarError> {
        let set = self.sets[origin as usize];
        let building = origin as usize == self.sets.len() - 1;
        // The set being built may be `origin` itself: read up to where it is now.
        let end = if building {
            self.items.len()
        } else {
            set.end as usize
        };
        if !building && end - set.start as usize > INDEXED_SET {
            let index = match &self.waiting[origin as usize] {
                Some(w) => w.clone(),
                None => {
                    let mut w = Waiting::default();
                    for i in set.start as usize..end {
                        let it = self.items[i];
                        if it.what & LEXEME == 0
                            && let Some(s) = t.next_symbol(it.what, it.pos)
                        {
                            w.entry(s).or_default().push(i as u32);
                        }
                    }
                    let w = std::sync::Arc::new(w);
                    self.waiting[origin as usize] = Some(w.clone());
                    w
                }
            };
            if let Some(positions) = index.get(&symbol) {
                for &i in positions {
                    let it = self.items[i as usize];
                    self.add(Item::rule(it.what, it.pos + 1, it.origin))?;
                }
            }
            return Ok(());
        }
        let mut advanced = std::mem::take(&mut self.advanced);
        advanced.clear();
        for it in &self.items[set.start as usize..end] {
            if it.what & LEXEME == 0 && t.next_symbol(it.what, it.pos) == Some(symbol) {
                advanced.push(Item::rule(it.what, it.pos + 1, it.origin));
            }
        }
        let mut result = Ok(());
        for &it in &advanced {
            result = self.add(it);
            if result.is_err() {
                break;
            }
        }
        self.advanced = advanced;
        result
    }

    /// Predictions and completions over the set being built, until nothing is new.
    fn close(&mut self, t: &Tables, lex: &impl Lexemes) -> Result<(), GrammarError> {
        let k = (self.sets.len() - 1) as u32;
        let mut w = self.sets[k as usize].start as usize;
        let mut accepts = false;
        let mut open = false;
        while w < self.items.len() {
            let it = self.items[w];
            w += 1;
            if it.what & LEXEME != 0 {
                open = true;
                continue;
            }
            match t.next_symbol(it.what, it.pos) {
                None => {
                    let lhs = t.lhs[it.what as usize];
                    if lhs == t.start && it.origin == 0 {
                        accepts = true;
                    }
                    self.advance_waiting(t, it.origin, Symbol::Rule(lhs))?;
                }
                Some(Symbol::Rule(n)) => {
                    for p in t.prods[n as usize].clone() {
                        self.add(Item::rule(p, 0, k))?;
                    }
                    if t.nullable[n as usize] {
                        self.add(Item::rule(it.what, it.pos + 1, it.origin))?;
                    }
                }
                Some(Symbol::Lexeme(l)) => {
                    self.add(Item::lexeme(l, lex.start(l)?, k))?;
                    if t.lexeme_nullable[l as usize] {
                        self.add(Item::rule(it.what, it.pos + 1, it.origin))?;
                    }
                }
            }
        }
        let set = &mut self.sets[k as usize];
        set.end = self.items.len() as u32;
        set.accepts = accepts;
        set.open = open;
        Ok(())
    }

    /// Reads one byte: a new set from the last one. The new set may be dead (not
    /// [`Chart::is_viable`]); the caller truncates it then.
    pub(crate) fn step(
        &mut self,
        t: &Tables,
        lex: &impl Lexemes,
        byte: u8,
    ) -> Result<(), GrammarError> {
        let prev = self.last();
        self.begin();
        for i in prev.start as usize..prev.end as usize {
            let Some((l, s, origin)) = self.items[i].as_lexeme() else {
                continue;
            };
            let next = lex.next(l, s, byte)?;
            if next == ByteDfa::DEAD {
                continue;
            }
            if lex.accepting(l, next)? {
                // A match that cannot go on is only an end: the item is not kept.
                if lex.can_continue(l, next)? {
                    self.add(Item::lexeme(l, next, origin))?;
                }
                self.advance_waiting(t, origin, Symbol::Lexeme(l))?;
            } else {
                self.add(Item::lexeme(l, next, origin))?;
            }
        }
        self.close(t, lex)
    }

    /// Starts a set where the lexemes `ends` (lexeme, origin set) have just ended, closed:
    /// what the parser allows after a token's bytes up to one of their accept points. The
    /// lexemes themselves are not carried on (their DFAs say where they go).
    pub(crate) fn complete_all(
        &mut self,
        t: &Tables,
        lex: &impl Lexemes,
        ends: &[(u32, u32)],
    ) -> Result<(), GrammarError> {
        self.begin();
        for &(l, origin) in ends {
            self.advance_waiting(t, origin, Symbol::Lexeme(l))?;
        }
        self.close(t, lex)
    }

    /// Approximate heap bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<Item>()
            + self.sets.capacity() * std::mem::size_of::<Set>()
            + self.seen.capacity() * (std::mem::size_of::<Item>() + 1)
    }
}
