//! Random strings of a grammar's language, for tests and for showing what a grammar allows.
//!
//! [`Grammar::sample`] walks one random leftmost derivation with an explicit stack (no Rust
//! recursion, so deep derivations cannot overflow): each nonterminal takes a production
//! chosen uniformly until the output plus the pending symbols pass the soft limit; from then
//! on it takes its *shortest* production, the one that begins its shortest derivation. Those
//! are found once per call by Knuth's generalization of Dijkstra's algorithm (a nonterminal
//! is settled only after every nonterminal its best production uses), so following them
//! always ends. Each lexeme is drawn by a random walk over its DFA
//! ([`formwork_index::ByteDfa::sample`]), built once per lexeme and call.
//!
//! ```
//! use formwork_grammar::{GrammarConfig, gbnf};
//!
//! let (rules, root) = gbnf(r#"root ::= "(" root ")" | [a-z]+"#).unwrap();
//! let grammar = rules.compile(root, &GrammarConfig::default()).unwrap();
//! let text = grammar.sample(7, 32).unwrap();
//! let s = String::from_utf8(text).unwrap();
//! assert!(s.trim_start_matches('(').starts_with(|c: char| c.is_ascii_lowercase()));
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use formwork_index::ByteDfa;

use crate::GrammarError;
use crate::grammar::{Grammar, Symbol};

impl Grammar {
    /// One random string of the grammar's language, about `soft_limit` bytes at most (a
    /// guide, not a bound: once past it every choice takes the shortest way to the end).
    /// Equal seeds give equal strings.
    ///
    /// Errors: [`GrammarError::Index`] when a lexeme's DFA cannot be built,
    /// [`GrammarError::Empty`] when the start rule derives nothing.
    pub fn sample(&self, seed: u64, soft_limit: usize) -> Result<Vec<u8>, GrammarError> {
        let shortest = Shortest::new(self)?;
        let start = self.start();
        if shortest.best[start as usize].is_none() {
            return Err(GrammarError::Empty(self.rule_name(start).to_owned()));
        }
        let mut rng = WyRand(seed);
        let mut dfas: Vec<Option<ByteDfa>> = vec![None; self.lexemes().len()];
        let mut out = Vec::new();
        let mut stack = vec![Symbol::Rule(start)];
        let mut usable = Vec::new();
        while let Some(symbol) = stack.pop() {
            match symbol {
                Symbol::Lexeme(l) => {
                    let slot = &mut dfas[l as usize];
                    let dfa = match slot {
                        Some(dfa) => dfa,
                        None => {
                            let lexeme = self.lexeme(l);
                            let dfa = ByteDfa::with_config_hir(&lexeme.hir, Default::default())
                                .map_err(|source| GrammarError::Index {
                                    lexeme: lexeme.regex().chars().take(80).collect(),
                                    source,
                                })?;
                            slot.insert(dfa)
                        }
                    };
                    let limit = soft_limit.saturating_sub(out.len() + stack.len());
                    out.extend(dfa.sample(rng.next(), limit));
                }
                Symbol::Rule(n) => {
                    let range = self.production_range(n);
                    let chosen = if out.len() + stack.len() >= soft_limit {
                        shortest.best[n as usize]
                    } else {
                        usable.clear();
                        usable.extend(range.filter(|&p| shortest.finite[p]));
                        match usable.len() {
                            0 => None,
                            k => usable.get(rng.below(k)).copied(),
                        }
                    };
                    let Some(p) = chosen else {
                        return Err(GrammarError::Empty(self.rule_name(n).to_owned()));
                    };
                    stack.extend(self.productions()[p].rhs.iter().rev());
                }
            }
        }
        Ok(out)
    }
}

/// The shortest derivations: each nonterminal's best production, settled in increasing
/// order of length, so that a best production only uses nonterminals settled before.
struct Shortest {
    /// The best production of each nonterminal (`None`: it derives nothing).
    best: Vec<Option<usize>>,
    /// Whether each production derives some string.
    finite: Vec<bool>,
}

