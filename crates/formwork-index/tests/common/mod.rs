//! Helpers shared by the tests over real model vocabularies (`default_model.rs` for
//! SmolLM2's 49,152 byte-level tokens, `gemma3.rs` for Gemma 3's 262,144 SentencePiece
//! tokens): one schema, its index, and the walk that checks every allowed token.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use formwork_index::{Index, IndexConfig, Vocabulary};

/// A schema with every common keyword: strings, formats, enums, numbers, arrays, a pattern.
pub const SCHEMA: &str = include_str!("../../benches/ten_properties.json");

/// The eager (or lazy) index of [`SCHEMA`] over `vocab`.
pub fn schema_index(vocab: &Vocabulary, lazy: bool) -> Arc<Index> {
    let regex = formwork_schema::Compiler::new()
        .compile_str(SCHEMA)
        .unwrap()
        .regex;
    let config = IndexConfig {
        lazy,
        ..Default::default()
    };
    Arc::new(Index::with_config(&regex, vocab, config).unwrap())
}

/// Walks every state of `index` reachable from the start: each allowed token is EOS only in
/// an accepting state, is no special token otherwise, and leads to the live state its bytes
/// reach in the DFA; every state is reached.
pub fn assert_allowed_tokens_lead_to_live_states(index: &Index, v: &Vocabulary) {
    let dfa = index.dfa().unwrap();
    let mut seen = HashSet::from([index.start()]);
    let mut stack = vec![index.start()];
    while let Some(s) = stack.pop() {
        for (&tok, &n) in index.allowed_tokens(s).iter().zip(index.next_states(s)) {
            if v.is_eos(tok) {
                assert!(dfa.is_accepting(s));
                continue;
            }
            assert!(
                !v.is_special(tok),
                "special token {tok} allowed in state {s}"
            );
            let mut q = s;
            for &b in v.token(tok).unwrap() {
                q = dfa.next(q, b);
            }
            assert_eq!(q, n);
            assert!(dfa.distance_to_accept(n) != u32::MAX);
            if seen.insert(n) {
                stack.push(n);
            }
        }
    }
    assert_eq!(seen.len(), index.state_count());
}
