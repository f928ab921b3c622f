//! Keyword-by-keyword behaviour of the compiler: what each schema lets through and what it
//! refuses, checked against the `jsonschema` crate as an independent oracle.

use formwork_schema::{Compiler, SchemaError, Whitespace};
use regex_automata::meta::Regex;
use serde_json::{Value, json};

fn regex_for(schema: &Value) -> Regex {
    let re = Compiler::new().compile(schema).expect("schema compiles");
    Regex::new(&format!("^(?:{re})$")).expect("valid regex")
}

/// Every `accept` document matches and is valid; every `reject` document does not match.
fn check(schema: Value, accept: &[&str], reject: &[&str]) {
    let re = regex_for(&schema);
    let oracle = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("oracle builds");
    for doc in accept {
        assert!(re.is_match(doc), "{schema} should accept {doc}");
        let v: Value = serde_json::from_str(doc).expect("test document is JSON");
        assert!(
            oracle.is_valid(&v),
            "test bug: {doc} is invalid under {schema}"
        );
    }
    for doc in reject {
        assert!(!re.is_match(doc), "{schema} should reject {doc}");
    }
}

#[test]
fn optional_properties_keep_order_and_commas() {
    let schema = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
        "required": ["b"]
    });
    check(
        schema,
        &[
            r#"{"b":"x"}"#,
            r#"{"a":1,"b":"x"}"#,
            r#"{"a":1,"b":"x","c":true}"#,
            r#"{"b":"x","c":false}"#,
        ],
        &[
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"b":"x",}"#,
            r#"{,"b":"x"}"#,
            r#"{"b":"x","a":1}"#,
            r#"{"b":"x","d":1}"#,
        ],
    );
    check(
        json!({"properties": {"a": {"type": "null"}, "b": {"type": "null"}}}),
        &[
            "{}",
            r#"{"a":null}"#,
            r#"{"b":null}"#,
            r#"{"a":null,"b":null}"#,
        ],
        &[r#"{,"b":null}"#, "[]", "null"],
    );
}

