//! What the server answers: a whole chat completion or completion, and the model list.
//!
//! [`ChatCompletion`] (`object: "chat.completion"`) and [`Completion`]
//! (`object: "text_completion"`), with their choices, [`FinishReason`]s, [`Usage`] and
//! log-probabilities in OpenAI's two shapes ([`ChatLogprobs`] for chat,
//! [`CompletionLogprobs`]' parallel arrays for completions); [`ModelList`] and
//! [`ModelCard`] for `GET /v1/models`. The streamed pieces are in
//! [`stream`](super::stream).

use formwork_template::Role;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The type of a tool or tool call; only `function` exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolType {
    /// A function tool.
    #[default]
    Function,
}

/// A tool call the model made, as a response sends it: unlike the lenient
/// [`formwork_template::ToolCall`] a request replays, its `id` is always there and its
/// `arguments` are always a string of JSON, which is what the SDKs parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (`call_...`), which the tool result refers to.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function called.
    pub function: FunctionCall,
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, a string of JSON.
    pub arguments: String,
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer, or a stop string was met.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The answer is tool calls.
    ToolCalls,
    /// The answer was cut by a content filter.
    ContentFilter,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated, over all choices.
    pub completion_tokens: u32,
    /// The sum of both.
    pub total_tokens: u32,
    /// Details of the prompt's tokens; sent when some came from the prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose keys and values were reused from earlier requests (prefix reuse).
    pub cached_tokens: u32,
}

impl Usage {
    /// Usage of a prompt and a completion; the total is their sum.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
        }
    }

    /// The same usage with `cached` of the prompt's tokens reused (details sent when not 0).
    pub fn with_cached_tokens(mut self, cached: u32) -> Usage {
        self.prompt_tokens_details = (cached > 0).then_some(PromptTokensDetails {
            cached_tokens: cached,
        });
        self
    }

    /// Prompt tokens reused from earlier requests.
    pub fn cached_tokens(&self) -> u32 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }
}

/// The envelope of every completion object OpenAI sends, whole or streamed: an id, the
/// `object` kind, the time, the model, the choices (`C`) and the usage (`U`: always there
/// in a [`ChatCompletion`], an `Option` skipped when `None` elsewhere).
///
/// Its instances are [`ChatCompletion`], [`Completion`] (and
/// [`CompletionChunk`](super::CompletionChunk), the same type) and
/// [`ChatCompletionChunk`](super::ChatCompletionChunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "C: Serialize, U: Serialize + UsageField",
    deserialize = "C: Deserialize<'de>, U: Deserialize<'de>"
))]
pub struct CompletionObject<C, U> {
    /// `chatcmpl-...` or `cmpl-...`; the same for every chunk of a stream.
    pub id: String,
    /// `chat.completion`, `chat.completion.chunk` or `text_completion`.
    pub object: String,
    /// Unix time in seconds; the same for every chunk of a stream.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// A fingerprint of the backend configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The choices: `n` of them, or in a chunk those it advances (none in the usage chunk).
    pub choices: Vec<C>,
    /// Token counts (in a stream, only in the usage chunk).
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    pub usage: U,
    /// Formwork: what a lenient constraint (`strict: false`) does not enforce, each keyword
    /// with its JSON pointer; left out when empty. A stream sends them in a first chunk of
    /// their own, with empty `choices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl<C, U> CompletionObject<C, U> {
    /// An object with a fresh id (`id_prefix` and random characters) and the current time.
    pub fn fresh(
        id_prefix: &str,
        object: &str,
        model: impl Into<String>,
        choices: Vec<C>,
        usage: U,
    ) -> CompletionObject<C, U> {
        CompletionObject {
            id: crate::id::random_id(id_prefix),
            object: object.to_owned(),
            created: crate::id::unix_time(),
            model: model.into(),
            system_fingerprint: None,
            choices,
            usage,
            warnings: Vec::new(),
        }
    }

    /// This object with `warnings` ([`CompletionObject::warnings`]).
    pub fn with_warnings(mut self, warnings: Vec<String>) -> CompletionObject<C, U> {
        self.warnings = warnings;
        self
    }
}

/// The type of [`CompletionObject::usage`]: [`Usage`], always sent, or `Option<Usage>`,
/// left out when `None`.
pub trait UsageField {
    /// Whether the field is left out of the JSON.
    fn is_absent(&self) -> bool;
}

impl UsageField for Usage {
    fn is_absent(&self) -> bool {
        false
    }
}

impl UsageField for Option<Usage> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// The response of a non-streamed chat completion (`object: "chat.completion"`).
pub type ChatCompletion = CompletionObject<ChatChoice, Usage>;

impl ChatCompletion {
    /// A completion with a fresh id and the current time.
    pub fn new(model: impl Into<String>, choices: Vec<ChatChoice>, usage: Usage) -> ChatCompletion {
        CompletionObject::fresh("chatcmpl-", "chat.completion", model, choices, usage)
    }
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// The choice's position, 0 to n-1.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// Log-probabilities of the answer's tokens, if asked for (`null` otherwise).
    pub logprobs: Option<ChatLogprobs>,
    /// Why the choice ended.
    pub finish_reason: FinishReason,
}

