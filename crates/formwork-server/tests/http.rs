//! The HTTP API over a tiny random model: every bad input answered with the right status
//! in OpenAI's error shape (and the server still serving), response shapes, SSE framing
//! over raw HTTP and curl, concurrent streams, disconnects freeing sequences, a full
//! queue, authentication, metrics and graceful shutdown.

mod common;

use std::io::BufReader;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{
    Server, disconnect_and_wait_cancelled, long_tiny_engine, open_long_stream, open_stream,
    read_head, request, send, server, shared_engine, sse_events, wait_for_metric,
};
use formwork_engine::EngineConfig;
use formwork_server::app::{AppState, ServerConfig, router};
use formwork_server::serve::Shutdown;
use serde_json::{Value, json};
use tower::ServiceExt;

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn good_chat() -> Value {
    json!({"messages": user("Hello"), "max_tokens": 4, "temperature": 0})
}

fn assert_serving(s: &Server) {
    let r = s.post("/v1/chat/completions", &good_chat());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let s = server();
    let chat = "/v1/chat/completions";
    let completions = "/v1/completions";
    let with = |extra: Value| {
        let mut body = good_chat();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let long_prompt = "hello world ".repeat(2000);
    let many_stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    // (route, body, status, param, text the message must contain)
    let cases: Vec<(&str, Value, u16, Option<&str>, &str)> = vec![
        (
            chat,
            with(json!({"temperature": "hot"})),
            400,
            Some("temperature"),
            "invalid type",
        ),
        (
            chat,
            with(json!({"temperature": 5})),
            400,
            Some("temperature"),
            "between 0 and 2",
        ),
        (
            chat,
            with(json!({"top_k": "forty"})),
            400,
            Some("top_k"),
            "invalid type",
        ),
        (
            chat,
            with(json!({"n": 0})),
            400,
            Some("n"),
            "between 1 and 16",
        ),
        (
            chat,
            with(json!({"n": 17})),
            400,
            Some("n"),
            "between 1 and 16",
        ),
        (
            chat,
            with(json!({"logprobs": true, "top_logprobs": 21})),
            400,
            Some("top_logprobs"),
            "between 0 and 20",
        ),
        (
            chat,
            with(json!({"stop": many_stops})),
            400,
            Some("stop"),
            "at most 16",
        ),
        (
            chat,
            with(json!({"logit_bias": {"999999": 1}})),
            400,
            Some("logit_bias"),
            "out of range",
        ),
        (
            chat,
            with(json!({"messages": [{"role": "user", "content": 5}]})),
            400,
            Some("messages[0].content"),
            "content parts",
        ),
        (
            chat,
            with(json!({"messages": [{"role": "robot", "content": "x"}]})),
            400,
            Some("messages[0].role"),
            "unknown role `robot`",
        ),
        (
            chat,
            with(json!({"messages": []})),
            400,
            Some("messages"),
            "at least one message",
        ),
        (
            chat,
            json!({"max_tokens": 3}),
            400,
            Some("messages"),
            "missing field",
        ),
        (
            chat,
            with(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]})),
            400,
            Some("messages[0].content[0].type"),
            "Image content is not supported",
        ),
        (
            chat,
            with(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"a": {"$dynamicRef": "#node"}}}}}}),
            ),
            400,
            Some("response_format.json_schema.schema"),
            "unsupported keyword `$dynamicRef` at /properties/a",
        ),
        (
            chat,
            with(json!({"guided_regex": "(unclosed"})),
            400,
            Some("guided_regex"),
            "regex",
        ),
        (
            chat,
            with(json!({"metadata": {"structure": {"type": "regex", "pattern": "[z-a]"}}})),
            400,
            Some("metadata.structure.pattern"),
            "regex",
        ),
        (
            chat,
            with(json!({"response_format": {"type": "json_object"}, "guided_regex": "a+"})),
            400,
            Some("guided_regex"),
            "`response_format` and `guided_regex` ask for different structures",
        ),
        (
            chat,
            with(json!({"guided_grammar": "root ::= \"a"})),
            400,
            Some("guided_grammar"),
            "gbnf grammar, line 1, column",
        ),
        (
            chat,
            with(json!({"tool_choice": "required"})),
            400,
            Some("tool_choice"),
            "only allowed when `tools`",
        ),
        (
            chat,
            with(json!({"stream_options": {"include_usage": true}})),
            400,
            Some("stream_options"),
            "only allowed when `stream`",
        ),
        (
            chat,
            with(json!({"messages": user(&long_prompt)})),
            400,
            Some("messages"),
            "context",
        ),
        (
            completions,
            json!({"prompt": long_prompt, "max_tokens": 2}),
            400,
            Some("prompt"),
            "context",
        ),
        (
            completions,
            json!({"prompt": "x", "echo": true}),
            400,
            Some("echo"),
            "not supported",
        ),
        (
            completions,
            json!({"prompt": ["a", "b"]}),
            400,
            Some("prompt"),
            "Batched prompts",
        ),
        (
            completions,
            json!({"prompt": "x", "logprobs": 21}),
            400,
            Some("logprobs"),
            "between 0 and 20",
        ),
        (
            chat,
            with(json!({"model": "gpt-9"})),
            404,
            Some("model"),
            "does not exist",
        ),
        (
            completions,
            json!({"prompt": "x", "model": "gpt-9"}),
            404,
            Some("model"),
            "does not exist",
        ),
        ("/tokenize", json!({}), 400, Some("prompt"), "required"),
        (
            "/detokenize",
            json!({"tokens": [1, 99999999]}),
            400,
            Some("tokens[1]"),
            "outside the vocabulary",
        ),
        ("/v1/nothing", json!({}), 404, None, "Unknown route"),
    ];
    for (i, (route, body, status, param, needle)) in cases.into_iter().enumerate() {
        let reply = s.post(route, &body);
        let error = reply.error(status);
        assert_eq!(error["param"].as_str(), param, "case {i} {route}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "case {i} {route}: {error}"
        );
        let expected_type = match status {
            404 => "not_found_error",
            _ => "invalid_request_error",
        };
        assert_eq!(error["type"], expected_type, "case {i}");
        if status == 404 && route != "/v1/nothing" {
            assert_eq!(error["code"], "model_not_found");
        }
        if needle == "context" {
            assert_eq!(error["code"], "context_length_exceeded");
        }
        if i % 5 == 0 {
            assert_serving(&s);
        }
    }

    // Malformed JSON, and a body over the limit.
    let r = request(s.addr, "POST", chat, &[], br#"{"messages": ["#);
    let error = r.error(400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{error}"
    );
    assert_eq!(error["param"], Value::Null);
    let error = s.get(chat).error(405);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not accept GET"),
        "{error}"
    );
    let big = json!({"messages": user(&"x".repeat(100 * 1024))});
    let error = s.post(chat, &big).error(413);
    assert_eq!(error["type"], "invalid_request_error");
    assert_serving(&s);
}

