//! Sampling and streaming fields of a request, checked and normalized for the engine.
//!
//! [`GenerationOptions::from_chat`] and [`GenerationOptions::from_completion`] check
//! every range a client can get wrong (a 400 whose `param` names the field), fill in
//! OpenAI's defaults, and resolve the synonyms (`max_completion_tokens` over
//! `max_tokens`, `top_k: -1` for "off", chat's `logprobs` + `top_logprobs` versus the
//! completions' integer `logprobs`), so the engine receives one plain struct.
//!
//! ```
//! use formwork_server::error::parse_json;
//! use formwork_server::options::{GenerationOptions, Limits};
//! use formwork_server::protocol::ChatCompletionRequest;
//!
//! let req: ChatCompletionRequest = parse_json(
//!     br#"{"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "top_k": -1}"#,
//! ).unwrap();
//! let options = GenerationOptions::from_chat(&req, &Limits::default()).unwrap();
//! assert_eq!((options.temperature, options.top_k, options.n), (0.0, None, 1));
//! ```

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::protocol::{
    ChatCompletionRequest, CompletionRequest, ResponsesRequest, SamplingFields, Stop,
};

/// Limits on what one request may ask for; exceeding one is a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most choices (`n`) per request. Default 16.
    pub max_n: u32,
    /// The most stop strings. Default 16 (OpenAI allows 4).
    pub max_stop: usize,
    /// The most alternatives per token in log-probabilities. Default 20, as OpenAI.
    pub max_top_logprobs: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_n: 16,
            max_stop: 16,
            max_top_logprobs: 20,
        }
    }
}

/// How to sample and stream one request, with defaults filled in and ranges checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// The most tokens to generate per choice; `None` means up to the context length.
    pub max_tokens: Option<u32>,
    /// Temperature in `[0, 2]`; 0 is greedy. Default 1.
    pub temperature: f32,
    /// Nucleus mass in `[0, 1]`; 1 disables it, 0 keeps only the most likely token. Default 1.
    pub top_p: f32,
    /// Keep only the k most likely tokens; `None` disables it.
    pub top_k: Option<u32>,
    /// Min-p in `[0, 1]`; 0 disables it.
    pub min_p: f32,
    /// How many choices.
    pub n: u32,
    /// Stop strings (non-empty), not included in the output.
    pub stop: Vec<String>,
    /// Seed of the sampler; a negative request seed is read as its two's-complement bits.
    pub seed: Option<u64>,
    /// OpenAI's presence penalty in `[-2, 2]`.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty in `[-2, 2]`.
    pub frequency_penalty: f32,
    /// Multiplicative repetition penalty (> 0); 1 disables it.
    pub repetition_penalty: f32,
    /// Biases added to token logits, `[-100, 100]`, sorted by token id. Token ids are
    /// not checked against the vocabulary here (the engine knows its size).
    pub logit_bias: Vec<(u32, f32)>,
    /// `None`: no log-probabilities; `Some(k)`: the chosen token's and k alternatives'.
    pub logprobs: Option<u32>,
    /// Keep generating past the end-of-sequence token.
    pub ignore_eos: bool,
    /// Jump-forward decoding asked for or refused (`None`: the server's setting).
    pub jump_forward: Option<bool>,
    /// Steer a structured reply to end valid near `max_tokens`; `None`: the server's
    /// setting (`formwork_engine::EngineConfig::end_valid`).
    pub end_valid: Option<bool>,
    /// Stream server-sent events.
    pub stream: bool,
    /// With `stream`, end with a usage chunk.
    pub include_usage: bool,
}

impl GenerationOptions {
    /// The options of a chat request.
    pub fn from_chat(
        req: &ChatCompletionRequest,
        limits: &Limits,
    ) -> Result<GenerationOptions, ApiError> {
        let max_tokens_param = if req.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let max_tokens = req.max_completion_tokens.or(req.sampling.max_tokens);
        let mut options = resolve(&req.sampling, max_tokens, max_tokens_param, limits)?;
        let top = req.top_logprobs.unwrap_or(0);
        options.logprobs = match req.logprobs {
            Some(true) => Some(check_top_logprobs(top, limits, "top_logprobs")?),
            _ if top > 0 => {
                return Err(ApiError::invalid_request(
                    "`top_logprobs` needs `logprobs` set to true",
                )
                .param("top_logprobs"));
            }
            _ => None,
        };
        Ok(options)
    }

