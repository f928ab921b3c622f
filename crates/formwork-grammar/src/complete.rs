//! Shortest completions: where a [`GrammarGuide`] stands, the bytes of a shortest text that
//! completes the grammar's start symbol.
//!
//! Two parts. Once per grammar ([`Lengths`]), the length of a shortest derivation of every
//! lexeme (from its regex) and nonterminal (Knuth's generalization of Dijkstra's algorithm
//! over the productions: a nonterminal's length is final when it is the least of the
//! candidates whose symbols are all final), with the production that achieves it. Then,
//! from the parser's chart, a shortest path to acceptance: an item `A → α • β` begun at set
//! `j` costs `|β|` and then whatever completing `A` at `j` costs, which is the least, over
//! the items of set `j` waiting on `A`, of the same again; a lexeme in progress costs its
//! DFA's distance to a match ([`formwork_index::Index::shortest_completion`]). Dijkstra's
//! algorithm over the nodes (symbol, origin set) visits only the chart's open spine, and
//! the bytes are read back from the path: the lexeme's rest, then each item's `β` spelled
//! by the shortest derivations.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use formwork_index::StateId;
use regex_syntax::hir::{Class, Hir, HirKind, Literal};

use crate::guide::{GrammarGuide, GrammarIndex};
use crate::parser::Tables;
use crate::{Grammar, GrammarError, Symbol};

/// The longest completion [`GrammarGuide::shortest_completion`] spells, in bytes.
pub const MAX_COMPLETION_BYTES: u64 = 1 << 20;

/// Shortest derivation lengths of a grammar's symbols.
#[derive(Debug)]
pub(crate) struct Lengths {
    /// Bytes of a shortest match of each lexeme (`u64::MAX`: none).
    lexeme: Vec<u64>,
    /// Bytes of a shortest derivation of each nonterminal, and the production giving it
    /// (`u32::MAX`: none).
    rule: Vec<(u64, u32)>,
}

impl Lengths {
    pub(crate) fn new(g: &Grammar, t: &Tables) -> Lengths {
        let lexeme: Vec<u64> = g
            .lexemes()
            .iter()
            .map(|l| {
                l.hir
                    .properties()
                    .minimum_len()
                    .map_or(u64::MAX, |n| n as u64)
            })
            .collect();
        let n = g.rule_count();
        let prods = g.productions().len();
        // Per production: nonterminal symbols not final yet, and the sum of the final ones.
        let mut missing = vec![0usize; prods];
        let mut sum = vec![0u64; prods];
        let mut users: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut heap = BinaryHeap::new();
        for p in 0..prods as u32 {
            for &s in t.rhs(p) {
                match s {
                    Symbol::Lexeme(l) => {
                        sum[p as usize] = sum[p as usize].saturating_add(lexeme[l as usize])
                    }
                    Symbol::Rule(m) => {
                        missing[p as usize] += 1;
                        users[m as usize].push(p);
                    }
                }
            }
            if missing[p as usize] == 0 {
                heap.push(Reverse((sum[p as usize], t.lhs(p), p)));
            }
        }
        let mut rule = vec![(u64::MAX, u32::MAX); n];
        let mut done = vec![false; n];
        while let Some(Reverse((cost, nt, p))) = heap.pop() {
            if done[nt as usize] || cost == u64::MAX {
                continue;
            }
            done[nt as usize] = true;
            rule[nt as usize] = (cost, p);
            for &q in &users[nt as usize] {
                let q = q as usize;
                sum[q] = sum[q].saturating_add(cost);
                missing[q] -= 1;
                if missing[q] == 0 {
                    heap.push(Reverse((sum[q], t.lhs(q as u32), q as u32)));
                }
            }
        }
        Lengths { lexeme, rule }
    }

    fn symbol(&self, s: Symbol) -> u64 {
        match s {
            Symbol::Lexeme(l) => self.lexeme[l as usize],
            Symbol::Rule(n) => self.rule[n as usize].0,
        }
    }

