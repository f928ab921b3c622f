//! Golden tests: every template of `shared/data/chat_templates` rendered for
//! every case of `cases.json` must equal, byte for byte, what Python's jinja2
//! rendered with Hugging Face's settings (`expected/<model>.<case>.txt`), or
//! fail where the reference failed (`expected/<model>.<case>.error.txt`).

use std::fmt::Write as _;
use std::path::PathBuf;

use formwork_template::{
    ChatTemplate, Clock, Message, RenderArgs, SpecialTokens, TemplateOptions, TemplateSource, Tool,
};
use serde_json::Value as Json;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/chat_templates"
);

/// The golden data. Its absence is a failure, not a skip: a test that
/// silently checks nothing would hide regressions.
fn data_dir() -> PathBuf {
    let dir = PathBuf::from(DATA);
    assert!(
        dir.join("cases.json").is_file(),
        "golden data not found at {DATA} (shared/ must sit beside the workspace)"
    );
    dir
}

fn options() -> TemplateOptions {
    TemplateOptions::default().clock(Clock::fixed(2024, 7, 26, 0, 0, 0).unwrap())
}

/// Where two texts first differ, shown as the line of each.
fn first_difference(expected: &str, actual: &str) -> String {
    let (mut e, mut a) = (expected.split('\n'), actual.split('\n'));
    for line in 1.. {
        match (e.next(), a.next()) {
            (None, None) => break,
            (x, y) if x == y => continue,
            (x, y) => {
                return format!(
                    "line {line}:\n      expected: {}\n      actual:   {}",
                    x.map_or_else(|| "<end of text>".into(), |s| format!("{s:?}")),
                    y.map_or_else(|| "<end of text>".into(), |s| format!("{s:?}")),
                );
            }
        }
    }
    "texts differ".into()
}

/// Checks that our error is of the kind Python reported: a `TemplateError`
/// is `raise_exception` with the same message, a `TypeError` about `None`
/// is the same complaint; other kinds only need to fail.
fn error_matches(python: &str, ours: &formwork_template::Error) -> Result<(), String> {
    if std::env::var_os("GOLDEN_SHOW_ERRORS").is_some() {
        eprintln!("python: {python}\n  ours: {ours}");
    }
    if let Some(msg) = python.strip_prefix("TemplateError: ") {
        return match ours {
            formwork_template::Error::RaiseException { message, .. } if message == msg => Ok(()),
            other => Err(format!("Python raised {msg:?} and we fail with: {other}")),
        };
    }
    if python.contains("'NoneType' object is not iterable")
        && !ours
            .to_string()
            .contains("'NoneType' object is not iterable")
    {
        return Err(format!(
            "Python fails with {python:?} and we fail with: {ours}"
        ));
    }
    Ok(())
}

fn render_case(template: &ChatTemplate, case: &Json) -> Result<String, formwork_template::Error> {
    let messages: Vec<Message> = serde_json::from_value(case["messages"].clone())
        .expect("cases.json messages parse as Message");
    let mut args = RenderArgs::new(&messages)
        .add_generation_prompt(case["add_generation_prompt"].as_bool().unwrap_or(false));
    if let Some(tools) = case.get("tools") {
        let tools: Vec<Tool> = serde_json::from_value(tools.clone()).expect("tools parse as Tool");
        args = args.tools(&tools);
    }
    template.render(&args)
}

#[test]
fn goldens_match_python_jinja2() {
    let dir = data_dir();
    let cases: Vec<Json> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let tokens: serde_json::Map<String, Json> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("special_tokens.json")).unwrap())
            .unwrap();
    let mut models: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".jinja").map(str::to_owned)
        })
        .collect();
    models.sort();
    assert!(!models.is_empty());

    let (mut passed, mut failures) = (0usize, Vec::new());
    for model in &models {
        let toks = tokens.get(model).cloned().unwrap_or_default();
        let special = SpecialTokens::new(
            toks.get("bos_token").and_then(Json::as_str),
            toks.get("eos_token").and_then(Json::as_str),
        );
        let source = TemplateSource::from_jinja_file(&dir.join(format!("{model}.jinja")))
            .unwrap()
            .with_special_tokens(special);
        let template = match source.compile(None, options()) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{model}: does not compile: {e}"));
                continue;
            }
        };
        for case in &cases {
            let case_name = case["name"].as_str().unwrap();
            let id = format!("{model}.{case_name}");
            let expected = dir.join("expected").join(format!("{id}.txt"));
            let expected_error = dir.join("expected").join(format!("{id}.error.txt"));
            let result = render_case(&template, case);
            match (result, expected_error.is_file()) {
                (Ok(out), false) => {
                    let want = std::fs::read_to_string(&expected).unwrap();
                    if out == want {
                        passed += 1;
                    } else {
                        failures.push(format!(
                            "{id}: differs at {}",
                            first_difference(&want, &out)
                        ));
                    }
                }
                (Err(e), true) => {
                    let want = std::fs::read_to_string(&expected_error).unwrap();
                    match error_matches(want.trim(), &e) {
                        Ok(()) => passed += 1,
                        Err(why) => failures.push(format!("{id}: fails, but {why}")),
                    }
                }
                (Err(e), false) => failures.push(format!("{id}: fails: {e}")),
                (Ok(_), true) => failures.push(format!(
                    "{id}: renders, but Python fails with: {}",
                    std::fs::read_to_string(&expected_error).unwrap().trim()
                )),
            }
        }
    }
    let total = passed + failures.len();
    let mut report = String::new();
    for f in &failures {
        let _ = writeln!(report, "  FAIL {f}");
    }
    eprintln!("{report}golden chat templates: {passed} of {total} cases match");
    assert!(
        failures.is_empty(),
        "{} of {total} golden cases fail:\n{report}",
        failures.len()
    );
}

/// Templates that concatenate `arguments` as a string (DeepSeek R1 distills,
/// functionary) get OpenAI's string arguments as they are; all others get
/// objects.
#[test]
fn arguments_format_is_detected_per_template() {
    let dir = data_dir();
    let mut strings = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jinja") {
            let t = TemplateSource::from_jinja_file(&path)
                .unwrap()
                .compile(None, options())
                .unwrap();
            if !t.parses_arguments() {
                strings.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    strings.sort();
    assert_eq!(
        strings,
        [
            "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
            "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
            "meetkai-functionary-medium-v3.1",
            "meetkai-functionary-medium-v3.2"
        ]
    );
}
