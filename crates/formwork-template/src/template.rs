//! A compiled chat template and how it renders a conversation.
//!
//! [`ChatTemplate`] compiles a template once, with the settings transformers
//! uses (`trim_blocks`, `lstrip_blocks`, loop controls, no trailing newline,
//! `raise_exception`, `strftime_now`, Python's `tojson` and printing), and
//! renders any number of [`RenderArgs`] into prompts. It is `Send + Sync`.

use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Rest, Serde};
use minijinja::{Environment, Error as MjError, ErrorKind, Value};
use serde_json::{Map, Value as Json};

use crate::compat;
use crate::error::{Error, RaisedException, from_minijinja};
use crate::message::{Message, Tool};
use crate::pyjson;
use crate::source::SpecialTokens;

/// The ChatML template, for models that carry none: each message as
/// `<|im_start|>ROLE\nCONTENT<|im_end|>\n`, and `<|im_start|>assistant\n`
/// to prompt a reply.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// What `strftime_now` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The local time of the machine, as Python's `datetime.now()`.
    #[default]
    System,
    /// A fixed time, for tests and reproducible prompts.
    Fixed(chrono::NaiveDateTime),
}

impl Clock {
    /// A fixed clock at the given date and time; `None` if it does not exist.
    pub fn fixed(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<Clock> {
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
        Some(Clock::Fixed(date.and_hms_opt(hour, minute, second)?))
    }

    fn now(&self) -> chrono::NaiveDateTime {
        match self {
            Clock::System => chrono::Local::now().naive_local(),
            Clock::Fixed(t) => *t,
        }
    }
}

/// How message content given as a list of parts reaches the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentFormat {
    /// Lists for templates that loop over `content`, strings for the others.
    #[default]
    Auto,
    /// Always a string: the text parts joined with `"\n"`.
    String,
    /// Always as given.
    Parts,
}

/// How tool-call `arguments` given as a JSON string (as OpenAI clients send
/// them) reach the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgumentsFormat {
    /// Decided when compiling, by rendering a probe conversation: `Object`
    /// if the template renders object arguments as JSON, else `AsGiven` if
    /// it renders string arguments, else `Object`.
    #[default]
    Auto,
    /// Parsed into an object, which most Hugging Face templates expect
    /// (they apply `tojson` or `.items()` to it). A string that is not a
    /// JSON object stays a string.
    Object,
    /// As given.
    AsGiven,
}

/// How messages with role `developer` (OpenAI's newer name for system)
/// reach the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeveloperRole {
    /// As given if the template mentions `developer`, else as `system`.
    #[default]
    Auto,
    /// Always as `system`.
    System,
    /// Always as given.
    AsGiven,
}

/// The default work budget of one rendering ([`TemplateOptions::fuel`]).
pub const DEFAULT_FUEL: u64 = 10_000_000;

/// Options of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TemplateOptions {
    /// What `strftime_now` reads.
    pub clock: Clock,
    /// How list content is passed.
    pub content_format: ContentFormat,
    /// How tool-call arguments are passed.
    pub arguments_format: ArgumentsFormat,
    /// How the `developer` role is passed.
    pub developer_role: DeveloperRole,
    /// The most work one rendering may do, in minijinja fuel (about one unit
    /// per instruction or per 64 bytes made), so that a template from an
    /// untrusted model file cannot loop for ever; `None` for no limit.
    /// Defaults to [`DEFAULT_FUEL`], far above what real templates use.
    pub fuel: Option<u64>,
}

impl Default for TemplateOptions {
    fn default() -> Self {
        TemplateOptions {
            clock: Clock::default(),
            content_format: ContentFormat::default(),
            arguments_format: ArgumentsFormat::default(),
            developer_role: DeveloperRole::default(),
            fuel: Some(DEFAULT_FUEL),
        }
    }
}

impl TemplateOptions {
    /// Sets the clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the content format.
    pub fn content_format(mut self, format: ContentFormat) -> Self {
        self.content_format = format;
        self
    }

    /// Sets the arguments format.
    pub fn arguments_format(mut self, format: ArgumentsFormat) -> Self {
        self.arguments_format = format;
        self
    }