#[test]
fn api_key_is_required_except_for_health() {
    let s = Server::start(
        shared_engine(),
        ServerConfig {
            api_key: Some("sesame".into()),
            ..ServerConfig::default()
        },
    );
    let body = good_chat().to_string();
    let post = |headers: &[(&str, &str)]| {
        request(
            s.addr,
            "POST",
            "/v1/chat/completions",
            headers,
            body.as_bytes(),
        )
    };
    let error = post(&[]).error(401);
    assert_eq!(error["type"], "authentication_error");
    assert_eq!(error["code"], "invalid_api_key");
    post(&[("Authorization", "Bearer wrong")]).error(401);
    post(&[("Authorization", "sesame")]).error(401);
    assert_eq!(post(&[("Authorization", "Bearer sesame")]).status, 200);
    // The auth scheme is case-insensitive (RFC 9110); the key is not.
    assert_eq!(post(&[("Authorization", "bearer sesame")]).status, 200);
    assert_eq!(post(&[("Authorization", "BEARER sesame")]).status, 200);
    post(&[("Authorization", "bearer SESAME")]).error(401);
    assert_eq!(s.get("/health").status, 200);
    s.get("/v1/models").error(401);
    s.get("/metrics").error(401);
    let models = request(
        s.addr,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sesame")],
        b"",
    );
    assert_eq!(models.status, 200);
}

#[test]
fn models_health_tokenize_and_detokenize() {
    let s = Server::start(
        shared_engine(),
        ServerConfig {
            served_model_name: Some("tiny".into()),
            ..ServerConfig::default()
        },
    );
    let own_name = s.state.engine().info().name.clone();
    assert_ne!(own_name, "tiny");
    let models = s.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(s.get("/v1/models/tiny").json()["id"], "tiny");
    assert_eq!(s.get(&format!("/v1/models/{own_name}")).status, 200);
    s.get("/v1/models/other").error(404);
    // Both names, or none, are accepted in requests.
    for model in [json!("tiny"), json!(own_name), Value::Null] {
        let mut body = good_chat();
        body["model"] = model;
        let r = s.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["model"], "tiny");
    }
    assert_eq!(s.get("/health").json(), json!({"status": "ok"}));

    let t = s
        .post("/tokenize", &json!({"prompt": "the answer is"}))
        .json();
    let tokens = t["tokens"].as_array().unwrap().clone();
    assert_eq!(t["count"], tokens.len());
    assert_eq!(t["max_model_len"], 1024);
    assert!(!tokens.is_empty());
    let d = s.post("/detokenize", &json!({"tokens": tokens})).json();
    assert_eq!(d["prompt"], "the answer is");
    let chat = s
        .post("/tokenize", &json!({"messages": user("the answer is")}))
        .json();
    assert!(
        chat["count"].as_u64().unwrap() > tokens.len() as u64 + 3,
        "{chat}"
    );
    let error = s
        .post("/tokenize", &json!({"prompt": "x", "messages": user("x")}))
        .error(400);
    assert_eq!(error["param"], "messages");
    s.post("/tokenize", &json!({"messages": []})).error(400);
}

