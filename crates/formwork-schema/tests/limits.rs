//! Schemas at the edges of what the compiler handles: very large enums, objects with many
//! optional properties, deep nesting, and patterns that do not parse. Every regex the compiler
//! returns must build in `formwork-index` (regex-automata's default parser limits); what cannot
//! is a typed error naming the pointer and keyword.

use formwork_index::ByteDfa;
use formwork_schema::{Compiler, SchemaError};
use regex_automata::meta::Regex;
use serde_json::{Map, Value, json};

fn full(regex: &str) -> Regex {
    regex_automata::meta::Builder::new()
        .configure(Regex::config().nfa_size_limit(Some(256 << 20)))
        .build(&format!("^(?:{regex})$"))
        .expect("regex-automata builds the regex")
}

/// Values the way large enums look: a few categories, then an identifier.
fn enum_values(n: usize) -> Vec<String> {
    const KINDS: [&str; 5] = ["product", "part.spare", "service", "bundle-gift", "legacy"];
    (0..n)
        .map(|i| format!("{}/{:06}", KINDS[i % KINDS.len()], i * 7 + 3))
        .collect()
}

#[test]
fn an_enum_of_100k_strings_compiles_to_a_trie_that_builds() {
    let values = enum_values(100_000);
    let schema = json!({ "enum": values });
    let start = std::time::Instant::now();
    let regex = Compiler::new().compile(&schema).expect("compiles");
    eprintln!(
        "100k-value enum: compiled in {:?} to {} bytes",
        start.elapsed(),
        regex.len()
    );
    // Common prefixes are written once: the regex is much smaller than the literals side by
    // side.
    let flat: usize = values
        .iter()
        .map(|v| regex_syntax::escape(&format!("\"{v}\"")).len() + 1)
        .sum();
    assert!(
        regex.len() < flat / 3,
        "{} bytes is not trie-shaped (the flat alternation is {flat})",
        regex.len()
    );
    let re = full(&regex);
    for v in [&values[0], &values[4242], &values[99_999]] {
        assert!(re.is_match(&format!("\"{v}\"")), "{v}");
    }
    let near = format!("\"{}\"", &values[7][..values[7].len() - 1]);
    for miss in [
        near.as_str(),
        "\"product/\"",
        "\"product/000003x\"",
        "product/000003",
    ] {
        assert!(!re.is_match(miss), "{miss}");
    }
    let dfa = ByteDfa::new(&regex).expect("formwork-index builds the enum");
    assert!(dfa.matches(format!("\"{}\"", values[123]).as_bytes()));
    assert!(!dfa.matches(near.as_bytes()));
}

