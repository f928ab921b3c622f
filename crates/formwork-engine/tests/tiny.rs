//! The engine over a tiny random-weight model written by the test: constrained outputs are
//! valid whatever the weights, stop strings never leak, cancellation frees sequences, a full
//! queue is a typed error, deltas add up, seeds repeat.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use formwork_engine::tools::{ReplyMode, ReplyReader, ToolFormat};
use formwork_engine::{
    Completion, Constraint, Engine, EngineConfig, EngineError, Event, FinishReason, GrammarSyntax,
    JsonSchema, Prompt, ReasoningFormat, Request, ToolFunction,
};
use formwork_index::ByteDfa;
use formwork_model::testing::{FaultyModel, TinySpec, write_tiny_gguf};
use formwork_model::{LoadOptions, LoadedModel, PromptAttention, load_with};
use formwork_sampler::SamplingParams;
use formwork_template::Message;
use serde_json::{Value, json};

fn tiny_model() -> LoadedModel {
    tiny_model_with(PromptAttention::default())
}

fn tiny_model_with(prompt_attention: PromptAttention) -> LoadedModel {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("formwork-engine-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny-llama.gguf");
        write_tiny_gguf(&path, &TinySpec::default()).unwrap();
        path
    });
    load_with(
        path,
        &LoadOptions::default().with_prompt_attention(prompt_attention),
    )
    .unwrap()
}

fn engine(config: EngineConfig) -> Engine {
    Engine::new(tiny_model(), config).unwrap()
}

/// Engines on the tiny model with prompt rows computed as `prompt_attention` says: one with
/// prefix reuse (the default config), one without.
fn with_and_without_prefix_cache(prompt_attention: PromptAttention) -> (Engine, Engine) {
    let engine = |config| Engine::new(tiny_model_with(prompt_attention), config).unwrap();
    let without = EngineConfig {
        prefix_cache: false,
        ..EngineConfig::default()
    };
    (engine(EngineConfig::default()), engine(without))
}

fn shared_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| engine(EngineConfig::default()))
}

fn sampling(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        ..SamplingParams::default()
    }
}

fn chat(text: &str) -> Prompt {
    Prompt::Chat {
        messages: vec![Message::user(text)],
        tools: vec![],
        template_kwargs: Default::default(),
    }
}

fn run(engine: &Engine, request: Request) -> Completion {
    engine.submit(request).unwrap().blocking_collect().unwrap()
}

fn jsonschemabench_sample(count: usize) -> Vec<Value> {
    let files = common::jsonschemabench_files();
    let mut schemas = Vec::new();
    let per_file = count.div_ceil(files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines().step_by(97).take(per_file * 3) {
            let schema = common::jsonschemabench_schema(line);
            if formwork_schema::Compiler::new().compile(&schema).is_ok() {
                schemas.push(schema);
                if schemas.len() % per_file == 0 {
                    break;
                }
            }
        }
    }
    schemas
}

/// The engine's constraint vocabulary, built from the loaded tokenizer, is the one the tiny
/// model's GGUF metadata gives.
#[test]
fn vocabulary_from_the_tokenizer_equals_the_gguf_one() {
    let engine = shared_engine();
    common::assert_vocabulary_matches_the_gguf(engine.vocabulary(), engine.info());
    assert_eq!(engine.vocabulary().eos(), &[0, 2]);
}

#[test]
fn constrained_random_model_only_produces_valid_documents() {
    let engine = shared_engine();
    let schemas = jsonschemabench_sample(40);
    assert!(schemas.len() >= 25, "only {} schemas", schemas.len());
    let mut stopped = 0;
    let mut total = 0;
    for (i, schema) in schemas.iter().enumerate() {
        let validator = match jsonschema::validator_for(schema) {
            Ok(v) => v,
            Err(_) => continue,
        };
        for seed in 0..2 {
            let mut r = Request::new(chat("json please"));
            r.sampling = sampling(seed * 1000 + i as u64);
            r.max_tokens = Some(400);
            // Lenient: the sample holds keywords the compiler does not enforce (the outputs
            // are still checked against the whole schema).
            r.constraint = Some(Constraint::JsonSchema(
                JsonSchema::new(schema.clone()).strict(false),
            ));
            let c = match engine.submit(r) {
                Ok(h) => h.blocking_collect().unwrap(),
                // Index limits (a schema too large for the token index) are typed refusals.
                Err(EngineError::Index(_)) => continue,
                Err(e) => panic!("schema {i}: {e}"),
            };
            total += 1;
            if c.finish_reasons[0] == Some(FinishReason::Stop) {
                stopped += 1;
                let doc: Value = serde_json::from_str(&c.texts[0])
                    .unwrap_or_else(|e| panic!("schema {i}: not JSON ({e}): {}", c.texts[0]));
                assert!(
                    validator.is_valid(&doc),
                    "schema {i} seed {seed}: invalid output {}\nschema {schema}",
                    c.texts[0]
                );
            } else {
                assert_eq!(c.finish_reasons[0], Some(FinishReason::Length));
            }
        }
    }
    eprintln!("{stopped} of {total} constrained generations completed within 400 tokens");
    assert!(stopped * 2 >= total, "only {stopped} of {total} completed");
}

#[test]
fn regex_and_choice_outputs_match_in_full() {
    let engine = shared_engine();
    let regex = r"[a-z]{2,5}-\d{3}(\.[A-Z]+)?";
    let dfa = ByteDfa::new(regex).unwrap();
    for seed in 0..10 {
        let mut r = Request::new(chat("code"));
        r.sampling = sampling(seed);
        r.constraint = Some(Constraint::Regex(regex.into()));
        r.max_tokens = Some(100);
        let c = run(engine, r);
        if c.finish_reasons[0] == Some(FinishReason::Stop) {
            assert!(dfa.matches(c.texts[0].as_bytes()), "{:?}", c.texts[0]);
        }
        let choices = vec!["red".to_string(), "green".into(), "blue ocean".into()];
        let mut r = Request::new(chat("color"));
        r.sampling = sampling(seed);
        r.constraint = Some(Constraint::Choice(choices.clone()));
        let c = run(engine, r);
        assert_eq!(c.finish_reasons[0], Some(FinishReason::Stop));
        assert!(choices.contains(&c.texts[0]), "{:?}", c.texts[0]);
    }
}

#[test]
fn grammar_outputs_of_a_random_model_are_in_the_language() {
    let engine = shared_engine();
    let (gbnf, grammar) = common::nested_lists();
    let mut stopped = 0;
    for seed in 0..8 {
        let mut r = Request::new(chat("lists"));
        r.sampling = sampling(seed);
        r.max_tokens = Some(200);
        r.n = 2;
        r.constraint = Some(Constraint::Grammar {
            syntax: GrammarSyntax::Gbnf,
            text: gbnf.into(),
        });
        let c = run(engine, r);
        for (text, reason) in c.texts.iter().zip(&c.finish_reasons) {
            match reason {
                Some(FinishReason::Stop) => {
                    stopped += 1;
                    assert!(grammar.matches(text.as_bytes()).unwrap(), "{text}");
                    assert!(common::bracket_depth(text) >= 4, "{text}");
                }
                reason => assert_eq!(*reason, Some(FinishReason::Length), "{text}"),
            }
        }
    }
    assert!(stopped > 0, "no output finished within 200 tokens");
}