    /// The options of a Responses request: `max_output_tokens` (over `max_tokens`) and
    /// the sampling fields chat has; `n` must be 1 (a response has one output).
    pub fn from_responses(
        req: &ResponsesRequest,
        limits: &Limits,
    ) -> Result<GenerationOptions, ApiError> {
        let (max_tokens, param) = match req.max_output_tokens {
            Some(m) => (Some(m), "max_output_tokens"),
            None => (req.sampling.max_tokens, "max_tokens"),
        };
        let options = resolve(&req.sampling, max_tokens, param, limits)?;
        if options.n != 1 {
            return Err(ApiError::invalid_request(
                "`n` must be 1 on /v1/responses: a response has one output",
            )
            .param("n"));
        }
        Ok(options)
    }

    /// The options of a completions request. `echo`, a non-empty `suffix` and a
    /// `best_of` other than `n` are refused: they are not supported.
    pub fn from_completion(
        req: &CompletionRequest,
        limits: &Limits,
    ) -> Result<GenerationOptions, ApiError> {
        if req.echo == Some(true) {
            return Err(
                ApiError::invalid_request("`echo` is not supported by this server").param("echo"),
            );
        }
        if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(
                ApiError::invalid_request("`suffix` is not supported by this server")
                    .param("suffix"),
            );
        }
        if let Some(best_of) = req.best_of
            && best_of != req.sampling.n.unwrap_or(1)
        {
            return Err(ApiError::invalid_request(
                "`best_of` is not supported by this server unless it equals `n`",
            )
            .param("best_of"));
        }
        let sampling = &req.sampling;
        let mut options = resolve(sampling, sampling.max_tokens, "max_tokens", limits)?;
        options.logprobs = req
            .logprobs
            .map(|k| check_top_logprobs(k, limits, "logprobs"))
            .transpose()?;
        Ok(options)
    }
}

/// The options of the fields both routes share; `max_tokens` is the route's (chat's
/// `max_completion_tokens` wins over `max_tokens`), named `max_tokens_param` in errors.
/// Log-probabilities are left to the route.
fn resolve(
    fields: &SamplingFields,
    max_tokens: Option<u32>,
    max_tokens_param: &str,
    limits: &Limits,
) -> Result<GenerationOptions, ApiError> {
    if max_tokens == Some(0) {
        return Err(
            ApiError::invalid_request(format!("`{max_tokens_param}` must be at least 1"))
                .param(max_tokens_param),
        );
    }
    let n = fields.n.unwrap_or(1);
    if n == 0 || n > limits.max_n {
        return Err(ApiError::invalid_request(format!(
            "`n` must be between 1 and {}",
            limits.max_n
        ))
        .param("n"));
    }
    let stream = fields.stream.unwrap_or(false);
    if fields.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_request(
            "`stream_options` is only allowed when `stream` is true",
        )
        .param("stream_options"));
    }
    let stop = fields.stop.as_ref().map(Stop::to_vec).unwrap_or_default();
    if stop.len() > limits.max_stop {
        return Err(ApiError::invalid_request(format!(
            "`stop` may hold at most {} strings",
            limits.max_stop
        ))
        .param("stop"));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_request("`stop` strings must not be empty").param("stop"));
    }
    let top_k = match fields.top_k {
        None | Some(-1 | 0) => None,
        Some(k) => Some(u32::try_from(k).map_err(|_| {
            ApiError::invalid_request(
                "`top_k` must be a positive integer, or 0 or -1 to disable it",
            )
            .param("top_k")
        })?),
    };
    let repetition_penalty = fields.repetition_penalty.unwrap_or(1.0);
    if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
        return Err(
            ApiError::invalid_request("`repetition_penalty` must be greater than 0")
                .param("repetition_penalty"),
        );
    }
    Ok(GenerationOptions {
        max_tokens,
        temperature: in_range(fields.temperature, 1.0, 0.0, 2.0, "temperature")?,
        top_p: in_range(fields.top_p, 1.0, 0.0, 1.0, "top_p")?,
        top_k,
        min_p: in_range(fields.min_p, 0.0, 0.0, 1.0, "min_p")?,
        n,
        stop,
        seed: fields.seed.map(|s| u64::from_ne_bytes(s.to_ne_bytes())),
        presence_penalty: in_range(fields.presence_penalty, 0.0, -2.0, 2.0, "presence_penalty")?,
        frequency_penalty: in_range(
            fields.frequency_penalty,
            0.0,
            -2.0,
            2.0,
            "frequency_penalty",
        )?,
        repetition_penalty,
        logit_bias: fields
            .logit_bias
            .as_ref()
            .map(logit_bias)
            .transpose()?
            .unwrap_or_default(),
        logprobs: None,
        ignore_eos: fields.ignore_eos.unwrap_or(false),
        jump_forward: fields.jump_forward,
        end_valid: fields.end_valid,
        stream,
        include_usage: stream
            && fields
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
    })
}

