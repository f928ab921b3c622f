//! Grammar constraints over HTTP on the tiny random model: llama.cpp's `grammar` (GBNF),
//! vLLM's `guided_grammar` and `structured_outputs.grammar`, Formwork's
//! `metadata.structure`, streamed and not, every finished output in the grammar's language;
//! bad grammars are 400s in OpenAI's shape naming the cause. And the `formwork grammar`
//! command line.

mod common;

use std::sync::{Arc, OnceLock};

use common::{Server, formwork};
use formwork_engine::{Engine, EngineConfig, GrammarSyntax};
use formwork_grammar::{Grammar, GrammarConfig};
use formwork_server::app::ServerConfig;
use serde_json::{Value, json};

/// Lists of lists of small numbers, in GBNF.
const GBNF: &str = r#"root ::= list
list ::= "[" (item ("," item)*)? "]"
item ::= list | "0" | [1-9] [0-9]?
"#;

/// Parenthesized sums of small numbers, in Lark, with spaces ignored between tokens.
const LARK: &str = r#"start: sum
sum: term ("+" term)*
term: NUMBER | "(" sum ")"
NUMBER: /[1-9][0-9]?/
%ignore " "
"#;

fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| common::tiny_engine(EngineConfig::default()))
        .clone()
}

fn server() -> Server {
    Server::start(engine(), ServerConfig::default())
}

fn grammar(syntax: GrammarSyntax, text: &str) -> Grammar {
    syntax.compile(text, &GrammarConfig::default()).unwrap()
}

/// Each choice's text and finish reason, from a whole answer or a stream's chunks.
fn choices(reply: &common::Reply, stream: bool) -> Vec<(String, String)> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut out: Vec<(String, String)> = Vec::new();
    let bodies: Vec<Value> = if stream {
        reply
            .events()
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    } else {
        vec![reply.json()]
    };
    for body in bodies {
        for choice in body["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            if out.len() <= index {
                out.resize(index + 1, Default::default());
            }
            let text = choice["text"]
                .as_str()
                .or(choice["message"]["content"].as_str())
                .or(choice["delta"]["content"].as_str())
                .unwrap_or_default();
            out[index].0.push_str(text);
            if let Some(reason) = choice["finish_reason"].as_str() {
                out[index].1 = reason.to_owned();
            }
        }
    }
    out
}

/// Sends `body` (with a seed, four choices and room to finish) for several seeds, streamed
/// or not; every finished choice is in `grammar`'s language, and some finish.
fn assert_outputs_in_language(path: &str, body: Value, stream: bool, grammar: &Grammar) {
    let server = server();
    let (mut stopped, mut total) = (0, 0);
    for seed in 0..4 {
        let mut body = body.clone();
        body["seed"] = json!(seed);
        body["n"] = json!(4);
        body["max_tokens"] = json!(200);
        body["temperature"] = json!(1.0);
        body["stream"] = json!(stream);
        for (text, reason) in choices(&server.post(path, &body), stream) {
            total += 1;
            if reason == "stop" {
                if stopped == 0 {
                    eprintln!("{path}: {text:?}");
                }
                stopped += 1;
                assert!(grammar.matches(text.as_bytes()).unwrap(), "{text:?}");
            } else {
                assert_eq!(reason, "length", "{text:?}");
            }
        }
    }
    eprintln!("{path}: {stopped} of {total} choices finished within 200 tokens");
    assert!(stopped > 0, "no choice finished within 200 tokens");
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Some structure, please."}])
}

#[test]
fn gbnf_in_llama_cpp_grammar_field_on_completions() {
    let g = grammar(GrammarSyntax::Gbnf, GBNF);
    let body = json!({"prompt": "x", "grammar": GBNF});
    assert_outputs_in_language("/v1/completions", body.clone(), false, &g);
    assert_outputs_in_language("/v1/completions", body, true, &g);
}

#[test]
fn gbnf_in_llama_cpp_grammar_field_on_chat() {
    let g = grammar(GrammarSyntax::Gbnf, GBNF);
    let body = json!({"messages": messages(), "grammar": GBNF});
    assert_outputs_in_language("/v1/chat/completions", body, true, &g);
}

#[test]
fn lark_in_structured_outputs_and_guided_grammar() {
    let g = grammar(GrammarSyntax::Lark, LARK);
    let body = json!({"messages": messages(), "structured_outputs": {"grammar": LARK}});
    assert_outputs_in_language("/v1/chat/completions", body.clone(), false, &g);
    assert_outputs_in_language("/v1/chat/completions", body, true, &g);
    let body = json!({"prompt": "x", "guided_grammar": LARK});
    assert_outputs_in_language("/v1/completions", body, false, &g);
}