impl Shortest {
    fn new(g: &Grammar) -> Result<Shortest, GrammarError> {
        let lexeme_len: Vec<Option<u64>> = g
            .lexemes()
            .iter()
            .map(|l| l.hir.properties().minimum_len().map(|n| n as u64))
            .collect();
        let n_rules = g.rule_count();
        let prods = g.productions();
        // For each production: nonterminal occurrences still unsettled, and the length so
        // far (`None` once a lexeme matches nothing).
        let mut waiting = vec![0usize; prods.len()];
        let mut partial: Vec<Option<u64>> = vec![Some(0); prods.len()];
        // Where each nonterminal occurs: (production, occurrences).
        let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n_rules];
        let mut heap = BinaryHeap::new();
        for (p, prod) in prods.iter().enumerate() {
            for s in prod.rhs.iter() {
                match *s {
                    Symbol::Rule(m) => {
                        waiting[p] += 1;
                        uses[m as usize].push(p);
                    }
                    Symbol::Lexeme(l) => {
                        partial[p] = partial[p].zip(lexeme_len[l as usize]).map(|(a, b)| a + b);
                    }
                }
            }
            if waiting[p] == 0
                && let Some(len) = partial[p]
            {
                heap.push(Reverse((len, p)));
            }
        }
        let mut best = vec![None; n_rules];
        let mut len = vec![0u64; n_rules];
        while let Some(Reverse((l, p))) = heap.pop() {
            let n = prods[p].lhs as usize;
            if best[n].is_some() {
                continue;
            }
            best[n] = Some(p);
            len[n] = l;
            for &q in &uses[n] {
                waiting[q] -= 1;
                partial[q] = partial[q].map(|a| a.saturating_add(l));
                if waiting[q] == 0
                    && let Some(total) = partial[q]
                {
                    heap.push(Reverse((total, q)));
                }
            }
        }
        let finite = prods
            .iter()
            .enumerate()
            .map(|(p, prod)| {
                partial[p].is_some()
                    && prod.rhs.iter().all(|s| match *s {
                        Symbol::Rule(m) => best[m as usize].is_some(),
                        Symbol::Lexeme(_) => true,
                    })
            })
            .collect();
        Ok(Shortest { best, finite })
    }
}

/// wyrand: a small seedable generator, enough for choosing productions.
struct WyRand(u64);

impl WyRand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use crate::{Expr, GrammarConfig, RuleSet, gbnf};

    fn grammar(text: &str) -> crate::Grammar {
        let (set, root) = gbnf(text).unwrap();
        set.compile(root, &GrammarConfig::default()).unwrap()
    }

    #[test]
    fn samples_are_deterministic_and_end_past_the_limit() {
        let g = grammar("root ::= \"(\" root \")\" | \"(\" root root \")\" | [a-z]");
        assert_eq!(g.sample(3, 50).unwrap(), g.sample(3, 50).unwrap());
        let mut distinct = std::collections::HashSet::new();
        for seed in 0..50 {
            let s = g.sample(seed, 50).unwrap();
            // The shortest way out of any open nesting is short: well under 10x the limit.
            assert!(s.len() < 500, "{}", s.len());
            let depth = s.iter().try_fold(0i32, |d, &b| {
                let d = d + i32::from(b == b'(') - i32::from(b == b')');
                (d >= 0).then_some(d)
            });
            assert_eq!(depth, Some(0), "{}", String::from_utf8_lossy(&s));
            distinct.insert(s);
        }
        assert!(distinct.len() > 10);
    }

    #[test]
    fn shortest_choice_ends_through_nullable_cycles() {
        // a → b, b → a | ε: a tie in length that must not loop.
        let g = grammar("root ::= a \"x\"\na ::= b | \"y\" a\nb ::= a | ");
        for seed in 0..20 {
            let s = g.sample(seed, 0).unwrap();
            assert!(s.ends_with(b"x"));
        }
    }

    #[test]
    fn deep_derivations_do_not_overflow() {
        // Right recursion: a derivation as deep as the string is long.
        let g = grammar("root ::= \"a\" root | \"b\"");
        let s = g.sample(1, 200_000).unwrap();
        assert!(s.ends_with(b"b"));
    }

    #[test]
    fn unicode_lexemes_sample_valid_utf8() {
        let g = grammar("root ::= [ぁ-ゟ]+ [^a-z]{3}");
        for seed in 0..20 {
            let s = String::from_utf8(g.sample(seed, 20).unwrap()).unwrap();
            assert!(s.chars().count() >= 4);
        }
    }

    #[test]
    fn a_start_rule_with_only_empty_text_samples_it() {
        let mut set = RuleSet::new();
        let r = set.rule("root");
        set.define(r, Expr::empty()).unwrap();
        let g = set.compile(r, &GrammarConfig::default()).unwrap();
        assert_eq!(g.sample(0, 10).unwrap(), Vec::<u8>::new());
    }
}