/// The model's answer in a [`ChatChoice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: Role,
    /// The text; `null` when the answer is only tool calls.
    pub content: Option<String>,
    /// The reasoning before the answer (a reasoning model's `<think>` block); left out
    /// when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// OpenAI's refusal message: always `null` (Formwork does not refuse), sent so that
    /// clients reading it find the field.
    #[serde(default)]
    pub refusal: Option<String>,
    /// The tool calls, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl AssistantMessage {
    /// A text answer.
    pub fn text(content: impl Into<String>) -> AssistantMessage {
        AssistantMessage {
            role: Role::Assistant,
            content: Some(content.into()),
            reasoning_content: None,
            refusal: None,
            tool_calls: Vec::new(),
        }
    }

    /// An answer of tool calls, with optional text before them.
    pub fn tool_calls(content: Option<String>, tool_calls: Vec<ToolCall>) -> AssistantMessage {
        AssistantMessage {
            role: Role::Assistant,
            content,
            reasoning_content: None,
            refusal: None,
            tool_calls,
        }
    }
}

/// The log-probability OpenAI sends for a token the model could not have chosen
/// (JSON has no `-Infinity`).
pub const MIN_LOGPROB: f32 = -9999.0;

/// A log-probability safe for JSON: `-inf` and NaN become [`MIN_LOGPROB`].
pub fn finite_logprob(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        MIN_LOGPROB
    }
}

/// Chat log-probabilities: `{"content": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Option<Vec<TokenLogprob>>,
}

/// The log-probability of one generated token, with its most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (invalid UTF-8 replaced; see `bytes`).
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The token's bytes.
    pub bytes: Option<Vec<u8>>,
    /// The most likely tokens at this position, `top_logprobs` of them.
    pub top_logprobs: Vec<TopLogprob>,
}

impl TokenLogprob {
    /// The entry of a token given its bytes and log-probability, and the alternatives
    /// as (bytes, log-probability) pairs.
    pub fn new<'a>(
        bytes: &[u8],
        logprob: f32,
        top: impl IntoIterator<Item = (&'a [u8], f32)>,
    ) -> TokenLogprob {
        TokenLogprob {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob: finite_logprob(logprob),
            bytes: Some(bytes.to_vec()),
            top_logprobs: top
                .into_iter()
                .map(|(bytes, logprob)| TopLogprob::new(bytes, logprob))
                .collect(),
        }
    }
}

/// One alternative in [`TokenLogprob::top_logprobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The token's bytes.
    pub bytes: Option<Vec<u8>>,
}

impl TopLogprob {
    /// The entry of a token given its bytes and log-probability.
    pub fn new(bytes: &[u8], logprob: f32) -> TopLogprob {
        TopLogprob {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob: finite_logprob(logprob),
            bytes: Some(bytes.to_vec()),
        }
    }
}

/// Completions log-probabilities, in parallel arrays with one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// The tokens' text.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<Option<f32>>,
    /// Per token, the most likely alternatives, token text to log-probability.
    pub top_logprobs: Vec<Option<TopLogprobMap>>,
    /// Per token, its byte offset in the choice's text.
    pub text_offset: Vec<u32>,
}

impl CompletionLogprobs {
    /// Appends a token: its text, log-probability and alternatives; its offset is the
    /// previous token's offset plus that token's text length (in bytes), starting at `start`.
    pub fn push(&mut self, start: u32, token: String, logprob: f32, top: TopLogprobMap) {
        let offset = match (self.text_offset.last(), self.tokens.last()) {
            (Some(&off), Some(prev)) => {
                off.saturating_add(u32::try_from(prev.len()).unwrap_or(u32::MAX))
            }
            _ => start,
        };
        self.tokens.push(token);
        self.token_logprobs.push(Some(finite_logprob(logprob)));
        self.top_logprobs.push(Some(top));
        self.text_offset.push(offset);
    }
}

/// Alternatives of a completions token, serialized as a JSON object
/// `{token: logprob}` in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobMap(pub Vec<(String, f32)>);

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, &finite_logprob(*logprob))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TopLogprobMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLogprobMap, D::Error> {
        let map = Map::<String, Value>::deserialize(d)?;
        Ok(TopLogprobMap(
            map.into_iter()
                .map(|(k, v)| (k, v.as_f64().unwrap_or(f64::from(MIN_LOGPROB)) as f32))
                .collect(),
        ))
    }
}

/// The response of a non-streamed completion (`object: "text_completion"`), and a chunk of
/// a streamed one; its usage is only in the usage chunk of a stream.
pub type Completion = CompletionObject<CompletionChoice, Option<Usage>>;

impl Completion {
    /// A completion with a fresh id and the current time.
    pub fn new(
        model: impl Into<String>,
        choices: Vec<CompletionChoice>,
        usage: Usage,
    ) -> Completion {
        CompletionObject::fresh("cmpl-", "text_completion", model, choices, Some(usage))
    }
}

