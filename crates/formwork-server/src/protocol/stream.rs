//! What a streamed answer sends: one chunk per server-sent event.
//!
//! Chat streams send [`ChatCompletionChunk`]s (`object: "chat.completion.chunk"`), whose
//! [`ChatDelta`]s carry the role, text or [`ToolCallDelta`]s; completions streams send
//! [`CompletionChunk`]s, the same shape as a whole [`Completion`]. A
//! [`ChatChunkFactory`] or [`CompletionChunkFactory`] stamps the id, `created` time and
//! model every chunk of one stream shares.

use formwork_template::Role;
use serde::{Deserialize, Serialize};

use super::response::{
    ChatLogprobs, Completion, CompletionChoice, CompletionLogprobs, CompletionObject, FinishReason,
    ToolType, Usage,
};

/// A streamed piece of a chat completion (`object: "chat.completion.chunk"`).
///
/// A stream sends, per choice, a first chunk whose delta carries the role, then
/// content or tool-call deltas, then a chunk with `finish_reason`; with
/// `stream_options.include_usage`, a last chunk with empty `choices` and the usage.
pub type ChatCompletionChunk = CompletionObject<ChatChunkChoice, Option<Usage>>;

/// One choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    /// The choice's position.
    pub index: u32,
    /// What this chunk adds.
    pub delta: ChatDelta,
    /// Log-probabilities of this chunk's tokens, if asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// `assistant`, in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// More reasoning (see [`AssistantMessage::reasoning_content`](super::AssistantMessage)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Pieces of tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a streamed tool call.
///
/// The first piece of a call carries `index`, `id`, `type` and the function's name
/// with `arguments: ""`; later pieces carry only `index` and a fragment of the arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the choice this piece belongs to, from 0.
    pub index: u32,
    /// The call's id, in its first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in its first piece.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    /// The function's name and a fragment of its arguments.
    pub function: FunctionCallDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function's name, in the call's first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Makes the chunks of one stream: they share an id, a `created` time and a model.
///
/// A [`ChatChunkFactory`] makes a chat stream's chunks, a [`CompletionChunkFactory`] a
/// completions stream's.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkFactory<C> {
    /// What every chunk of the stream shares: a chunk with no choices and no usage.
    head: CompletionObject<C, Option<Usage>>,
}

impl<C: Clone> ChunkFactory<C> {
    /// A factory with a fresh id (`id_prefix` and random characters), the current time,
    /// and the `object` every chunk names.
    fn fresh(id_prefix: &str, object: &str, model: impl Into<String>) -> ChunkFactory<C> {
        ChunkFactory {
            head: CompletionObject::fresh(id_prefix, object, model, Vec::new(), None),
        }
    }

    /// The warnings chunk, a stream's first when the request has warnings
    /// ([`CompletionObject::warnings`]): no choices.
    pub fn warnings(&self, warnings: Vec<String>) -> CompletionObject<C, Option<Usage>> {
        self.head.clone().with_warnings(warnings)
    }

    /// The usage chunk: no choices.
    pub fn usage(&self, usage: Usage) -> CompletionObject<C, Option<Usage>> {
        CompletionObject {
            usage: Some(usage),
            ..self.head.clone()
        }
    }

    fn with_choices(&self, choices: Vec<C>) -> CompletionObject<C, Option<Usage>> {
        CompletionObject {
            choices,
            ..self.head.clone()
        }
    }
}

/// Makes the chunks of one chat stream.
pub type ChatChunkFactory = ChunkFactory<ChatChunkChoice>;

impl ChatChunkFactory {
    /// A factory with a fresh id and the current time.
    pub fn new(model: impl Into<String>) -> ChatChunkFactory {
        ChunkFactory::fresh("chatcmpl-", "chat.completion.chunk", model)
    }

    /// A chunk advancing one choice.
    pub fn chunk(
        &self,
        index: u32,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> ChatCompletionChunk {
        self.with_choices(vec![ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason,
        }])
    }

    /// The first chunk of a choice: role `assistant` and empty content.
    pub fn role(&self, index: u32) -> ChatCompletionChunk {
        let delta = ChatDelta {
            role: Some(Role::Assistant),
            content: Some(String::new()),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, None, None)
    }