#[test]
fn additional_properties_never_repeat_a_declared_name() {
    check(
        json!({"type": "object", "properties": {"id": {"type": "integer"}}, "additionalProperties": {"type": "string"}}),
        &[
            r#"{"id":1}"#,
            r#"{"id":1,"x":"y"}"#,
            r#"{"name":"n","other":"o"}"#,
        ],
        &[r#"{"id":1,"id":"y"}"#, r#"{"x":1}"#],
    );
    // Values of an unconstrained object nest at most `any_depth` (2) containers deep in all.
    check(
        json!({"type": "object"}),
        &["{}", r#"{"a":[1,null],"b":{}}"#],
        &["[]", r#"{"a":[[1]]}"#],
    );
}

#[test]
fn property_counts_are_exact() {
    check(
        json!({"type": "object", "properties": {"a": {"const": 1}, "b": {"const": 2}, "c": {"const": 3}}, "minProperties": 1, "maxProperties": 2}),
        &[r#"{"a":1}"#, r#"{"a":1,"c":3}"#, r#"{"b":2,"c":3}"#],
        &["{}", r#"{"a":1,"b":2,"c":3}"#],
    );
    check(
        json!({"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2}),
        &["{}", r#"{"a":1,"b":2}"#],
        &[r#"{"a":1,"b":2,"c":3}"#],
    );
    // Undeclared members may repeat a key, so a minimum they must reach is refused.
    assert!(matches!(
        Compiler::new().compile(&json!({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2})),
        Err(SchemaError::Unsupported { .. })
    ));
}

#[test]
fn pattern_properties_apply_to_matching_keys() {
    check(
        json!({"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": false}),
        &["{}", r#"{"x-a":1,"x-b":2}"#],
        &[r#"{"y":1}"#, r#"{"x-a":"s"}"#],
    );
}

#[test]
fn arrays_tuples_and_contains() {
    check(
        json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}),
        &["[1,2]", "[1,2,3]"],
        &["[1]", "[1,2,3,4]", "[1,\"a\"]"],
    );
    check(
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
        &["[]", "[\"a\"]", "[\"a\",1]"],
        &["[1]", "[\"a\",1,2]"],
    );
    check(
        json!({"type": "array", "items": {"type": "integer"}, "contains": {"const": 7}}),
        &["[7]", "[7,1,2]"],
        &["[]", "[1,2]"],
    );
    check(json!({"type": "array", "items": false}), &["[]"], &["[1]"]);
}

#[test]
fn strings_lengths_count_characters() {
    check(
        json!({"type": "string", "minLength": 2, "maxLength": 3}),
        &[r#""ab""#, r#""日本語""#, r#""a\n""#, r#""\u00e9\u00e9""#],
        &[r#""a""#, r#""abcd""#, r#""日本語x""#],
    );
}

#[test]
fn patterns_are_translated_from_ecma_262() {
    check(
        json!({"type": "string", "pattern": "^[A-Z]{2}\\d{3}$"}),
        &[r#""AB123""#],
        &[r#""AB12""#, r#""ab123""#, r#""AB١٢٣""#],
    );
    check(
        json!({"type": "string", "pattern": "cat"}),
        &[r#""a cat!""#, r#""cat""#],
        &[r#""dog""#],
    );
    check(
        json!({"type": "string", "pattern": "^[a-z0-9-]+$", "maxLength": 5}),
        &[r#""ab-1""#],
        &[r#""abcdef""#, r#""""#],
    );
    check(
        json!({"type": "string", "pattern": "^\"quoted\"$"}),
        &[r#""\"quoted\"""#],
        &[r#""quoted""#],
    );
}

#[test]
fn integers_and_numbers_respect_bounds() {
    check(
        json!({"type": "integer", "minimum": -5, "maximum": 300}),
        &["-5", "0", "300", "42"],
        &["-6", "301", "1.5", "-0", "007"],
    );
    check(
        json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
        &["0.5", "1", "0.001", "1.0"],
        &["0", "1.01", "-0.5", "2"],
    );
    check(
        json!({"type": "number", "multipleOf": 0.01}),
        &["1.25", "3"],
        &["1.255"],
    );
    check(
        json!({"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 25}),
        &["0", "25", "100"],
        &["10", "125"],
    );
    // draft-04 boolean exclusive bounds
    check(
        json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 3}),
        &["1", "3"],
        &["0"],
    );
}

#[test]
fn enum_values_are_filtered_by_their_siblings() {
    check(
        json!({"type": "string", "enum": ["a", 1, "b", null]}),
        &[r#""a""#, r#""b""#],
        &["1", "null"],
    );
    check(
        json!({"const": {"k": [1, "x"]}}),
        &[r#"{"k":[1,"x"]}"#],
        &[r#"{"k":[1]}"#],
    );
    check(
        json!({"enum": ["short", "much too long"], "maxLength": 5}),
        &[r#""short""#],
        &[r#""much too long""#],
    );
}

#[test]
fn composition_is_merged_and_distributed() {
    // allOf merges; the object stays closed to the union of the declared properties.
    check(
        json!({"allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "string"}}, "required": ["b"]}
        ]}),
        &[r#"{"a":1,"b":"x"}"#],
        &[r#"{"a":1}"#, r#"{"b":"x"}"#],
    );
    // anyOf beside `type: object` only produces objects.
    check(
        json!({"type": "object", "properties": {"kind": {"type": "string"}}, "anyOf": [{"required": ["kind"]}, {"properties": {"n": {"type": "integer"}}, "required": ["n"]}]}),
        &[r#"{"kind":"a"}"#, r#"{"kind":"a","n":1}"#, r#"{"n":1}"#],
        &[r#""kind""#, "{}"],
    );
    // oneOf with a discriminator is exclusive as compiled.
    let schema = json!({"oneOf": [
        {"type": "object", "properties": {"t": {"const": "a"}, "x": {"type": "integer"}}, "required": ["t"]},
        {"type": "object", "properties": {"t": {"const": "b"}, "y": {"type": "string"}}, "required": ["t"]}
    ]});
    let compiled = Compiler::new().compile_detailed(&schema).unwrap();
    assert!(compiled.unenforced.is_empty(), "{:?}", compiled.unenforced);
    check(
        schema,
        &[r#"{"t":"a","x":1}"#, r#"{"t":"b","y":"s"}"#],
        &[r#"{"t":"a","y":"s"}"#],
    );
    // if/then/else: both branches hold.
    check(
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "if": {"required": ["a"]}, "then": {"required": ["a"]}, "else": {"properties": {"a": {"minimum": 0}}}}),
        &[r#"{"a":3}"#],
        &[r#"{"a":-1}"#, "{}"],
    );
}

#[test]
fn references_and_recursion() {
    let tree = json!({
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
        }, "required": ["v"]}},
        "$ref": "#/$defs/node"
    });
    check(
        tree.clone(),
        &[
            r#"{"v":1}"#,
            r#"{"v":1,"children":[{"v":2,"children":[{"v":3}]}]}"#,
        ],
        &[r#"{"children":[]}"#],
    );
    let shallow = Compiler::new().max_recursion(1).compile(&tree).unwrap();
    let re = Regex::new(&format!("^(?:{shallow})$")).unwrap();
    assert!(re.is_match(r#"{"v":1}"#) && !re.is_match(r#"{"v":1,"children":[{"v":2}]}"#));
    check(
        json!({"definitions": {"a/b": {"type": "boolean"}}, "properties": {"x": {"$ref": "#/definitions/a~1b"}}, "required": ["x"]}),
        &[r#"{"x":true}"#],
        &[r#"{"x":1}"#],
    );
}

#[test]
fn not_of_simple_forms() {
    check(
        json!({"type": ["string", "null"], "not": {"type": "null"}}),
        &[r#""a""#],
        &["null"],
    );
    check(
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "not": {"required": ["a"]}}),
        &["{}"],
        &[r#"{"a":1}"#],
    );
    check(
        json!({"type": "string", "not": {"enum": ["x"]}}),
        &[r#""y""#, r#""xx""#],
        &[r#""x""#],
    );
}

#[test]
fn flexible_whitespace_is_bounded() {
    let re = Compiler::new()
        .whitespace(Whitespace::Flexible { max: 2 })
        .compile(&json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}, "required": ["a"]}))
        .unwrap();
    let re = Regex::new(&format!("^(?:{re})$")).unwrap();
    assert!(re.is_match("{ \"a\" : [ 1 , 2 ] }"));
    assert!(re.is_match("{\"a\":[1,2]}"));
    assert!(!re.is_match("{   \"a\":[1]}"));
}

#[test]
fn a_whitespace_pattern_is_the_only_whitespace_between_tokens() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}, "b": {"enum": [[1, 2]]}}, "required": ["a", "b"]});
    let ws = Whitespace::pattern(r"\n? ?").unwrap();
    let re = Compiler::new().whitespace(ws).compile(&schema).unwrap();
    let re = Regex::new(&format!("^(?:{re})$")).unwrap();
    assert!(re.is_match("{\n \"a\":[1, 2],\"b\": [ 1,2 ]\n}"));
    assert!(re.is_match("{\"a\":[1,2],\"b\":[1,2]}"));
    // A tab, or two spaces, is not what the pattern matches.
    assert!(!re.is_match("{\t\"a\":[1,2],\"b\":[1,2]}"));
    assert!(!re.is_match("{\"a\":[1,  2],\"b\":[1,2]}"));
}

#[test]
fn a_bad_whitespace_pattern_is_refused() {
    for bad in ["[ ", "(?P<x> )", "( )*", "^ *", r"\b"] {
        match Whitespace::pattern(bad) {
            Err(SchemaError::Whitespace { pattern, .. }) => assert_eq!(pattern, bad),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn errors_name_the_keyword_and_pointer() {
    let err = |s: Value| Compiler::new().compile(&s).unwrap_err();
    match err(
        json!({"properties": {"p": {"type": "string", "pattern": "(?=x)"}}, "required": ["p"]}),
    ) {
        SchemaError::Pattern { pointer, .. } => assert_eq!(pointer, "/properties/p"),
        other => panic!("unexpected {other:?}"),
    }
    match err(json!({"$ref": "#/$defs/missing"})) {
        SchemaError::UnresolvedRef { reference, .. } => assert_eq!(reference, "#/$defs/missing"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        err(json!({"type": "strin"})),
        SchemaError::Invalid { .. }
    ));
    assert!(matches!(
        err(json!(false)),
        SchemaError::Unsatisfiable { .. }
    ));
    assert!(matches!(
        err(json!({"type": "string", "$dynamicRef": "#x"})),
        SchemaError::Unsupported { .. }
    ));
    assert!(matches!(
        Compiler::new()
            .max_size(100)
            .compile(&json!({"type": "object"})),
        Err(SchemaError::TooLarge { .. })
    ));
    let mut deep = json!({"type": "integer"});
    for _ in 0..500 {
        deep = json!({"type": "array", "items": deep});
    }
    assert!(matches!(
        Compiler::new().compile(&deep),
        Err(SchemaError::TooDeep { .. })
    ));
}

#[test]
fn unenforced_keywords_are_reported() {
    let c = Compiler::new()
        .compile_detailed(
            &json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true}),
        )
        .unwrap();
    assert_eq!(c.unenforced.len(), 1);
    assert_eq!(c.unenforced[0].keyword, "uniqueItems");
}