#[test]
fn tool_format_comes_from_the_chat_template() {
    assert_eq!(shared_engine().tool_format(), ToolFormat::Generic);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/chat_templates/Qwen-Qwen2.5-7B-Instruct.jinja");
    let mut model = tiny_model();
    model.info.chat_template = Some(std::fs::read_to_string(&path).unwrap());
    let engine = Engine::new(model, EngineConfig::default()).unwrap();
    assert_eq!(engine.tool_format(), ToolFormat::Hermes);
}

#[test]
fn tool_calls_follow_the_parameter_schemas() {
    let engine = shared_engine();
    let weather = json!({"type":"object","properties":{"city":{"type":"string","maxLength":12},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]});
    let functions = vec![
        ToolFunction {
            name: "get_weather".into(),
            parameters: weather.clone(),
            strict: true,
        },
        ToolFunction {
            name: "noop".into(),
            parameters: json!({"type":"object","properties":{}}),
            strict: true,
        },
    ];
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
    for seed in 0..6 {
        let mut r = Request::new(chat("weather?"));
        r.sampling = sampling(seed);
        r.max_tokens = Some(300);
        r.constraint = Some(Constraint::ToolCall {
            functions: functions.clone(),
            parallel: seed % 2 == 0,
        });
        let c = run(engine, r);
        // The engine's reader takes the reply back as calls, finished or cut short.
        let reply = ReplyReader::read(ReplyMode::Forced, &names, &c.texts[0]);
        assert_eq!(reply.content, None);
        if c.finish_reasons[0] != Some(FinishReason::Stop) {
            continue;
        }
        let v: Value = serde_json::from_str(&c.texts[0]).unwrap();
        let calls = if seed % 2 == 0 {
            v.as_array().unwrap().clone()
        } else {
            vec![v]
        };
        assert!(!calls.is_empty());
        assert_eq!(reply.calls.len(), calls.len());
        for (read, call) in reply.calls.iter().zip(&calls) {
            assert_eq!(read.name, call["name"].as_str().unwrap());
            let arguments: Value = serde_json::from_str(&read.arguments).unwrap();
            assert_eq!(arguments, call["arguments"]);
        }
        for call in calls {
            match call["name"].as_str().unwrap() {
                "get_weather" => {
                    assert!(jsonschema::is_valid(&weather, &call["arguments"]), "{call}")
                }
                "noop" => assert!(call["arguments"].is_object()),
                other => panic!("unknown function {other}"),
            }
        }
    }
}

#[test]
fn stop_strings_never_leak() {
    let engine = shared_engine();
    let mut r = Request::new(chat("talk"));
    r.sampling = sampling(42);
    r.max_tokens = Some(60);
    r.ignore_eos = true;
    let full = run(engine, r.clone()).texts.remove(0);
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 20, "{full:?}");
    // A stop string taken from the middle of the unconstrained output.
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    r.stop = vec![stop.clone()];
    let mut handle = engine.submit(r).unwrap();
    let mut streamed = String::new();
    let mut reason = None;
    while let Some(e) = handle.blocking_next() {
        match e {
            Event::Delta { text, .. } => {
                streamed.push_str(&text);
                assert!(!streamed.contains(&stop), "leaked {stop:?} in {streamed:?}");
            }
            Event::Finished { reason: r, .. } => reason = Some(r),
            _ => {}
        }
    }
    assert_eq!(streamed, expected);
    assert_eq!(reason, Some(FinishReason::Stop));
}

#[test]
fn same_seed_same_output_and_deltas_add_up() {
    let engine = shared_engine();
    let mut r = Request::new(Prompt::Text("hello there".into()));
    r.sampling = sampling(7);
    r.sampling.top_logprobs = Some(3);
    r.max_tokens = Some(40);
    r.ignore_eos = true;
    let a = run(engine, r.clone());
    let b = run(engine, r.clone());
    assert_eq!(a.texts, b.texts);
    // The deltas' text is exactly the bytes of the tokens generated.
    let bytes: Vec<u8> = a.logprobs[0].iter().flat_map(|t| t.bytes.clone()).collect();
    assert_eq!(a.texts[0], String::from_utf8_lossy(&bytes));
    assert_eq!(a.logprobs[0].len(), 40);
    assert_eq!(a.usage.completion_tokens, 40);
    for t in &a.logprobs[0] {
        assert!(t.logprob <= 0.0 && t.top.len() == 3);
    }
    r.sampling.seed = Some(8);
    let c = run(engine, r);
    assert_ne!(
        a.texts, c.texts,
        "different seeds should differ on a random model"
    );
}

#[test]
fn n_choices_share_the_prefill_and_repeat_with_a_seed() {
    let engine = shared_engine();
    let mut r = Request::new(chat("three"));
    r.sampling = sampling(3);
    r.n = 3;
    r.max_tokens = Some(20);
    r.ignore_eos = true;
    let a = run(engine, r.clone());
    assert_eq!(a.texts.len(), 3);
    assert!(
        a.finish_reasons
            .iter()
            .all(|f| *f == Some(FinishReason::Length))
    );
    assert_eq!(a.usage.completion_tokens, 60);
    assert_ne!(a.texts[0], a.texts[1]);
    assert_eq!(
        a,
        Completion {
            usage: a.usage,
            ..run(engine, r)
        }
    );
}

#[test]
fn concurrent_requests_equal_the_same_requests_alone() {
    let engine = shared_engine();
    let requests: Vec<Request> = (0..6)
        .map(|i| {
            let mut r = Request::new(chat(&"word ".repeat(i * 7 + 1)));
            r.sampling = sampling(i as u64);
            r.max_tokens = Some(25);
            r.ignore_eos = true;
            r
        })
        .collect();
    let alone: Vec<String> = requests
        .iter()
        .map(|r| run(engine, r.clone()).texts.remove(0))
        .collect();
    let handles: Vec<_> = requests
        .into_iter()
        .map(|r| engine.submit(r).unwrap())
        .collect();
    let together: Vec<String> = handles
        .into_iter()
        .map(|h| h.blocking_collect().unwrap().texts.remove(0))
        .collect();
    assert_eq!(alone, together);
}

