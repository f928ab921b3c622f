//! The parser and the guide: recognition of recursive, ambiguous and left-recursive grammars,
//! lexemes that end wherever their regex matches, and masks equal to what the parser accepts
//! token by token.

use std::sync::Arc;

use formwork_grammar::{
    Expr, Grammar, GrammarConfig, GrammarError, GrammarGuide, GrammarIndex, RuleSet,
};
use formwork_index::Vocabulary;

fn re(pattern: &str) -> Expr {
    Expr::regex(pattern, "test").unwrap()
}

/// `s ::= "(" s ")" s | ε`: balanced parentheses, any depth.
fn parens() -> Grammar {
    let mut set = RuleSet::new();
    let s = set.rule("s");
    set.define(
        s,
        Expr::Alt(vec![
            Expr::Concat(vec![
                Expr::literal("("),
                Expr::Rule(s),
                Expr::literal(")"),
                Expr::Rule(s),
            ]),
            Expr::empty(),
        ]),
    )
    .unwrap();
    set.compile(s, &GrammarConfig::default()).unwrap()
}

/// `expr ::= expr "+" term | term; term ::= [0-9]+ | "(" expr ")"`: left recursion.
fn arithmetic() -> Grammar {
    let mut set = RuleSet::new();
    let expr = set.rule("expr");
    let term = set.rule("term");
    set.define(
        expr,
        Expr::Alt(vec![
            Expr::Concat(vec![Expr::Rule(expr), Expr::literal("+"), Expr::Rule(term)]),
            Expr::Rule(term),
        ]),
    )
    .unwrap();
    set.define(
        term,
        Expr::Alt(vec![
            re("[0-9]+"),
            Expr::Concat(vec![
                Expr::literal("("),
                Expr::Rule(expr),
                Expr::literal(")"),
            ]),
        ]),
    )
    .unwrap();
    set.compile(expr, &GrammarConfig::default()).unwrap()
}

