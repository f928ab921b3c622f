//! `Grammar::sample` on every grammar of `tests/data/`: many seeds and limits, each sample in
//! the language (by `Grammar::matches`), equal seeds equal samples. Needs no Python (the
//! oracle tests check the same samples against lark).

use std::path::Path;

use formwork_grammar::{Grammar, GrammarConfig, gbnf, lark};

fn grammars() -> Vec<(String, Grammar)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    for dir in ["gbnf", "lark"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let read = match path.extension().and_then(|x| x.to_str()) {
                Some("gbnf") => gbnf,
                Some("lark") => lark,
                _ => continue,
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let (rules, start) = read(&text).unwrap();
            let grammar = rules.compile(start, &GrammarConfig::default()).unwrap();
            out.push((path.display().to_string(), grammar));
        }
    }
    assert!(out.len() >= 10);
    out
}

#[test]
fn every_sample_is_in_the_language() {
    for (name, grammar) in grammars() {
        for (seed, limit) in (0..60).map(|s| (s, [0, 10, 100, 400][s as usize % 4])) {
            let text = grammar.sample(seed, limit).unwrap();
            assert_eq!(text, grammar.sample(seed, limit).unwrap(), "{name}");
            assert!(
                grammar.matches(&text).unwrap(),
                "{name}, seed {seed}: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}
