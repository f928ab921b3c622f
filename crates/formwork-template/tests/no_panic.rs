//! Property test: no template text and no conversation makes compiling or
//! rendering panic; every failure is an `Error`.

use formwork_template::{ChatTemplate, Message, RenderArgs, SpecialTokens, TemplateOptions};
use proptest::prelude::*;
use serde_json::json;

const PIECES: &[&str] = &[
    "{%",
    "%}",
    "{%-",
    "-%}",
    "{{",
    "}}",
    "{#",
    "#}",
    " ",
    "\n",
    "for",
    "in",
    "if",
    "elif",
    "else",
    "endif",
    "endfor",
    "set",
    "=",
    "==",
    "messages",
    "m",
    "x",
    "loop",
    "tools",
    "|",
    "tojson",
    "trim",
    "length",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ".",
    "'a'",
    "\"b\"",
    "1",
    "-1",
    "2.5",
    "+",
    "-",
    "*",
    "/",
    "%",
    "~",
    "items()",
    "content",
    "role",
    "none",
    "true",
    "not",
    "and",
    "or",
    "is",
    "defined",
    "string",
    "macro",
    "endmacro",
    "call",
    "endcall",
    "raise_exception",
    "strftime_now",
    "namespace",
    "range",
    "break",
    "continue",
    "generation",
    "endgeneration",
    "recursive",
    "filter",
    "endfilter",
    "raw",
    "endraw",
    "é",
    "<|im_start|>",
];

fn template_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_templates_never_panic(source in template_text(), with_tools in any::<bool>()) {
        let compiled = ChatTemplate::with_options(
            "prop",
            &source,
            SpecialTokens::new(Some("<s>"), Some("</s>")),
            TemplateOptions::default().fuel(Some(200_000)),
        );
        if let Ok(t) = compiled {
            let messages = [Message::system("s"), Message::user("u"), Message::assistant("a")];
            let mut args = RenderArgs::new(&messages).add_generation_prompt(true);
            if with_tools {
                args = args.tools_json(Some(json!([{"type": "function", "function": {"name": "f"}}])));
            }
            let _ = t.render(&args).map_err(|e| e.to_string());
        }
    }

    #[test]
    fn arbitrary_messages_never_panic(messages in prop::collection::vec(any_message(), 0..6)) {
        let t = ChatTemplate::new(
            "m",
            "{% for m in messages %}{{ m.role }}{{ m.content }}{{ m.tool_calls | tojson }}{% endfor %}",
            SpecialTokens::default(),
        ).unwrap();
        let _ = t.render(&RenderArgs::from_json(serde_json::Value::Array(messages)));
    }
}

fn any_message() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,8}".prop_map(|s| json!(s)),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    });
    (prop::sample::select(&["user", "assistant", "tool", "developer", "x"][..]), value.clone(), value)
        .prop_map(|(role, content, args)| {
            json!({"role": role, "content": content,
                   "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": args}}]})
        })
}
