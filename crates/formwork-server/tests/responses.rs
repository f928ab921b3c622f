//! `POST /v1/responses` over HTTP on the tiny random model: the response object's shape,
//! the typed event stream and its agreement with the whole response, refusals naming
//! the field, authentication, metrics, the body limit, and cancellation on disconnect.

mod common;

use common::{
    Server, disconnect_and_wait_cancelled, long_tiny_engine, open_stream_at, request, server,
    shared_engine,
};
use formwork_engine::EngineConfig;
use formwork_server::app::ServerConfig;
use serde_json::{Value, json};

/// A body with `input` and `extra` members.
fn body(extra: Value) -> Value {
    let mut body = json!({"input": "Hello", "max_output_tokens": 8, "seed": 3, "temperature": 1.0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// A stream's events as (the `event:` name, the `data:` JSON); each event's name must
/// be its data's `type`.
fn typed_events(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not a typed event: {e:?}"));
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name, "{e}");
            (name.to_owned(), data)
        })
        .collect()
}

#[test]
fn responses_have_openai_shapes() {
    let s = server();
    let r = s.post(
        "/v1/responses",
        &body(json!({"instructions": "Be brief.", "metadata": {"user": "u1"}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert!(v["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(v["max_output_tokens"], 8);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["store"], false);
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["parallel_tool_calls"], true);
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    assert_eq!(v["metadata"], json!({"user": "u1"}));
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap())
    );
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    let status = v["status"].as_str().unwrap();
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], status);
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["annotations"], json!([]));
    if status == "incomplete" {
        assert_eq!(
            v["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(usage["output_tokens"], 8);
    } else {
        assert_eq!(status, "completed");
        assert_eq!(v["incomplete_details"], Value::Null);
    }

    // Cut by max_output_tokens: incomplete, with the reason.
    let v = s
        .post(
            "/v1/responses",
            &body(json!({"max_output_tokens": 2, "ignore_eos": true})),
        )
        .json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["status"], "incomplete");
}

#[test]
fn streamed_events_add_up_to_the_whole_response() {
    let s = server();
    for seed in 0..4 {
        let extra = json!({"seed": seed, "max_output_tokens": 12});
        let whole = s.post("/v1/responses", &body(extra.clone())).json();
        let mut stream_body = body(extra);
        stream_body["stream"] = json!(true);
        let r = s.post("/v1/responses", &stream_body);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let events = typed_events(&r.text());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        for (i, (_, data)) in events.iter().enumerate() {
            assert_eq!(data["sequence_number"], i, "{data}");
        }
        assert_eq!(names[..2], ["response.created", "response.in_progress"]);
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        assert_eq!(events[0].1["response"]["output"], json!([]));
        let last = &events.last().unwrap().1;
        let expected_end = match whole["status"].as_str() {
            Some("completed") => "response.completed",
            _ => "response.incomplete",
        };
        assert_eq!(last["type"], expected_end);
        // The final response is the whole one, but for ids and times.
        let text = |v: &Value| v["output"][0]["content"][0]["text"].clone();
        assert_eq!(text(&last["response"]), text(&whole));
        assert_eq!(last["response"]["usage"], whole["usage"]);
        let deltas: String = events
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(json!(deltas), text(&whole));
        if !deltas.is_empty() {
            let collapsed: Vec<&str> = names
                .iter()
                .enumerate()
                .filter(|&(i, n)| i == 0 || names[i - 1] != *n)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(
                collapsed,
                [
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.output_text.delta",
                    "response.output_text.done",
                    "response.content_part.done",
                    "response.output_item.done",
                    expected_end,
                ]
            );
        }
    }
}

#[test]
fn forced_calls_are_function_call_items_whole_and_streamed() {
    let s = server();
    let tool = json!({"type": "function", "name": "get_weather", "strict": true,
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                       "required": ["city"], "additionalProperties": false}});
    let extra = json!({"tools": [tool], "tool_choice": {"type": "function", "name": "get_weather"},
                       "max_output_tokens": 100});
    let whole = s.post("/v1/responses", &body(extra.clone())).json();
    let call = &whole["output"][0];
    assert_eq!(call["type"], "function_call", "{whole}");
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string());
    assert_eq!(
        whole["tool_choice"],
        json!({"type": "function", "name": "get_weather"})
    );
    assert_eq!(whole["tools"][0]["name"], "get_weather");

    let mut stream_body = body(extra);
    stream_body["stream"] = json!(true);
    let events = typed_events(&s.post("/v1/responses", &stream_body).text());
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(json!(deltas), call["arguments"]);
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], call["arguments"]);
    assert_eq!(done.1["name"], "get_weather");

    // The call sent back with its output renders and generates.
    let second = s.post(
        "/v1/responses",
        &body(json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": call["call_id"], "name": "get_weather",
             "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
        ]})),
    );
    assert_eq!(second.status, 200, "{}", second.text());
}

