//! The engine on the default model (SmolLM2-135M-Instruct Q4_1): the reference answer with
//! greedy decoding, and valid structured outputs at temperature 0.8.
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` and fails (never skips) without it: run
//! `cargo xtask fetch-model`.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use formwork_engine::{
    Constraint, Engine, EngineConfig, EngineError, FinishReason, GrammarSyntax, JsonSchema, Prompt,
    Request,
};
use formwork_index::ByteDfa;
use formwork_model::{Device, load};
use formwork_sampler::SamplingParams;
use formwork_template::Message;
use serde_json::{Value, json};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| new_engine(EngineConfig::default()))
}

fn new_engine(config: EngineConfig) -> Engine {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    Engine::new(load(&path, &Device::Cpu).unwrap(), config).unwrap()
}

fn chat(system: &str, user: &str) -> Prompt {
    Prompt::Chat {
        messages: vec![Message::system(system), Message::user(user)],
        tools: vec![],
        template_kwargs: Default::default(),
    }
}

/// The engine's constraint vocabulary, built from the loaded tokenizer, is the one the default
/// model's GGUF metadata gives (49152 tokens, byte-level BPE, 17 control tokens).
#[test]
fn default_model_vocabulary_from_the_tokenizer_equals_the_gguf_one() {
    let engine = engine();
    common::assert_vocabulary_matches_the_gguf(engine.vocabulary(), engine.info());
    assert_eq!(engine.vocabulary().len(), 49152);
    assert_eq!(engine.vocabulary().eos(), &[0, 2]);
}

#[test]
fn greedy_answer_names_paris() {
    let mut r = Request::new(chat(
        "You are a helpful assistant.",
        "What is the capital of France?",
    ));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(40);
    let c = engine().submit(r).unwrap().blocking_collect().unwrap();
    assert!(c.texts[0].contains("Paris"), "{:?}", c.texts[0]);
    assert_eq!(c.finish_reasons[0], Some(FinishReason::Stop));
}

#[test]
fn structured_outputs_at_temperature_0_8_are_valid() {
    let schemas = [
        json!({"type":"object","properties":{"name":{"type":"string","maxLength":30},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"]}),
        json!({"type":"object","properties":{"city":{"type":"string","maxLength":40},"country":{"type":"string","maxLength":40},"population":{"type":"integer","minimum":0},"capital":{"type":"boolean"}},"required":["city","country","population","capital"]}),
        json!({"type":"array","items":{"type":"string","enum":["red","green","blue"]},"minItems":1,"maxItems":4}),
    ];
    let regex = r"\d{3}-\d{3}-\d{4}";
    let choices = vec!["positive".to_string(), "negative".into(), "neutral".into()];
    let mut handles = Vec::new();
    for seed in 0..2u64 {
        let sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        for (i, schema) in schemas.iter().enumerate() {
            let mut r = Request::new(chat("You answer in JSON.", "Describe a person or a city."));
            r.sampling = sampling.clone();
            r.max_tokens = Some(120);
            r.constraint = Some(Constraint::JsonSchema(JsonSchema::new(schema.clone())));
            handles.push((
                format!("schema {i}"),
                Some(schema.clone()),
                None,
                engine().submit(r).unwrap(),
            ));
        }
        let mut r = Request::new(chat(
            "You are a helpful assistant.",
            "Give me a phone number.",
        ));
        r.sampling = sampling.clone();
        r.constraint = Some(Constraint::Regex(regex.into()));
        handles.push((
            "regex".into(),
            None,
            Some(regex),
            engine().submit(r).unwrap(),
        ));
        let mut r = Request::new(chat(
            "You are a helpful assistant.",
            "I love this movie! Sentiment?",
        ));
        r.sampling = sampling.clone();
        r.constraint = Some(Constraint::Choice(choices.clone()));
        handles.push(("choice".into(), None, None, engine().submit(r).unwrap()));
    }
    for (name, schema, regex, handle) in handles {
        let c = handle.blocking_collect().unwrap();
        let text = &c.texts[0];
        if let Some(schema) = schema {
            if c.finish_reasons[0] != Some(FinishReason::Stop) {
                continue;
            }
            let doc: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
            assert!(jsonschema::is_valid(&schema, &doc), "{name}: {text}");
        } else if let Some(regex) = regex {
            assert_eq!(c.finish_reasons[0], Some(FinishReason::Stop));
            assert!(
                ByteDfa::new(regex).unwrap().matches(text.as_bytes()),
                "{name}: {text}"
            );
        } else {
            assert!(choices.contains(text), "{name}: {text}");
        }
    }
}

/// A recursive GBNF grammar at temperature 0.8: every finished output is in the language (as
/// a hand-built copy of the grammar decides) and nests at least four deep.
#[test]
fn grammar_outputs_at_temperature_0_8_are_in_the_language() {
    let (gbnf, grammar) = common::nested_lists();
    let mut handles = Vec::new();
    for seed in 0..4u64 {
        let mut r = Request::new(chat(
            "You answer with nested lists of numbers.",
            "Write a list of lists of small numbers.",
        ));
        r.sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        r.max_tokens = Some(150);
        r.constraint = Some(Constraint::Grammar {
            syntax: GrammarSyntax::Gbnf,
            text: gbnf.into(),
        });
        handles.push(engine().submit(r).unwrap());
    }
    let mut stopped = 0;
    for handle in handles {
        let c = handle.blocking_collect().unwrap();
        let text = &c.texts[0];
        match c.finish_reasons[0] {
            Some(FinishReason::Stop) => {
                stopped += 1;
                assert!(grammar.matches(text.as_bytes()).unwrap(), "{text}");
                assert!(common::bracket_depth(text) >= 4, "{text}");
            }
            reason => assert_eq!(reason, Some(FinishReason::Length), "{text}"),
        }
    }
    assert!(stopped > 0, "no output finished within 150 tokens");
}

/// Requests behind one long shared system prompt, and a conversation re-sent with its reply
/// and a new question, answer the same with prefix reuse as without, log-probabilities
/// included (the same bits: the
/// AVX2 row kernel and the tiled kernel both read the reused blocks), and reuse the shared
/// part.
#[test]
fn prefix_reuse_gives_the_same_greedy_replies() {
    let with = new_engine(EngineConfig::default());
    let without = new_engine(EngineConfig {
        prefix_cache: false,
        ..EngineConfig::default()
    });
    let system = "You are the support assistant of a bicycle shop. You answer questions about \
        opening hours (9 to 18 on weekdays, 10 to 16 on Saturdays), repairs (flat tyres, \
        brakes, gears, wheels), rentals (city bikes, e-bikes, children's bikes) and orders. "
        .repeat(12);
    let questions = [
        "When do you open on Saturday?",
        "Can you fix my brakes today?",
    ];
    let mut first_reply = String::new();
    for (i, q) in questions.iter().enumerate() {
        let mut messages = vec![Message::system(system.as_str()), Message::user(*q)];
        if i == 1 {
            // The first conversation again, with its reply and a follow-up question.
            messages = vec![
                Message::system(system.as_str()),
                Message::user(questions[0]),
                Message::assistant(first_reply.as_str()),
                Message::user(*q),
            ];
        }
        let request = || {
            let mut r = Request::new(Prompt::Chat {
                messages: messages.clone(),
                tools: vec![],
                template_kwargs: Default::default(),
            });
            r.sampling = SamplingParams::greedy();
            r.sampling.top_logprobs = Some(2);
            r.max_tokens = Some(24);
            r
        };
        let a = with.submit(request()).unwrap().blocking_collect().unwrap();
        let b = without
            .submit(request())
            .unwrap()
            .blocking_collect()
            .unwrap();
        assert_eq!(a.texts, b.texts, "question {i}");
        assert_eq!(a.logprobs, b.logprobs, "question {i}");
        assert!(a.usage.prompt_tokens > 600, "{:?}", a.usage);
        if i == 0 {
            first_reply = a.texts[0].clone();
            assert_eq!(a.usage.cached_tokens, 0);
        } else {
            assert!(a.usage.cached_tokens > 500, "{:?}", a.usage);
        }
    }
}
/// One greedy reply under `constraint`, with jump-forward decoding on or off.
fn greedy_reply(
    prompt: &Prompt,
    constraint: &Constraint,
    jump: bool,
) -> formwork_engine::Completion {
    let mut r = Request::new(prompt.clone());
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(160);
    r.constraint = Some(constraint.clone());
    r.jump_forward = Some(jump);
    engine().submit(r).unwrap().blocking_collect().unwrap()
}

/// Jump-forward decoding changes nothing where the model, decoding step by step under the
/// mask, picks the tokens the tokenizer writes for the forced text: on the person schema
/// (fixed keys) the same greedy text from the same number of tokens, with forced
/// tokens counted only when jumping, so the jumps were what the model would have sampled.
/// Where the model spells some forced text in other pieces than the tokenizer (the rest of
/// long choices, one piece at a time; a key or two of the order), the text is the same and
/// jumping takes fewer tokens.
#[test]
fn default_model_greedy_replies_are_the_same_with_and_without_jump_forward() {
    let person = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "maxLength": 30}
        },
        "required": ["name", "age", "city"]
    });
    let order = json!({
        "type": "object",
        "properties": {
            "product": {"type": "string", "maxLength": 30},
            "size": {"enum": ["small", "medium", "large"]},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 9},
            "gift": {"type": "boolean"}
        },
        "required": ["product", "size", "quantity", "gift"]
    });
    let choices = Constraint::Choice(vec![
        "positive, and I would watch it again".into(),
        "negative, and I would not watch it again".into(),
    ]);
    let cases = [
        (
            chat("You answer in JSON.", "Describe a person."),
            Constraint::JsonSchema(JsonSchema::new(person)),
            true,
        ),
        (
            chat("You answer in JSON.", "Order a coffee mug as a gift."),
            Constraint::JsonSchema(JsonSchema::new(order)),
            false,
        ),
        (
            chat(
                "You are a helpful assistant.",
                "I love this movie! Sentiment?",
            ),
            choices,
            false,
        ),
    ];
    for (prompt, constraint, same_tokens) in &cases {
        let with = greedy_reply(prompt, constraint, true);
        let without = greedy_reply(prompt, constraint, false);
        assert_eq!(with.texts, without.texts, "{constraint:?}");
        assert_eq!(with.finish_reasons, without.finish_reasons);
        assert_eq!(with.finish_reasons[0], Some(FinishReason::Stop));
        let (a, b) = (
            with.usage.completion_tokens,
            without.usage.completion_tokens,
        );
        if *same_tokens {
            assert_eq!(a, b, "{:?}", with.texts);
        } else {
            assert!(
                a < b,
                "{a} tokens with jumps, {b} without: {:?}",
                with.texts
            );
        }
        assert!(with.usage.forced_tokens > 0, "no jump: {:?}", with.texts);
        assert_eq!(without.usage.forced_tokens, 0);
    }
}

/// With jump-forward decoding on (the default), replies at temperature 0.8 still follow
/// their schemas, and the forced tokens are counted in the usage and the engine's metric.
#[test]
fn default_model_jump_forward_replies_validate() {
    let schemas = [
        json!({"type":"object","properties":{"name":{"type":"string","maxLength":20},"color":{"enum":["red","green","blue"]},"tags":{"type":"array","items":{"type":"string","maxLength":10},"maxItems":3}},"required":["name","color","tags"]}),
        json!({"type":"object","properties":{"id":{"type":"integer"},"active":{"type":"boolean"},"point":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}},"required":["id","active","point"]}),
    ];
    let before = engine().metrics().jump_forward_tokens;
    let mut forced = 0;
    for seed in 0..3u64 {
        for schema in &schemas {
            let mut r = Request::new(chat("You answer in JSON.", "Describe something."));
            r.sampling = SamplingParams {
                temperature: 0.8,
                seed: Some(seed),
                ..SamplingParams::default()
            };
            r.max_tokens = Some(120);
            r.constraint = Some(Constraint::JsonSchema(JsonSchema::new(schema.clone())));
            let c = engine().submit(r).unwrap().blocking_collect().unwrap();
            forced += c.usage.forced_tokens;
            assert!(c.usage.forced_tokens < c.usage.completion_tokens);
            if c.finish_reasons[0] != Some(FinishReason::Stop) {
                continue;
            }
            let text = &c.texts[0];
            let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(jsonschema::is_valid(schema, &doc), "{text}");
        }
    }
    assert!(forced > 0);
    assert!(engine().metrics().jump_forward_tokens >= before + forced as u64);
}

/// Every schema of JSONSchemaBench (`../shared/data/jsonschemabench`, all files), in file
/// order.
fn jsonschemabench() -> Vec<Value> {
    common::jsonschemabench_files()
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(common::jsonschemabench_schema)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The most tokens of a sampled schema's shortest valid document: a test-time bound (a reply
/// of twice a 2,000-token document takes minutes to sample on 2 cores), not a choice of easy
/// schemas: steering matters near the end of any budget, whatever its size.
const MAX_SHORTEST_TOKENS: usize = 48;

/// A uniform random sample of `count` schemas among those that compile (the engine takes
/// them as strict constraints and the `jsonschema` crate builds a validator) and whose
/// shortest document takes at most [`MAX_SHORTEST_TOKENS`], drawn with a fixed seed across
/// the whole data set: the schemas in a seeded random order, the first `count` that qualify.
/// Each with the tokens of its shortest valid document.
fn compiling_sample(count: usize) -> Vec<(Value, usize)> {
    let mut schemas = jsonschemabench();
    // Fisher–Yates with a fixed xorshift stream.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..schemas.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        schemas.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut sample = Vec::new();
    for schema in schemas {
        if sample.len() == count {
            break;
        }
        if jsonschema::validator_for(&schema).is_err() {
            continue;
        }
        let constraint = Constraint::JsonSchema(JsonSchema::new(schema.clone()));
        if let Ok(Some(min)) = engine().min_reply_tokens(&constraint)
            && min <= MAX_SHORTEST_TOKENS
        {
            sample.push((schema, min));
        }
    }
    assert_eq!(sample.len(), count, "too few schemas compile");
    sample
}

/// Runs every schema of `sample` at temperature 1 (seeded) with `max_tokens` twice the
/// tokens of its shortest valid document; the replies and finish reasons, in order.
fn replies_within_twice_the_shortest(
    sample: &[(Value, usize)],
    end_valid: bool,
) -> Vec<(String, Option<FinishReason>)> {
    let handles: Vec<_> = sample
        .iter()
        .enumerate()
        .map(|(i, (schema, min))| {
            let mut r = Request::new(chat("You write JSON.", "Write a JSON document."));
            r.sampling = SamplingParams {
                temperature: 1.0,
                seed: Some(1000 + i as u64),
                ..SamplingParams::default()
            };
            r.max_tokens = Some(2 * min);
            r.end_valid = Some(end_valid);
            r.constraint = Some(Constraint::JsonSchema(JsonSchema::new(schema.clone())));
            engine().submit(r).unwrap()
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            let c = h.blocking_collect().unwrap();
            (c.texts[0].clone(), c.finish_reasons[0])
        })
        .collect()
}

/// The issue's test: on 50 JSONSchemaBench schemas with `max_tokens` twice each schema's
/// shortest valid document, sampled at temperature 1, every reply is a complete document
/// valid under the schema, ended by `stop`; without the rule, some are cut.
#[test]
fn default_model_replies_within_twice_the_shortest_document_end_valid() {
    let sample = compiling_sample(50);
    let replies = replies_within_twice_the_shortest(&sample, true);
    for ((schema, min), (text, reason)) in sample.iter().zip(&replies) {
        assert_eq!(*reason, Some(FinishReason::Stop), "{text:?} ({min} tokens)");
        let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(jsonschema::is_valid(schema, &doc), "{schema}: {text}");
    }
    // The same budgets without the rule: the model runs out of budget in some replies.
    let cut = replies_within_twice_the_shortest(&sample, false)
        .iter()
        .filter(|(_, reason)| *reason == Some(FinishReason::Length))
        .count();
    assert!(cut > 0, "no reply was cut without the rule");
}

/// A budget below the shortest valid document is refused up front, naming the minimum.
#[test]
fn default_model_a_budget_too_small_for_any_document_is_refused() {
    let schema = json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]});
    let constraint = Constraint::JsonSchema(JsonSchema::new(schema));
    let min = engine().min_reply_tokens(&constraint).unwrap().unwrap();
    assert!(min > 3, "{min}");
    let request = |max_tokens, end_valid| {
        let mut r = Request::new(chat("You write JSON.", "Write a JSON document."));
        r.max_tokens = Some(max_tokens);
        r.end_valid = end_valid;
        r.constraint = Some(constraint.clone());
        r
    };
    match engine().submit(request(min - 1, None)) {
        Err(EngineError::MaxTokensTooSmall {
            max_tokens,
            min_tokens,
        }) => assert_eq!((max_tokens, min_tokens), (min - 1, min)),
        other => panic!("{other:?}"),
    }
    let e = engine().submit(request(3, None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "max_tokens 3 is too small for any reply this constraint allows: the shortest takes {min} tokens"
        )
    );
    // Exactly the minimum ends valid; without the rule the small budget is taken as asked.
    let c = engine()
        .submit(request(min, None))
        .unwrap()
        .blocking_collect()
        .unwrap();
    assert_eq!(
        c.finish_reasons[0],
        Some(FinishReason::Stop),
        "{:?}",
        c.texts
    );
    serde_json::from_str::<Value>(&c.texts[0]).unwrap();
    let c = engine()
        .submit(request(3, Some(false)))
        .unwrap()
        .blocking_collect()
        .unwrap();
    assert_eq!(c.finish_reasons[0], Some(FinishReason::Length));
}