    /// The first chunk of a choice known to be tool calls (a required call): role
    /// `assistant` and no content, so clients that accumulate the stream end with
    /// `content: null`, as for a non-streamed call.
    pub fn role_for_tool_calls(&self, index: u32) -> ChatCompletionChunk {
        let delta = ChatDelta {
            role: Some(Role::Assistant),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, None, None)
    }

    /// A chunk of text.
    pub fn content(
        &self,
        index: u32,
        text: impl Into<String>,
        logprobs: Option<ChatLogprobs>,
    ) -> ChatCompletionChunk {
        let delta = ChatDelta {
            content: Some(text.into()),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, logprobs, None)
    }

    /// A chunk of reasoning text.
    pub fn reasoning(
        &self,
        index: u32,
        text: impl Into<String>,
        logprobs: Option<ChatLogprobs>,
    ) -> ChatCompletionChunk {
        let delta = ChatDelta {
            reasoning_content: Some(text.into()),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, logprobs, None)
    }

    /// A chunk of tool-call pieces.
    pub fn tool_calls(&self, index: u32, deltas: Vec<ToolCallDelta>) -> ChatCompletionChunk {
        let delta = ChatDelta {
            tool_calls: Some(deltas),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, None, None)
    }

    /// The last chunk of a choice: an empty delta and the finish reason.
    pub fn finish(&self, index: u32, reason: FinishReason) -> ChatCompletionChunk {
        self.chunk(index, ChatDelta::default(), None, Some(reason))
    }
}

/// A streamed piece of a completion: the same shape as a [`Completion`], OpenAI
/// sends `object: "text_completion"` for both.
pub type CompletionChunk = Completion;

/// Makes the chunks of one completions stream.
pub type CompletionChunkFactory = ChunkFactory<CompletionChoice>;

impl CompletionChunkFactory {
    /// A factory with a fresh id and the current time.
    pub fn new(model: impl Into<String>) -> CompletionChunkFactory {
        ChunkFactory::fresh("cmpl-", "text_completion", model)
    }

    /// A chunk of text (`finish_reason` set on the choice's last one).
    pub fn text(
        &self,
        index: u32,
        text: impl Into<String>,
        logprobs: Option<CompletionLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> CompletionChunk {
        self.with_choices(vec![CompletionChoice {
            text: text.into(),
            index,
            logprobs,
            finish_reason,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn chat_chunks_have_openai_shape() {
        let f = ChatChunkFactory::new("m");
        let chunks = [
            f.role(0),
            f.content(0, "Hel", None),
            f.tool_calls(
                0,
                vec![ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    kind: Some(ToolType::Function),
                    function: FunctionCallDelta {
                        name: Some("f".into()),
                        arguments: Some(String::new()),
                    },
                }],
            ),
            f.finish(0, FinishReason::ToolCalls),
            f.usage(Usage::new(1, 2)),
        ];
        let v: Vec<Value> = chunks
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert!(v.iter().all(|c| c["id"] == v[0]["id"]
            && c["object"] == "chat.completion.chunk"
            && c["created"] == v[0]["created"]
            && c["model"] == "m"));
        assert_eq!(
            v[0]["choices"],
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}])
        );
        assert_eq!(v[1]["choices"][0]["delta"], json!({"content": "Hel"}));
        assert_eq!(
            serde_json::to_value(f.role_for_tool_calls(1)).unwrap()["choices"][0]["delta"],
            json!({"role": "assistant"})
        );
        assert_eq!(
            v[2]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "f", "arguments": ""}}]})
        );
        assert_eq!(v[3]["choices"][0]["delta"], json!({}));
        assert_eq!(v[3]["choices"][0]["finish_reason"], "tool_calls");
        assert!(v[3].get("usage").is_none());
        assert_eq!(v[4]["choices"], json!([]));
        assert_eq!(v[4]["usage"]["total_tokens"], 3);
        // Our chunks read back.
        let back: ChatCompletionChunk = serde_json::from_value(v[2].clone()).unwrap();
        assert_eq!(back, chunks[2]);
    }

    #[test]
    fn completion_chunks_have_openai_shape() {
        let f = CompletionChunkFactory::new("m");
        let v = serde_json::to_value(f.text(0, "a", None, None)).unwrap();
        assert_eq!(
            v["choices"],
            json!([{"text": "a", "index": 0, "logprobs": null, "finish_reason": null}])
        );
        assert!(v.get("usage").is_none());
        let v = serde_json::to_value(f.usage(Usage::new(1, 1))).unwrap();
        assert_eq!(v["choices"], json!([]));
    }
}