#[test]
fn metadata_structure_grammar_in_either_syntax() {
    let structure = json!({"type": "grammar", "syntax": "lark", "grammar": LARK});
    let body = json!({"messages": messages(), "metadata": {"structure": structure}});
    let g = grammar(GrammarSyntax::Lark, LARK);
    assert_outputs_in_language("/v1/chat/completions", body, false, &g);
    // OpenAI's SDK sends metadata values as strings: a string of JSON is read too.
    let structure = json!({"type": "grammar", "syntax": "gbnf", "grammar": GBNF}).to_string();
    let body = json!({"prompt": "x", "metadata": {"structure": structure}});
    let g = grammar(GrammarSyntax::Gbnf, GBNF);
    assert_outputs_in_language("/v1/completions", body, true, &g);
}

#[test]
fn bad_grammars_are_400s_naming_the_cause() {
    let server = server();
    let cases = [
        (
            json!({"grammar": "root ::= \"a"}),
            "grammar",
            "gbnf grammar, line 1, column",
        ),
        (
            json!({"grammar": "root ::= \"a\" b"}),
            "grammar",
            "rule `b` is used but never defined",
        ),
        (
            json!({"guided_grammar": "root ::= \"a\" root"}),
            "guided_grammar",
            "language is empty",
        ),
        (
            json!({"structured_outputs": {"grammar": "start: \"a\"\n  | )"}}),
            "structured_outputs.grammar",
            "lark grammar, line 2",
        ),
        (
            json!({"metadata": {"structure": {"type": "grammar", "syntax": "lark", "grammar": "root ::= \"a\""}}}),
            "metadata.structure.grammar",
            "lark grammar, line 1",
        ),
        (
            json!({"metadata": {"structure": {"type": "grammar", "syntax": "ebnf", "grammar": "x"}}}),
            "metadata.structure.syntax",
            "unknown `metadata.structure.syntax` `ebnf`",
        ),
        (
            json!({"structured_outputs": {"grammar": "start: \"a\"", "regex": "a"}}),
            "structured_outputs.grammar",
            "sets both `regex` and `grammar`",
        ),
        (
            json!({"grammar": "root ::= \"a\"", "guided_regex": "a"}),
            "grammar",
            "`guided_regex` and `grammar` ask for different structures",
        ),
    ];
    for (fields, param, cause) in cases {
        for (path, mut body) in [
            ("/v1/completions", json!({"prompt": "x", "max_tokens": 4})),
            (
                "/v1/chat/completions",
                json!({"messages": messages(), "max_tokens": 4}),
            ),
        ] {
            for (k, v) in fields.as_object().unwrap() {
                body[k] = v.clone();
            }
            let error = server.post(path, &body).error(400);
            assert_eq!(error["type"], "invalid_request_error", "{error}");
            assert_eq!(error["param"], param, "{fields}: {error}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(cause), "{fields}: {message}");
        }
    }
    // The server serves on.
    let reply = server.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 4, "grammar": GBNF}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn cli_compiles_and_samples_grammars() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-grammar");
    std::fs::create_dir_all(&dir).unwrap();
    let gbnf = dir.join("lists.gbnf");
    std::fs::write(&gbnf, GBNF).unwrap();
    let lark = dir.join("sums.lark");
    std::fs::write(&lark, LARK).unwrap();
    let gbnf = gbnf.to_str().unwrap();
    let lark = lark.to_str().unwrap();

    let compiled = grammar(GrammarSyntax::Gbnf, GBNF);
    let (code, out, err) = formwork(&["grammar", "compile", gbnf], None);
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "# {} rules, {} productions, {} lexemes",
            compiled.rule_count(),
            compiled.productions().len(),
            compiled.lexemes().len()
        )
    );
    assert_eq!(out[first.len() + 1..], compiled.to_string());

    for (file, syntax, text) in [
        (gbnf, GrammarSyntax::Gbnf, GBNF),
        (lark, GrammarSyntax::Lark, LARK),
    ] {
        let g = grammar(syntax, text);
        let (code, out, err) = formwork(
            &["grammar", "sample", file, "--count", "5", "--seed", "3"],
            None,
        );
        assert_eq!(code, 0, "{err}");
        let samples: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(samples.len(), 5);
        for s in &samples {
            assert!(g.matches(s.as_bytes()).unwrap(), "{s:?}");
        }
        // Equal seeds, equal samples.
        let (_, again, _) = formwork(
            &["grammar", "sample", file, "--count", "5", "--seed", "3"],
            None,
        );
        assert_eq!(again, out);
    }

    // Standard input needs --syntax.
    let (code, out, _) = formwork(
        &["grammar", "sample", "-", "--syntax", "lark", "--count", "2"],
        Some(LARK),
    );
    assert_eq!((code, out.lines().count()), (0, 2));
    let (code, _, err) = formwork(&["grammar", "compile", "-"], Some(LARK));
    assert_eq!(code, 2);
    assert!(err.contains("--syntax"), "{err}");
    // A bad grammar: exit code 2 and the cause.
    let (code, _, err) = formwork(
        &["grammar", "compile", "-", "--syntax", "gbnf"],
        Some("root ::= (\"a\""),
    );
    assert_eq!(code, 2);
    assert!(err.contains("gbnf grammar, line 1"), "{err}");
}
