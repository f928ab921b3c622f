//! OpenAI's HTTP API as clients send and receive it: serde types for requests and responses.
//!
//! - [`request`]: [`ChatCompletionRequest`] (`POST /v1/chat/completions`) and
//!   [`CompletionRequest`] (`POST /v1/completions`), the [`SamplingFields`] and
//!   [`StructureFields`] they share, and the checks of a conversation the types leave
//!   open ([`validate_messages`]). Messages and tools are
//!   [`formwork_template`]'s types, the ones the chat template renders.
//! - [`response`]: [`ChatCompletion`] and [`Completion`] (each a [`CompletionObject`], the
//!   envelope they share with the chunks), their choices, [`FinishReason`], [`Usage`] and
//!   log-probabilities, and [`ModelList`].
//! - [`responses`]: the Responses API (`POST /v1/responses`): [`ResponsesRequest`],
//!   [`ResponseObject`] and its [`OutputItem`]s, and the typed [`StreamEvent`]s.
//! - [`stream`]: [`ChatCompletionChunk`]s and [`CompletionChunk`]s, and the
//!   [`ChunkFactory`]s that stamp a stream's shared id, `created` time and model on them.
//!
//! Every type is re-exported here: `protocol::FinishReason` is OpenAI's finish reason, next
//! to the engine's [`formwork_engine::FinishReason`]; code that uses both names the
//! OpenAI one through `protocol::`.
//!
//! ```
//! use formwork_server::error::parse_json;
//! use formwork_server::protocol::ChatCompletionRequest;
//! use formwork_template::Content;
//!
//! let req: ChatCompletionRequest = parse_json(br#"{
//!     "model": "smollm2",
//!     "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
//!     "stop": "\n"
//! }"#).unwrap();
//! req.validate().unwrap();
//! assert_eq!(req.messages[0].content.as_ref().map(Content::text).as_deref(), Some("Hi"));
//! assert_eq!(req.sampling.stop.unwrap().to_vec(), ["\n"]);
//! ```

pub mod request;
pub mod response;
pub mod responses;
pub mod stream;

pub use request::{
    AllowedToolsMode, ChatCompletionRequest, CompletionRequest, JsonSchemaFormat, Prompt,
    ResponseFormat, SamplingFields, Stop, StreamOptions, StructureFields, StructuredOutputs,
    ToolChoice, validate_content, validate_message, validate_messages,
};
pub use response::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, Completion, CompletionChoice,
    CompletionLogprobs, CompletionObject, FinishReason, FunctionCall, MIN_LOGPROB, ModelCard,
    ModelList, PromptTokensDetails, TokenLogprob, ToolCall, ToolType, TopLogprob, TopLogprobMap,
    Usage, UsageField, finite_logprob,
};
pub use responses::{
    ContentPartOut, IncompleteDetails, InputTokensDetails, OutputItem, OutputTokensDetails,
    ResponseError, ResponseObject, ResponseStatus, ResponseUsage, ResponsesRequest, SequencedEvent,
    StreamEvent, TextConfig, TextFormat,
};
pub use stream::{
    ChatChunkChoice, ChatChunkFactory, ChatCompletionChunk, ChatDelta, ChunkFactory,
    CompletionChunk, CompletionChunkFactory, FunctionCallDelta, ToolCallDelta,
};
