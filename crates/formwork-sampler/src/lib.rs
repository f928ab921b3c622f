//! Logits to tokens: the sampling layer of Formwork.
//!
//! A [`Sampler`] holds one sequence's [`SamplingParams`], its seeded random stream and the
//! tokens it has seen, and turns each step's logits into the next token with
//! [`Sampler::sample`], in time linear in the vocabulary: no step sorts the vocabulary.
//!
//! # Order of operations
//!
//! 1. **mask**: tokens whose bit is clear in the allowed-token bitset become `-inf` (never
//!    drawn, whatever comes after);
//! 2. **`logit_bias`** is added (OpenAI);
//! 3. **repetition penalty** (CTRL/Hugging Face, over prompt and generated tokens, like vLLM),
//!    then **frequency** and **presence** penalties (OpenAI, over generated tokens);
//! 4. **log-probabilities**, if requested: log-softmax of these logits, temperature not
//!    applied (OpenAI's "after masking");
//! 5. **greedy** if the temperature is 0: the highest logit, ties to the lowest id; otherwise
//!    **temperature**, **top-k**, **top-p**, **min-p**, then a **draw** from the seeded
//!    xoshiro256** stream.
//!
//! The same seed and the same inputs give the same tokens.
//!
//! ```
//! use formwork_sampler::{Sampler, SamplingParams};
//!
//! let params = SamplingParams {
//!     temperature: 0.7,
//!     top_p: 0.9,
//!     seed: Some(42),
//!     top_logprobs: Some(2),
//!     ..SamplingParams::default()
//! };
//! let prompt = [1, 2, 3];
//! let mut sampler = Sampler::new(params, 8, &prompt)?;
//!
//! let mut logits = vec![0.1, 2.0, -1.0, 0.5, 3.0, 0.0, -2.0, 1.0];
//! let mask = [0b1011_0110u64]; // tokens 1, 2, 4, 5 and 7 are allowed
//! let out = sampler.sample(&mut logits, Some(&mask))?;
//! assert!(mask[0] >> out.token & 1 == 1);
//! // The two most likely allowed tokens: 4 (logit 3) and 1 (logit 2).
//! assert_eq!(out.top_logprobs.len(), 2);
//! assert_eq!(out.top_logprobs[0].0, 4);
//! assert_eq!(out.top_logprobs[1].0, 1);
//! # Ok::<(), formwork_sampler::SamplerError>(())
//! ```

mod error;
mod logits;
mod math;
mod params;
mod rng;
mod sampler;
mod select;

pub use error::SamplerError;
pub use params::{
    GREEDY_TEMPERATURE, MAX_LOGIT_BIAS, MAX_TEMPERATURE, MAX_TOP_LOGPROBS, SamplingParams,
};
pub use sampler::{Sampled, Sampler};