#[test]
fn structure_dialects_apply_on_this_route() {
    let s = server();
    let v = s
        .post(
            "/v1/responses",
            &body(json!({"metadata": {"structure": {"type": "choice", "choices": ["yes", "no"]}}})),
        )
        .json();
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(["yes", "no"].contains(&text), "{v}");
    // Echoed as a string, as OpenAI's metadata values are.
    assert!(v["metadata"]["structure"].is_string());

    let v = s
        .post(
            "/v1/responses",
            &body(
                json!({"max_output_tokens": 60, "text": {"format": {"type": "json_schema",
                "name": "n", "schema": {"type": "object", "properties": {"n": {"type": "integer"}},
                "required": ["n"], "additionalProperties": false}}}}),
            ),
        )
        .json();
    if v["status"] == "completed" {
        let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
        let doc: Value = serde_json::from_str(text).unwrap();
        assert!(doc["n"].is_i64(), "{text}");
    }
    assert_eq!(v["text"]["format"]["name"], "n");

    // A strict schema's unenforceable keyword is refused, naming `text.format.schema`; a
    // lenient one's is a warning, whole or streamed.
    let schema = json!({"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true});
    let format = |strict: bool| {
        body(
            json!({"text": {"format": {"type": "json_schema", "name": "t", "strict": strict,
            "schema": schema}}}),
        )
    };
    let e = s.post("/v1/responses", &format(true)).error(400);
    assert_eq!(e["param"], "text.format.schema", "{e}");
    let v = s.post("/v1/responses", &format(false)).json();
    let warning = v["warnings"][0].as_str().unwrap_or_default().to_owned();
    assert!(warning.contains("uniqueItems"), "{v}");
    let mut streamed = format(false);
    streamed["stream"] = json!(true);
    let events = typed_events(&s.post("/v1/responses", &streamed).text());
    assert_eq!(events[0].1["response"]["warnings"][0], json!(warning));
}

#[test]
fn bad_requests_name_the_field() {
    let s = server();
    let cases = [
        (
            json!({"input": [{"role": "user", "content": "x"}, {"type": "web_search_call"}]}),
            "input[1].type",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
        ),
        (
            json!({"input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]}),
            "input[0].call_id",
        ),
        (
            json!({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
            "input[0].call_id",
        ),
        (json!({"input": []}), "input"),
        (json!({"input": 7}), "input"),
        (json!({"input": null}), "input"),
        (
            json!({"previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"conversation": "conv_1"}), "conversation"),
        (json!({"background": true}), "background"),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (json!({"tools": [{"type": "function"}]}), "tools[0].name"),
        (
            json!({"tools": [{"type": "function", "name": "f", "strict": "yes"}]}),
            "tools[0].strict",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]}),
            "tools[0].parameters",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "file_search"}}),
            "tool_choice.type",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
            "tool_choice",
        ),
        (
            json!({"text": {"format": {"type": "xml"}}}),
            "text.format.type",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "name": "x"}}}),
            "text.format.schema",
        ),
        (
            json!({"text": {"format": {"type": "json_object"}}, "metadata": {"structure": {"type": "regex", "pattern": "a"}}}),
            "metadata.structure",
        ),
        (
            json!({"metadata": {"structure": {"type": "nope"}}}),
            "metadata.structure.type",
        ),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"max_output_tokens": 0}), "max_output_tokens"),
        (json!({"n": 2}), "n"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (
            json!({"chat_template_kwargs": {"messages": []}}),
            "chat_template_kwargs.messages",
        ),
    ];
    for (extra, param) in cases {
        let error = s.post("/v1/responses", &body(extra.clone())).error(400);
        assert_eq!(error["param"], param, "{extra}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let error = s
        .post("/v1/responses", &body(json!({"model": "gpt-9"})))
        .error(404);
    assert_eq!(error["code"], "model_not_found");
    // A schema that does not compile is blamed on `text.format.schema`.
    let error = s
        .post(
            "/v1/responses",
            &body(
                json!({"text": {"format": {"type": "json_schema", "name": "x",
                "schema": {"type": "string", "pattern": "("}}}}),
            ),
        )
        .error(400);
    assert_eq!(error["param"], "text.format.schema", "{error}");
    // `store: true` is answered, unstored, with a warning.
    let v = s
        .post("/v1/responses", &body(json!({"store": true})))
        .json();
    assert_eq!(v["store"], false);
    assert!(v["warnings"][0].as_str().unwrap().contains("store"), "{v}");
}

#[test]
fn auth_metrics_and_body_limit_cover_the_route() {
    let s = Server::start(
        shared_engine(),
        ServerConfig {
            api_key: Some("sesame".into()),
            max_body_bytes: 1024,
            ..ServerConfig::default()
        },
    );
    let payload = body(json!({})).to_string();
    let r = request(s.addr, "POST", "/v1/responses", &[], payload.as_bytes());
    assert_eq!(r.status, 401);
    let auth = [("authorization", "Bearer sesame")];
    let r = request(s.addr, "POST", "/v1/responses", &auth, payload.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let big = body(json!({"input": "x".repeat(2048)})).to_string();
    let r = request(s.addr, "POST", "/v1/responses", &auth, big.as_bytes());
    assert_eq!(r.status, 413);
    let metrics = request(s.addr, "GET", "/metrics", &auth, b"").text();
    for sample in [
        "formwork_requests_total{route=\"/v1/responses\",status=\"200\"} 1",
        "formwork_requests_total{route=\"/v1/responses\",status=\"401\"} 1",
        "formwork_requests_total{route=\"/v1/responses\",status=\"413\"} 1",
    ] {
        assert!(metrics.contains(sample), "{sample} not in:\n{metrics}");
    }
}

#[test]
fn a_responses_client_that_disconnects_cancels_its_request() {
    let s = Server::start(
        long_tiny_engine(EngineConfig::default()),
        ServerConfig::default(),
    );
    let body = json!({"input": "Go on forever", "max_output_tokens": 30_000, "ignore_eos": true,
                      "stream": true, "temperature": 1.0});
    let reader = open_stream_at(s.addr, "/v1/responses", &body, |line| {
        line.starts_with("event: response.output_text.delta")
    });
    disconnect_and_wait_cancelled(&s, reader);
}