    /// Bytes of a shortest derivation of `symbols`.
    fn sequence(&self, symbols: &[Symbol]) -> u64 {
        symbols
            .iter()
            .fold(0u64, |acc, &s| acc.saturating_add(self.symbol(s)))
    }
}

/// How a node of the search was first reached at its best cost.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// From the last set: a lexeme in progress (lexeme, DFA state), whose rest is spelled
    /// first.
    Lexeme(u32, StateId),
    /// From the last set: a production item, the rest of production `prod` from `dot`.
    Rule(u32, u32),
    /// From another node: the item waiting on it, the rest of `prod` from `dot` after it.
    Edge((Symbol, u32), u32, u32),
}

impl GrammarGuide {
    /// The bytes of a shortest text that completes the grammar from here: empty where the
    /// text so far is complete; `None` once EOS was consumed. Bounded: a completion longer
    /// than [`MAX_COMPLETION_BYTES`], or a lexeme's search past its bound, is an error.
    pub fn shortest_completion(&self) -> Result<Option<Vec<u8>>, GrammarError> {
        if self.is_finished_by_eos() {
            return Ok(None);
        }
        let chart = self.chart();
        if chart.accepts() {
            return Ok(Some(Vec::new()));
        }
        let index = &**self.index();
        let t = index.tables();
        let lengths = index.lengths();
        let last = chart.set_count() - 1;
        let mut best: HashMap<(Symbol, u32), (u64, Via)> = HashMap::new();
        let mut heap = BinaryHeap::new();
        let offer = |best: &mut HashMap<(Symbol, u32), (u64, Via)>,
                     heap: &mut BinaryHeap<Reverse<(u64, Symbol, u32)>>,
                     node: (Symbol, u32),
                     cost: u64,
                     via: Via| {
            if cost == u64::MAX {
                return;
            }
            let better = best.get(&node).is_none_or(|&(c, _)| cost < c);
            if better {
                best.insert(node, (cost, via));
                heap.push(Reverse((cost, node.0, node.1)));
            }
        };
        for item in chart.set_items(last) {
            if let Some((l, state, origin)) = item.as_lexeme() {
                let rest = index
                    .lexeme_completion(l, state)?
                    .map_or(u64::MAX, |c| c.len() as u64);
                offer(
                    &mut best,
                    &mut heap,
                    (Symbol::Lexeme(l), origin),
                    rest,
                    Via::Lexeme(l, state),
                );
            } else if let Some((prod, dot, origin)) = item.as_rule() {
                let rest = lengths.sequence(&t.rhs(prod)[dot as usize..]);
                offer(
                    &mut best,
                    &mut heap,
                    (Symbol::Rule(t.lhs(prod)), origin),
                    rest,
                    Via::Rule(prod, dot),
                );
            }
        }
        let goal = (Symbol::Rule(t.start()), 0u32);
        let mut found = None;
        while let Some(Reverse((cost, symbol, origin))) = heap.pop() {
            let node = (symbol, origin);
            if best.get(&node).is_some_and(|&(c, _)| c < cost) {
                continue;
            }
            if node == goal {
                found = Some(cost);
                break;
            }
            for item in chart.set_items(origin as usize) {
                let Some((prod, dot, from)) = item.as_rule() else {
                    continue;
                };
                if t.next_symbol(prod, dot) != Some(symbol) {
                    continue;
                }
                let rest = lengths.sequence(&t.rhs(prod)[dot as usize + 1..]);
                offer(
                    &mut best,
                    &mut heap,
                    (Symbol::Rule(t.lhs(prod)), from),
                    cost.saturating_add(rest),
                    Via::Edge(node, prod, dot + 1),
                );
            }
        }
        let Some(cost) = found else {
            return Ok(None);
        };
        if cost > MAX_COMPLETION_BYTES {
            return Err(GrammarError::TooLarge {
                limit: "completion bytes",
                max: MAX_COMPLETION_BYTES as usize,
            });
        }
        // Back from the goal: the suffixes to spell, last first, then the first part.
        let mut suffixes = Vec::new();
        let mut at = goal;
        let mut bytes = Vec::with_capacity(cost as usize);
        loop {
            let Some(&(_, via)) = best.get(&at) else {
                return Ok(None);
            };
            match via {
                Via::Edge(from, prod, dot) => {
                    suffixes.push((prod, dot));
                    at = from;
                }
                Via::Rule(prod, dot) => {
                    suffixes.push((prod, dot));
                    break;
                }
                Via::Lexeme(l, state) => {
                    bytes.extend(index.lexeme_completion(l, state)?.unwrap_or_default());
                    break;
                }
            }
        }
        let mut speller = Speller::default();
        for &(prod, dot) in suffixes.iter().rev() {
            for &s in &t.rhs(prod)[dot as usize..] {
                speller.spell(index, s, &mut bytes)?;
            }
        }
        Ok(Some(bytes))
    }
}