#[test]
fn responses_have_openai_shapes() {
    let s = server();
    let r = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": user("Hi"), "n": 2, "max_tokens": 5, "seed": 3,
                    "logprobs": true, "top_logprobs": 3}),
        )
        .json();
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(r["object"], "chat.completion");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    let mut generated = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["message"]["content"].is_string());
        assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
        let entries = c["logprobs"]["content"].as_array().unwrap();
        assert!(!entries.is_empty() && entries.len() <= 5);
        for e in entries {
            assert!(e["logprob"].as_f64().unwrap() <= 0.0);
            assert!(e["bytes"].is_array());
            assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 3);
        }
        generated += entries.len();
    }
    let usage = &r["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(usage["completion_tokens"], generated);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + generated as u64)
    );

    let r = s
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon", "max_tokens": 4, "logprobs": 2, "seed": 1}),
        )
        .json();
    assert!(r["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(r["object"], "text_completion");
    let c = &r["choices"][0];
    let lp = &c["logprobs"];
    let n = lp["tokens"].as_array().unwrap().len();
    assert!(n >= 1);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), n);
    assert_eq!(lp["text_offset"].as_array().unwrap().len(), n);
    assert!(lp["top_logprobs"][0].as_object().unwrap().len() <= 2);
    assert_eq!(lp["text_offset"][0], 0);

    // Structures on both routes.
    let r = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": user("color"), "guided_choice": ["red", "green blue"], "seed": 5}),
        )
        .json();
    assert!(
        ["red", "green blue"].contains(&r["choices"][0]["message"]["content"].as_str().unwrap())
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    let r = s
        .post(
            "/v1/completions",
            &json!({"prompt": "code:", "metadata": {"structure": {"type": "regex", "pattern": "[0-9]{3}"}}}),
        )
        .json();
    let text = r["choices"][0]["text"].as_str().unwrap();
    assert!(
        text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit()),
        "{text:?}"
    );
}

/// The `tool_calls` of a chat choice: (name, arguments) per call.
fn message_calls(choice: &Value) -> Vec<(String, String)> {
    choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let f = &c["function"];
            let text = |v: &Value| v.as_str().unwrap().to_owned();
            (text(&f["name"]), text(&f["arguments"]))
        })
        .collect()
}

/// The `tool_calls` of a streamed chat reply that has no content (a forced call): (name,
/// arguments) per call, and the finish reason.
fn streamed_calls(s: &Server, body: &Value) -> (Vec<(String, String)>, Value) {
    let (calls, content, finish) = streamed_reply(s, body);
    assert_eq!(content, None, "a forced call streams no content");
    (calls, finish)
}

/// A streamed chat reply: its calls (name, arguments), its content if any was sent, and
/// its finish reason.
fn streamed_reply(s: &Server, body: &Value) -> (Vec<(String, String)>, Option<String>, Value) {
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = s.post("/v1/chat/completions", &streamed).events();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut content: Option<String> = None;
    let mut finish = Value::Null;
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str() {
            content.get_or_insert_default().push_str(text);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = d["index"].as_u64().unwrap() as usize;
            if let Some(name) = d["function"]["name"].as_str() {
                assert_eq!(index, calls.len());
                assert!(d["id"].as_str().unwrap().starts_with("call_"));
                calls.push((name.to_owned(), String::new()));
            }
            calls[index].1 += d["function"]["arguments"].as_str().unwrap_or("");
        }
    }
    (calls, content, finish)
}

#[test]
fn forced_tool_calls_are_returned_and_streamed() {
    let s = server();
    let params = json!({"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 8}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"], "additionalProperties": false});
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": params}},
        {"type": "function", "function": {"name": "get_time"}}
    ]);
    let mut made = 0;
    for seed in 0..6 {
        let body = json!({"messages": user("weather?"), "tools": tools, "tool_choice": "required",
                          "seed": seed, "max_tokens": 200, "parallel_tool_calls": seed % 2 == 0});
        let r = s.post("/v1/chat/completions", &body).json();
        let choice = &r["choices"][0];
        if choice["finish_reason"] == "length" {
            continue;
        }
        made += 1;
        assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
        assert_eq!(choice["message"]["content"], Value::Null);
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert!(!calls.is_empty());
        for call in calls {
            assert!(call["id"].as_str().unwrap().starts_with("call_"));
            assert_eq!(call["type"], "function");
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            match call["function"]["name"].as_str().unwrap() {
                "get_weather" => assert!(jsonschema::is_valid(&params, &args), "{args}"),
                "get_time" => assert_eq!(args, json!({})),
                other => panic!("unknown function {other}"),
            }
        }

        // The stream of the same seed carries the same calls as deltas.
        let (rebuilt, finish) = streamed_calls(&s, &body);
        let expected = message_calls(choice);
        assert_eq!(rebuilt, expected);
        assert_eq!(finish, "tool_calls");
    }
    assert!(
        made >= 3,
        "only {made} of 6 forced calls completed in 200 tokens"
    );
}