/// A JSON-ish value: strings, numbers and lists of values, nested.
fn lists() -> Grammar {
    let mut set = RuleSet::new();
    let value = set.rule("value");
    let list = set.rule("list");
    set.define(
        value,
        Expr::Alt(vec![re(r#""[^"\\]*""#), re("-?[0-9]+"), Expr::Rule(list)]),
    )
    .unwrap();
    set.define(
        list,
        Expr::Concat(vec![
            Expr::literal("["),
            Expr::Concat(vec![
                Expr::Rule(value),
                Expr::Concat(vec![Expr::literal(","), Expr::Rule(value)]).repeat(0, None),
            ])
            .optional(),
            Expr::literal("]"),
        ]),
    )
    .unwrap();
    set.compile(value, &GrammarConfig::default()).unwrap()
}

#[test]
fn recursion_is_unbounded() {
    let g = parens();
    let deep = format!("{}{}", "(".repeat(200), ")".repeat(200));
    assert!(g.matches(deep.as_bytes()).unwrap());
    assert!(g.matches(b"").unwrap());
    assert!(g.matches(b"()(())()").unwrap());
    assert!(!g.matches(b"(()").unwrap());
    assert!(!g.matches(b"())(").unwrap());
    assert!(!g.matches(b"(x)").unwrap());
}

#[test]
fn left_recursion_and_nesting() {
    let g = arithmetic();
    assert!(g.matches(b"1+22+(3+4)+((5))").unwrap());
    assert!(!g.matches(b"1++2").unwrap());
    assert!(!g.matches(b"+1").unwrap());
    assert!(!g.matches(b"(1+2").unwrap());
    assert!(!g.matches(b"").unwrap());
}

#[test]
fn ambiguous_grammars_are_recognized() {
    // s ::= s s | "a" | ε: exponentially many parses, one chart.
    let mut set = RuleSet::new();
    let s = set.rule("s");
    set.define(
        s,
        Expr::Alt(vec![
            Expr::Concat(vec![Expr::Rule(s), Expr::Rule(s)]),
            Expr::literal("a"),
            Expr::empty(),
        ]),
    )
    .unwrap();
    let g = set.compile(s, &GrammarConfig::default()).unwrap();
    assert!(g.matches("a".repeat(60).as_bytes()).unwrap());
    assert!(!g.matches(b"ab").unwrap());
}

#[test]
fn lexemes_end_wherever_their_regex_matches() {
    // A greedy lexer would take "123" as the first lexeme and fail on "x".
    let mut set = RuleSet::new();
    let s = set.rule("s");
    let digits = set.rule("digits");
    set.define(digits, re("[0-9]+")).unwrap();
    // `digits` is recursive through `s` so lowering keeps the two lexemes apart.
    set.define(
        s,
        Expr::Alt(vec![
            Expr::Concat(vec![Expr::Rule(digits), re("[0-9]x")]),
            Expr::Concat(vec![Expr::literal("("), Expr::Rule(s), Expr::literal(")")]),
        ]),
    )
    .unwrap();
    let g = set.compile(s, &GrammarConfig::default()).unwrap();
    assert!(g.lexemes().len() >= 2, "{g}");
    assert!(g.matches(b"123x").unwrap());
    assert!(g.matches(b"((45x))").unwrap());
    assert!(!g.matches(b"3x").unwrap());
}

#[test]
fn empty_languages_and_undefined_rules_are_errors() {
    let mut set = RuleSet::new();
    let s = set.rule("s");
    set.define(s, Expr::Concat(vec![Expr::literal("a"), Expr::Rule(s)]))
        .unwrap();
    assert_eq!(
        set.compile(s, &GrammarConfig::default()).unwrap_err(),
        GrammarError::Empty("s".into())
    );
    let mut set = RuleSet::new();
    let s = set.rule("s");
    let t = set.rule("t");
    set.define(s, Expr::Rule(t)).unwrap();
    assert_eq!(
        set.compile(s, &GrammarConfig::default()).unwrap_err(),
        GrammarError::Undefined("t".into())
    );
}

/// Every single byte, some longer tokens crossing lexeme boundaries, and EOS (the last id).
fn vocabulary() -> Vocabulary {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for t in [
        "((", "()", "))", ")(", "())", "[[", "[]", "]]", "],", ",[", "\",", "\"]", "\",\"", "12",
        "3+", "+4", "1,", ",-", "-1", "ab", "b\"", "\"a", "]]]", "x\",[",
    ] {
        tokens.push(t.as_bytes().to_vec());
    }
    tokens.push(b"</s>".to_vec());
    let eos = tokens.len() as u32 - 1;
    Vocabulary::new(tokens, vec![eos], []).unwrap()
}

/// Walks `steps` random allowed tokens (a fixed-seed LCG) and at each step checks the mask
/// against advancing a clone of the guide by every token of the vocabulary.
fn check_masks(g: Grammar, seed: u64, steps: usize) {
    let vocab = vocabulary();
    let index = Arc::new(GrammarIndex::new(g, &vocab).unwrap());
    let mut guide = GrammarGuide::new(index).unwrap();
    let mut rng = seed;
    for _ in 0..steps {
        let allowed = guide.allowed_tokens().unwrap();
        for t in 0..vocab.len() as u32 {
            let mut probe = guide.clone();
            let ok = probe.advance(t).is_ok();
            assert_eq!(
                allowed.binary_search(&t).is_ok(),
                ok,
                "token {t} ({:?}) after {} tokens",
                String::from_utf8_lossy(vocab.token(t).unwrap()),
                guide.len()
            );
        }
        if allowed.is_empty() || guide.is_finished() {
            break;
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Prefer text tokens, so documents grow.
        let text: Vec<u32> = allowed
            .iter()
            .copied()
            .filter(|&t| !vocab.is_eos(t))
            .collect();
        let pool = if text.is_empty() || (rng >> 60) == 0 {
            &allowed
        } else {
            &text
        };
        let t = pool[(rng >> 33) as usize % pool.len()];
        guide.advance(t).unwrap();
    }
}

#[test]
fn masks_agree_with_the_parser_token_by_token() {
    for seed in 0..6 {
        check_masks(parens(), seed, 40);
        check_masks(arithmetic(), seed, 40);
        check_masks(lists(), seed, 60);
    }
}

#[test]
fn eos_only_where_the_text_is_complete_and_rollback_restores() {
    let vocab = vocabulary();
    let eos = vocab.eos()[0];
    let index = Arc::new(GrammarIndex::new(lists(), &vocab).unwrap());
    let mut guide = GrammarGuide::new(index).unwrap();
    let tok = |s: &str| vocab.tokenize_greedy(s.as_bytes()).unwrap();
    for t in tok("[[1,") {
        guide.advance(t).unwrap();
    }
    assert!(!guide.accepts_eos());
    assert!(!guide.is_allowed(eos).unwrap());
    let before = guide.allowed_tokens().unwrap();
    for t in tok("\"a\"]]") {
        guide.advance(t).unwrap();
    }
    assert!(guide.accepts_eos());
    assert!(guide.is_finished());
    assert_eq!(guide.allowed_tokens().unwrap(), vec![eos]);
    guide.rollback(tok("\"a\"]]").len()).unwrap();
    assert_eq!(guide.allowed_tokens().unwrap(), before);
    assert!(guide.advance(tok("]")[0]).is_err());
    assert!(guide.rollback(100).is_err());
    guide.reset();
    assert!(guide.is_empty());
}

/// `a0 ::= "x" a1, a1 ::= "x" a2, ..., a{n} ::= "y"`, lowered, and its one string.
fn chain(n: usize) -> (Grammar, String) {
    let mut set = RuleSet::new();
    let ids: Vec<_> = (0..=n).map(|i| set.rule(&format!("a{i}"))).collect();
    for i in 0..n {
        set.define(
            ids[i],
            Expr::Concat(vec![Expr::literal("x"), Expr::Rule(ids[i + 1])]),
        )
        .unwrap();
    }
    set.define(ids[n], Expr::literal("y")).unwrap();
    let g = set.compile(ids[0], &GrammarConfig::default()).unwrap();
    (g, format!("{}y", "x".repeat(n)))
}

#[test]
fn long_reference_chains_lower_without_deep_recursion() {
    // Inlining stops at a fixed depth, so 100,000 rules lower without deep recursion.
    let n = 100_000;
    let (g, text) = chain(n);
    assert!(g.rule_count() > n - 64, "{}", g.rule_count());
    // The last byte completes every rule of the chain in one set: past the parser's bound.
    assert!(matches!(
        g.matches(text.as_bytes()),
        Err(GrammarError::Ambiguous(_))
    ));
    // A chain within the bound is followed to its end.
    let (g, text) = chain(1000);
    assert!(g.matches(text.as_bytes()).unwrap());
    assert!(!g.matches(&text.as_bytes()[1..]).unwrap());
}

/// The forced continuation of where `guide` stands, found the slow way: every byte tried on
/// a clone of the guide at every step, stopping where the text is complete.
fn forced_by_hand(guide: &GrammarGuide, max: usize) -> Vec<u8> {
    let mut g = guide.clone();
    let mut out = Vec::new();
    while out.len() < max && !g.accepts_eos() {
        let live: Vec<u8> = (0..=255u8)
            .filter(|&b| g.clone().advance_bytes(&[b]).unwrap())
            .collect();
        let [b] = live[..] else { break };
        assert!(g.advance_bytes(&[b]).unwrap());
        out.push(b);
    }
    out
}

/// A JSON Schema with fixed keys, an enum and a nested object.
fn fixed_keys() -> Grammar {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "color": {"enum": ["red", "green", "grey"]},
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"]
            }
        },
        "required": ["name", "color", "point"]
    });
    formwork_grammar::json_schema(
        &schema,
        &formwork_schema::Compiler::new(),
        &GrammarConfig::default(),
    )
    .unwrap()
    .grammar
}