/// Spells symbols by their shortest derivations, each lexeme's shortest match found once.
#[derive(Default)]
struct Speller {
    lexemes: HashMap<u32, Vec<u8>>,
    stack: Vec<Symbol>,
}

impl Speller {
    fn spell(
        &mut self,
        index: &GrammarIndex,
        symbol: Symbol,
        out: &mut Vec<u8>,
    ) -> Result<(), GrammarError> {
        let t = index.tables();
        let lengths = index.lengths();
        self.stack.clear();
        self.stack.push(symbol);
        while let Some(s) = self.stack.pop() {
            match s {
                Symbol::Lexeme(l) => {
                    let text = match self.lexemes.entry(l) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            // From the regex where it can (no automaton to build on a
                            // request's path for a lexeme not reached yet), else its DFA.
                            let text = match shortest_match(&index.grammar().lexeme(l).hir) {
                                Some(text) => text,
                                None => {
                                    let start = index.lexeme_start(l)?;
                                    index.lexeme_completion(l, start)?.unwrap_or_default()
                                }
                            };
                            e.insert(text)
                        }
                    };
                    out.extend_from_slice(text);
                }
                Symbol::Rule(n) => {
                    let (_, prod) = lengths.rule[n as usize];
                    if prod != u32::MAX {
                        self.stack.extend(t.rhs(prod).iter().rev());
                    }
                }
            }
        }
        Ok(())
    }
}

/// How deep [`shortest_match`] follows a regex's nesting before it leaves the regex to
/// the lexeme's automaton.
const MAX_REGEX_DEPTH: usize = 256;

/// The bytes of a shortest match of `hir` (each class its first character of fewest UTF-8
/// bytes, each alternation its first shortest branch), as long as its
/// [`regex_syntax::hir::Properties::minimum_len`]; `None` where the regex matches nothing,
/// holds a look-around, or nests deeper than [`MAX_REGEX_DEPTH`].
fn shortest_match(hir: &Hir) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(hir.properties().minimum_len()?);
    put_shortest(hir, &mut out, 0)?;
    Some(out)
}