/// Issue 15, item 8: a forced call cut by `max_tokens` is a `tool_calls` entry with
/// truncated arguments and finish reason `length`, streamed or not (it was content
/// holding `{"name":..,"argu` non-streamed); and `parameters: {}` makes the arguments an
/// object (they came out as a string, returned as content).
#[test]
fn cut_forced_calls_and_empty_parameters_are_calls() {
    let s = server();
    let tools = json!([{"type": "function", "function": {"name": "echo", "parameters": {}}}]);
    let mut cut = 0;
    for (seed, max_tokens) in (0..6).zip([12, 16, 20, 24, 60, 80]) {
        // Budgets that cut the call: without steering it to end valid.
        let body = json!({"messages": user("echo?"), "tools": tools,
                          "tool_choice": {"type": "function", "function": {"name": "echo"}},
                          "seed": seed, "max_tokens": max_tokens, "end_valid": false});
        let r = s.post("/v1/chat/completions", &body).json();
        let choice = &r["choices"][0];
        assert_eq!(choice["message"]["content"], Value::Null, "{r}");
        let calls = message_calls(choice);
        let (streamed, finish) = streamed_calls(&s, &body);
        assert_eq!(streamed, calls, "seed {seed}");
        assert_eq!(finish, choice["finish_reason"]);
        if choice["finish_reason"] == "length" {
            cut += usize::from(!calls.is_empty());
            for (name, arguments) in &calls {
                assert_eq!(name, "echo");
                assert!(
                    arguments.is_empty() || arguments.starts_with('{'),
                    "{arguments}"
                );
            }
        } else {
            assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
            let args: Value = serde_json::from_str(&calls[0].1).unwrap();
            assert!(args.is_object(), "{args}");
        }
    }
    assert!(cut > 0, "no forced call was cut short with its name read");
}

