//! Behaviour tests: the default model's prompt, loading from each source,
//! typed errors with line numbers, and the Python-compatible helpers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use formwork_template::gguf::{self, Value};
use formwork_template::{
    ArgumentsFormat, ChatTemplate, Clock, Content, ContentFormat, ContentPart, Error, Message,
    RenderArgs, Role, SpecialTokens, TemplateOptions, TemplateSource, Tool, ToolCall,
};
use serde_json::json;

const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/SmolLM2-135M-Instruct"
);

const SMOLLM2_SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

fn smollm2() -> ChatTemplate {
    TemplateSource::from_tokenizer_config_file(&Path::new(SMOLLM2).join("tokenizer_config.json"))
        .unwrap()
        .compile(None, TemplateOptions::default())
        .unwrap()
}

fn tmpl(source: &str) -> ChatTemplate {
    ChatTemplate::with_options(
        "test",
        source,
        SpecialTokens::new(Some("<s>"), Some("</s>")),
        TemplateOptions::default().clock(Clock::fixed(2024, 7, 26, 0, 0, 0).unwrap()),
    )
    .unwrap()
}

fn render(source: &str) -> String {
    tmpl(source)
        .render(&RenderArgs::new(&[Message::user("hi")]))
        .unwrap()
}

fn compile_err(source: &str) -> Error {
    ChatTemplate::new("bad", source, SpecialTokens::default()).unwrap_err()
}

fn render_err(source: &str) -> Error {
    tmpl(source)
        .render(&RenderArgs::new(&[Message::user("hi")]))
        .unwrap_err()
}

/// A file in a fresh temporary folder of its own.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("formwork-template-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---------------------------------------------------------------------------
// The default model: SmolLM2-135M-Instruct's ChatML template.