#[test]
fn enum_values_that_nest_as_prefixes_stay_within_the_parser_limits() {
    // "a", "aa", ... every value a prefix of the next: a naive trie nests once per character.
    let values: Vec<Value> = (1..=400)
        .map(|n| Value::String("a".repeat(n)))
        .chain([
            json!(1),
            json!(12),
            json!(null),
            json!([1, "a"]),
            json!({"k": "v"}),
        ])
        .collect();
    let regex = Compiler::new()
        .compile(&json!({ "enum": values }))
        .expect("compiles");
    let re = full(&regex);
    assert!(re.is_match(&format!("\"{}\"", "a".repeat(300))));
    assert!(re.is_match(r#"{"k":"v"}"#) && re.is_match(r#"[1,"a"]"#) && re.is_match("12"));
    assert!(!re.is_match(&format!("\"{}\"", "a".repeat(401))));
    assert!(!re.is_match("\"\"") && !re.is_match("123") && !re.is_match(r#"{"k":"w"}"#));
    ByteDfa::new(&regex).expect("formwork-index builds it");
}

#[test]
fn numbers_in_an_enum_are_exact_after_factoring() {
    let values: Vec<Value> = (0..2000).map(|i| json!(i * 3)).collect();
    let re = full(&Compiler::new().compile(&json!({ "enum": values })).unwrap());
    assert!(re.is_match("0") && re.is_match("3") && re.is_match("5997") && re.is_match("30"));
    assert!(!re.is_match("1") && !re.is_match("31") && !re.is_match("6000") && !re.is_match("03"));
}

fn optional_properties(n: usize) -> Value {
    let props: Map<String, Value> = (0..n)
        .map(|i| (format!("p{i}"), json!({"type": "integer"})))
        .collect();
    json!({"type": "object", "properties": props})
}

#[test]
fn many_optional_properties_build_in_the_index() {
    for n in [82, 150, 400] {
        let regex = Compiler::new()
            .compile(&optional_properties(n))
            .expect("compiles");
        let dfa = ByteDfa::new(&regex).unwrap_or_else(|e| panic!("{n} properties: {e}"));
        let last = n - 1;
        for ok in [
            "{}".to_string(),
            r#"{"p0":1}"#.to_string(),
            format!(r#"{{"p{last}":2}}"#),
            format!(r#"{{"p1":1,"p40":2,"p{last}":3}}"#),
        ] {
            assert!(dfa.matches(ok.as_bytes()), "{n}: {ok}");
        }
        for bad in [
            r#"{,"p0":1}"#,
            r#"{"p0":1,}"#,
            r#"{"p1":1,"p0":2}"#,
            r#"{"p0":1"p1":1}"#,
            r#"{"p0":1,"p0":1}"#,
        ] {
            assert!(!dfa.matches(bad.as_bytes()), "{n}: {bad}");
        }
    }
}

#[test]
fn optional_properties_around_required_ones_and_extras_build() {
    let mut schema = optional_properties(120);
    schema["required"] = json!(["p100"]);
    schema["additionalProperties"] = json!({"type": "boolean"});
    let regex = Compiler::new().compile(&schema).expect("compiles");
    let dfa = ByteDfa::new(&regex).expect("builds");
    for ok in [
        r#"{"p100":1}"#,
        r#"{"p3":1,"p99":2,"p100":3,"p119":4,"x":true}"#,
    ] {
        assert!(dfa.matches(ok.as_bytes()), "{ok}");
    }
    for bad in [r#"{"p3":1}"#, r#"{"p3":1,"p100":3,}"#] {
        assert!(!dfa.matches(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn all_of_200_objects_builds_in_the_index() {
    let parts: Vec<Value> = (0..200)
        .map(|i| json!({"type": "object", "properties": {format!("k{i}"): {"type": "string"}}}))
        .collect();
    let regex = Compiler::new()
        .compile(&json!({ "allOf": parts }))
        .expect("compiles");
    let dfa = ByteDfa::new(&regex).expect("formwork-index builds it");
    assert!(dfa.matches(br#"{"k0":"a","k199":"b"}"#));
    assert!(!dfa.matches(br#"{"k199":"b","k0":"a"}"#));
}

#[test]
fn a_regex_nested_past_the_parser_limit_is_a_typed_error() {
    // 200 levels of optional objects: each level nests the next inside an optional group.
    let mut schema = json!({"type": "integer"});
    for _ in 0..200 {
        schema = json!({"type": "object", "properties": {"a": schema}});
    }
    let err = Compiler::new()
        .max_depth(400)
        .compile(&schema)
        .expect_err("too deep for the regex parser");
    let SchemaError::Regex {
        pointer,
        keyword,
        reason,
    } = &err
    else {
        panic!("expected a Regex error, got {err:?}");
    };
    assert!(
        pointer.starts_with("/properties/a/properties/a"),
        "{pointer}"
    );
    assert_eq!(keyword, "properties");
    assert!(reason.contains("nest"), "{reason}");
    assert_eq!(err.keyword(), "properties");
    assert_eq!(err.pointer(), Some(pointer.as_str()));
}

#[test]
fn an_invalid_pattern_says_where_and_why() {
    let cases = [
        ("^(ab$", "unclosed group", "characters 1..2"),
        (
            "^a{3,1}$",
            "invalid repetition count range",
            "characters 2..7",
        ),
        ("x(?=y)", "lookaround", "character 1"),
        ("[a-z", "unterminated character class", "character 0"),
    ];
    for (pattern, why, at) in cases {
        let err = Compiler::new()
            .compile(&json!({"properties": {"s": {"type": "string", "pattern": pattern}}}))
            .expect_err(pattern);
        let SchemaError::Pattern {
            pointer, reason, ..
        } = &err
        else {
            panic!("{pattern}: {err:?}");
        };
        assert_eq!(pointer, "/properties/s");
        assert!(reason.contains(why), "{pattern}: {reason}");
        assert!(reason.contains(at), "{pattern}: {reason}");
    }
}