fn wait_for(engine: &Engine, what: &str, cond: impl Fn(&formwork_engine::MetricsSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond(&engine.metrics()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dropping_the_handle_cancels_and_frees_the_sequence() {
    let engine = engine(EngineConfig::default());
    let mut r = Request::new(chat("go on forever"));
    r.sampling = sampling(1);
    r.ignore_eos = true;
    let mut handle = engine.submit(r).unwrap();
    assert!(matches!(handle.blocking_next(), Some(Event::Delta { .. })));
    wait_for(&engine, "one active sequence", |m| m.active == 1);
    drop(handle);
    wait_for(&engine, "the sequence to be freed", |m| m.active == 0);
    let m = engine.metrics();
    assert_eq!(m.finished[2], ("cancelled", 1));
}

#[test]
fn a_full_queue_is_a_typed_error() {
    let engine = engine(EngineConfig {
        max_active: 1,
        max_queue: 1,
        ..EngineConfig::default()
    });
    let long = || {
        let mut r = Request::new(chat("long"));
        r.ignore_eos = true;
        r.sampling = sampling(5);
        r
    };
    let _a = engine.submit(long()).unwrap();
    wait_for(&engine, "the first request to start", |m| m.active == 1);
    let _b = engine.submit(long()).unwrap();
    match engine.submit(long()) {
        Err(EngineError::QueueFull { capacity: 1 }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
}

#[test]
fn bad_requests_are_typed_errors_before_generation() {
    let engine = shared_engine();
    let submit = |f: &dyn Fn(&mut Request)| {
        let mut r = Request::new(chat("x"));
        f(&mut r);
        engine.submit(r).map(|_| ())
    };
    assert!(matches!(
        submit(&|r| r.constraint = Some(Constraint::Regex("(".into()))),
        Err(EngineError::Index(_))
    ));
    assert!(matches!(
        submit(
            &|r| r.constraint = Some(Constraint::JsonSchema(JsonSchema::new(
                json!({"type": "object", "minProperties": "x"})
            )))
        ),
        Err(EngineError::Schema(_))
    ));
    assert!(matches!(
        submit(&|r| r.constraint = Some(Constraint::Choice(vec![]))),
        Err(EngineError::Constraint(_))
    ));
    match submit(&|r| {
        r.constraint = Some(Constraint::Grammar {
            syntax: GrammarSyntax::Gbnf,
            text: "root ::= (\"a\"".into(),
        })
    }) {
        Err(EngineError::Constraint(m)) => assert!(m.contains("gbnf grammar, line 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        submit(&|r| r.sampling.temperature = -1.0),
        Err(EngineError::Sampling(_))
    ));
    assert!(matches!(
        submit(&|r| r.n = 0),
        Err(EngineError::InvalidRequest(_))
    ));
    assert!(matches!(
        submit(&|r| r.prompt = Prompt::Text("a ".repeat(3000))),
        Err(EngineError::PromptTooLong {
            context_length: 1024,
            ..
        })
    ));
    assert!(matches!(
        submit(&|r| r.prompt = Prompt::Tokens(vec![])),
        Err(EngineError::EmptyPrompt)
    ));
    // The engine still serves after all of them.
    let mut r = Request::new(chat("ok"));
    r.max_tokens = Some(3);
    r.ignore_eos = true;
    assert_eq!(run(engine, r).usage.completion_tokens, 3);
}

#[test]
fn a_null_content_renders_as_empty_for_a_template_that_concatenates_it() {
    // The tiny model's chatml template concatenates `message['content']`, which fails on
    // the `null` content of an assistant turn that only calls a tool.
    let engine = shared_engine();
    let conversation = |content: Option<&str>| {
        let mut call = Message::assistant("");
        call.content = content.map(Into::into);
        call.tool_calls = Some(vec![formwork_template::ToolCall::function(
            "call_1",
            "weather",
            json!("{}"),
        )]);
        Prompt::Chat {
            messages: vec![
                Message::user("Weather?"),
                call,
                Message::tool("call_1", "sunny"),
            ],
            tools: vec![],
            template_kwargs: Default::default(),
        }
    };
    let tokens = engine.prompt_tokens(&conversation(None)).unwrap();
    assert_eq!(
        tokens,
        engine.prompt_tokens(&conversation(Some(""))).unwrap()
    );
    let Prompt::Chat { messages, .. } = conversation(None) else {
        unreachable!()
    };
    let text = engine.render_chat(&messages, &[]).unwrap();
    assert!(text.contains("<|im_start|>assistant\n<|im_end|>"), "{text}");
    // Generation reads the same prompt.
    let mut r = Request::new(conversation(None));
    r.max_tokens = Some(2);
    assert_eq!(run(engine, r).usage.prompt_tokens, tokens.len());
}

#[test]
fn multibyte_characters_survive_constrained_streams() {
    let engine = shared_engine();
    let regex = "(日本|€|😀|é){3,6}";
    let dfa = ByteDfa::new(regex).unwrap();
    for seed in 0..5 {
        let mut r = Request::new(chat("unicode"));
        r.sampling = sampling(seed);
        r.constraint = Some(Constraint::Regex(regex.into()));
        let mut handle = engine.submit(r).unwrap();
        let mut text = String::new();
        while let Some(e) = handle.blocking_next() {
            if let Event::Delta { text: t, .. } = e {
                assert!(!t.contains('\u{FFFD}'));
                text.push_str(&t);
            }
        }
        assert!(dfa.matches(text.as_bytes()), "{text:?}");
    }
}

#[test]
fn an_automaton_past_its_limits_ends_the_request_with_a_clear_error() {
    // The lazy DFA may only hold 4 states: generation gets to the fourth, then no token can
    // continue; the request ends with an error naming the cause, not a panic or a hang.
    let mut config = EngineConfig::default();
    config.index.dfa.max_states = 4;
    let engine = engine(config);
    let mut r = Request::new(chat("letters"));
    r.sampling = sampling(3);
    r.max_tokens = Some(60);
    r.constraint = Some(Constraint::Regex("ab[a-z]{10}".into()));
    match engine.submit(r).unwrap().blocking_collect() {
        Err(EngineError::Generation(message)) => {
            assert!(message.contains("outgrew its size limits"), "{message}")
        }
        other => panic!("expected a generation error, got {other:?}"),
    }
    // The engine still serves.
    let mut r = Request::new(chat("ok"));
    r.max_tokens = Some(3);
    r.ignore_eos = true;
    assert_eq!(run(&engine, r).usage.completion_tokens, 3);
}

#[test]
fn a_grammar_too_ambiguous_to_follow_ends_the_request_with_an_error() {
    // After `x` the parser would predict 25 000 recursive alternatives at once, past its
    // bound on items per position: the choice ends with an error naming it, not a panic.
    let mut gbnf = String::from("root ::= \"x\" many\nmany ::= r0");
    for i in 1..25_000 {
        gbnf.push_str(&format!(" | r{i}"));
    }
    gbnf.push('\n');
    for i in 0..25_000 {
        gbnf.push_str(&format!("r{i} ::= \"a\" r{i} \"b\" | \"a\"\n"));
    }
    let engine = shared_engine();
    let mut r = Request::new(chat("x"));
    r.sampling = sampling(1);
    r.max_tokens = Some(20);
    r.constraint = Some(Constraint::Grammar {
        syntax: GrammarSyntax::Gbnf,
        text: gbnf,
    });
    match engine.submit(r).unwrap().blocking_collect() {
        Err(EngineError::Generation(message)) => {
            assert!(message.contains("too ambiguous"), "{message}")
        }
        other => panic!("expected a generation error, got {other:?}"),
    }
    // The engine still serves.
    let mut r = Request::new(chat("ok"));
    r.max_tokens = Some(3);
    r.ignore_eos = true;
    assert_eq!(run(engine, r).usage.completion_tokens, 3);
}

fn faulty_engine(config: EngineConfig) -> (Engine, std::sync::Arc<FaultyModel>) {
    let loaded = tiny_model();
    let vocabulary = formwork_engine::vocabulary_for(&loaded).unwrap();
    let faulty = std::sync::Arc::new(FaultyModel::new(loaded.model.clone()));
    let engine = Engine::with_model(
        faulty.clone(),
        loaded.tokenizer,
        loaded.info,
        vocabulary,
        config,
    )
    .unwrap();
    (engine, faulty)
}

/// An engine that runs one request at a time with `max_queue` waiting, whose model's
/// gate is closed: the first request admitted waits in its step until the test opens it.
fn gated_engine(max_queue: usize) -> (Engine, std::sync::Arc<FaultyModel>) {
    let (engine, faulty) = faulty_engine(EngineConfig {
        max_active: 1,
        max_queue,
        ..EngineConfig::default()
    });
    faulty.close_gate();
    (engine, faulty)
}

fn short(seed: u64) -> Request {
    let mut r = Request::new(chat("hi"));
    r.sampling = sampling(seed);
    r.max_tokens = Some(4);
    r
}

#[test]
fn a_panic_in_a_step_fails_that_steps_requests_and_the_engine_serves_on() {
    let (engine, faulty) = faulty_engine(EngineConfig::default());
    faulty.panic_next(1);
    match engine.submit(short(1)).unwrap().blocking_collect() {
        Err(EngineError::Generation(message)) => {
            assert!(message.contains("injected fault"), "{message}")
        }
        other => panic!("expected the step's failure, got {other:?}"),
    }
    assert_eq!(engine.health(), Ok(()));
    let m = engine.metrics();
    assert_eq!(m.engine_panics, 1);
    assert!(m.healthy);
    assert_eq!(m.active, 0);
    // The next request runs on a clean slate, as if the fault never happened.
    let after = run(&engine, short(1));
    assert_eq!(after.texts, run(shared_engine(), short(1)).texts);
}

#[test]
fn panics_that_recur_on_fresh_state_make_the_engine_unhealthy() {
    let (engine, faulty) = faulty_engine(EngineConfig::default());
    faulty.panic_next(usize::MAX);
    for _ in 0..3 {
        assert!(engine.submit(short(1)).unwrap().blocking_collect().is_err());
    }
    let reason = engine.health().unwrap_err();
    assert!(reason.contains("in a row"), "{reason}");
    assert!(!engine.metrics().healthy);
}

#[test]
fn the_queue_never_overfills_under_concurrent_submissions() {
    let (engine, faulty) = gated_engine(3);
    // The first request is admitted, then its step waits at the closed gate.
    let running = engine.submit(short(1)).unwrap();
    wait_for(&engine, "the first request to start", |m| m.active == 1);
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let handles = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..16 {
            let (engine, accepted, handles) = (&engine, &accepted, &handles);
            s.spawn(move || match engine.submit(short(i)) {
                Ok(h) => {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    handles.lock().unwrap().push(h);
                }
                Err(EngineError::QueueFull { capacity: 3 }) => {}
                Err(e) => panic!("{e}"),
            });
        }
    });
    assert_eq!(accepted.into_inner(), 3);
    assert_eq!(engine.metrics().queued, 3);
    faulty.open_gate();
    assert!(running.blocking_collect().is_ok());
    for h in handles.into_inner().unwrap() {
        assert!(h.blocking_collect().is_ok());
    }
    assert_eq!(engine.metrics().queued, 0);
}

#[test]
fn a_full_queue_refuses_before_compiling_the_constraint() {
    let (engine, faulty) = gated_engine(0);
    let mut r = short(1);
    r.constraint = Some(Constraint::Regex("[a-z]{0,50000}".into()));
    assert!(matches!(
        engine.submit(r),
        Err(EngineError::QueueFull { capacity: 0 })
    ));
    let m = engine.metrics();
    assert_eq!((m.index_cache_misses, m.index_cache_size), (0, 0));
    faulty.open_gate();
}

#[test]
fn a_prompt_too_large_for_any_tokenization_is_refused_before_tokenizing() {
    let engine = shared_engine();
    let context = engine.info().context_length;
    let huge = "word ".repeat(context * 64);
    for prompt in [Prompt::Text(huge.clone()), chat(&huge)] {
        match engine.submit(Request::new(prompt)) {
            Err(EngineError::PromptTooLarge {
                bytes,
                min_tokens,
                context_length,
            }) => {
                assert!(bytes >= huge.len());
                assert!(min_tokens >= context_length);
            }
            other => panic!("expected PromptTooLarge, got {other:?}"),
        }
    }
    // A prompt just over the context in tokens is still measured exactly.
    let over = "word ".repeat(context + 8);
    assert!(matches!(
        engine.submit(Request::new(Prompt::Text(over))),
        Err(EngineError::PromptTooLong { .. })
    ));
}

#[test]
fn a_cut_reply_never_ends_in_a_replacement_character() {
    // The random model writes raw bytes; where a reply cut by `max_tokens` ends inside a
    // character, that character is left out rather than sent as U+FFFD.
    let engine = shared_engine();
    let mut cut_inside = 0;
    for seed in 0..60 {
        let mut r = Request::new(chat("emoji please"));
        r.sampling = sampling(seed);
        r.sampling.top_logprobs = Some(0);
        r.max_tokens = Some(1 + seed as usize % 3);
        let c = run(engine, r);
        if c.finish_reasons[0] != Some(FinishReason::Length) {
            continue;
        }
        let bytes: Vec<u8> = c.logprobs[0].iter().flat_map(|l| l.bytes.clone()).collect();
        if let Err(e) = std::str::from_utf8(&bytes)
            && e.error_len().is_none()
        {
            cut_inside += 1;
            let whole = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap();
            assert_eq!(c.texts[0], whole);
        }
    }
    assert!(cut_inside > 0, "no reply was cut inside a character");
}

#[test]
fn a_constraint_over_its_memory_limit_is_refused_naming_the_limit() {
    let engine = shared_engine();
    for regex in [r"[\s\S]{0,1000000}", r"\w{0,10000}"] {
        let mut r = short(1);
        r.constraint = Some(Constraint::Regex(regex.into()));
        match engine.submit(r) {
            Err(e @ EngineError::Index(formwork_index::IndexError::TooLarge { .. })) => {
                let message = e.to_string();
                assert!(message.contains("limit"), "{message}");
                assert!(message.contains(&(64usize << 20).to_string()), "{message}");
            }
            other => panic!("{regex}: expected TooLarge, got {other:?}"),
        }
    }
    let m = engine.metrics();
    assert!(m.index_cache_bytes < 64 << 20, "{}", m.index_cache_bytes);
}

#[test]
fn a_fork_that_fails_ends_its_choice_and_frees_the_request() {
    let (engine, faulty) = faulty_engine(EngineConfig {
        kv_cache_tokens: 4096,
        ..EngineConfig::default()
    });
    faulty.fail_cache_clones(true);
    let mut r = short(1);
    r.n = 3;
    match engine.submit(r).unwrap().blocking_collect() {
        Err(EngineError::Generation(message)) => {
            assert!(message.contains("cannot be cloned"), "{message}")
        }
        other => panic!("expected the forks' failure, got {other:?}"),
    }
    // The group finished and gave back its KV reservation: requests that need the whole
    // budget still run.
    faulty.fail_cache_clones(false);
    wait_for(&engine, "the sequences to end", |m| m.active == 0);
    let mut big = short(2);
    big.max_tokens = Some(4096 - 64);
    let c = run(&engine, big);
    assert!(c.finish_reasons[0].is_some());
    let m = engine.metrics();
    assert_eq!(m.finished[3], ("error", 2));
}

/// The id of the one token that spells `text` in the tiny model's tokenizer.
fn token_of(engine: &Engine, text: &str) -> u32 {
    let ids = engine.tokenizer().encode(text, false).unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is one token");
    ids[0]
}

fn answer_segments(outside: formwork_engine::Outside, schema: &Value) -> Constraint {
    Constraint::Segments(formwork_engine::Segments {
        prelude: None,
        segments: vec![formwork_engine::Segment {
            begin: "<a>".into(),
            body: Constraint::JsonSchema(formwork_engine::JsonSchema::new(schema.clone())),
            end: "</a>".into(),
        }],
        triggers: vec![],
        outside,
        max_segments: None,
    })
}

/// Each `<a>` of `text` opens a segment whose body is valid and whose `</a>` follows; the
/// last may be cut when the reply was.
fn check_segments(text: &str, schema: &Value, cut: bool) -> usize {
    let mut rest = text;
    let mut count = 0;
    while let Some(at) = rest.find("<a>") {
        let after = &rest[at + 3..];
        let Some(end) = after.find("</a>") else {
            assert!(cut, "an unclosed segment in a complete reply: {text:?}");
            return count + 1;
        };
        let body: Value = serde_json::from_str(&after[..end])
            .unwrap_or_else(|e| panic!("{e}: {:?} in {text:?}", &after[..end]));
        assert!(jsonschema::is_valid(schema, &body), "{body} in {text:?}");
        count += 1;
        rest = &after[end + 4..];
    }
    count
}

#[test]
fn triggered_segments_follow_their_bodies_and_free_text_costs_no_mask() {
    let engine = shared_engine();
    let schema = json!({"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false});
    let (lt, a, gt) = (
        token_of(engine, "<"),
        token_of(engine, "a"),
        token_of(engine, ">"),
    );
    let mut segments = 0;
    for seed in 0..8 {
        // Pushed toward `<`, `a`, `>`: the trigger comes often, split over three tokens.
        let mut r = Request::new(chat("answer"));
        r.sampling = sampling(seed);
        r.sampling.logit_bias = vec![(lt, 6.0), (a, 4.0), (gt, 4.0)];
        r.max_tokens = Some(120);
        r.constraint = Some(answer_segments(formwork_engine::Outside::Free, &schema));
        let c = run(engine, r);
        let cut = c.finish_reasons[0] == Some(FinishReason::Length);
        let n = check_segments(&c.texts[0], &schema, cut);
        if n > 0 {
            assert!(c.usage.masked_tokens > 0);
        }
        segments += n;

        // With `<` never sampled, no trigger can start: not one token is masked.
        let mut r = Request::new(chat("answer"));
        r.sampling = sampling(seed);
        r.sampling.logit_bias = vec![(lt, -100.0)];
        r.max_tokens = Some(40);
        r.constraint = Some(answer_segments(formwork_engine::Outside::Free, &schema));
        let c = run(engine, r);
        assert!(!c.texts[0].contains('<'));
        assert_eq!(c.usage.masked_tokens, 0, "{:?}", c.texts[0]);
    }
    assert!(segments > 0, "no seed triggered a segment");
}

#[test]
fn segments_only_replies_end_only_between_segments() {
    let engine = shared_engine();
    let schema = json!({"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false});
    let mut stopped = 0;
    for seed in 0..6 {
        let mut r = Request::new(chat("answer"));
        r.sampling = sampling(seed);
        r.max_tokens = Some(200);
        r.constraint = Some(answer_segments(formwork_engine::Outside::Nothing, &schema));
        let c = run(engine, r);
        let text = &c.texts[0];
        assert!(text.trim_start().starts_with("<a>"), "{text:?}");
        let cut = c.finish_reasons[0] == Some(FinishReason::Length);
        let n = check_segments(text, &schema, cut);
        assert!(n >= 1);
        if !cut {
            stopped += 1;
            // Only whitespace outside the segments.
            let outside = text
                .split("<a>")
                .skip(1)
                .map(|s| s.split("</a>").nth(1).unwrap_or(""));
            assert!(outside.collect::<String>().trim().is_empty(), "{text:?}");
        }
    }
    assert!(stopped > 0);
}

#[test]
fn a_prelude_is_free_and_its_end_tag_is_forced_after_its_budget() {
    let engine = shared_engine();
    for seed in 0..6 {
        let mut r = Request::new(chat("think"));
        r.sampling = sampling(seed);
        r.max_tokens = Some(60);
        r.constraint = Some(Constraint::Segments(formwork_engine::Segments {
            prelude: Some(formwork_engine::Prelude {
                start: String::new(),
                optional: false,
                end: "</think>".into(),
                max_tokens: Some(8),
            }),
            segments: vec![],
            triggers: vec![],
            outside: formwork_engine::Outside::Either(Box::new(Constraint::Choice(vec![
                "yes".into(),
                "no".into(),
            ]))),
            max_segments: None,
        }));
        let c = run(engine, r);
        let text = &c.texts[0];
        let (thinking, answer) = text.split_once("</think>").expect("the end tag is forced");
        assert!(!thinking.contains("</think>"));
        assert!(["yes", "no"].contains(&answer), "{text:?}");
        assert_eq!(c.finish_reasons[0], Some(FinishReason::Stop));
        // At most 8 free tokens, then the tag (its own tokens) and the answer.
        assert!(c.usage.completion_tokens <= 8 + 8 + 3, "{text:?}");
    }
}

#[test]
fn auto_tools_with_a_schema_give_calls_or_a_document_never_neither() {
    use formwork_engine::tools::{ReplyMode, ReplyReader};
    let engine = shared_engine();
    let format = engine.tool_format();
    let weather = json!({"type":"object","properties":{"city":{"type":"string","maxLength":8}},"required":["city"],"additionalProperties":false});
    let document = json!({"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false});
    let functions = vec![ToolFunction::from_tool(&formwork_template::Tool::function(
        "get_weather",
        None,
        Some(weather.clone()),
    ))];
    let opener = engine.tokenizer().encode(format.opener(), false).unwrap();
    let (mut calls, mut documents) = (0, 0);
    for seed in 0..10 {
        let mut r = Request::new(chat("weather?"));
        r.sampling = sampling(seed);
        // Half the seeds pushed toward the opener's first token.
        if seed % 2 == 0 {
            r.sampling.logit_bias = vec![(opener[0], 8.0)];
        }
        r.max_tokens = Some(200);
        r.constraint = Some(Constraint::JsonSchema(formwork_engine::JsonSchema::new(
            document.clone(),
        )));
        r.auto_tools = Some(formwork_engine::AutoTools {
            functions: functions.clone(),
            parallel: true,
        });
        let c = run(engine, r);
        if c.finish_reasons[0] != Some(FinishReason::Stop) {
            continue;
        }
        let text = &c.texts[0];
        let reply = ReplyReader::read(ReplyMode::Auto, &["get_weather".into()], text);
        if reply.calls.is_empty() {
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
            assert!(jsonschema::is_valid(&document, &v), "{text:?}");
            documents += 1;
        } else {
            assert!(
                reply.content.unwrap_or_default().trim().is_empty(),
                "{text:?}"
            );
            for call in reply.calls {
                let args: Value = serde_json::from_str(&call.arguments).unwrap();
                assert!(jsonschema::is_valid(&weather, &args), "{text:?}");
            }
            calls += 1;
        }
    }
    assert!(
        calls > 0 && documents > 0,
        "{calls} calls, {documents} documents"
    );
}

/// A chat prompt's `template_kwargs` reach the template as variables; the names the
/// engine sets itself are refused.
#[test]
fn template_kwargs_reach_the_chat_template() {
    let mut model = tiny_model();
    model.info.chat_template = Some(
        "{{ messages[0].content }}{% if enable_thinking is defined and not enable_thinking %} /no_think{% endif %}".into(),
    );
    let engine = Engine::new(model, EngineConfig::default()).unwrap();
    let prompt = |kwargs: Value| Prompt::Chat {
        messages: vec![Message::user("hi")],
        tools: vec![],
        template_kwargs: kwargs.as_object().unwrap().clone(),
    };
    let text = |kwargs: Value| {
        let Prompt::Chat {
            messages,
            tools,
            template_kwargs,
        } = prompt(kwargs)
        else {
            unreachable!()
        };
        engine.render_chat_with(&messages, &tools, &template_kwargs)
    };
    assert_eq!(text(json!({})).unwrap(), "hi");
    assert_eq!(
        text(json!({"enable_thinking": false})).unwrap(),
        "hi /no_think"
    );
    let with = engine
        .prompt_tokens(&prompt(json!({"enable_thinking": false})))
        .unwrap();
    let without = engine.prompt_tokens(&prompt(json!({}))).unwrap();
    assert!(with.len() > without.len());
    match engine.submit(Request::new(prompt(json!({"messages": []})))) {
        Err(EngineError::InvalidRequest(m)) => assert!(m.contains("`messages`"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// A template that opens a `<think>` block makes the engine a reasoning model's (detected),
/// each chat request's splitter starts inside it, and a reply split as it streams equals
/// the whole reply split at once.
#[test]
fn reasoning_is_detected_from_the_template_and_split_alike_streamed_or_whole() {
    let think = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}<think>\n{% endif %}";
    let engine_with = |reasoning: formwork_engine::Reasoning| {
        let mut model = tiny_model();
        model.info.chat_template = Some(think.into());
        Engine::new(
            model,
            EngineConfig {
                reasoning,
                ..EngineConfig::default()
            },
        )
        .unwrap()
    };
    let engine = engine_with(formwork_engine::Reasoning::Detect);
    assert_eq!(engine.reasoning(), Some(&ReasoningFormat::QWEN3));
    assert_eq!(
        engine_with(formwork_engine::Reasoning::Off).reasoning(),
        None
    );
    assert_eq!(
        shared_engine().reasoning(),
        None,
        "SmolLM-style templates have none"
    );
    let request = |seed| {
        let mut r = Request::new(chat("hi"));
        r.sampling = sampling(seed);
        r.max_tokens = Some(40);
        r
    };
    for seed in 0..4 {
        let mut handle = engine.submit(request(seed)).unwrap();
        let mut streamed = handle.reasoning_splitter().expect("a reasoning chat");
        let (mut reasoning, mut content, mut whole) = (String::new(), String::new(), String::new());
        while let Some(event) = handle.blocking_next() {
            if let Event::Delta { text, .. } = event {
                let (r, c) = streamed.push(&text);
                reasoning += &r;
                content += &c;
                whole += &text;
            }
        }
        let (r, c) = streamed.finish();
        reasoning += &r;
        content += &c;
        // The prompt opened the block: without an end tag, it is all reasoning.
        let fresh = engine.submit(request(seed)).unwrap();
        let split = fresh.reasoning_splitter().unwrap();
        let again = fresh.blocking_collect().unwrap();
        assert_eq!(again.texts[0], whole);
        assert_eq!(split.split(&whole), (reasoning.clone(), content.clone()));
        if !whole.contains("</think>") {
            assert!(content.is_empty() && reasoning.len() + 8 >= whole.len());
        }
    }
    // A constraint shapes what follows the reasoning, whose end tag comes within its budget.
    for seed in 0..4 {
        let mut r = request(seed);
        r.constraint = Some(Constraint::Choice(vec!["yes".into(), "no".into()]));
        r.max_reasoning_tokens = Some(6);
        let handle = engine.submit(r).unwrap();
        let split = handle
            .reasoning_splitter()
            .expect("reasoning before the constraint");
        let c = handle.blocking_collect().unwrap();
        assert_eq!(
            c.finish_reasons[0],
            Some(FinishReason::Stop),
            "{:?}",
            c.texts[0]
        );
        let (_, content) = split.split(&c.texts[0]);
        assert!(
            ["yes", "no"].contains(&content.as_str()),
            "{:?}",
            c.texts[0]
        );
    }
    // Text prompts are not chats.
    let r = Request::new(Prompt::Text("hi".into()));
    assert!(engine.submit(r).unwrap().reasoning_splitter().is_none());
}

/// The real thinking templates (QwQ, the DeepSeek-R1 distills) on the tiny model: their
/// generation prompt opens `<think>`, so the reply reasons freely, its end tag comes within
/// its budget, and the request's structure (a schema, or a call in `auto` mode) applies after
/// it; streamed and whole replies split alike.
#[test]
fn thinking_templates_reason_first_then_follow_the_structure() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/chat_templates");
    let schema = json!({"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false});
    for name in [
        "Qwen-QwQ-32B.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    ] {
        let mut model = tiny_model();
        model.info.chat_template = Some(std::fs::read_to_string(dir.join(name)).unwrap());
        let engine = Engine::new(model, EngineConfig::default()).unwrap();
        assert!(engine.reasoning().is_some(), "{name}: a reasoning template");
        for seed in 0..4 {
            let mut r = Request::new(chat("is it?"));
            r.sampling = sampling(seed);
            r.max_tokens = Some(120);
            r.max_reasoning_tokens = Some(10);
            r.constraint = Some(Constraint::JsonSchema(formwork_engine::JsonSchema::new(
                schema.clone(),
            )));
            let handle = engine.submit(r).unwrap();
            let mut streamed = handle.reasoning_splitter().expect("reasoning");
            let whole = handle.reasoning_splitter().unwrap();
            let c = handle.blocking_collect().unwrap();
            let text = &c.texts[0];
            assert_eq!(
                c.finish_reasons[0],
                Some(FinishReason::Stop),
                "{name}: {text:?}"
            );
            let (reasoning, content) = whole.split(text);
            let (mut r2, mut c2) = streamed.push(text);
            let (r3, c3) = streamed.finish();
            r2 += &r3;
            c2 += &c3;
            assert_eq!((&reasoning, &content), (&r2, &c2));
            assert!(!content.contains("</think>"), "{name}: {text:?}");
            let v: Value =
                serde_json::from_str(&content).unwrap_or_else(|e| panic!("{name}: {e}: {text:?}"));
            assert!(jsonschema::is_valid(&schema, &v), "{name}: {text:?}");
        }
    }
}

/// A trigger that ends inside a token on the tiny model's own merges: ` t` completes within
/// ` the`, whose `he` already belongs to the segment, which then forces the rest of its body.
#[test]
fn a_trigger_ending_inside_a_token_hands_its_rest_to_the_segment() {
    let engine = shared_engine();
    let the = token_of(engine, " the");
    let mut inside = 0;
    for seed in 0..6 {
        let mut r = Request::new(chat("go"));
        r.sampling = sampling(seed);
        r.sampling.logit_bias = vec![(the, 10.0)];
        r.sampling.top_logprobs = Some(0);
        r.max_tokens = Some(40);
        r.constraint = Some(Constraint::Segments(formwork_engine::Segments {
            prelude: None,
            segments: vec![formwork_engine::Segment {
                begin: " t".into(),
                body: Constraint::Choice(vec!["he end".into()]),
                end: String::new(),
            }],
            triggers: vec![],
            outside: formwork_engine::Outside::Free,
            max_segments: None,
        }));
        let c = run(engine, r);
        let text = &c.texts[0];
        let cut = c.finish_reasons[0] == Some(FinishReason::Length);
        for (at, _) in text.match_indices(" t") {
            let rest = &text[at + 2..];
            assert!(
                rest.starts_with("he end") || (cut && "he end".starts_with(rest)),
                "{text:?}"
            );
        }
        inside += c.logprobs[0].iter().filter(|lp| lp.token == the).count();
    }
    assert!(inside > 0, "no reply took the trigger inside ` the`");
}

/// A conversation re-sent every turn and prompts behind one long shared system prompt give
/// the same greedy replies (and log-probabilities, to the bit) with prefix reuse as without,
/// while reusing most of each prompt. Under llama.cpp's kernel choice the prompts cross the
/// attention kernels' thresholds (a short last ubatch runs row by row, a long one tiled,
/// ubatches of 512), so a block is reused only where it is the same bits.
#[test]
fn prefix_reuse_changes_no_output_and_skips_most_of_each_prompt() {
    for prompt_attention in [PromptAttention::RowByRow, PromptAttention::LlamaCpp] {
        prefix_reuse_changes_no_output(prompt_attention);
    }
}

fn prefix_reuse_changes_no_output(prompt_attention: PromptAttention) {
    let (with, without) = with_and_without_prefix_cache(prompt_attention);
    let greedy = |prompt: Prompt, n: usize| {
        let mut r = Request::new(prompt);
        r.sampling = if n == 1 {
            SamplingParams::greedy()
        } else {
            sampling(5)
        };
        // Log-probabilities show any change of the logits' bits, not only of the argmax.
        r.sampling.top_logprobs = Some(3);
        r.n = n;
        r.max_tokens = Some(12);
        r.ignore_eos = true;
        r
    };
    let system = "You answer in one short line. ".repeat(14);
    let mut messages = vec![Message::system(system.as_str())];
    let mut lengths = Vec::new();
    let mut cached = Vec::new();
    for turn in 0..6 {
        messages.push(Message::user(format!(
            "question {turn}: {}",
            "why ".repeat(turn * 6)
        )));
        let prompt = || Prompt::Chat {
            messages: messages.clone(),
            tools: vec![],
            template_kwargs: Default::default(),
        };
        let a = run(&with, greedy(prompt(), 1));
        let b = run(&without, greedy(prompt(), 1));
        assert_eq!(a.texts, b.texts, "turn {turn}");
        assert_eq!(a.logprobs, b.logprobs, "turn {turn}");
        assert_eq!(b.usage.cached_tokens, 0);
        lengths.push(a.usage.prompt_tokens);
        cached.push(a.usage.cached_tokens);
        messages.push(Message::assistant(a.texts[0].as_str()));
    }
    // Forks share the prompt's blocks and still sample as before.
    let prompt = Prompt::Chat {
        messages: messages.clone(),
        tools: vec![],
        template_kwargs: Default::default(),
    };
    let a = run(&with, greedy(prompt.clone(), 3));
    let b = run(&without, greedy(prompt, 3));
    assert_eq!(a.texts, b.texts);
    assert_eq!(a.logprobs, b.logprobs);
    // The prompts crossed both thresholds, and every turn after the first reused blocks.
    assert!(lengths[0] < 512 && lengths[5] > 512, "{lengths:?}");
    assert_eq!(cached[0], 0);
    assert!(
        cached[1..].iter().all(|&c| c > 0),
        "{cached:?} of {lengths:?}"
    );
    let m = with.metrics();
    assert_eq!(m.prefix_queries, 7);
    assert_eq!(m.prefix_hits, 6);
    assert!(m.prefix_cached_tokens > 0);
    assert_eq!(without.metrics().prefix_queries, 0);
}

/// A block computed by one attention kernel is not reused where the new prompt would compute
/// it with the other: a prompt of 552 tokens computes its last ubatch (512..552, under a
/// tile) row by row, and the same prompt extended to 660 tokens computes those positions
/// tiled, so only the first 512 tokens are reused, and the replies are the same bits as
/// without reuse.
#[test]
fn prefix_reuse_respects_the_attention_kernel_of_each_position() {
    let (with, without) = with_and_without_prefix_cache(PromptAttention::LlamaCpp);
    let tokens: Vec<u32> = (0..660u32).map(|i| 3 + (i * 7) % 90).collect();
    let request = |len: usize| {
        let mut r = Request::new(Prompt::Tokens(tokens[..len].to_vec()));
        r.sampling = SamplingParams::greedy();
        r.sampling.top_logprobs = Some(3);
        r.max_tokens = Some(4);
        r.ignore_eos = true;
        r
    };
    let short = run(&with, request(552));
    assert_eq!(short.usage.cached_tokens, 0);
    let a = run(&with, request(660));
    let b = run(&without, request(660));
    assert_eq!(a.usage.cached_tokens, 512);
    assert_eq!((a.texts, a.logprobs), (b.texts, b.logprobs));
    // The same short prompt again reuses all its full blocks (the same kernels).
    assert_eq!(run(&with, request(552)).usage.cached_tokens, 544);
}

/// A reply's keys and values, computed while it was generated, serve the next prompt that
/// contains it (a conversation re-sent with the reply appended) when every row takes the row
/// kernel, with the same output as without reuse. Under llama.cpp's kernel choice the reply
/// is computed again, since that prompt computes those positions tiled.
#[test]
fn a_generated_reply_is_reused_by_the_next_turn_when_prompts_run_row_by_row() {
    let first: Vec<u32> = (0..100u32).map(|i| 3 + (i * 13) % 85).collect();
    let request = |tokens: Vec<u32>, max_tokens: usize| {
        let mut r = Request::new(Prompt::Tokens(tokens));
        r.sampling = SamplingParams::greedy();
        r.sampling.top_logprobs = Some(3);
        r.max_tokens = Some(max_tokens);
        r.ignore_eos = true;
        r
    };
    let mut cached = Vec::new();
    for prompt_attention in [PromptAttention::RowByRow, PromptAttention::LlamaCpp] {
        let (with, without) = with_and_without_prefix_cache(prompt_attention);
        let reply = run(&with, request(first.clone(), 40));
        let mut next = first.clone();
        next.extend(reply.logprobs[0].iter().map(|t| t.token));
        next.extend([7, 8, 9, 10, 11]);
        let a = run(&with, request(next.clone(), 6));
        let b = run(&without, request(next, 6));
        assert_eq!((a.texts, a.logprobs), (b.texts, b.logprobs));
        cached.push(a.usage.cached_tokens);
    }
    // 100 prompt tokens and the 39 generated ones fed back: 4 full blocks of 32 positions.
    // llama.cpp's choice keeps the prompt's 3 full blocks only.
    assert_eq!(cached, [128, 96]);
}

/// Requests sent at once with one long shared start compute it once: the later ones wait for
/// the first one's prefill and reuse its blocks, and reply as they would alone.
#[test]
fn prompts_sent_at_once_compute_their_shared_start_once() {
    let (with, without) = with_and_without_prefix_cache(PromptAttention::default());
    let request = |k: u32| {
        let mut tokens: Vec<u32> = (0..600u32).map(|i| 3 + (i * 11) % 80).collect();
        tokens.extend([5 + k, 9, 7 + k]);
        let mut r = Request::new(Prompt::Tokens(tokens));
        r.sampling = SamplingParams::greedy();
        r.sampling.top_logprobs = Some(2);
        r.max_tokens = Some(6);
        r.ignore_eos = true;
        r
    };
    let handles: Vec<_> = (0..3).map(|k| with.submit(request(k)).unwrap()).collect();
    let together: Vec<Completion> = handles
        .into_iter()
        .map(|h| h.blocking_collect().unwrap())
        .collect();
    let cached: Vec<usize> = together.iter().map(|c| c.usage.cached_tokens).collect();
    assert_eq!(cached, [0, 576, 576]);
    for (k, c) in together.into_iter().enumerate() {
        let alone = run(&without, request(k as u32));
        assert_eq!(
            (c.texts, c.logprobs),
            (alone.texts, alone.logprobs),
            "request {k}"
        );
    }
}

/// Jump-forward decoding over the tiny model's byte-level BPE: forced text (fixed keys and
/// punctuation) is appended without sampling, and counted; the reply still matches; it is
/// capped by `max_tokens`, cut by stop strings, never used with logprobs, and each of `n`
/// choices jumps on its own.
#[test]
fn jump_forward_appends_forced_text_within_the_requests_limits() {
    let engine = shared_engine();
    let regex = r#"\{"alpha":"[a-z]{1,4}","beta":"[a-z]{1,4}","gamma":true\}"#;
    let dfa = ByteDfa::new(regex).unwrap();
    let request = |seed: u64, jump: bool| {
        let mut r = Request::new(chat("fill it in"));
        r.sampling = sampling(seed);
        r.constraint = Some(Constraint::Regex(regex.into()));
        r.max_tokens = Some(100);
        r.jump_forward = Some(jump);
        r
    };
    let mut forced = 0;
    for seed in 0..4 {
        let c = run(engine, request(seed, true));
        assert_eq!(c.finish_reasons[0], Some(FinishReason::Stop));
        assert!(dfa.matches(c.texts[0].as_bytes()), "{:?}", c.texts[0]);
        assert!(c.usage.forced_tokens < c.usage.completion_tokens);
        forced += c.usage.forced_tokens;
        let c = run(engine, request(seed, false));
        assert!(dfa.matches(c.texts[0].as_bytes()), "{:?}", c.texts[0]);
        assert_eq!(c.usage.forced_tokens, 0);
    }
    assert!(forced > 0, "no jump over fixed keys");

    // `max_tokens` caps sampled and forced tokens together; the text is a prefix of a match
    // (budgets too small for a whole match, so without steering to end valid).
    for max in 1..6 {
        let mut r = request(1, true);
        r.max_tokens = Some(max);
        r.end_valid = Some(false);
        let c = run(engine, r);
        assert_eq!(c.usage.completion_tokens, max);
        assert_eq!(c.finish_reasons[0], Some(FinishReason::Length));
        assert!(
            r#"{"alpha":""#.starts_with(&c.texts[0]) || c.texts[0].starts_with(r#"{"alpha":""#)
        );
    }

    // A stop string inside forced text cuts the reply there, unsent.
    let mut r = request(2, true);
    r.stop = vec!["pha".into()];
    let c = run(engine, r);
    assert_eq!(c.texts[0], r#"{"al"#);
    assert_eq!(c.finish_reasons[0], Some(FinishReason::Stop));

    // Logprobs: every token sampled, one entry each.
    let mut r = request(3, true);
    r.sampling.top_logprobs = Some(2);
    let c = run(engine, r);
    assert_eq!(c.usage.forced_tokens, 0);
    assert_eq!(c.logprobs[0].len(), c.usage.completion_tokens);

    // Several choices, each jumping on its own.
    let mut r = request(4, true);
    r.n = 3;
    let c = run(engine, r);
    for text in &c.texts {
        assert!(dfa.matches(text.as_bytes()), "{text:?}");
    }
    assert!(c.usage.forced_tokens >= 3, "{:?}", c.usage);
}
