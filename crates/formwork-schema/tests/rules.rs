//! Rules mode (`Compiler::compile_rules`): references instead of unrolled recursion, one
//! recursive rule for any value, size limits per rule, and the same keywords enforced.
//!
//! The grammar built from these rules is tested in `formwork-grammar` (`tests/json.rs`); here
//! the rules are checked by substituting them into their references to a fixed depth, which
//! gives a plain regex.

use formwork_schema::{CompiledRules, Compiler, SchemaError, Whitespace};
use regex_automata::meta::Regex;
use serde_json::json;

/// `regex` with every reference replaced by its rule, `depth` levels deep (deeper references
/// match nothing).
fn expand(rules: &CompiledRules, regex: &str, depth: usize) -> String {
    let marker = "(?P<";
    let mut out = String::new();
    let mut rest = regex;
    while let Some(at) = rest.find(marker) {
        out.push_str(&rest[..at]);
        let after = &rest[at + marker.len()..];
        let end = after.find(">)").expect("a reference ends with >)");
        let index = CompiledRules::reference(&after[..end]).expect("only references are groups");
        let body = rules.rules[index].regex.as_deref();
        match (depth, body) {
            (0, _) | (_, None) => out.push_str(r"[^\s\S]"),
            (d, Some(body)) => {
                out.push_str("(?:");
                out.push_str(&expand(rules, body, d - 1));
                out.push(')');
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn matcher(regex: &str) -> Regex {
    Regex::new(&format!("^(?:{regex})$")).expect("the expansion parses")
}

fn rule<'a>(rules: &'a CompiledRules, name: &str) -> &'a str {
    rules
        .rules
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.regex.as_deref())
        .unwrap_or_else(|| panic!("no rule {name} in {rules:#?}"))
}

fn list(depth: usize) -> String {
    let mut doc = "null".to_string();
    for i in 0..depth {
        doc = format!(r#"{{"value":{i},"next":{doc}}}"#);
    }
    doc
}

#[test]
fn an_optional_self_reference_is_a_rule_not_an_unrolling() {
    let schema = json!({
        "type": "object",
        "properties": {
            "value": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}
        },
        "required": ["value", "next"]
    });
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    assert_eq!(rules.rules.len(), 1, "{rules:#?}");
    assert!(rule(&rules, "#").contains("(?P<fwref_0_0>)"));
    let deep = matcher(&expand(&rules, &rules.start, 12));
    assert!(deep.is_match(&list(10)));
    assert!(!deep.is_match(r#"{"value":"a","next":null}"#));
    assert!(!deep.is_match(&list(10).replace(r#""value":3"#, r#""value":"3""#)));
    // The regex compiler stops at three levels.
    let regex = Compiler::new().compile(&schema).unwrap();
    assert!(!matcher(&regex).is_match(&list(10)));
}

#[test]
fn mutual_recursion_through_defs_is_two_rules() {
    let schema = json!({
        "$ref": "#/$defs/A",
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}, "required": ["b"]},
            "B": {"type": "array", "items": {"$ref": "#/$defs/A"}, "maxItems": 1}
        }
    });
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["#/$defs/A", "#/$defs/B"]);
    assert_eq!(rules.start, "(?P<fwref_0_0>)");
    let re = matcher(&expand(&rules, &rules.start, 16));
    let mut doc = r#"{"b":[]}"#.to_string();
    for _ in 0..6 {
        doc = format!(r#"{{"b":[{doc}]}}"#);
    }
    assert!(re.is_match(&doc));
    assert!(!re.is_match(&doc.replace(r#"{"b":[]}"#, r#"{"b":[1]}"#)));
    assert!(!re.is_match(&doc.replace(r#"{"b":[]}"#, "{}")));
}

#[test]
fn unconstrained_values_refer_to_one_recursive_rule() {
    let rules = Compiler::new()
        .compile_rules(&json!({"type": "object", "properties": {"a": true, "b": {}}}))
        .unwrap();
    // Besides `any`, only shared values (a long fragment written once as a rule).
    let own: Vec<_> = rules.rules.iter().filter(|r| !r.shared).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].name, "any");
    assert!(rule(&rules, "any").contains("(?P<fwref_0_"));
    let re = matcher(&expand(&rules, &rules.start, 3));
    assert!(re.is_match(r#"{"a":[[1]],"b":{"x":[null]}}"#));
    assert!(!re.is_match(r#"{"a":[[1]],"b":{"x":[nul]}}"#));
    assert!(!re.is_match(r#"{"c":1}"#));
}

#[test]
fn a_pattern_cannot_write_a_reference() {
    let schema = json!({"type": "string", "pattern": "^(?<fwref_0>a)(?<fwref_0_1>b)$"});
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    assert!(rules.rules.is_empty());
    let hir = regex_syntax::parse(&rules.start).unwrap();
    assert_eq!(hir.properties().explicit_captures_len(), 0);
    assert!(matcher(&rules.start).is_match(r#""ab""#));
}

#[test]
fn the_size_limit_applies_to_each_rule() {
    let values: Vec<String> = (0..150).map(|i| format!("value number {i}")).collect();
    let schema = json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/A"},
            "b": {"$ref": "#/$defs/B"}
        },
        "$defs": {
            "A": {"enum": values},
            "B": {"type": "array", "items": {"enum": values}}
        }
    });
    let compiler = Compiler::new().max_size(2500);
    assert!(matches!(
        compiler.compile(&schema),
        Err(SchemaError::TooLarge { .. })
    ));
    let rules = compiler.compile_rules(&schema).unwrap();
    assert!(
        rules
            .rules
            .iter()
            .all(|r| r.regex.as_ref().unwrap().len() <= 2500)
    );
    // The enum's rule alone is over 400 bytes.
    assert!(
        Compiler::new()
            .max_size(400)
            .compile_rules(&schema)
            .is_err()
    );
}

#[test]
fn long_values_are_shared_rules_not_copies() {
    // A real schema of nested objects and arrays of optional properties (JSONSchemaBench,
    // Github_hard line 987): regex mode copies each value's regex into every alternative of
    // its parent's encoding, level after level (2.6 MB); shared, each is written once.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/jsonschemabench/Github_hard.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().nth(986).unwrap();
    let schema = serde_json::from_str::<serde_json::Value>(line).unwrap()["schema"].clone();
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    let total: usize = rules.start.len()
        + rules
            .rules
            .iter()
            .map(|r| r.regex.as_ref().map_or(0, String::len))
            .sum::<usize>();
    assert!(rules.rules.iter().any(|r| r.shared));
    let copied = Compiler::new().compile(&schema).unwrap().len();
    assert!(
        total * 100 < copied,
        "{total} bytes of rules, {copied} bytes in regex mode"
    );
}

#[test]
fn an_extra_member_is_one_shared_rule_wherever_its_object_appears() {
    // The key of an extra member avoids every declared name: long, and repeated by the
    // object's encoding. The same object at two properties is written once.
    let names = [
        "category",
        "email",
        "marketing",
        "reason",
        "event_id",
        "timestamp",
        "url",
        "ip",
    ];
    let object = json!({
        "type": "object",
        "properties": names.iter().map(|n| (n.to_string(), json!({"type": "integer"}))).collect::<serde_json::Map<_, _>>(),
        "additionalProperties": {"type": "boolean"}
    });
    let schema = json!({
        "type": "object",
        "properties": {"a": object, "b": object},
        "required": ["a", "b"]
    });
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    let shared: Vec<&str> = rules
        .rules
        .iter()
        .filter(|r| r.shared)
        .filter_map(|r| r.regex.as_deref())
        .collect();
    let extra: Vec<&&str> = shared.iter().filter(|r| r.contains("true|false")).collect();
    assert_eq!(extra.len(), 1, "{rules:#?}");
    let regex = Compiler::new().compile(&schema).unwrap();
    let (by_rules, by_regex) = (matcher(&expand(&rules, &rules.start, 3)), matcher(&regex));
    for doc in [
        r#"{"a":{"email":1,"x":true},"b":{}}"#,
        r#"{"a":{"email":1,"emailx":false},"b":{"url":2,"":true}}"#,
        r#"{"a":{"email":true},"b":{}}"#,
        r#"{"a":{"x":1},"b":{}}"#,
        r#"{"a":{},"b":{"email":1,"email":true}}"#,
    ] {
        assert_eq!(by_rules.is_match(doc), by_regex.is_match(doc), "{doc}");
    }
}

#[test]
fn keywords_are_enforced_in_rules_as_in_the_regex() {
    let schema = json!({
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2}
                },
                "required": ["id"]
            }
        },
        "type": "array",
        "items": {"$ref": "#/$defs/Item", "description": "an item"}
    });
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    let regex = Compiler::new().compile(&schema).unwrap();
    let (by_rules, by_regex) = (matcher(&expand(&rules, &rules.start, 2)), matcher(&regex));
    for doc in [
        r#"[{"id":1,"tags":["a","bcd"]},{"id":2}]"#,
        r#"[{"id":0}]"#,
        r#"[{"id":1,"tags":["abcd"]}]"#,
        r#"[{"id":1,"tags":["a","b","c"]}]"#,
        r#"[{"tags":[]}]"#,
        "[]",
    ] {
        assert_eq!(by_rules.is_match(doc), by_regex.is_match(doc), "{doc}");
    }
}

#[test]
fn a_one_of_of_overlapping_references_is_reported() {
    let schema = json!({
        "oneOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/B"}],
        "$defs": {"A": {"type": "integer"}, "B": {"type": "number"}}
    });
    let rules = Compiler::new().compile_rules(&schema).unwrap();
    assert_eq!(rules.rules.len(), 2);
    assert!(rules.unenforced.iter().any(|u| u.keyword == "oneOf"));
    let disjoint = json!({
        "oneOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/B"}],
        "$defs": {"A": {"type": "integer"}, "B": {"type": "string"}}
    });
    let rules = Compiler::new().compile_rules(&disjoint).unwrap();
    assert!(rules.unenforced.is_empty());
    // A branch the compiler refuses is dropped: what it accepts is unknown, so exclusivity
    // is not proven.
    let dropped = json!({
        "oneOf": [{"$ref": "#/$defs/A"}, {"type": "integer", "not": {"minimum": 3}}],
        "$defs": {"A": {"type": "string"}}
    });
    let rules = Compiler::new().compile_rules(&dropped).unwrap();
    assert!(rules.unenforced.iter().any(|u| u.keyword == "oneOf"));
}

#[test]
fn an_unresolved_reference_and_an_unsatisfiable_rule() {
    let err = Compiler::new()
        .compile_rules(&json!({"properties": {"a": {"$ref": "#/$defs/missing"}}}))
        .unwrap_err();
    assert!(matches!(err, SchemaError::UnresolvedRef { .. }));
    let rules = Compiler::new()
        .compile_rules(&json!({
            "properties": {"a": {"$ref": "#/$defs/never"}},
            "$defs": {"never": false}
        }))
        .unwrap();
    assert_eq!(rules.rules[0].regex, None);
}

#[test]
fn a_whitespace_pattern_applies_in_rules_mode() {
    let schema = json!({"type": "array", "items": {"$ref": "#"}});
    let ws = Whitespace::pattern("[ ]*").unwrap();
    let rules = Compiler::new()
        .whitespace(ws)
        .compile_rules(&schema)
        .unwrap();
    let re = matcher(&expand(&rules, &rules.start, 3));
    assert!(re.is_match("[ [ ] , [] ]"));
    assert!(!re.is_match("[\n[]]"));
}