fn put_shortest(hir: &Hir, out: &mut Vec<u8>, depth: usize) -> Option<()> {
    if depth > MAX_REGEX_DEPTH {
        return None;
    }
    match hir.kind() {
        HirKind::Empty => {}
        HirKind::Literal(Literal(bytes)) => out.extend_from_slice(bytes),
        HirKind::Class(Class::Bytes(class)) => out.push(class.ranges().first()?.start()),
        HirKind::Class(Class::Unicode(class)) => {
            let c = class
                .ranges()
                .iter()
                .map(|r| r.start())
                .min_by_key(|c| c.len_utf8())?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        HirKind::Look(_) => return None,
        HirKind::Repetition(r) => {
            for _ in 0..r.min {
                put_shortest(&r.sub, out, depth + 1)?;
            }
        }
        HirKind::Capture(c) => put_shortest(&c.sub, out, depth + 1)?,
        HirKind::Concat(parts) => {
            for part in parts {
                put_shortest(part, out, depth + 1)?;
            }
        }
        HirKind::Alternation(branches) => {
            let shortest = branches
                .iter()
                .filter_map(|b| Some((b.properties().minimum_len()?, b)))
                .min_by_key(|&(len, _)| len)?
                .1;
            put_shortest(shortest, out, depth + 1)?;
        }
    }
    Some(())
}

impl GrammarIndex {
    /// The bytes of a shortest document of the grammar (what a guide at the start would
    /// complete with).
    pub fn shortest_document(self: &std::sync::Arc<Self>) -> Result<Vec<u8>, GrammarError> {
        let guide = GrammarGuide::new(self.clone())?;
        // The start is viable (the grammar's language is not empty), so a path exists.
        Ok(guide.shortest_completion()?.unwrap_or_default())
    }

    /// The rest of a shortest match of lexeme `l` from DFA state `state`.
    fn lexeme_completion(&self, l: u32, state: StateId) -> Result<Option<Vec<u8>>, GrammarError> {
        self.lexeme(l)?
            .shortest_completion(state)
            .map_err(|source| GrammarError::Index {
                // Printed only for the error: the search runs on steps near a reply's end.
                lexeme: self.grammar().lexeme(l).regex().chars().take(80).collect(),
                source,
            })
    }

    fn lexeme_start(&self, l: u32) -> Result<StateId, GrammarError> {
        Ok(self.lexeme(l)?.start())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use formwork_index::Vocabulary;

    use super::*;
    use crate::GrammarConfig;

    fn index(gbnf: &str) -> Arc<GrammarIndex> {
        let (rules, start) = crate::gbnf(gbnf).unwrap();
        let grammar = rules.compile(start, &GrammarConfig::default()).unwrap();
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let vocab = Vocabulary::new(tokens, vec![], []).unwrap();
        Arc::new(GrammarIndex::new(grammar, &vocab).unwrap())
    }

    /// Every string over `alphabet` of length up to `max`, shortest first.
    fn strings(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut layer = vec![Vec::new()];
        for _ in 0..max {
            let next: Vec<Vec<u8>> = layer
                .iter()
                .flat_map(|s: &Vec<u8>| alphabet.iter().map(move |&b| [&s[..], &[b]].concat()))
                .collect();
            out.extend(next.iter().cloned());
            layer = next;
        }
        out
    }

    /// A regex's shortest match spelled from its HIR matches it in full (formwork-index's
    /// DFA) and is as long as the DFA's distance from its start to a match.
    #[test]
    fn shortest_matches_from_the_regex_are_matches_and_shortest() {
        for regex in [
            r"abc",
            r"(?:ab|c)d{2,5}",
            r"[é-ö]x|[a-z]{3}",
            r#"(?:\"|[^"\\])*""#,
            r"(?:[0-9]{3}-)?[0-9]{4}",
            r"(?:€|\\u[0-9a-f]{4}){2}[\x{10000}-\x{10FFFF}b]",
            r"(?-u:[b-d\x61])+z",
            r"(?:(?:a|bb)?c){3}",
            r"",
        ] {
            let hir = regex_syntax::ParserBuilder::new()
                .utf8(false)
                .build()
                .parse(regex)
                .unwrap();
            let text = shortest_match(&hir).unwrap_or_else(|| panic!("{regex}"));
            let dfa = formwork_index::ByteDfa::new(regex).unwrap();
            assert!(dfa.matches(&text), "{regex}: {text:?}");
            assert_eq!(
                text.len() as u32,
                dfa.distance_to_accept(dfa.start()),
                "{regex}: {text:?}"
            );
        }
        for nothing in [r"[a&&b]", r"^a"] {
            let hir = regex_syntax::parse(nothing).unwrap();
            assert_eq!(shortest_match(&hir), None, "{nothing}");
        }
    }

    /// From every viable prefix over the alphabet, the completion makes a document of the
    /// grammar, and no shorter completion does (brute force over the alphabet).
    #[test]
    fn completions_are_accepted_and_shortest() {
        let cases: &[(&str, &[u8])] = &[
            // Recursion, left recursion (`*`), alternatives of different lengths.
            (
                r#"root ::= "{" pair ("," pair)* "}"
                   pair ::= "k" [0-9]+ | "long" value
                   value ::= "[" root "]" | "xyz""#,
                b"{}[],k1lx",
            ),
            // Balanced brackets: the completion closes every open one.
            (r#"root ::= "a" root "b" | "c""#, b"abc"),
            // A lexeme in progress that must go on, and nullable parts.
            (r#"root ::= [a-c]{3} "-"? ("x" | "yy")*  "."  "#, b"abc-xy."),
        ];
        for &(text, alphabet) in cases {
            let index = index(text);
            let grammar = index.grammar().clone();
            for prefix in strings(alphabet, 4) {
                let mut guide = GrammarGuide::new(index.clone()).unwrap();
                if !guide.advance_bytes(&prefix).unwrap() {
                    continue;
                }
                let completion = guide.shortest_completion().unwrap().unwrap();
                let doc = [&prefix[..], &completion].concat();
                assert!(grammar.matches(&doc).unwrap(), "{text}: {doc:?}");
                if completion.len() <= 5 {
                    let shorter = strings(alphabet, completion.len().saturating_sub(1))
                        .into_iter()
                        .filter(|c| c.len() < completion.len())
                        .find(|c| grammar.matches(&[&prefix[..], c].concat()).unwrap());
                    assert_eq!(
                        shorter,
                        None,
                        "{text} after {:?}: {:?}",
                        String::from_utf8_lossy(&prefix),
                        String::from_utf8_lossy(&completion)
                    );
                }
            }
        }
    }

    #[test]
    fn a_shortest_document_and_a_complete_text() {
        let index = index(r#"root ::= "a" root "b" | "cc" | "dd" "e""#);
        assert_eq!(index.shortest_document().unwrap(), b"cc");
        let mut guide = GrammarGuide::new(index).unwrap();
        assert!(guide.advance_bytes(b"aacc").unwrap());
        assert_eq!(guide.shortest_completion().unwrap().unwrap(), b"bb");
        assert!(guide.advance_bytes(b"bb").unwrap());
        assert_eq!(guide.shortest_completion().unwrap().unwrap(), b"");
    }

    #[test]
    fn json_schema_documents_complete_to_valid_json() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 2},
                "tags": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
                "nested": {"$ref": "#"}
            },
            "required": ["name", "tags"]
        });
        let compiled = crate::json_schema(
            &schema,
            &formwork_schema::Compiler::new(),
            &GrammarConfig::default(),
        )
        .unwrap();
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let vocab = Vocabulary::new(tokens, vec![], []).unwrap();
        let index = Arc::new(GrammarIndex::new(compiled.grammar, &vocab).unwrap());
        let doc = index.shortest_document().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(value, serde_json::json!({"name": "  ", "tags": [0, 0]}));
        let mut guide = GrammarGuide::new(index).unwrap();
        let prefix = br#"{"name":"abc","tags":[1,2,3],"nested":{"name":"x"#;
        assert!(guide.advance_bytes(prefix).unwrap());
        let rest = guide.shortest_completion().unwrap().unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&[&prefix[..], &rest].concat()).unwrap();
        assert_eq!(
            value["nested"],
            serde_json::json!({"name": "x ", "tags": [0, 0]})
        );
    }
}
