//! [`SamplingParams`]: the per-request sampling knobs, with the ranges that OpenAI, vLLM and
//! llama.cpp users expect, and their validation.

use crate::SamplerError;

/// The most alternatives `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The bound on a `logit_bias` value (OpenAI's: biases lie in `[-100, 100]`).
pub const MAX_LOGIT_BIAS: f32 = 100.0;

/// The largest temperature accepted (OpenAI's range is `[0, 2]`).
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Temperatures below this are treated as 0, i.e. greedy decoding (vLLM does the same:
/// dividing by a near-zero temperature would overflow).
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// How to turn one sequence's logits into tokens.
///
/// The defaults ([`SamplingParams::default`]) sample from the model's distribution as it is:
/// temperature 1, every filter and penalty off. See the crate docs for the order in which
/// the knobs apply.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before sampling; in `[0, 2]`. 0 (or anything below
    /// [`GREEDY_TEMPERATURE`]) means greedy: the highest logit, ties to the lowest id.
    /// Default 1.
    pub temperature: f32,
    /// Keeps only the `top_k` most likely tokens; 0 disables. Values at or above the number
    /// of allowed tokens keep them all.
    pub top_k: usize,
    /// Nucleus sampling: keeps the smallest set of most likely tokens whose probability sums
    /// to at least `top_p`; in `(0, 1]`, 1 disables.
    pub top_p: f32,
    /// Keeps tokens whose probability is at least `min_p` times the most likely token's; in
    /// `[0, 1]`, 0 disables.
    pub min_p: f32,
    /// CTRL/Hugging Face repetition penalty over the prompt and the generated tokens
    /// (like vLLM): a positive logit is divided by it, a negative one multiplied. Finite and
    /// `> 0`; 1 disables, above 1 discourages repeats.
    pub repetition_penalty: f32,
    /// OpenAI presence penalty: subtracted once from the logit of every token generated so
    /// far (the prompt does not count); in `[-2, 2]`, 0 disables.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty: subtracted from a token's logit once per time it was
    /// generated (the prompt does not count); in `[-2, 2]`, 0 disables.
    pub frequency_penalty: f32,
    /// OpenAI `logit_bias`: `(token, bias)` pairs added to the logits after masking, each
    /// bias in `[-100, 100]`, each token below the vocabulary size and listed once.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random stream; the same seed and inputs give the same tokens. `None`
    /// takes a fresh seed from the process's random hasher keys and the clock.
    pub seed: Option<u64>,
    /// `None`: no log-probabilities. `Some(k)`, `k <= 20`: the chosen token's
    /// log-probability and the `k` most likely tokens with theirs.
    pub top_logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            top_logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0, everything else default.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether the parameters pick the argmax rather than draw.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }

    /// Checks every field against its range (NaN is out of every range) and `logit_bias`
    /// against the vocabulary: token ids below `vocab_size`, each listed once.
    ///
    /// The error names the field, the allowed range and the value given, e.g.
    /// `temperature must be in [0, 2], got 3`.
    ///
    /// ```
    /// use formwork_sampler::SamplingParams;
    ///
    /// let params = SamplingParams { temperature: 3.0, ..SamplingParams::default() };
    /// let err = params.validate(32_000).unwrap_err();
    /// assert_eq!(err.to_string(), "temperature must be in [0, 2], got 3");
    /// ```
    pub fn validate(&self, vocab_size: usize) -> Result<(), SamplerError> {
        if vocab_size == 0 || vocab_size as u64 > 1u64 << 32 {
            return Err(invalid(
                "vocab_size",
                format!("must be in [1, 2^32], got {vocab_size}"),
            ));
        }
        check_range("temperature", self.temperature, 0.0, MAX_TEMPERATURE)?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(invalid(
                "repetition_penalty",
                format!(
                    "must be finite and greater than 0, got {}",
                    self.repetition_penalty
                ),
            ));
        }
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        if let Some(k) = self.top_logprobs
            && k > MAX_TOP_LOGPROBS
        {
            return Err(invalid(
                "top_logprobs",
                format!("must be in [0, {MAX_TOP_LOGPROBS}], got {k}"),
            ));
        }
        for &(token, bias) in &self.logit_bias {
            if token as usize >= vocab_size {
                return Err(invalid(
                    "logit_bias",
                    format!(
                        "token {token} is out of range for a vocabulary of {vocab_size} tokens"
                    ),
                ));
            }
            if !(-MAX_LOGIT_BIAS..=MAX_LOGIT_BIAS).contains(&bias) {
                return Err(invalid(
                    "logit_bias",
                    format!("bias for token {token} must be in [-100, 100], got {bias}"),
                ));
            }
        }
        if self.logit_bias.len() > 1 {
            let mut tokens: Vec<u32> = self.logit_bias.iter().map(|&(t, _)| t).collect();
            tokens.sort_unstable();
            if let Some(pair) = tokens.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(invalid(
                    "logit_bias",
                    format!("token {} is listed more than once", pair[0]),
                ));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: String) -> SamplerError {
    SamplerError::InvalidParameter { field, reason }
}