/// An auto-mode call cut by `max_tokens` is a `tool_calls` entry as a forced one is (or
/// nothing, when cut before its name), never its text as content, streamed or not. The
/// reply must be a call or an object (`response_format`), and `<` is pushed so it calls.
#[test]
fn cut_auto_calls_are_calls_not_content() {
    let s = server();
    let lt = s.post("/tokenize", &json!({"prompt": "<"})).json()["tokens"][0].clone();
    let tools = json!([{"type": "function", "function": {"name": "echo",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]);
    let object =
        json!({"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}});
    let mut cut = 0;
    for (seed, max_tokens) in (0..6).zip([16, 20, 24, 28, 32, 36]) {
        let body = json!({"messages": user("echo?"), "tools": tools, "tool_choice": "auto",
                          "response_format": object, "logit_bias": {lt.to_string(): 100},
                          "seed": seed, "max_tokens": max_tokens});
        let r = s.post("/v1/chat/completions", &body).json();
        let choice = &r["choices"][0];
        let calls = message_calls(choice);
        let (streamed, streamed_content, finish) = streamed_reply(&s, &body);
        assert_eq!(streamed, calls, "seed {seed}");
        assert_eq!(finish, choice["finish_reason"]);
        let content = choice["message"]["content"].as_str().unwrap_or_default();
        assert_eq!(streamed_content.unwrap_or_default(), content);
        assert!(!content.contains("<tool_call>"), "{r}");
        if choice["finish_reason"] == "length" && !calls.is_empty() {
            cut += 1;
            assert_eq!(calls[0].0, "echo");
        }
    }
    assert!(cut > 0, "no auto call was cut short with its name read");
}

#[test]
fn tool_results_after_a_null_content_call_render() {
    // The tiny model's chatml template concatenates `content`, so it cannot render the
    // `null` content of a tool-call turn; the server renders it as an empty string.
    let s = server();
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees and sunny"}
    ]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather"}}]);
    let r = s.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": tools, "tool_choice": "none", "max_tokens": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["choices"][0]["message"]
            .get("tool_calls")
            .is_none()
    );
    let t = s.post("/tokenize", &json!({"messages": messages}));
    assert_eq!(t.status, 200, "{}", t.text());
    let text = s
        .post("/detokenize", &json!({"tokens": t.json()["tokens"]}))
        .json();
    assert!(
        text["prompt"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>assistant\n<|im_end|>"),
        "{text}"
    );
}

/// Text of each choice and the finish reasons, from a stream's chunks.
fn stream_texts(events: &[String], n: usize, field: &str) -> (Vec<String>, Vec<String>) {
    let mut texts = vec![String::new(); n];
    let mut reasons = vec![String::new(); n];
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            let piece = match field {
                "delta" => c["delta"]["content"].as_str(),
                _ => c["text"].as_str(),
            };
            texts[i] += piece.unwrap_or("");
            if let Some(r) = c["finish_reason"].as_str() {
                assert!(reasons[i].is_empty(), "two finish chunks for choice {i}");
                reasons[i] = r.to_owned();
            }
        }
    }
    (texts, reasons)
}

#[test]
fn streamed_deltas_add_up_to_the_unstreamed_answer() {
    let s = server();
    for seed in [1, 2] {
        let body = json!({"messages": user("Tell me a story"), "n": 2, "seed": seed,
                          "temperature": 1.0, "max_tokens": 30, "stop": ["e "]});
        let whole = s.post("/v1/chat/completions", &body).json();
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let events = s.post("/v1/chat/completions", &streamed).events();
        let (texts, reasons) = stream_texts(&events, 2, "delta");
        for i in 0..2 {
            assert_eq!(
                texts[i],
                whole["choices"][i]["message"]["content"].as_str().unwrap()
            );
            assert_eq!(
                reasons[i],
                whole["choices"][i]["finish_reason"].as_str().unwrap()
            );
        }
        let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(usage["usage"], whole["usage"]);

        let body = json!({"prompt": "Once upon a time", "seed": seed, "max_tokens": 20, "n": 2});
        let whole = s.post("/v1/completions", &body).json();
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = s.post("/v1/completions", &streamed).events();
        let (texts, reasons) = stream_texts(&events, 2, "text");
        for i in 0..2 {
            assert_eq!(texts[i], whole["choices"][i]["text"].as_str().unwrap());
            assert_eq!(
                reasons[i],
                whole["choices"][i]["finish_reason"].as_str().unwrap()
            );
        }
    }
}

/// Checks a chat stream's framing: role first, one finish per choice, optional usage
/// chunk, `[DONE]` last.
fn check_chat_stream(events: &[String], n: usize, usage: bool) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for (i, chunk) in chunks.iter().take(n).enumerate() {
        assert_eq!(chunk["choices"][0]["index"], i);
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
    }
    let mut finishes = 0;
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        for c in chunk["choices"].as_array().unwrap() {
            if !c["finish_reason"].is_null() {
                finishes += 1;
            }
        }
    }
    assert_eq!(finishes, n);
    let last = chunks.last().unwrap();
    if usage {
        assert_eq!(last["choices"], json!([]));
        assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c.get("usage").is_none())
        );
    } else {
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }
}

#[test]
fn sse_framing_over_raw_http() {
    let s = server();
    let body = json!({"messages": user("Hi"), "max_tokens": 6, "stream": true,
                      "stream_options": {"include_usage": true}});
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    check_chat_stream(&r.events(), 1, true);

    let mut body = body;
    body["stream_options"] = Value::Null;
    body["n"] = json!(3);
    check_chat_stream(&s.post("/v1/chat/completions", &body).events(), 3, false);

    // A structure that fails to compile is refused before the stream starts.
    body["guided_regex"] = json!("(");
    s.post("/v1/chat/completions", &body).error(400);
}

#[test]
fn curl_sees_the_same_sse_framing() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        eprintln!("NOTE: curl is not installed; the raw-HTTP SSE test covers the framing");
        return;
    };
    assert!(version.status.success());
    let s = server();
    let body = json!({"messages": user("Hi"), "max_tokens": 5, "stream": true,
                      "stream_options": {"include_usage": true}})
    .to_string();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "120",
            "-D",
            "-",
            "-H",
            "Content-Type: application/json",
        ])
        .arg("--data-binary")
        .arg(&body)
        .arg(format!("http://{}/v1/chat/completions", s.addr))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    check_chat_stream(&sse_events(body), 1, true);
}

#[test]
fn eight_concurrent_streams_all_finish() {
    let s = server();
    let addr = s.addr;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"messages": user(&format!("Story number {i}")), "seed": i,
                                  "max_tokens": 48, "stream": true, "n": 1 + i % 2,
                                  "stream_options": {"include_usage": true}});
                let r = request(
                    addr,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    body.to_string().as_bytes(),
                );
                assert_eq!(r.status, 200, "{}", r.text());
                check_chat_stream(&r.events(), 1 + i % 2, true);
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a streaming client failed");
    }
    assert_serving(&s);
}

/// An engine on the 32k-context tiny model, for streams long enough to act on mid-way.
#[test]
fn a_client_that_disconnects_frees_its_sequence() {
    // Its own engine: the gauges must not see other tests' requests.
    let s = Server::start(
        long_tiny_engine(EngineConfig::default()),
        ServerConfig::default(),
    );
    let reader = open_long_stream(s.addr);
    disconnect_and_wait_cancelled(&s, reader);
    let generated = s.metric("formwork_completion_tokens_total").unwrap();
    assert!(
        generated < 30_000.0,
        "the cancelled sequence ran to the end: {generated}"
    );
}