#[test]
fn smollm2_adds_its_default_system_prompt() {
    let prompt = smollm2()
        .render(
            &RenderArgs::new(&[Message::user("What is the capital of France?")])
                .add_generation_prompt(true),
        )
        .unwrap();
    assert_eq!(
        prompt,
        format!(
            "{SMOLLM2_SYSTEM}<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
    );
}

#[test]
fn smollm2_keeps_a_given_system_prompt_and_turns() {
    let messages = [
        Message::system("You answer in JSON."),
        Message::user("Give me a user record."),
        Message::assistant("{\"name\": \"Ada\"}"),
        Message::user("Another."),
    ];
    let t = smollm2();
    assert_eq!(t.special_tokens().bos_token(), Some("<|im_start|>"));
    assert_eq!(t.special_tokens().eos_token(), Some("<|im_end|>"));
    let prompt = t
        .render(&RenderArgs::new(&messages).add_generation_prompt(true))
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou answer in JSON.<|im_end|>\n\
         <|im_start|>user\nGive me a user record.<|im_end|>\n\
         <|im_start|>assistant\n{\"name\": \"Ada\"}<|im_end|>\n\
         <|im_start|>user\nAnother.<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let no_prompt = t.render(&RenderArgs::new(&messages[..2])).unwrap();
    assert!(
        no_prompt.ends_with("Give me a user record.<|im_end|>\n"),
        "{no_prompt:?}"
    );
}

#[test]
fn smollm2_from_jinja_file_and_from_gguf_render_the_same() {
    let config = std::fs::read_to_string(Path::new(SMOLLM2).join("tokenizer_config.json")).unwrap();
    let jinja = std::fs::read_to_string(Path::new(SMOLLM2).join("chat_template.jinja")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["chat_template"], jinja.as_str());

    let args = RenderArgs::new(&[Message::user("Hi")]).add_generation_prompt(true);
    let want = smollm2().render(&args).unwrap();

    // chat_template.jinja takes its special tokens from tokenizer_config.json beside it.
    let from_jinja =
        TemplateSource::from_path(&Path::new(SMOLLM2).join("chat_template.jinja")).unwrap();
    assert_eq!(from_jinja.special_tokens.bos_token(), Some("<|im_start|>"));
    assert_eq!(
        from_jinja
            .compile(None, TemplateOptions::default())
            .unwrap()
            .render(&args)
            .unwrap(),
        want
    );

    // A GGUF file carrying the template and a vocabulary.
    let mut gguf = Vec::new();
    let string = |s: &str| Value::String(s.into());
    gguf::write(
        &mut gguf,
        &[
            ("general.architecture", string("llama")),
            ("tokenizer.ggml.model", string("gpt2")),
            (
                "tokenizer.ggml.tokens",
                Value::Array(vec![
                    string("<|endoftext|>"),
                    string("<|im_start|>"),
                    string("<|im_end|>"),
                ]),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(vec![Value::F32(0.0); 3]),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.chat_template", string(&jinja)),
            (
                "tokenizer.chat_template.plain",
                string("{{ messages[0].content }}"),
            ),
        ],
        &[],
    )
    .unwrap();
    let path = temp_file("smollm2.gguf", &gguf);
    let source = TemplateSource::from_path(&path).unwrap();
    assert_eq!(source.special_tokens.bos_token(), Some("<|im_start|>"));
    assert_eq!(source.special_tokens.eos_token(), Some("<|im_end|>"));
    assert_eq!(source.special_tokens.tokens.get("unk_token"), None);
    assert_eq!(source.names().collect::<Vec<_>>(), ["default", "plain"]);
    assert_eq!(
        source
            .compile(None, TemplateOptions::default())
            .unwrap()
            .render(&args)
            .unwrap(),
        want
    );
    let plain = source
        .compile(Some("plain"), TemplateOptions::default())
        .unwrap();
    assert_eq!(plain.render(&args).unwrap(), "Hi");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

// ---------------------------------------------------------------------------
// Missing templates and the ChatML fallback.

#[test]
fn missing_template_is_an_error_unless_chatml_is_asked_for() {
    let source =
        TemplateSource::from_tokenizer_config(r#"{"bos_token": "<s>", "eos_token": "</s>"}"#)
            .unwrap();
    let err = source
        .compile(None, TemplateOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::MissingTemplate { .. }), "{err}");
    assert!(err.to_string().contains("has no chat template"), "{err}");

    let chatml = source
        .compile_or_chatml(None, TemplateOptions::default())
        .unwrap();
    let prompt = chatml
        .render(
            &RenderArgs::new(&[Message::system("S"), Message::user("U")])
                .add_generation_prompt(true),
        )
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
    // A named template that is not there is not silently replaced by ChatML either way
    // when the source has templates.
    let gguf = TemplateSource::from_gguf_metadata([("tokenizer.chat_template", "X")], None, None);
    assert!(matches!(
        gguf.compile(Some("tool_use"), TemplateOptions::default()),
        Err(Error::MissingTemplate { .. })
    ));
}

#[test]
fn bad_source_files_are_typed_errors() {
    let missing =
        TemplateSource::from_path(Path::new("/nonexistent/formwork/tokenizer_config.json"));
    assert!(matches!(missing, Err(Error::BadSource { .. })));
    let bad_json = temp_file("tokenizer_config.json", b"{ not json");
    assert!(matches!(
        TemplateSource::from_path(&bad_json),
        Err(Error::BadSource { .. })
    ));
    let truncated = temp_file("model.gguf", b"GGUF\x03\x00\x00\x00\x00");
    let err = TemplateSource::from_path(&truncated).unwrap_err();
    assert!(matches!(err, Error::BadSource { .. }), "{err}");
    let not_utf8 = temp_file("t.jinja", b"\xff\xfe{{ x }}");
    assert!(matches!(
        TemplateSource::from_path(&not_utf8),
        Err(Error::BadSource { .. })
    ));
    for p in [bad_json, truncated, not_utf8] {
        std::fs::remove_dir_all(p.parent().unwrap()).ok();
    }
}

// ---------------------------------------------------------------------------
// Bad templates: typed errors with the template's line, never a panic.

#[test]
fn syntax_error_has_its_line() {
    let err = compile_err("{% for m in messages %}\n{{ m.content }}\n{% if %}\n{% endfor %}");
    match &err {
        Error::Syntax { template, line, .. } => {
            assert_eq!(template, "bad");
            assert_eq!(*line, Some(3));
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(err.to_string().contains("line 3"), "{err}");
    assert!(matches!(
        compile_err("{{ 'unterminated }}"),
        Error::Syntax { .. }
    ));
    assert!(matches!(
        compile_err("{% for x in y %}"),
        Error::Syntax { .. }
    ));
}

#[test]
fn undefined_filter_is_refused_when_compiling() {
    let err = compile_err("line one\n{% if false %}{{ x | no_such_filter }}{% endif %}");
    match err {
        Error::UnknownFilter {
            template,
            line,
            filter,
        } => {
            assert_eq!(template, "bad");
            assert_eq!(line, Some(2));
            assert_eq!(filter, "no_such_filter");
        }
        other => panic!("expected an unknown filter error, got {other:?}"),
    }
    let err = compile_err("\n\n{% if x is no_such_test %}{% endif %}");
    assert!(
        matches!(err, Error::UnknownTest { line: Some(3), ref test, .. } if test == "no_such_test"),
        "{err:?}"
    );
}

#[test]
fn undefined_function_is_a_typed_error_with_line() {
    let err = render_err("a\nb\n{{ no_such_function(1) }}");
    assert!(
        matches!(err, Error::UnknownFunction { line: Some(3), .. }),
        "{err:?}"
    );
}

#[test]
fn raise_exception_carries_its_message_and_line() {
    let err = render_err(
        "{% for m in messages %}\n{% if m.role == 'user' %}\n{{ raise_exception('Only ' + 'assistants here') }}\n{% endif %}\n{% endfor %}",
    );
    match err {
        Error::RaiseException {
            template,
            line,
            message,
        } => {
            assert_eq!(template, "test");
            assert_eq!(line, Some(3));
            assert_eq!(message, "Only assistants here");
        }
        other => panic!("expected raise_exception, got {other:?}"),
    }
    // Also from inside a macro.
    let err = render_err(
        "{% macro check() %}{{ raise_exception('in macro') }}{% endmacro %}\n{{ check() }}",
    );
    assert!(
        matches!(err, Error::RaiseException { ref message, .. } if message == "in macro"),
        "{err:?}"
    );
}

#[test]
fn runtime_errors_are_typed_and_never_panic() {
    // Iterating over none fails as in Python.
    let err = tmpl("{% for t in tools %}{{ t }}{% endfor %}")
        .render(&RenderArgs::new(&[]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Render { line: Some(1), .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("'NoneType' object is not iterable"),
        "{err}"
    );
    // Arithmetic on a missing attribute.
    assert!(matches!(
        render_err("{{ messages[0].nothing + 'x' }}"),
        Error::Render { .. }
    ));
    // Unbounded recursion.
    assert!(matches!(
        render_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
        Error::Render { .. }
    ));
    // A pile of broken and odd templates: errors or output, never a panic.
    for source in [
        "{%",
        "{{",
        "{% endfor %}",
        "{{ x | }}",
        "{{ 1 / 0 }}",
        "{{ 'a' * -1 }}",
        "{% set x = x.y.z %}",
        "{{ messages | tojson(indent=-3) }}",
        "{{ x | tojson }}",
        "{{ strftime_now('%Q') }}",
        "{{ strftime_now('%z') }}",
        "{{ [1,2][5] }}",
        "{{ {}['a']['b'] }}",
        "{% for x in 5 %}{% endfor %}",
        "{{ raise_exception() }}",
        "{{ 'x'.split('') }}",
        "{{ range(10**9) | length }}",
        "{% filter upper %}{% endfilter %}",
        "{{ namespace(a=1).b.c }}",
        "\u{0}{{ '\u{0}' }}",
    ] {
        let result = ChatTemplate::new("fuzz", source, SpecialTokens::default())
            .and_then(|t| t.render(&RenderArgs::new(&[Message::user("x")])));
        if let Err(e) = result {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------
// Python compatibility.

#[test]
fn tojson_matches_python_json_dumps() {
    let t = tmpl(
        "{{ tools | tojson }}|{{ tools[0].function.parameters | tojson(indent=2) }}|{{ {'b': 1, 'a': [1.5, true, none]} | tojson(sort_keys=true) }}|{{ {'x': 'née'} | tojson(ensure_ascii=true) }}|{{ {'x': 1} | tojson(separators=(',', ':')) }}|{{ '<&>' | tojson }}",
    );
    let tools = [Tool::function(
        "get_weather",
        Some("Weather — now".into()),
        Some(json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": []})),
    )];
    let out = t.render(&RenderArgs::new(&[]).tools(&tools)).unwrap();
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(
        parts[0],
        r#"[{"type": "function", "function": {"name": "get_weather", "description": "Weather — now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": []}}}]"#
    );
    assert_eq!(
        parts[1],
        "{\n  \"type\": \"object\",\n  \"properties\": {\n    \"city\": {\n      \"type\": \"string\"\n    }\n  },\n  \"required\": []\n}"
    );
    assert_eq!(parts[2], r#"{"a": [1.5, true, null], "b": 1}"#);
    assert_eq!(parts[3], r#"{"x": "n\u00e9e"}"#);
    assert_eq!(parts[4], r#"{"x":1}"#);
    assert_eq!(parts[5], r#""<&>""#);
}

#[test]
fn strftime_now_reads_the_injected_clock() {
    assert_eq!(render("{{ strftime_now('%d %b %Y') }}"), "26 Jul 2024");
    assert_eq!(
        render("{{ strftime_now('%Y-%m-%d %H:%M:%S') }}"),
        "2024-07-26 00:00:00"
    );
    let system =
        ChatTemplate::new("now", "{{ strftime_now('%Y') }}", SpecialTokens::default()).unwrap();
    let year: i32 = system
        .render(&RenderArgs::new(&[]))
        .unwrap()
        .parse()
        .unwrap();
    assert!(year >= 2024);
}

#[test]
fn python_methods_namespace_and_loop_controls() {
    assert_eq!(
        render(
            "{{ '  a b  '.strip() }}|{{ 'a,b'.split(',') | join('+') }}|{{ 'abc'.startswith('ab') }}"
        ),
        "a b|a+b|True"
    );
    assert_eq!(
        render(
            "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{{ {'a': 1}.get('z', 'dflt') }}"
        ),
        "a=1;b=2;dflt"
    );
    assert_eq!(
        render("{{ 'a b c'.rsplit(' ', 1) }}|{{ 'x.jinja'.removesuffix('.jinja') }}"),
        "['a b', 'c']|x"
    );
    assert_eq!(
        render(
            "{% set ns = namespace(n=0) %}{% for i in range(10) %}{% if i == 5 %}{% break %}{% endif %}{% if i is odd %}{% continue %}{% endif %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"
        ),
        "6"
    );
    // Python's printing of values.
    assert_eq!(
        render("{{ true }} {{ none }} {{ [1, 'it', 2.0] }} {{ {'k': false} }} {{ 1 | string }}"),
        "True None [1, 'it', 2.0] {'k': False} 1"
    );
    // Whitespace control as transformers sets it: trim_blocks, lstrip_blocks, no trailing newline.
    assert_eq!(render("  {% if true %}\nA\n  {% endif %}\nB\n"), "A\nB");
}

#[test]
fn special_tokens_kwargs_documents_and_generation_prompt() {
    let t = tmpl(
        "{{ bos_token }}{{ eos_token }}{{ enable_thinking }}{{ documents | length }}{{ add_generation_prompt }}{{ pad_token is defined }}",
    );
    let out = t
        .render(
            &RenderArgs::new(&[])
                .kwarg("enable_thinking", false)
                .documents(Some(json!([{"title": "a"}, {"title": "b"}])))
                .add_generation_prompt(true),
        )
        .unwrap();
    assert_eq!(out, "<s></s>False2TrueFalse");
    // Extra variables override special tokens.
    assert_eq!(
        t.render(
            &RenderArgs::new(&[])
                .kwarg("bos_token", "B")
                .documents(Some(json!([])))
        )
        .unwrap(),
        "B</s>0FalseFalse"
    );
    // tools and documents are None when not given.
    assert_eq!(
        render("{{ tools is none }}{{ documents is none }}"),
        "TrueTrue"
    );
}

/// A request's `chat_template_kwargs` reach the template as top-level variables:
/// Granite 3.3 reads `thinking`.
#[test]
fn kwargs_reach_a_real_template_and_reserved_names_are_ignored() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/chat_templates/ibm-granite-granite-3.3-2B-Instruct.jinja"
    );
    let source = std::fs::read_to_string(path).expect("shared/data/chat_templates is missing");
    let t = tmpl(&source);
    let messages = [Message::user("hi")];
    let plain = t.render(&RenderArgs::new(&messages)).unwrap();
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("thinking".into(), json!(true));
    let thinking = t
        .render(&RenderArgs::new(&messages).kwargs(kwargs))
        .unwrap();
    let cue = "Write your thoughts between <think></think>";
    assert!(!plain.contains(cue) && thinking.contains(cue), "{thinking}");
    // `messages` (and the other names RenderArgs sets) cannot be replaced.
    let t = tmpl("{{ messages | length }}{{ add_generation_prompt }}");
    let args = RenderArgs::new(&messages)
        .kwarg("messages", json!([]))
        .kwarg("add_generation_prompt", true);
    assert_eq!(t.render(&args).unwrap(), "1False");
    assert!(formwork_template::RESERVED_VARIABLES.contains(&"tools"));
}

// ---------------------------------------------------------------------------
// OpenAI-style messages.

#[test]
fn content_parts_are_joined_for_templates_that_expect_strings() {
    let messages = [Message {
        content: Some(Content::Parts(vec![
            ContentPart::text("one"),
            ContentPart::text("two"),
        ])),
        ..Message::user("")
    }];
    let plain = tmpl("{% for m in messages %}{{ m.content }}{% endfor %}");
    assert!(!plain.handles_content_parts());
    assert_eq!(
        plain.render(&RenderArgs::new(&messages)).unwrap(),
        "one\ntwo"
    );

    let typed = tmpl(
        "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}[{{ p.type }}:{{ p.text }}]{% endfor %}{% endif %}{% endfor %}",
    );
    assert!(typed.handles_content_parts());
    assert_eq!(
        typed.render(&RenderArgs::new(&messages)).unwrap(),
        "[text:one][text:two]"
    );

    let forced = ChatTemplate::with_options(
        "t",
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        SpecialTokens::default(),
        TemplateOptions::default().content_format(ContentFormat::Parts),
    )
    .unwrap();
    assert_eq!(
        forced.render(&RenderArgs::new(&messages)).unwrap(),
        "[{'type': 'text', 'text': 'one'}, {'type': 'text', 'text': 'two'}]"
    );
}

#[test]
fn string_tool_call_arguments_become_objects() {
    let source = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}{% if m.role == 'tool' %}<{{ m.tool_call_id }}:{{ m.content }}>{% endif %}{% endfor %}";
    let messages = [
        Message::user("weather?"),
        Message {
            content: None,
            tool_calls: Some(vec![ToolCall::function(
                "call_1",
                "get_weather",
                json!("{\"city\": \"Paris\"}"),
            )]),
            ..Message::new(Role::Assistant, "")
        },
        Message::tool("call_1", "{\"temp\": 21}"),
    ];
    let out = tmpl(source).render(&RenderArgs::new(&messages)).unwrap();
    assert_eq!(
        out,
        "get_weather{\"city\": \"Paris\"}<call_1:{\"temp\": 21}>"
    );

    let as_given = ChatTemplate::with_options(
        "t",
        source,
        SpecialTokens::default(),
        TemplateOptions::default().arguments_format(ArgumentsFormat::AsGiven),
    )
    .unwrap();
    let out = as_given.render(&RenderArgs::new(&messages)).unwrap();
    assert_eq!(
        out,
        "get_weather\"{\\\"city\\\": \\\"Paris\\\"}\"<call_1:{\"temp\": 21}>"
    );
}

#[test]
fn raw_json_messages_pass_through() {
    let t = tmpl(
        "{% for m in messages %}{{ m.role }}:{{ m.content }}:{{ m.reasoning_content }};{% endfor %}",
    );
    let messages = json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "r"}
    ]);
    assert_eq!(
        t.render(&RenderArgs::from_json(messages)).unwrap(),
        "user:q:;assistant:a:r;"
    );
    assert!(matches!(
        t.render(&RenderArgs::from_json(json!({"role": "user"}))),
        Err(Error::BadInput(_))
    ));
}

#[test]
fn one_template_renders_from_many_threads() {
    let t = Arc::new(smollm2());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                t.render(
                    &RenderArgs::new(&[Message::user(format!("q{i}"))]).add_generation_prompt(true),
                )
                .unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert!(h.join().unwrap().contains(&format!("q{i}<|im_end|>")));
    }
}

#[test]
fn developer_role_becomes_system_unless_the_template_knows_it() {
    let messages = [Message::new(Role::Developer, "rules"), Message::user("q")];
    let plain = tmpl("{% for m in messages %}{{ m.role }};{% endfor %}");
    assert_eq!(
        plain.render(&RenderArgs::new(&messages)).unwrap(),
        "system;user;"
    );
    let knows = tmpl(
        "{% for m in messages %}{% if m.role == 'developer' %}D{% endif %}{{ m.role }};{% endfor %}",
    );
    assert_eq!(
        knows.render(&RenderArgs::new(&messages)).unwrap(),
        "Ddeveloper;user;"
    );
    let forced = ChatTemplate::with_options(
        "t",
        "{% for m in messages %}{{ m.role }};{% endfor %}",
        SpecialTokens::default(),
        TemplateOptions::default().developer_role(formwork_template::DeveloperRole::AsGiven),
    )
    .unwrap();
    assert_eq!(
        forced.render(&RenderArgs::new(&messages)).unwrap(),
        "developer;user;"
    );
}

#[test]
fn continue_final_message_leaves_the_last_turn_open() {
    let messages = [
        Message::user("Name a colour."),
        Message::assistant("{\"colour\": \""),
    ];
    let t = smollm2();
    let prompt = t
        .render(&RenderArgs::new(&messages).continue_final_message(true))
        .unwrap();
    assert_eq!(
        prompt,
        format!(
            "{SMOLLM2_SYSTEM}<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n{{\"colour\": \""
        )
    );
    assert!(matches!(
        t.render(
            &RenderArgs::new(&messages)
                .continue_final_message(true)
                .add_generation_prompt(true)
        ),
        Err(Error::BadInput(_))
    ));
    // A template that drops the final message's text cannot continue it.
    let drops = tmpl("{% for m in messages %}{{ m.role }}{% endfor %}");
    assert!(matches!(
        drops.render(&RenderArgs::new(&messages).continue_final_message(true)),
        Err(Error::BadInput(_))
    ));
}

#[test]
fn endless_templates_run_out_of_fuel() {
    let t = ChatTemplate::with_options(
        "loop",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        SpecialTokens::default(),
        TemplateOptions::default().fuel(Some(100_000)),
    )
    .unwrap();
    let err = t.render(&RenderArgs::new(&[])).unwrap_err();
    assert!(matches!(err, Error::Render { .. }), "{err:?}");
    assert!(err.to_string().contains("fuel"), "{err}");
    // Real templates stay far below the default budget.
    let prompt = smollm2().render(&RenderArgs::new(&[Message::user("x".repeat(100_000))]));
    assert!(prompt.is_ok());
}

#[test]
fn generation_tags_render_their_body() {
    let t = tmpl(
        "{% for m in messages %}{% if m.role == 'assistant' %}\n{% generation %}\n[{{ m.content }}]\n{% endgeneration %}\n{% else %}{{ m.content }}{% endif %}{% endfor %}",
    );
    let out = t
        .render(&RenderArgs::new(&[
            Message::user("q"),
            Message::assistant("a"),
        ]))
        .unwrap();
    assert_eq!(out, "q[a]\n");
}

#[test]
fn model_folders_with_the_template_beside_the_config() {
    let config = temp_file(
        "tokenizer_config.json",
        br#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}}"#,
    );
    let dir = config.parent().unwrap().to_path_buf();
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("additional_chat_templates")).unwrap();
    std::fs::write(dir.join("additional_chat_templates/tool_use.jinja"), "T").unwrap();
    for path in [config.clone(), dir.clone()] {
        let source = TemplateSource::from_path(&path).unwrap();
        assert_eq!(source.names().collect::<Vec<_>>(), ["default", "tool_use"]);
        let t = source.compile(None, TemplateOptions::default()).unwrap();
        assert_eq!(
            t.render(&RenderArgs::new(&[Message::user("x")])).unwrap(),
            "<s>x</s>"
        );
    }
    // A .gguf that is not one says so.
    let fake = dir.join("model.gguf");
    std::fs::write(&fake, "not gguf").unwrap();
    let err = TemplateSource::from_path(&fake).unwrap_err();
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The default model's own template, read from its GGUF (`cargo xtask fetch-model`), renders
/// the chatml prompt SmolLM2 was trained on.
#[test]
fn default_model_gguf_template_renders_chatml() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    let source = TemplateSource::from_path(&path).unwrap();
    assert_eq!(source.special_tokens.bos_token(), Some("<|im_start|>"));
    assert_eq!(source.special_tokens.eos_token(), Some("<|im_end|>"));
    let template = source.compile(None, TemplateOptions::default()).unwrap();
    let messages = [
        Message::system("You are a helpful assistant."),
        Message::user("What is the capital of France?"),
    ];
    let prompt = template
        .render(&RenderArgs::new(&messages).add_generation_prompt(true))
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Without a system message the template inserts SmolLM's default one.
    let prompt = template
        .render(&RenderArgs::new(&messages[1..]).add_generation_prompt(true))
        .unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"),
        "{prompt:?}"
    );
}