/// `value` in `[lo, hi]` (so not NaN), or an error naming the field and the range.
fn check_range(field: &'static str, value: f32, lo: f32, hi: f32) -> Result<(), SamplerError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be in [{lo}, {hi}], got {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(params: SamplingParams) -> String {
        params
            .validate(100)
            .map_or_else(|e| e.to_string(), |()| "ok".into())
    }

    #[test]
    fn defaults_and_greedy_are_valid() {
        assert_eq!(SamplingParams::default().validate(1), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(1), Ok(()));
        assert!(SamplingParams::greedy().is_greedy());
        assert!(!SamplingParams::default().is_greedy());
    }

    #[test]
    fn errors_name_the_field_the_range_and_the_value() {
        let d = SamplingParams::default;
        let cases = [
            (
                SamplingParams {
                    temperature: 3.0,
                    ..d()
                },
                "temperature must be in [0, 2], got 3",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..d()
                },
                "temperature must be in [0, 2], got NaN",
            ),
            (
                SamplingParams { top_p: 0.0, ..d() },
                "top_p must be in (0, 1], got 0",
            ),
            (
                SamplingParams { min_p: 1.5, ..d() },
                "min_p must be in [0, 1], got 1.5",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..d()
                },
                "repetition_penalty must be finite and greater than 0, got 0",
            ),
            (
                SamplingParams {
                    presence_penalty: -2.5,
                    ..d()
                },
                "presence_penalty must be in [-2, 2], got -2.5",
            ),
            (
                SamplingParams {
                    frequency_penalty: f32::INFINITY,
                    ..d()
                },
                "frequency_penalty must be in [-2, 2], got inf",
            ),
            (
                SamplingParams {
                    top_logprobs: Some(21),
                    ..d()
                },
                "top_logprobs must be in [0, 20], got 21",
            ),
            (
                SamplingParams {
                    logit_bias: vec![(100, 1.0)],
                    ..d()
                },
                "logit_bias token 100 is out of range for a vocabulary of 100 tokens",
            ),
            (
                SamplingParams {
                    logit_bias: vec![(5, 101.0)],
                    ..d()
                },
                "logit_bias bias for token 5 must be in [-100, 100], got 101",
            ),
            (
                SamplingParams {
                    logit_bias: vec![(5, 1.0), (7, 1.0), (5, 2.0)],
                    ..d()
                },
                "logit_bias token 5 is listed more than once",
            ),
        ];
        for (params, want) in cases {
            assert_eq!(message(params), want);
        }
        assert_eq!(
            SamplingParams::default()
                .validate(0)
                .unwrap_err()
                .to_string(),
            "vocab_size must be in [1, 2^32], got 0"
        );
    }

    #[test]
    fn range_ends_are_accepted() {
        let params = SamplingParams {
            temperature: 2.0,
            top_k: usize::MAX,
            top_p: f32::MIN_POSITIVE,
            min_p: 1.0,
            repetition_penalty: 1e-3,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logit_bias: vec![(0, -100.0), (99, 100.0)],
            seed: Some(u64::MAX),
            top_logprobs: Some(20),
        };
        assert_eq!(params.validate(100), Ok(()));
    }
}