#[test]
fn a_full_queue_is_a_429_and_clears() {
    let engine = long_tiny_engine(EngineConfig {
        max_active: 1,
        max_queue: 1,
        ..EngineConfig::default()
    });
    let s = Server::start(engine, ServerConfig::default());
    let running = open_long_stream(s.addr);
    // The second waits in the queue...
    let body = json!({"messages": user("wait"), "max_tokens": 2, "stream": true});
    let queued = send(
        s.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.to_string().as_bytes(),
    );
    wait_for_metric(
        &s,
        "formwork_queue_depth",
        |v| v == 1.0,
        Duration::from_secs(10),
    );
    // ...and the third finds the queue full.
    let error = s.post("/v1/chat/completions", &good_chat()).error(429);
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "queue_full");
    let error = s
        .post("/v1/completions", &json!({"prompt": "x"}))
        .error(429);
    assert_eq!(error["code"], "queue_full");
    // Once the running stream goes away, the queued one runs and new requests are served.
    drop(running);
    let mut queued = BufReader::new(queued);
    let (status, _) = read_head(&mut queued);
    assert_eq!(status, 200);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut queued, &mut rest).unwrap();
    assert!(rest.contains("data: [DONE]"), "{rest}");
    wait_for_metric(
        &s,
        "formwork_queue_depth",
        |v| v == 0.0,
        Duration::from_secs(10),
    );
    assert_serving(&s);
    assert!(
        s.metric("formwork_requests_total{route=\"/v1/chat/completions\",status=\"429\"}")
            >= Some(1.0)
    );
}

#[test]
fn metrics_are_prometheus_text() {
    let s = server();
    assert_serving(&s);
    s.post("/v1/chat/completions", &json!({"messages": []}))
        .error(400);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    for needle in [
        "# TYPE formwork_requests_total counter",
        "formwork_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
        "formwork_requests_total{route=\"/v1/chat/completions\",status=\"400\"}",
        "# TYPE formwork_time_to_first_token_seconds histogram",
        "formwork_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "# TYPE formwork_time_per_output_token_seconds histogram",
        "# TYPE formwork_index_compile_seconds histogram",
        "# TYPE formwork_queue_depth gauge",
        "# TYPE formwork_active_sequences gauge",
        "formwork_prompt_tokens_total",
        "formwork_completion_tokens_total",
        "formwork_index_cache_hits_total",
        "formwork_index_cache_misses_total",
        "formwork_sequences_finished_total{reason=\"stop\"}",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert!(s.metric("formwork_prompt_tokens_total").unwrap() > 0.0);
}

/// A prompt that starts like an earlier one reuses its blocks: `usage` says how many tokens
/// (OpenAI's `prompt_tokens_details.cached_tokens`, the Responses API's
/// `input_tokens_details.cached_tokens`) and `/metrics` counts them.
#[test]
fn a_repeated_prompt_start_is_reused_and_reported() {
    let s = server();
    let system = "Answer briefly, in a friendly tone, and never in capitals. ".repeat(12);
    let chat = |question: &str| {
        json!({"messages": [{"role": "system", "content": system},
                            {"role": "user", "content": question}],
               "max_tokens": 2, "temperature": 0})
    };
    s.post("/v1/chat/completions", &chat("one")).json();
    let second = s.post("/v1/chat/completions", &chat("two")).json();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached >= 64 && cached < prompt, "{second}");
    let r = s
        .post(
            "/v1/responses",
            &json!({"instructions": system, "input": "three", "max_output_tokens": 2}),
        )
        .json();
    assert!(
        r["usage"]["input_tokens_details"]["cached_tokens"].as_u64() >= Some(64),
        "{r}"
    );
    assert!(s.metric("formwork_prefix_cache_hit_tokens_total") >= Some(cached as f64));
    assert!(s.metric("formwork_prefix_cache_hits_total") >= Some(2.0));
    assert!(s.metric("formwork_prefix_cache_tokens") > Some(0.0));
}

#[test]
fn graceful_shutdown_lets_streams_finish() {
    let s = Server::start_with_deadline(
        long_tiny_engine(EngineConfig::default()),
        ServerConfig::default(),
        Duration::from_secs(120),
    );
    let addr = s.addr;
    // About a second of generation on an idle machine: still running at the signal.
    let body = json!({"messages": user("one more"), "max_tokens": 1500, "ignore_eos": true,
                      "stream": true, "stream_options": {"include_usage": true}});
    let mut reader = open_stream(addr, &body, |line| line.contains("\"role\":\"assistant\""));
    let state = s.state.clone();
    let stopper = std::thread::spawn(move || s.shutdown());
    // The server stops taking requests...
    let start = Instant::now();
    while !state.is_shutting_down() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        refused(addr),
        "a new request was served after the shutdown signal"
    );
    // ...but the running stream still ends normally, with every token.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(rest.contains("\"completion_tokens\":1500"), "{rest}");
    assert!(rest.contains("data: [DONE]"));
    assert_eq!(stopper.join().unwrap(), Shutdown::Drained);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