    /// Sets how the `developer` role is passed.
    pub fn developer_role(mut self, role: DeveloperRole) -> Self {
        self.developer_role = role;
        self
    }

    /// Sets the work budget of one rendering; `None` for no limit.
    pub fn fuel(mut self, fuel: Option<u64>) -> Self {
        self.fuel = fuel;
        self
    }
}

/// The template variables [`RenderArgs`] sets from its own arguments; extra variables
/// ([`RenderArgs::kwarg`], [`RenderArgs::kwargs`]) with these names are ignored.
pub const RESERVED_VARIABLES: &[&str] =
    &["messages", "tools", "documents", "add_generation_prompt"];

/// What one rendering gets: the conversation, the tools, and the flags.
///
/// Mirrors `apply_chat_template(messages, tools=..., documents=...,
/// add_generation_prompt=..., **kwargs)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderArgs {
    messages: Json,
    tools: Option<Json>,
    documents: Option<Json>,
    add_generation_prompt: bool,
    continue_final_message: bool,
    kwargs: Map<String, Json>,
}

impl RenderArgs {
    /// Arguments for rendering `messages`.
    pub fn new(messages: &[Message]) -> RenderArgs {
        RenderArgs::from_json(serde_json::to_value(messages).unwrap_or(Json::Array(Vec::new())))
    }

    /// Arguments for rendering messages given as JSON (an array of objects),
    /// passed to the template as they are apart from the content and
    /// arguments conversions of [`TemplateOptions`].
    pub fn from_json(messages: Json) -> RenderArgs {
        RenderArgs {
            messages,
            ..RenderArgs::default()
        }
    }

    /// The tools the model may call (`tools`).
    pub fn tools(self, tools: &[Tool]) -> RenderArgs {
        self.tools_json(serde_json::to_value(tools).ok())
    }

    /// The tools as JSON; `None` passes `tools=None`.
    pub fn tools_json(mut self, tools: Option<Json>) -> RenderArgs {
        self.tools = tools;
        self
    }

    /// Documents for retrieval-augmented templates (`documents`).
    pub fn documents(mut self, documents: Option<Json>) -> RenderArgs {
        self.documents = documents;
        self
    }

    /// Whether to end the prompt with the start of an assistant turn.
    pub fn add_generation_prompt(mut self, yes: bool) -> RenderArgs {
        self.add_generation_prompt = yes;
        self
    }

    /// Leave the last message open, so that the model continues it (a
    /// prefilled assistant reply): the prompt is cut right after the last
    /// message's text, as transformers' `continue_final_message` does.
    pub fn continue_final_message(mut self, yes: bool) -> RenderArgs {
        self.continue_final_message = yes;
        self
    }

    /// An extra variable (`enable_thinking`, `reasoning_effort`...). It
    /// overrides a special token of the same name; one named in
    /// [`RESERVED_VARIABLES`] is ignored.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<Json>) -> RenderArgs {
        self.kwargs.insert(name.into(), value.into());
        self
    }

    /// Extra variables, as a request's `chat_template_kwargs` carries them. Those named
    /// in [`RESERVED_VARIABLES`] are ignored: the other arguments set them.
    pub fn kwargs(mut self, kwargs: Map<String, Json>) -> RenderArgs {
        self.kwargs.extend(kwargs);
        self
    }
}

/// A compiled chat template with its special tokens.
///
/// Compile once, render many times; share it behind an `Arc`.
#[derive(Clone)]
pub struct ChatTemplate {
    inner: Arc<Inner>,
}

struct Inner {
    env: Environment<'static>,
    name: String,
    source: String,
    special_tokens: SpecialTokens,
    options: TemplateOptions,
    iterates_content: bool,
    conversions: Conversions,
}