/// One choice of a [`Completion`] (or of a streamed chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// The generated text (in a chunk: the new piece).
    pub text: String,
    /// The choice's position.
    pub index: u32,
    /// Log-probabilities, if asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// Why the choice ended (`null` in a chunk before the last).
    pub finish_reason: Option<FinishReason>,
}

/// The response of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The served models.
    pub data: Vec<ModelCard>,
}

impl ModelList {
    /// A list of models.
    pub fn new(data: Vec<ModelCard>) -> ModelList {
        ModelList {
            object: "list".to_owned(),
            data,
        }
    }
}

/// One model of a [`ModelList`] (also the response of `GET /v1/models/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name clients send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix time in seconds (when the server loaded it).
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
}

impl ModelCard {
    /// A model card owned by `formwork`.
    pub fn new(id: impl Into<String>, created: u64) -> ModelCard {
        ModelCard {
            id: id.into(),
            object: "model".to_owned(),
            created,
            owned_by: "formwork".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_completion_has_openai_shape() {
        let done = ChatCompletion::new(
            "smollm2",
            vec![ChatChoice {
                index: 0,
                message: AssistantMessage::text("Hello"),
                logprobs: None,
                finish_reason: FinishReason::Stop,
            }],
            Usage::new(5, 2),
        );
        let v = serde_json::to_value(&done).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            v["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": null},
                    "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        );
        assert!(v.get("system_fingerprint").is_none());

        let call = ToolCall {
            id: "call_x".into(),
            kind: ToolType::Function,
            function: FunctionCall {
                name: "f".into(),
                arguments: "{}".into(),
            },
        };
        let msg = serde_json::to_value(AssistantMessage::tool_calls(None, vec![call])).unwrap();
        assert_eq!(
            msg,
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
    }

    #[test]
    fn logprobs_have_openai_shape() {
        let lp = ChatLogprobs {
            content: Some(vec![TokenLogprob::new(
                b"Hi",
                -0.25,
                [(&b"Hi"[..], -0.25), (&b"\xff"[..], f32::NEG_INFINITY)],
            )]),
        };
        assert_eq!(
            serde_json::to_value(&lp).unwrap(),
            json!({"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                {"token": "\u{fffd}", "logprob": -9999.0, "bytes": [255]}]}]})
        );

        let mut lp = CompletionLogprobs::default();
        lp.push(
            0,
            "Hel".into(),
            -0.5,
            TopLogprobMap(vec![("Hel".into(), -0.5), ("He".into(), -1.0)]),
        );
        lp.push(
            0,
            "lo".into(),
            f32::NAN,
            TopLogprobMap(vec![("lo".into(), -0.125)]),
        );
        assert_eq!(
            serde_json::to_value(&lp).unwrap(),
            json!({"tokens": ["Hel", "lo"], "token_logprobs": [-0.5, -9999.0],
                   "top_logprobs": [{"Hel": -0.5, "He": -1.0}, {"lo": -0.125}],
                   "text_offset": [0, 3]})
        );
    }

    #[test]
    fn completion_and_models_have_openai_shape() {
        let c = Completion::new(
            "m",
            vec![CompletionChoice {
                text: "there".into(),
                index: 0,
                logprobs: None,
                finish_reason: Some(FinishReason::Length),
            }],
            Usage::new(2, 1),
        );
        let v = serde_json::to_value(&c).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 3);

        let models = ModelList::new(vec![ModelCard::new("smollm2", 1_700_000_000)]);
        assert_eq!(
            serde_json::to_value(&models).unwrap(),
            json!({"object": "list", "data": [
                {"id": "smollm2", "object": "model", "created": 1_700_000_000, "owned_by": "formwork"}]})
        );
    }

    #[test]
    fn envelopes_serialize_fields_in_openai_order_and_usage_as_typed() {
        let chat = ChatCompletion {
            id: "chatcmpl-1".into(),
            created: 7,
            ..ChatCompletion::new("m", Vec::new(), Usage::new(1, 2))
        };
        assert_eq!(
            serde_json::to_string(&chat).unwrap(),
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":7,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
        );
        let text = Completion {
            id: "cmpl-1".into(),
            created: 7,
            system_fingerprint: Some("fp".into()),
            usage: None,
            ..Completion::new("m", Vec::new(), Usage::default())
        };
        assert_eq!(
            serde_json::to_string(&text).unwrap(),
            r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","system_fingerprint":"fp","choices":[]}"#
        );
        // A missing usage reads back as `None` where it is optional, and is an error where
        // it is not.
        let back: Completion =
            serde_json::from_str(&serde_json::to_string(&text).unwrap()).unwrap();
        assert_eq!(back, text);
        let no_usage =
            r#"{"id":"c","object":"chat.completion","created":7,"model":"m","choices":[]}"#;
        let e = serde_json::from_str::<ChatCompletion>(no_usage).unwrap_err();
        assert!(e.to_string().contains("missing field `usage`"), "{e}");
    }
}
