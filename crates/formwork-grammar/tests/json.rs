//! JSON Schema grammars (`json_schema`): recursion of unbounded depth through `$ref`, any
//! value nested without bound, keywords enforced deep inside, small schemas as one lexeme, and
//! soundness over JSONSchemaBench. The `jsonschema` crate says what is valid.

use std::path::PathBuf;

use formwork_grammar::{Grammar, GrammarConfig, json_schema};
use formwork_schema::Compiler;
use serde_json::{Value, json};

fn grammar(schema: &Value) -> Grammar {
    json_schema(schema, &Compiler::new(), &GrammarConfig::default())
        .unwrap_or_else(|e| panic!("{schema}: {e}"))
        .grammar
}

fn accepts(g: &Grammar, doc: &Value) -> bool {
    let text = serde_json::to_string(doc).expect("serialize");
    g.matches(text.as_bytes()).expect("recognizer")
}

/// Each of `valid` is valid under `schema` (says the oracle) and matched by its grammar; each
/// of `invalid` is neither.
fn check(schema: Value, valid: &[Value], invalid: &[Value]) {
    let oracle = jsonschema::validator_for(&schema).expect("oracle");
    let g = grammar(&schema);
    for doc in valid {
        assert!(oracle.is_valid(doc), "the oracle rejects {doc}");
        assert!(accepts(&g, doc), "not matched: {doc}\n{g}");
    }
    for doc in invalid {
        assert!(!oracle.is_valid(doc), "the oracle accepts {doc}");
        assert!(!accepts(&g, doc), "matched: {doc}");
    }
}

/// Whether the grammar has a nonterminal called `name`.
fn has_rule(g: &Grammar, name: &str) -> bool {
    (0..g.rule_count() as u32).any(|n| g.rule_name(n) == name)
}

fn tree(depth: usize, leaf: Value) -> Value {
    let mut node = leaf;
    for i in 0..depth {
        node = json!({"name": format!("n{i}"), "children": [node, {"name": "x", "children": []}]});
    }
    node
}

#[test]
fn a_tree_nests_past_the_old_limit() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}}
        },
        "required": ["name", "children"]
    });
    let leaf = json!({"name": "leaf", "children": []});
    check(
        schema,
        &[tree(12, leaf.clone()), tree(1, leaf)],
        &[
            tree(12, json!({"name": 7, "children": []})),
            tree(12, json!({"name": "leaf"})),
            tree(12, json!({"name": "leaf", "children": [1]})),
        ],
    );
}

#[test]
fn a_linked_list_through_any_of() {
    let schema = json!({
        "type": "object",
        "properties": {
            "value": {"type": "integer", "minimum": 0},
            "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}
        },
        "required": ["value", "next"]
    });
    let list = |n: usize, last: Value| {
        let mut doc = json!({"value": 0, "next": last});
        for i in 1..n {
            doc = json!({"value": i, "next": doc});
        }
        doc
    };
    check(
        schema,
        &[list(15, Value::Null)],
        &[
            list(15, json!({"value": -1, "next": null})),
            list(15, json!({"value": 1})),
            list(15, json!(false)),
        ],
    );
}