/// The changes made to messages before rendering, resolved when compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conversions {
    /// Keep content lists (else join their text parts).
    keep_parts: bool,
    /// Parse string tool-call arguments into objects.
    parse_arguments: bool,
    /// Pass `developer` messages as `system`.
    developer_as_system: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.inner.name)
            .field("special_tokens", &self.inner.special_tokens)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` under `name` with default options.
    pub fn new(
        name: &str,
        source: &str,
        special_tokens: SpecialTokens,
    ) -> Result<ChatTemplate, Error> {
        ChatTemplate::with_options(name, source, special_tokens, TemplateOptions::default())
    }

    /// The ChatML fallback ([`CHATML_TEMPLATE`]) for a model without a template.
    pub fn chatml(special_tokens: SpecialTokens) -> Result<ChatTemplate, Error> {
        ChatTemplate::chatml_with_options(special_tokens, TemplateOptions::default())
    }

    /// The ChatML fallback with options.
    pub fn chatml_with_options(
        special_tokens: SpecialTokens,
        options: TemplateOptions,
    ) -> Result<ChatTemplate, Error> {
        ChatTemplate::with_options("chatml", CHATML_TEMPLATE, special_tokens, options)
    }

    /// Compiles `source` under `name`.
    pub fn with_options(
        name: &str,
        source: &str,
        special_tokens: SpecialTokens,
        options: TemplateOptions,
    ) -> Result<ChatTemplate, Error> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| from_minijinja(name, e))?;
        env.set_syntax(syntax.clone());
        env.set_recursion_limit(256);
        env.set_fuel(options.fuel);
        env.set_unknown_method_callback(compat::unknown_method);
        env.set_formatter(|out, _state, value| {
            if let Some(s) = value.as_str() {
                out.write_str(s)
                    .map_err(|_| MjError::from(ErrorKind::WriteFailure))
            } else {
                let mut s = String::new();
                pyjson::py_str(&mut s, value);
                out.write_str(&s)
                    .map_err(|_| MjError::from(ErrorKind::WriteFailure))
            }
        });
        env.add_filter("tojson", pyjson::tojson_filter);
        env.add_filter("string", |value: Value| {
            if value.as_str().is_some() {
                value
            } else {
                let mut s = String::new();
                pyjson::py_str(&mut s, &value);
                Value::from(s)
            }
        });
        env.add_filter(compat::ITERABLE_FILTER, compat::iterable_filter);
        env.add_function(
            "raise_exception",
            |args: Rest<Value>| -> Result<Value, MjError> {
                let message = args.first().map_or_else(String::new, |v| {
                    let mut s = String::new();
                    pyjson::py_str(&mut s, v);
                    s
                });
                Err(MjError::new(ErrorKind::InvalidOperation, message.clone())
                    .with_source(RaisedException(message)))
            },
        );
        let clock = options.clock;
        env.add_function(
            "strftime_now",
            move |format: &str| -> Result<Value, MjError> { strftime(&clock.now(), format) },
        );

        let rewritten = compat::rewrite_for_loops(source, &syntax);
        env.add_template_owned(name.to_owned(), rewritten.source)
            .map_err(|e| from_minijinja(name, e))?;
        if let Err(unknown) = compat::check_names(&env, name) {
            return Err(if unknown.is_filter {
                Error::UnknownFilter {
                    template: name.to_owned(),
                    line: unknown.line,
                    filter: unknown.name,
                }
            } else {
                Error::UnknownTest {
                    template: name.to_owned(),
                    line: unknown.line,
                    test: unknown.name,
                }
            });
        }
        let conversions = Conversions {
            keep_parts: match options.content_format {
                ContentFormat::Auto => rewritten.iterates_content,
                ContentFormat::String => false,
                ContentFormat::Parts => true,
            },
            parse_arguments: options.arguments_format != ArgumentsFormat::AsGiven,
            developer_as_system: match options.developer_role {
                DeveloperRole::Auto => !source.contains("developer"),
                DeveloperRole::System => true,
                DeveloperRole::AsGiven => false,
            },
        };
        let mut inner = Inner {
            env,
            name: name.to_owned(),
            source: source.to_owned(),
            special_tokens,
            options,
            iterates_content: rewritten.iterates_content,
            conversions,
        };
        if inner.options.arguments_format == ArgumentsFormat::Auto {
            inner.conversions.parse_arguments = probe_object_arguments(&inner);
        }
        Ok(ChatTemplate {
            inner: Arc::new(inner),
        })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The template's text, as given.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The special tokens the template sees.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.inner.special_tokens
    }

    /// The options it was compiled with.
    pub fn options(&self) -> &TemplateOptions {
        &self.inner.options
    }

    /// Whether the template loops over message content, and so gets content
    /// lists as they are under [`ContentFormat::Auto`].
    pub fn handles_content_parts(&self) -> bool {
        self.inner.iterates_content
    }

    /// Whether tool-call arguments given as JSON strings are parsed into
    /// objects before rendering (see [`ArgumentsFormat`]).
    pub fn parses_arguments(&self) -> bool {
        self.inner.conversions.parse_arguments
    }

    /// Renders a conversation into a prompt.
    pub fn render(&self, args: &RenderArgs) -> Result<String, Error> {
        render_with(&self.inner, self.inner.conversions, args)
    }
}

/// Renders `args` after the given conversions.
fn render_with(
    inner: &Inner,
    conversions: Conversions,
    args: &RenderArgs,
) -> Result<String, Error> {
    let messages = prepare_messages(&args.messages, conversions)?;

    let none = || Value::from(());
    let mut ctx: Vec<(String, Value)> = Vec::with_capacity(8 + args.kwargs.len());
    for (name, token) in &inner.special_tokens.tokens {
        ctx.push((name.clone(), Value::from(token.as_str())));
    }
    ctx.push(("messages".into(), messages));
    ctx.push((
        "tools".into(),
        args.tools
            .as_ref()
            .map_or_else(none, |v| Value::from(Serde(v))),
    ));
    ctx.push((
        "documents".into(),
        args.documents
            .as_ref()
            .map_or_else(none, |v| Value::from(Serde(v))),
    ));
    ctx.push((
        "add_generation_prompt".into(),
        Value::from(args.add_generation_prompt),
    ));
    for (name, value) in &args.kwargs {
        if !RESERVED_VARIABLES.contains(&name.as_str()) {
            ctx.push((name.clone(), Value::from(Serde(value))));
        }
    }
    let ctx = Value::from_pairs(ctx);

    let tmpl = inner
        .env
        .get_template(&inner.name)
        .map_err(|e| from_minijinja(&inner.name, e))?;
    let rendered = tmpl
        .render(ctx)
        .map_err(|e| from_minijinja(&inner.name, e))?;
    if args.continue_final_message {
        if args.add_generation_prompt {
            return Err(Error::BadInput(
                "continue_final_message and add_generation_prompt cannot both be set".into(),
            ));
        }
        cut_after_final_message(rendered, &args.messages)
    } else {
        Ok(rendered)
    }
}

/// transformers' `continue_final_message`: cut the prompt after the last
/// occurrence of the final message's text (or of its trimmed text).
fn cut_after_final_message(mut rendered: String, messages: &Json) -> Result<String, Error> {
    let final_text = match messages
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
    {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Array(parts)) => parts
            .last()
            .and_then(|p| p.get("text"))
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    let cut = rendered
        .rfind(&final_text)
        .map(|i| i + final_text.len())
        .or_else(|| {
            let trimmed = final_text.trim();
            rendered.rfind(trimmed).map(|i| i + trimmed.len())
        });
    match cut {
        Some(end) => {
            rendered.truncate(end);
            Ok(rendered)
        }
        _ => Err(Error::BadInput(
            "continue_final_message is set but the final message does not appear in the rendered prompt"
                .into(),
        )),
    }
}

/// Decides [`ArgumentsFormat::Auto`]: renders one tool call with object
/// arguments, then with string arguments, and keeps the first that shows
/// the arguments as JSON. Templates that show neither get objects.
fn probe_object_arguments(inner: &Inner) -> bool {
    const NEEDLE: &str = "\"formwork_probe_arg\"";
    let probe = |arguments: Json, parse: bool| -> bool {
        let messages = serde_json::json!([
            {"role": "user", "content": "Call the probe."},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "abc123xyz", "type": "function",
                "function": {"name": "formwork_probe", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "abc123xyz", "name": "formwork_probe", "content": "ok"},
        ]);
        let tools = serde_json::json!([{"type": "function", "function": {
            "name": "formwork_probe", "description": "Probe.",
            "parameters": {"type": "object", "properties": {"formwork_probe_arg": {"type": "string"}}}}}]);
        let mut args = RenderArgs::from_json(messages).tools_json(Some(tools));
        // Templates that need bos/eos should not fail the probe for want of them.
        for token in ["bos_token", "eos_token"] {
            if !inner.special_tokens.tokens.contains_key(token) {
                args = args.kwarg(token, "");
            }
        }
        let conversions = Conversions {
            parse_arguments: parse,
            ..inner.conversions
        };
        render_with(inner, conversions, &args).is_ok_and(|out| out.contains(NEEDLE))
    };
    if probe(serde_json::json!({"formwork_probe_arg": "x"}), true) {
        return true;
    }
    !probe(
        Json::String("{\"formwork_probe_arg\": \"x\"}".into()),
        false,
    )
}

/// Applies the content and arguments conversions and makes a template value.
fn prepare_messages(messages: &Json, conversions: Conversions) -> Result<Value, Error> {
    let Conversions {
        keep_parts,
        parse_arguments,
        developer_as_system,
    } = conversions;
    let Json::Array(list) = messages else {
        return Err(Error::BadInput("`messages` must be an array".into()));
    };
    let needs_change = list.iter().any(|m| {
        (!keep_parts && m.get("content").is_some_and(Json::is_array))
            || (developer_as_system && m.get("role").is_some_and(|r| r == "developer"))
            || (parse_arguments
                && m.get("tool_calls")
                    .and_then(Json::as_array)
                    .is_some_and(|calls| {
                        calls
                            .iter()
                            .any(|c| arguments_of(c).is_some_and(Json::is_string))
                    }))
    });
    if !needs_change {
        return Ok(Value::from(Serde(messages)));
    }
    let mut list = list.clone();
    for message in &mut list {
        let Json::Object(message) = message else {
            continue;
        };
        if developer_as_system && message.get("role").is_some_and(|r| r == "developer") {
            message.insert("role".into(), Json::String("system".into()));
        }
        if !keep_parts && let Some(Json::Array(parts)) = message.get("content") {
            let text = parts
                .iter()
                .filter_map(|p| match p {
                    Json::String(s) => Some(s.as_str()),
                    _ => p.get("text").and_then(Json::as_str),
                })
                .collect::<Vec<_>>()
                .join("\n");
            message.insert("content".into(), Json::String(text));
        }
        if parse_arguments && let Some(Json::Array(calls)) = message.get_mut("tool_calls") {
            for call in calls {
                let slot = match call.get_mut("function") {
                    Some(Json::Object(f)) => f.get_mut("arguments"),
                    _ => call.get_mut("arguments"),
                };
                if let Some(slot) = slot
                    && let Json::String(s) = slot
                    && let Ok(parsed @ Json::Object(_)) = serde_json::from_str::<Json>(s)
                {
                    *slot = parsed;
                }
            }
        }
    }
    Ok(Value::from(Serde(&list)))
}

fn arguments_of(call: &Json) -> Option<&Json> {
    call.get("function")
        .and_then(|f| f.get("arguments"))
        .or_else(|| call.get("arguments"))
}

/// Python's `datetime.strftime` for the directives chrono shares with it.
fn strftime(now: &chrono::NaiveDateTime, format: &str) -> Result<Value, MjError> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write as _;

    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(MjError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", now.format_with_items(items.into_iter())).map_err(|_| {
        MjError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format {format:?}"),
        )
    })?;
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn chat_template_is_send_sync() {
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn strftime_formats_and_refuses_bad_directives() {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 7, 26)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(
            strftime(&t, "%d %b %Y").unwrap().as_str(),
            Some("26 Jul 2024")
        );
        assert_eq!(
            strftime(&t, "%B %-d, %Y").unwrap().as_str(),
            Some("July 26, 2024")
        );
        assert!(strftime(&t, "%Q").is_err());
    }
}