#[test]
fn forced_bytes_of_a_schema_with_fixed_keys() {
    let vocab = vocabulary();
    let index = Arc::new(GrammarIndex::new(fixed_keys(), &vocab).unwrap());
    let mut guide = GrammarGuide::new(index).unwrap();
    // Feeds `text`, then asks; asking leaves the guide where it was (the next text goes on
    // from there), and agrees with trying every byte.
    let forced = |guide: &mut GrammarGuide, text: &str| {
        assert!(guide.advance_bytes(text.as_bytes()).unwrap(), "{text}");
        let mut out = Vec::new();
        guide.forced_bytes(256, &mut out).unwrap();
        assert_eq!(out, forced_by_hand(guide, 256));
        String::from_utf8(out).unwrap()
    };
    assert_eq!(forced(&mut guide, ""), r#"{"name":""#);
    // Inside the string: a choice.
    assert_eq!(forced(&mut guide, r#"{"name":"ab"#), "");
    assert_eq!(forced(&mut guide, "\""), r#","color":""#);
    // The rest of an enum value once it is unambiguous, and the fixed text after it.
    assert_eq!(forced(&mut guide, r#","color":"g"#), "re");
    assert_eq!(forced(&mut guide, "re"), "");
    assert_eq!(forced(&mut guide, "e"), r#"n","point":{"x":"#);
    // A bound on the length is respected.
    let mut out = Vec::new();
    guide.forced_bytes(3, &mut out).unwrap();
    assert_eq!(out, b"n\",");
    // A complete document forces nothing: EOS is a choice there.
    assert_eq!(forced(&mut guide, r#"n","point":{"x":1,"y":0"#), "}}");
    assert_eq!(forced(&mut guide, "}}"), "");
    assert!(guide.accepts_eos());
}

/// Forced bytes are a prefix of every document that goes on from where they are asked:
/// checked at every prefix of sampled documents of several grammars, against the
/// continuation found by trying every byte.
#[test]
fn forced_bytes_are_a_prefix_of_every_sampled_document() {
    let vocab = vocabulary();
    for g in [parens(), arithmetic(), lists(), fixed_keys()] {
        let index = Arc::new(GrammarIndex::new(g.clone(), &vocab).unwrap());
        for seed in 0..6 {
            let doc = g.sample(seed, 60).unwrap();
            let mut guide = GrammarGuide::new(index.clone()).unwrap();
            for at in 0..=doc.len() {
                let mut forced = Vec::new();
                guide.forced_bytes(256, &mut forced).unwrap();
                assert_eq!(
                    forced,
                    forced_by_hand(&guide, 256),
                    "after {:?}",
                    &doc[..at]
                );
                assert!(
                    doc[at..].starts_with(&forced),
                    "forced {:?} after {:?}, but the document goes on {:?}",
                    String::from_utf8_lossy(&forced),
                    String::from_utf8_lossy(&doc[..at]),
                    String::from_utf8_lossy(&doc[at..])
                );
                if let Some(&b) = doc.get(at) {
                    assert!(guide.advance_bytes(&[b]).unwrap());
                }
            }
        }
    }
}
