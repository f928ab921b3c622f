//! Checks shared by the engine's integration tests.

use formwork_index::Vocabulary;
use formwork_model::ModelInfo;

/// The constraint vocabulary the engine built from the model's tokenizer equals the one read
/// from the GGUF file's metadata with the model's EOS ids (what the engine built before it
/// used the tokenizer): the same bytes for every token, the same special tokens, the same
/// EOS ids.
pub fn assert_vocabulary_matches_the_gguf(built: &Vocabulary, info: &ModelInfo) {
    let file = Vocabulary::from_gguf(&info.path).unwrap();
    assert_eq!(built.len(), file.len());
    for id in 0..file.len() as u32 {
        assert_eq!(built.token(id), file.token(id), "token {id}");
        // The metadata's own EOS is special in `file`; the model's EOS ids are in `built`.
        let eos = info.eos_token_ids.contains(&id);
        assert_eq!(
            built.is_special(id),
            file.is_special(id) || eos,
            "token {id}"
        );
    }
    let mut eos = info.eos_token_ids.clone();
    eos.sort_unstable();
    eos.dedup();
    assert_eq!(built.eos(), eos);
}

/// Lists of lists of numbers inside three more brackets, so every text nests at least four
/// deep: the GBNF the engine is given, and the same language built by hand with a
/// [`formwork_grammar::RuleSet`] (no front end involved) to check outputs with.
#[allow(dead_code)] // Each test binary uses what it needs.
pub fn nested_lists() -> (&'static str, formwork_grammar::Grammar) {
    use formwork_grammar::{Expr, GrammarConfig, RuleSet};
    const GBNF: &str = r#"
root ::= "[[[" list "]]]"
list ::= "[" (item (", " item)*)? "]"
item ::= list | [0-9] | [1-9] [0-9] | [1-9] [0-9] [0-9]
"#;
    let mut rules = RuleSet::new();
    let root = rules.rule("root");
    let list = rules.rule("list");
    let item = rules.rule("item");
    let body = Expr::Concat(vec![
        Expr::literal("[[["),
        Expr::Rule(list),
        Expr::literal("]]]"),
    ]);
    rules.define(root, body).unwrap();
    let items = Expr::Concat(vec![
        Expr::Rule(item),
        Expr::Concat(vec![Expr::literal(", "), Expr::Rule(item)]).repeat(0, None),
    ]);
    let body = Expr::Concat(vec![
        Expr::literal("["),
        items.optional(),
        Expr::literal("]"),
    ]);
    rules.define(list, body).unwrap();
    let number = Expr::regex("0|[1-9][0-9]{0,2}", "item").unwrap();
    rules
        .define(item, Expr::Alt(vec![Expr::Rule(list), number]))
        .unwrap();
    let grammar = rules.compile(root, &GrammarConfig::default()).unwrap();
    (GBNF, grammar)
}

/// How deep the brackets of `text` nest.
#[allow(dead_code)]
pub fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0);
    for c in text.chars() {
        match c {
            '[' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The JSONSchemaBench files (`../shared/data/jsonschemabench/*.jsonl`), sorted.
pub fn jsonschemabench_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/jsonschemabench");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

/// The schema of one JSONSchemaBench line (given as an object or as a string of JSON).
pub fn jsonschemabench_schema(line: &str) -> serde_json::Value {
    let row: serde_json::Value = serde_json::from_str(line).unwrap();
    match row
        .get("schema")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
    {
        serde_json::Value::String(s) => serde_json::from_str(&s).unwrap_or_default(),
        v => v,
    }
}