fn in_range(
    value: Option<f32>,
    default: f32,
    lo: f32,
    hi: f32,
    param: &str,
) -> Result<f32, ApiError> {
    let v = value.unwrap_or(default);
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(
            ApiError::invalid_request(format!("`{param}` must be between {lo} and {hi}, got {v}"))
                .param(param),
        )
    }
}

fn check_top_logprobs(k: u32, limits: &Limits, param: &str) -> Result<u32, ApiError> {
    if k > limits.max_top_logprobs {
        return Err(ApiError::invalid_request(format!(
            "`{param}` must be between 0 and {}",
            limits.max_top_logprobs
        ))
        .param(param));
    }
    Ok(k)
}

fn logit_bias(map: &Map<String, Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let mut biases = Vec::with_capacity(map.len());
    for (key, value) in map {
        let param = format!("logit_bias.{key}");
        let token = key.parse::<u32>().map_err(|_| {
            ApiError::invalid_request(format!(
                "`logit_bias` keys must be token ids (decimal integers), got {key:?}"
            ))
            .param(param.clone())
        })?;
        let bias = value
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "`logit_bias` values must be numbers between -100 and 100, got {value}"
                ))
                .param(param)
            })?;
        biases.push((token, bias as f32));
    }
    biases.sort_by_key(|&(token, _)| token);
    Ok(biases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::parse_json;
    use serde_json::json;

    fn chat(extra: Value) -> Result<GenerationOptions, ApiError> {
        let mut body = json!({"messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: ChatCompletionRequest = parse_json(body.to_string().as_bytes()).unwrap();
        GenerationOptions::from_chat(&req, &Limits::default())
    }

    fn completion(extra: Value) -> Result<GenerationOptions, ApiError> {
        let mut body = json!({"prompt": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: CompletionRequest = parse_json(body.to_string().as_bytes()).unwrap();
        GenerationOptions::from_completion(&req, &Limits::default())
    }

    #[test]
    fn defaults() {
        let o = chat(json!({})).unwrap();
        assert_eq!(
            o,
            GenerationOptions {
                max_tokens: None,
                temperature: 1.0,
                top_p: 1.0,
                top_k: None,
                min_p: 0.0,
                n: 1,
                stop: vec![],
                seed: None,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                repetition_penalty: 1.0,
                logit_bias: vec![],
                logprobs: None,
                ignore_eos: false,
                jump_forward: None,
                end_valid: None,
                stream: false,
                include_usage: false,
            }
        );
        assert_eq!(completion(json!({})).unwrap(), o);
    }

    #[test]
    fn resolves_synonyms() {
        let o = chat(
            json!({"max_tokens": 5, "max_completion_tokens": 7, "top_k": 40, "seed": -1,
                            "logit_bias": {"50": 1, "7": -100}, "stop": "\n",
                            "stream": true, "stream_options": {"include_usage": true}}),
        )
        .unwrap();
        assert_eq!(o.max_tokens, Some(7));
        assert_eq!(o.top_k, Some(40));
        assert_eq!(o.seed, Some(u64::MAX));
        assert_eq!(o.logit_bias, vec![(7, -100.0), (50, 1.0)]);
        assert_eq!(o.stop, vec!["\n".to_owned()]);
        assert!(o.stream && o.include_usage);
        assert_eq!(chat(json!({"max_tokens": 5})).unwrap().max_tokens, Some(5));
        assert_eq!(chat(json!({"top_k": -1})).unwrap().top_k, None);
        assert_eq!(chat(json!({"top_k": 0})).unwrap().top_k, None);
    }

    #[test]
    fn jump_forward_is_the_servers_unless_the_request_says() {
        assert_eq!(chat(json!({})).unwrap().jump_forward, None);
        assert_eq!(
            chat(json!({"jump_forward": false})).unwrap().jump_forward,
            Some(false)
        );
        assert_eq!(
            completion(json!({"jump_forward": true}))
                .unwrap()
                .jump_forward,
            Some(true)
        );
    }

    #[test]
    fn logprobs_forms() {
        assert_eq!(chat(json!({"logprobs": true})).unwrap().logprobs, Some(0));
        assert_eq!(
            chat(json!({"logprobs": true, "top_logprobs": 5}))
                .unwrap()
                .logprobs,
            Some(5)
        );
        assert_eq!(
            chat(json!({"logprobs": false, "top_logprobs": 0}))
                .unwrap()
                .logprobs,
            None
        );
        let e = chat(json!({"top_logprobs": 2})).unwrap_err();
        assert_eq!(e.param_name(), Some("top_logprobs"));
        let e = chat(json!({"logprobs": true, "top_logprobs": 21})).unwrap_err();
        assert_eq!(e.param_name(), Some("top_logprobs"));
        assert_eq!(
            completion(json!({"logprobs": 3})).unwrap().logprobs,
            Some(3)
        );
        assert_eq!(
            completion(json!({"logprobs": 0})).unwrap().logprobs,
            Some(0)
        );
        let e = completion(json!({"logprobs": 50})).unwrap_err();
        assert_eq!(e.param_name(), Some("logprobs"));
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for (body, param) in [
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"min_p": -1}), "min_p"),
            (json!({"presence_penalty": 3}), "presence_penalty"),
            (json!({"frequency_penalty": -2.5}), "frequency_penalty"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
            (json!({"top_k": -2}), "top_k"),
            (json!({"n": 0}), "n"),
            (json!({"n": 17}), "n"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_completion_tokens": 0}), "max_completion_tokens"),
            (json!({"stop": [""]}), "stop"),
            (json!({"stop": vec!["a"; 17]}), "stop"),
            (json!({"logit_bias": {"abc": 1}}), "logit_bias.abc"),
            (json!({"logit_bias": {"-1": 1}}), "logit_bias.-1"),
            (json!({"logit_bias": {"5": 101}}), "logit_bias.5"),
            (json!({"logit_bias": {"5": "x"}}), "logit_bias.5"),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
        ] {
            let e = chat(body.clone()).unwrap_err();
            assert_eq!(e.param_name(), Some(param), "{body}: {e}");
            assert_eq!(e.status().as_u16(), 400);
        }
    }

    #[test]
    fn completion_only_fields() {
        assert!(completion(json!({"echo": false, "suffix": "", "best_of": 1})).is_ok());
        assert!(completion(json!({"n": 2, "best_of": 2})).is_ok());
        for (body, param) in [
            (json!({"echo": true}), "echo"),
            (json!({"suffix": "end"}), "suffix"),
            (json!({"best_of": 3}), "best_of"),
        ] {
            assert_eq!(completion(body).unwrap_err().param_name(), Some(param));
        }
    }
}
