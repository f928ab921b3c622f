//! `formwork generate --tools FILE [--tool-choice ..]` on the tiny random model: the tools
//! reach the prompt, a forced call is constrained and printed as a JSON line, streamed or
//! not alike, and bad tool files or choices are input errors. And which CPU kernels ran, as
//! `formwork bench` prints it and `formwork serve` logs it.

mod common;

use common::{formwork, tiny_model_path};
use serde_json::{Value, json};

fn tools_file(name: &str, tools: &Value) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tools");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, tools.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn generate_with_tools_prints_calls() {
    let params = json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}},
                        "required": ["city"], "additionalProperties": false});
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": params}},
        {"type": "function", "function": {"name": "echo", "parameters": {}}}
    ]);
    let file = tools_file("tools.json", &tools);
    let model = tiny_model_path().to_str().unwrap();
    let base = [
        "generate",
        "--model",
        model,
        "--prompt",
        "weather?",
        "--tools",
        &file,
        "--max-tokens",
        "120",
        "--seed",
        "3",
        "--temperature",
        "1",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, out, err) = formwork(&args, None);
        assert_eq!(code, 0, "{err}");
        let stats: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
        (json_lines(&out), stats["finish_reason"].clone())
    };

    // A named function: one call, constrained, printed as a JSON line.
    let (lines, finish) = run(&["--tool-choice", "get_weather"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let call = &lines[0]["tool_call"];
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments = call["arguments"].as_str().unwrap();
    if finish == "stop" {
        let args: Value = serde_json::from_str(arguments).unwrap();
        assert!(jsonschema::is_valid(&params, &args), "{args}");
    } else {
        assert!(arguments.starts_with('{'), "{arguments}");
    }

    // Streamed: deltas as JSON lines that rebuild the same call.
    let (deltas, streamed_finish) = run(&["--tool-choice", "get_weather", "--stream"]);
    assert_eq!(streamed_finish, finish);
    let first = &deltas[0]["tool_call_delta"];
    assert_eq!(
        (first["index"].as_u64(), &first["name"]),
        (Some(0), &json!("get_weather"))
    );
    let rebuilt: String = deltas
        .iter()
        .map(|d| d["tool_call_delta"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(rebuilt, arguments);

    // `required` over both tools; `{}` parameters mean an object.
    let (lines, finish) = run(&["--tool-choice", "echo"]);
    let arguments = lines[0]["tool_call"]["arguments"].as_str().unwrap();
    assert!(arguments.starts_with('{'), "{arguments}");
    if finish == "stop" {
        assert!(
            serde_json::from_str::<Value>(arguments)
                .unwrap()
                .is_object()
        );
    }
    let (lines, _) = run(&["--tool-choice", "required"]);
    for line in &lines {
        let name = line["tool_call"]["name"].as_str().unwrap();
        assert!(["get_weather", "echo"].contains(&name), "{line}");
    }

    // Auto and none: the model answers freely; every line is content or a call.
    for choice in ["auto", "none"] {
        let (lines, _) = run(&["--tool-choice", choice]);
        for line in &lines {
            assert!(
                line.get("content").is_some()
                    || (choice == "auto" && line.get("tool_call").is_some()),
                "{line}"
            );
        }
    }
}

#[test]
fn generate_refuses_bad_tools() {
    let model = tiny_model_path().to_str().unwrap();
    let good = tools_file(
        "one.json",
        &json!([{"type": "function", "function": {"name": "f"}}]),
    );
    let string_args = tools_file(
        "string.json",
        &json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
    );
    let not_tools = tools_file("not-tools.json", &json!({"name": "f"}));
    for (file, choice, needle) in [
        (good.as_str(), "g", "`g`"),
        (string_args.as_str(), "auto", "must describe a JSON object"),
        (
            not_tools.as_str(),
            "auto",
            "not a JSON array of tool objects",
        ),
    ] {
        let (code, _, err) = formwork(
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "x",
                "--tools",
                file,
                "--tool-choice",
                choice,
            ],
            None,
        );
        assert_ne!(code, 0);
        assert!(err.contains(needle), "{err}");
    }
}

/// `formwork bench --prompt-tokens` names the CPU kernels that ran in its JSON line (those
/// picked at run time; `FORMWORK_CPU_KERNELS=scalar` lowers them to the portable code), and
/// `formwork serve` logs them when the model is ready.
#[test]
fn bench_and_serve_name_the_cpu_kernels_they_run() {
    let model = tiny_model_path().to_str().unwrap();
    let bench = |kernels: &str| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_formwork"))
            .args([
                "bench",
                "--model",
                model,
                "--prompt-tokens",
                "8",
                "--gen-tokens",
                "2",
            ])
            .args(["--repetitions", "1", "--threads", "1"])
            .env("FORMWORK_CPU_KERNELS", kernels)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    let best = formwork_model::CpuKernels::detected().name();
    assert_eq!(bench("auto")["cpu_kernels"], best);
    assert_eq!(bench("scalar")["cpu_kernels"], "scalar");
    let server = common::ServeProcess::start(tiny_model_path(), &[]);
    let log = server.log_text();
    let expected = formwork_model::cpu_kernels().unwrap().name();
    assert!(
        log.lines().any(|l| l.contains("model ready")
            && l.contains("cpu_kernels")
            && l.contains(expected)),
        "{log}"
    );
}