/// Whether a new request during shutdown is refused: the connection is not accepted or
/// is closed unanswered, or the answer is a 503.
fn refused(addr: std::net::SocketAddr) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return true;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let body = good_chat().to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if std::io::Write::write_all(&mut stream, head.as_bytes()).is_err() {
        return true;
    }
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut reply);
    reply.is_empty() || reply.starts_with("HTTP/1.1 503")
}

#[tokio::test]
async fn the_router_answers_in_process_without_a_port() {
    let state = Arc::new(AppState::new(shared_engine(), ServerConfig::default()));
    let app = router(state);
    let call = |body: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/v1/completions")
            .body(Body::from(body))
            .unwrap()
    };
    let response = app
        .clone()
        .oneshot(call(r#"{"prompt": "Hello", "max_tokens": 3}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["object"], "text_completion");
    let response = app.oneshot(call(r#"{"prompt": 3}"#)).await.unwrap();
    assert_eq!(response.status(), 400);
}

/// A schema with a keyword the compiler does not enforce: refused when strict (the
/// default), with a 400 naming the keyword and its pointer; compiled with a warning when
/// `strict: false`, in the response and in a stream's first chunk.
#[test]
fn strict_schemas_refuse_unenforced_keywords_and_lenient_ones_warn() {
    let s = server();
    let schema = json!({"type": "object", "properties": {
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true}
    }, "required": ["tags"]});
    let body = |strict: Option<bool>| {
        let mut spec = json!({"name": "t", "schema": schema});
        if let Some(strict) = strict {
            spec["strict"] = json!(strict);
        }
        json!({"messages": user("tags"), "max_tokens": 20, "seed": 1,
               "response_format": {"type": "json_schema", "json_schema": spec}})
    };
    for strict in [None, Some(true)] {
        let e = s.post("/v1/chat/completions", &body(strict)).error(400);
        assert_eq!(e["param"], "response_format.json_schema.schema", "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("`uniqueItems`") && message.contains("/properties/tags"),
            "{message}"
        );
    }
    let r = s.post("/v1/chat/completions", &body(Some(false))).json();
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("`uniqueItems` at /properties/tags")
    );
    let mut streamed = body(Some(false));
    streamed["stream"] = json!(true);
    let events = s.post("/v1/chat/completions", &streamed).events();
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["warnings"], r["warnings"]);
    assert_eq!(first["choices"], json!([]));
    // No warnings, no field.
    let r = s.post("/v1/chat/completions", &good_chat()).json();
    assert!(r.get("warnings").is_none(), "{r}");
    // Completions too, through vLLM's field (strict, the default).
    let e = s
        .post(
            "/v1/completions",
            &json!({"prompt": "x", "structured_outputs": {"json": schema}}),
        )
        .error(400);
    assert_eq!(e["param"], "structured_outputs.json");
}

#[test]
fn chat_messages_carry_a_null_refusal() {
    let s = server();
    let r = s.post("/v1/chat/completions", &good_chat()).json();
    let message = r["choices"][0]["message"].as_object().unwrap();
    assert_eq!(message.get("refusal"), Some(&Value::Null), "{r}");
}

/// vLLM's `whitespace_pattern`: the only whitespace between JSON tokens; a bad regex is a
/// 400 naming the field.
#[test]
fn whitespace_patterns_lay_out_json_and_bad_ones_are_refused() {
    let s = server();
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]});
    for (field, outputs) in [
        (
            "structured_outputs",
            json!({"json": schema, "whitespace_pattern": " "}),
        ),
        ("guided_json", schema.clone()),
    ] {
        let mut body = json!({"prompt": "x", "max_tokens": 60, "seed": 2});
        body[field] = outputs;
        body["guided_whitespace_pattern"] = json!(" ");
        let r = s.post("/v1/completions", &body).json();
        let text = r["choices"][0]["text"].as_str().unwrap();
        if r["choices"][0]["finish_reason"] == "stop" {
            // Exactly one space at every place between tokens, as the pattern says.
            let v: Value = serde_json::from_str(text).unwrap();
            let laid_out = format!(r#"{{ "a" : {} , "b" : {} }}"#, v["a"], v["b"]);
            assert_eq!(text, laid_out, "{field}");
        }
        assert!(text.starts_with("{ "), "{field}: {text:?}");
    }
    for (outputs, param) in [
        (
            json!({"json": schema, "whitespace_pattern": "[ "}),
            "structured_outputs.whitespace_pattern",
        ),
        (
            json!({"json": schema, "whitespace_pattern": " ", "disable_any_whitespace": true}),
            "structured_outputs.whitespace_pattern",
        ),
    ] {
        let e = s
            .post(
                "/v1/completions",
                &json!({"prompt": "x", "structured_outputs": outputs}),
            )
            .error(400);
        assert_eq!(e["param"], param, "{e}");
    }
    // disable_any_whitespace and disable_additional_properties are read: compact JSON.
    let r = s
        .post(
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 60, "seed": 2, "structured_outputs":
                {"json": schema, "disable_any_whitespace": true, "disable_additional_properties": true}}),
        )
        .json();
    assert!(r["choices"][0]["text"].as_str().unwrap().starts_with("{\""));
}

