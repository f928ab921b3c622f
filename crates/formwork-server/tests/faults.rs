//! Faults inside the engine, injected with `formwork_model::testing::FaultyModel`: a panic in
//! a step is a 500 in OpenAI's shape for that step's requests and the server serves on; panics
//! that recur on fresh state turn `/health` to 503 and `formwork_engine_healthy` to 0.

mod common;

use std::sync::Arc;

use common::Server;
use formwork_engine::{Engine, EngineConfig};
use formwork_model::testing::FaultyModel;
use formwork_server::app::ServerConfig;
use serde_json::json;

fn faulty_server() -> (Server, Arc<FaultyModel>) {
    let loaded = formwork_model::load(common::tiny_model_path(), &formwork_model::Device::Cpu)
        .expect("loading the tiny model");
    let vocabulary = formwork_engine::vocabulary_for(&loaded).expect("the vocabulary");
    let faulty = Arc::new(FaultyModel::new(loaded.model.clone()));
    let engine = Engine::with_model(
        faulty.clone(),
        loaded.tokenizer,
        loaded.info,
        vocabulary,
        EngineConfig::default(),
    )
    .expect("starting the engine");
    (
        Server::start(Arc::new(engine), ServerConfig::default()),
        faulty,
    )
}

fn hello(stream: bool) -> serde_json::Value {
    json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "seed": 1,
        "stream": stream,
    })
}

#[test]
fn a_panic_in_the_engine_is_a_500_and_the_server_serves_on() {
    let (server, faulty) = faulty_server();
    faulty.panic_next(1);
    let error = server
        .post("/v1/chat/completions", &hello(false))
        .error(500);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("injected fault"), "{message}");
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(
        server.post("/v1/chat/completions", &hello(false)).json()["object"],
        "chat.completion"
    );
    // Streamed: the failure is an error event, then [DONE].
    faulty.panic_next(1);
    let reply = server.post("/v1/chat/completions", &hello(true));
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected fault")
    );
    assert_eq!(server.metric("formwork_engine_panics_total"), Some(2.0));
    assert_eq!(server.metric("formwork_engine_healthy"), Some(1.0));
}

#[test]
fn recurring_panics_turn_health_to_503() {
    let (server, faulty) = faulty_server();
    faulty.panic_next(usize::MAX);
    for _ in 0..3 {
        server
            .post("/v1/chat/completions", &hello(false))
            .error(500);
    }
    let health = server.get("/health");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "unhealthy");
    assert!(
        health.json()["reason"]
            .as_str()
            .unwrap()
            .contains("in a row")
    );
    assert_eq!(server.metric("formwork_engine_healthy"), Some(0.0));
}
