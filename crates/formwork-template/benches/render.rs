//! Rendering a typical conversation: should take well under a millisecond.
//!
//! Benchmarks the default model's ChatML template and, where the shared test
//! data is present, two larger templates (Llama 3.3 and Qwen 2.5) with a
//! tool-calling conversation.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use formwork_template::{
    ChatTemplate, Message, RenderArgs, Role, SpecialTokens, TemplateOptions, TemplateSource, Tool,
    ToolCall,
};
use serde_json::json;

const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/SmolLM2-135M-Instruct/tokenizer_config.json"
);
const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/chat_templates"
);

fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are a concise assistant. Answer in JSON when asked."),
        Message::user("Give me a user record for Ada Lovelace."),
        Message::assistant("{\"name\": \"Ada Lovelace\", \"born\": 1815}"),
        Message::user("Now one for Grace Hopper — née Brewster."),
        Message::assistant("{\"name\": \"Grace Hopper\", \"born\": 1906}"),
        Message::user("And one for Alan Turing, please."),
    ]
}

fn tool_conversation() -> (Vec<Message>, Vec<Tool>) {
    let tools = vec![Tool::function(
        "get_weather",
        Some("Current weather for a city".into()),
        Some(
            json!({"type": "object", "properties": {"city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}),
        ),
    )];
    let messages = vec![
        Message::user("What's the weather in Paris?"),
        Message {
            tool_calls: Some(vec![ToolCall::function(
                "call_1",
                "get_weather",
                json!("{\"city\": \"Paris\", \"unit\": \"celsius\"}"),
            )]),
            ..Message::new(Role::Assistant, "")
        },
        Message::tool("call_1", "{\"temp\": 21}"),
    ];
    (messages, tools)
}

fn bench(c: &mut Criterion) {
    let smollm2 = TemplateSource::from_tokenizer_config_file(Path::new(SMOLLM2))
        .expect("fixture")
        .compile(None, TemplateOptions::default())
        .expect("compiles");
    let messages = conversation();
    c.bench_function("render/smollm2/6 messages", |b| {
        b.iter(|| {
            let args = RenderArgs::new(black_box(&messages)).add_generation_prompt(true);
            black_box(smollm2.render(&args).unwrap())
        })
    });
    c.bench_function("compile/smollm2", |b| {
        b.iter(|| {
            ChatTemplate::new(
                "default",
                black_box(smollm2.source()),
                SpecialTokens::default(),
            )
            .unwrap()
        })
    });

    let (tool_messages, tools) = tool_conversation();
    for model in [
        "meta-llama-Llama-3.3-70B-Instruct",
        "Qwen-Qwen2.5-7B-Instruct",
    ] {
        let path = Path::new(DATA).join(format!("{model}.jinja"));
        let Ok(source) = TemplateSource::from_jinja_file(&path) else {
            continue;
        };
        let template = source
            .with_special_tokens(SpecialTokens::new(
                Some("<|begin_of_text|>"),
                Some("<|eot_id|>"),
            ))
            .compile(None, TemplateOptions::default())
            .expect("compiles");
        c.bench_function(&format!("render/{model}/tools"), |b| {
            b.iter(|| {
                let args = RenderArgs::new(black_box(&tool_messages))
                    .tools(&tools)
                    .add_generation_prompt(true);
                black_box(template.render(&args).unwrap())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
