//! Chat templates for Formwork, rendered exactly as Hugging Face renders them.
//!
//! A model's chat template turns a conversation (OpenAI-style messages and
//! tools) into the prompt text the model was trained on. This crate
//!
//! - loads templates and special tokens from where models carry them — GGUF
//!   metadata, `tokenizer_config.json`, `chat_template.jinja` — with
//!   [`TemplateSource`] (GGUF files through [`gguf`], the `formwork-gguf` reader);
//! - compiles a template once into a [`ChatTemplate`] (`Send + Sync`) with
//!   transformers' settings: `trim_blocks`, `lstrip_blocks`, loop controls,
//!   `raise_exception`, `strftime_now`, `tojson` as Python's `json.dumps`,
//!   Python's string and dict methods, Python's printing of values;
//! - renders [`RenderArgs`] (messages, tools, documents,
//!   `add_generation_prompt`, `continue_final_message`, extra variables such
//!   as `enable_thinking`) into the prompt, byte for byte what
//!   `tokenizer.apply_chat_template(..., tokenize=False)` gives;
//! - adapts OpenAI-style requests to what each template expects
//!   ([`TemplateOptions`]): string tool-call arguments parsed into objects
//!   for templates that want objects, content parts joined for templates
//!   that want strings, `developer` passed as `system` to templates that do
//!   not know it;
//! - reports every failure as one [`Error`] with the template's name and
//!   line, never panics on user input, and bounds the work of one rendering
//!   ([`TemplateOptions::fuel`]).
//!
//! # Example
//!
//! ```
//! use formwork_template::{ChatTemplate, Message, RenderArgs, SpecialTokens};
//!
//! let template = ChatTemplate::new(
//!     "default",
//!     "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//!     SpecialTokens::new(Some("<s>"), Some("</s>")),
//! )?;
//! let messages = [Message::system("Be brief."), Message::user(" Hi! ")];
//! let prompt = template.render(&RenderArgs::new(&messages).add_generation_prompt(true))?;
//! assert_eq!(prompt, "<s><|system|>Be brief.\n<|user|>Hi!\n<|assistant|>");
//! # Ok::<(), formwork_template::Error>(())
//! ```
//!
//! A model without a template is an [`Error::MissingTemplate`], unless the
//! caller asks for the ChatML fallback ([`TemplateSource::compile_or_chatml`],
//! [`ChatTemplate::chatml`]).

mod compat;
mod error;
mod message;
mod pyjson;
mod source;
mod template;

pub use error::Error;
/// The GGUF reader templates are read with ([`TemplateSource::from_gguf`] takes its
/// [`gguf::Metadata`]).
pub use formwork_gguf as gguf;
pub use message::{
    Content, ContentPart, FunctionCall, FunctionDefinition, Message, Role, Tool, ToolCall,
};
pub use source::{DEFAULT_TEMPLATE_NAME, SpecialTokens, TemplateSource};
pub use template::{
    ArgumentsFormat, CHATML_TEMPLATE, ChatTemplate, Clock, ContentFormat, DEFAULT_FUEL,
    DeveloperRole, RESERVED_VARIABLES, RenderArgs, TemplateOptions,
};