#[test]
fn chat_template_kwargs_cannot_replace_what_the_request_sets() {
    let s = server();
    let mut body = good_chat();
    body["chat_template_kwargs"] = json!({"enable_thinking": false});
    assert_eq!(s.post("/v1/chat/completions", &body).status, 200);
    body["chat_template_kwargs"] = json!({"messages": []});
    let e = s.post("/v1/chat/completions", &body).error(400);
    assert_eq!(e["param"], "chat_template_kwargs.messages", "{e}");
}

/// `formwork serve --chat-template FILE --reasoning-parser deepseek_r1`: a template whose
/// generation prompt opens `<think>` makes the reply reasoning until `</think>`, in
/// `message.reasoning_content` and streamed as `delta.reasoning_content`, alike for a seed;
/// `chat_template_kwargs` reach the template (`enable_thinking: false` leaves no block open).
#[test]
fn chat_template_and_reasoning_parser_flags_split_the_reply() {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/think.jinja");
    let server = common::ServeProcess::start(
        common::tiny_model_path(),
        &[
            "--chat-template",
            template,
            "--reasoning-parser",
            "deepseek_r1",
        ],
    );
    let chat = "/v1/chat/completions";
    let post = |body: &Value| -> Value {
        let reply = request(server.addr, "POST", chat, &[], body.to_string().as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    for seed in [1, 2, 3] {
        let body =
            json!({"messages": user("Hi"), "max_tokens": 24, "seed": seed, "temperature": 1.0});
        let whole = post(&body);
        let message = &whole["choices"][0]["message"];
        let reasoning = message["reasoning_content"].as_str().unwrap_or_default();
        let content = message["content"].as_str().unwrap();
        assert!(!reasoning.is_empty(), "{whole}");
        assert_eq!(message["refusal"], Value::Null);
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let reply = request(
            server.addr,
            "POST",
            chat,
            &[],
            streamed.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200);
        let (mut r, mut c) = (String::new(), String::new());
        for event in reply.events() {
            let Ok(chunk) = serde_json::from_str::<Value>(&event) else {
                continue;
            };
            for choice in chunk["choices"].as_array().unwrap() {
                r += choice["delta"]["reasoning_content"].as_str().unwrap_or("");
                c += choice["delta"]["content"].as_str().unwrap_or("");
            }
        }
        assert_eq!((r.as_str(), c.as_str()), (reasoning, content));
    }
    // No block opened: all content, no reasoning.
    let body = json!({"messages": user("Hi"), "max_tokens": 8, "seed": 1,
                      "chat_template_kwargs": {"enable_thinking": false}});
    let message = &post(&body)["choices"][0]["message"];
    assert!(message.get("reasoning_content").is_none(), "{message}");
    assert!(!message["content"].as_str().unwrap().is_empty());
}

/// A budget too small for any reply the constraint allows is a 400 naming the budget's
/// field and the minimum; `end_valid: false` takes it as asked (and the reply is cut).
#[test]
fn a_budget_too_small_for_any_valid_reply_is_refused() {
    let s = server();
    let choice = json!(["the quick brown fox jumps over the lazy dog"]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": user("x"), "max_tokens": 1, "guided_choice": choice});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let e = s.post("/v1/chat/completions", &chat(json!({}))).error(400);
    assert_eq!(e["param"], "max_tokens", "{e}");
    assert_eq!(e["type"], "invalid_request_error", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "max_tokens 1 is too small for any reply this constraint allows: the shortest takes "
        ),
        "{message}"
    );
    let e = s
        .post(
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 1, "guided_choice": choice}),
        )
        .error(400);
    assert_eq!(e["param"], "max_tokens", "{e}");
    let e = s
        .post(
            "/v1/responses",
            &json!({"input": "x", "max_output_tokens": 1,
                    "text": {"format": {"type": "json_schema", "name": "t",
                             "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                        "required": ["a"]}}}}),
        )
        .error(400);
    assert_eq!(e["param"], "max_output_tokens", "{e}");
    let r = s
        .post("/v1/chat/completions", &chat(json!({"end_valid": false})))
        .json();
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
}