#[test]
fn an_expression_tree_of_any_of_references() {
    let schema = json!({
        "$ref": "#/$defs/expr",
        "$defs": {
            "expr": {"anyOf": [{"$ref": "#/$defs/num"}, {"$ref": "#/$defs/binop"}]},
            "num": {
                "type": "object",
                "properties": {"kind": {"const": "num"}, "value": {"type": "number"}},
                "required": ["kind", "value"]
            },
            "binop": {
                "type": "object",
                "properties": {
                    "kind": {"enum": ["add", "mul"]},
                    "left": {"$ref": "#/$defs/expr"},
                    "right": {"$ref": "#/$defs/expr"}
                },
                "required": ["kind", "left", "right"]
            }
        }
    });
    let mut e = json!({"kind": "num", "value": 1.5});
    for i in 0..12 {
        let op = if i % 2 == 0 { "add" } else { "mul" };
        e = json!({"kind": op, "left": {"kind": "num", "value": i}, "right": e});
    }
    let text = serde_json::to_string(&e).unwrap();
    let bad = |from: &str, to: &str| -> Value {
        serde_json::from_str(&text.replacen(from, to, 1)).unwrap()
    };
    check(
        schema.clone(),
        &[e.clone()],
        &[
            bad(r#""value":1.5"#, r#""value":"1.5""#),
            bad(r#""kind":"num","value":1.5"#, r#""kind":"sub","value":1.5"#),
            bad(
                r#"{"kind":"num","value":1.5}"#,
                r#"{"kind":"add","left":{"kind":"num","value":1}}"#,
            ),
        ],
    );
    let g = grammar(&schema);
    assert!(has_rule(&g, "#/$defs/expr"), "{g}");
}

#[test]
fn mutual_recursion_through_defs() {
    let schema = json!({
        "$ref": "#/$defs/A",
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}, "required": ["b"]},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}, "n": {"type": "boolean"}}, "required": ["n"]}
        }
    });
    let mut doc = json!({"b": {"n": true}});
    for _ in 0..11 {
        doc = json!({"b": {"a": doc, "n": false}});
    }
    let text = serde_json::to_string(&doc).unwrap();
    let bad = |from: &str, to: &str| -> Value {
        serde_json::from_str(&text.replacen(from, to, 1)).unwrap()
    };
    check(
        schema,
        &[doc.clone()],
        &[
            bad(r#"{"n":true}"#, r#"{"n":1}"#),
            bad(r#"{"n":true}"#, "{}"),
        ],
    );
}

#[test]
fn a_pydantic_style_self_reference() {
    // As pydantic writes a recursive model: `$defs`, titles, defaults, `anyOf` with null.
    let schema = json!({
        "$defs": {
            "Category": {
                "properties": {
                    "name": {"title": "Name", "type": "string"},
                    "parent": {"anyOf": [{"$ref": "#/$defs/Category"}, {"type": "null"}], "default": null},
                    "subcategories": {"items": {"$ref": "#/$defs/Category"}, "title": "Subcategories", "type": "array"}
                },
                "required": ["name", "subcategories"],
                "title": "Category",
                "type": "object"
            }
        },
        "allOf": [{"$ref": "#/$defs/Category"}],
        "description": "The root."
    });
    let mut doc = json!({"name": "root", "parent": null, "subcategories": []});
    for i in 0..11 {
        doc = json!({
            "name": format!("c{i}"),
            "parent": {"name": "p", "subcategories": []},
            "subcategories": [doc]
        });
    }
    let text = serde_json::to_string(&doc).unwrap();
    let bad = |from: &str, to: &str| -> Value {
        serde_json::from_str(&text.replacen(from, to, 1)).unwrap()
    };
    check(
        schema.clone(),
        &[doc.clone()],
        &[
            bad(r#""name":"root""#, r#""name":null"#),
            bad(r#","subcategories":[]}"#, "}"),
        ],
    );
    let g = grammar(&schema);
    assert!(has_rule(&g, "#/$defs/Category"), "{g}");
}

#[test]
fn free_form_values_nest_without_bound() {
    let mut inner = json!({"k": [1, "two", null, {"x": true}]});
    for i in 0..12 {
        inner = if i % 2 == 0 {
            json!([inner, 3])
        } else {
            json!({"a": inner, "b": {}})
        };
    }
    check(
        json!({"type": "object"}),
        &[json!({"deep": inner.clone()}), json!({})],
        &[json!([inner]), json!(1)],
    );
    check(
        json!({"type": "object", "properties": {"meta": {}}, "required": ["meta"]}),
        &[json!({"meta": inner})],
        &[json!({})],
    );
    assert!(has_rule(&grammar(&json!({"type": "object"})), "any"));
}

#[test]
fn a_small_schema_is_one_lexeme() {
    let g = grammar(&json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150}
        },
        "required": ["name"]
    }));
    assert_eq!(g.lexemes().len(), 1, "{g}");
    assert_eq!(g.productions().len(), 1, "{g}");
    assert!(g.matches(br#"{"name":"Ada","age":36}"#).unwrap());
    assert!(!g.matches(br#"{"name":"Ada","age":151}"#).unwrap());
}

#[test]
fn a_large_schema_is_many_small_lexemes() {
    let mut properties = serde_json::Map::new();
    for i in 0..200 {
        properties.insert(
            format!("field_{i}"),
            json!({"type": "string", "enum": (0..20).map(|j| format!("value {i} {j}")).collect::<Vec<_>>()}),
        );
    }
    let schema = json!({"type": "object", "properties": properties});
    let config = GrammarConfig::default();
    let g = grammar(&schema);
    assert!(g.lexemes().len() > 1);
    for l in g.lexemes() {
        let hir = regex_syntax::parse(&l.regex()).unwrap();
        assert!(formwork_grammar::hir_size(&hir) <= config.repeat_size);
    }
    assert!(
        g.matches(br#"{"field_3":"value 3 4","field_150":"value 150 19"}"#)
            .unwrap()
    );
    assert!(!g.matches(br#"{"field_3":"value 4 4"}"#).unwrap());
}

/// Whether some lexeme of `g` matches `text` in full.
fn a_lexeme_matches(g: &Grammar, text: &[u8]) -> bool {
    g.lexemes().iter().any(|l| {
        formwork_index::ByteDfa::new(&l.regex())
            .unwrap_or_else(|e| panic!("{}: {e}", l.regex()))
            .matches(text)
    })
}

#[test]
fn a_long_string_body_is_one_lexeme_with_its_quotes() {
    // With lexemes of 1,024 units, the body counted to 200 is a large repetition: kept apart
    // from its closing quote it would be a lexeme that may end after every character.
    let config = GrammarConfig {
        lexeme_size: 1024,
        ..GrammarConfig::default()
    };
    let schema = json!({
        "type": "object",
        "properties": {"s": {"type": ["string", "null"], "maxLength": 200}},
        "required": ["s"]
    });
    let g = json_schema(&schema, &Compiler::new(), &config)
        .unwrap()
        .grammar;
    for body in [&b"abc"[..], br#""abc"#] {
        assert!(!a_lexeme_matches(&g, body), "{g}");
    }
    let doc = |n: usize| format!(r#"{{"s":"{}"}}"#, "x".repeat(n));
    assert!(g.matches(doc(200).as_bytes()).unwrap());
    assert!(!g.matches(doc(201).as_bytes()).unwrap());
    assert!(g.matches(br#"{"s":null}"#).unwrap());
}

#[test]
fn string_characters_are_read_as_the_compiler_wrote_them() {
    // The reader puts one parsed string character in place of each written one: counts,
    // escapes and the bounds of repetitions stay as they were.
    check(
        json!({"type": "object", "properties": {
            "a": {"type": "string", "minLength": 2, "maxLength": 3},
            "b": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
        }, "required": ["a", "b"]}),
        &[
            json!({"a": "ab", "b": []}),
            json!({"a": "é\n\"", "b": ["", "x"]}),
        ],
        &[
            json!({"a": "a", "b": []}),
            json!({"a": "abcd", "b": []}),
            json!({"a": "ab", "b": ["x", "y", "z"]}),
        ],
    );
}

#[test]
fn long_strings_of_one_bound_share_one_lexeme() {
    // Three strings counted to 256 characters (a long repetition each): one lexeme, the
    // body with its closing quote, built once for all three.
    let long = json!({"type": "string", "maxLength": 256});
    let schema = json!({
        "type": "object",
        "properties": {"a": long, "b": long, "c": {"type": "array", "items": long}},
        "required": ["a", "b", "c"]
    });
    let g = grammar(&schema);
    let bodies: Vec<String> = g
        .lexemes()
        .iter()
        .map(|l| l.regex())
        .filter(|r| r.contains("{0,256}"))
        .collect();
    assert_eq!(bodies.len(), 1, "{g}");
    assert!(!a_lexeme_matches(&g, b"abc"), "{g}");
    let text = |n: usize| "x".repeat(n);
    let doc = |n: usize| format!(r#"{{"a":"{}","b":"","c":["{}","y"]}}"#, text(n), text(n));
    assert!(g.matches(doc(256).as_bytes()).unwrap());
    assert!(!g.matches(doc(257).as_bytes()).unwrap());
}

#[test]
fn a_property_name_ends_with_its_colon() {
    // Property names other than the twelve declared ones: an alternation (one branch per
    // first letter) too large for one lexeme of 1,024 units, followed by `":`. Each branch
    // ends with the `":`.
    let config = GrammarConfig {
        lexeme_size: 1024,
        ..GrammarConfig::default()
    };
    let names = [
        "category",
        "email",
        "marketing",
        "reason",
        "sg_event_id",
        "timestamp",
        "url",
        "ip",
        "useragent",
        "status",
        "response",
        "attempt",
    ];
    let properties: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| (n.to_string(), json!({"type": "integer"})))
        .collect();
    let schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": {"type": "integer"}
    });
    let g = json_schema(&schema, &Compiler::new(), &config)
        .unwrap()
        .grammar;
    for key in [&b"name"[..], b"categoryx", b"x"] {
        assert!(
            !a_lexeme_matches(&g, key),
            "{}\n{g}",
            String::from_utf8_lossy(key)
        );
    }
    for (doc, ok) in [
        (&br#"{"category":1,"name":2,"":3}"#[..], true),
        (br#"{"email":2,"categoryx":1}"#, true),
        (br#"{"name":"x"}"#, false),
        (br#"{"name"1}"#, false),
    ] {
        assert_eq!(
            g.matches(doc).unwrap(),
            ok,
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
}

// ----- JSONSchemaBench -------------------------------------------------------------------

fn data_dir() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    assert!(
        dir.is_dir(),
        "test data missing: {} (the shared/ folder beside the checkout)",
        dir.display()
    );
    dir
}

/// Every `1 / SAMPLE_ONE_IN` of the benchmark's schemas, picked by a fixed-seed hash of their
/// position, so the test stays within a CI run's time.
const SAMPLE_ONE_IN: u64 = 3;

fn sampled(i: usize) -> bool {
    // splitmix64 of the position, seed 14.
    let mut z = (i as u64)
        .wrapping_add(14)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).is_multiple_of(SAMPLE_ONE_IN)
}

/// Soundness over a fixed sample of JSONSchemaBench: where the grammar compiles and every
/// keyword is enforced, no instance labelled invalid is matched (instances serialized
/// compactly, key order kept, as the compiler lays documents out). The share of valid
/// instances matched is printed and held above a floor.
#[test]
fn jsonschemabench_grammars_are_sound() {
    let mut files: Vec<_> = std::fs::read_dir(data_dir())
        .expect("read data dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let (mut schemas, mut compiled, mut valid, mut valid_matched) = (0, 0, 0, 0);
    let mut unsound = Vec::new();
    let mut index = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read jsonl");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            index += 1;
            if !sampled(index) {
                continue;
            }
            let v: Value = serde_json::from_str(line).expect("jsonl line");
            schemas += 1;
            let Ok(json) = json_schema(&v["schema"], &Compiler::new(), &GrammarConfig::default())
            else {
                continue;
            };
            compiled += 1;
            for t in v["tests"].as_array().into_iter().flatten() {
                let (Some(is_valid), Some(data)) = (t["valid"].as_bool(), t.get("data")) else {
                    continue;
                };
                let doc = serde_json::to_string(data).expect("serialize");
                let m = json.grammar.matches(doc.as_bytes()).expect("recognizer");
                if is_valid {
                    valid += 1;
                    valid_matched += m as usize;
                } else if m && json.unenforced.is_empty() {
                    unsound.push(format!("{}: {doc}", v["id"]));
                }
            }
        }
    }
    let share = valid_matched as f64 / valid as f64;
    println!(
        "{compiled} of {schemas} sampled schemas compiled; {valid_matched} of {valid} valid instances matched ({:.1}%)",
        share * 100.0
    );
    assert!(
        unsound.is_empty(),
        "{} invalid instances matched:\n{}",
        unsound.len(),
        unsound.join("\n")
    );
    assert!(
        compiled * 100 > schemas * 95,
        "only {compiled} of {schemas} compiled"
    );
    assert!(share >= 0.85, "completeness fell to {:.1}%", share * 100.0);
}

/// A large object's optional members are cut apart at their keys: each key is a lexeme of
/// its own (so predicting the members builds only the keys' automata), and the language is
/// the schema's: members in order, each optional, values checked.
#[test]
fn a_large_objects_members_are_cut_at_their_keys() {
    let member = json!({
        "type": "object",
        "properties": {
            "label": {"type": "string", "maxLength": 40},
            "note": {"type": "string", "maxLength": 40},
            "size": {"type": "integer", "minimum": 0, "maximum": 99}
        },
        "required": ["label"]
    });
    let properties: serde_json::Map<String, Value> = (0..8)
        .map(|i| (format!("part{i}"), member.clone()))
        .collect();
    let schema = json!({"type": "object", "properties": properties, "required": ["part0"]});
    let g = grammar(&schema);
    let keys: Vec<String> = g
        .lexemes()
        .iter()
        .map(|l| l.regex())
        .filter(|r| r.len() < 40 && r.contains(",\"part") && r.contains("\":\\{\"label\":\""))
        .collect();
    assert!(keys.len() >= 6, "{keys:?}\n{g}");
    let ok = [
        json!({"part0": {"label": "a"}}),
        json!({"part0": {"label": "a", "size": 3}, "part3": {"label": "b", "note": "c"}, "part7": {"label": ""}}),
    ];
    for doc in &ok {
        assert!(jsonschema::is_valid(&schema, doc), "{doc}");
        assert!(accepts(&g, doc), "{doc}");
    }
    let bad = [
        json!({"part1": {"label": "a"}}),
        json!({"part0": {"label": "a"}, "part2": {"size": 1}}),
        json!({"part0": {"label": "a", "size": 100}}),
        json!({"part0": {"label": "a"}, "part5": {"label": "b"}, "part4": {"label": "c"}}),
    ];
    for doc in &bad {
        assert!(!accepts(&g, doc), "{doc}");
    }
}
