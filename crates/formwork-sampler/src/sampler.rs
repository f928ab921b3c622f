//! [`Sampler`]: one sequence's sampling state (parameters, random stream, token history,
//! scratch buffers) and the step that turns its logits into the next token.

use std::collections::HashMap;
use std::fmt;

use crate::logits::{
    apply_bias, apply_mask, apply_presence_frequency, apply_repetition_penalty, checked_max,
    count_allowed, first_position, gather_allowed,
};
use crate::math::{BLOCK, blocked_sum, exp_nonpositive};
use crate::rng::{Xoshiro256, entropy_seed};
use crate::select::{self, Candidate, rank_order};
use crate::{SamplerError, SamplingParams};

/// The outcome of one sampling step. (`PartialEq` follows `f32`: a `NaN` `logprob` is not
/// equal to itself.)
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The chosen token.
    pub token: u32,
    /// The chosen token's log-probability: log-softmax of the masked, biased, penalized
    /// logits, temperature not applied (OpenAI's "after masking"). `f32::NAN` when
    /// [`SamplingParams::top_logprobs`] is `None`: it costs a pass over the vocabulary, so
    /// it is only computed when asked for.
    pub logprob: f32,
    /// The `k` most likely tokens of that same distribution with their log-probabilities,
    /// most likely first (ties: lowest id first), for `top_logprobs == Some(k)`. Masked-out
    /// and `-inf` tokens never appear, so it is shorter than `k` when fewer tokens are
    /// allowed. It may include the chosen token. Empty when not requested.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// A set of token ids with O(1) insertion and iteration in insertion order.
#[derive(Clone, Default)]
struct TokenSet {
    bits: Vec<u64>,
    ids: Vec<u32>,
}

impl TokenSet {
    fn with_vocab(vocab_size: usize) -> Self {
        Self {
            bits: vec![0; vocab_size.div_ceil(64)],
            ids: Vec::new(),
        }
    }

    fn insert(&mut self, token: u32) {
        let bit = 1u64 << (token % 64);
        if let Some(word) = self.bits.get_mut(token as usize / 64)
            && *word & bit == 0
        {
            *word |= bit;
            self.ids.push(token);
        }
    }
}

/// Thresholds on the scaled logit `(l - max) / T` above which top-p over the whole
/// vocabulary collects candidates, tried in turn until the candidates hold enough mass to
/// contain the nucleus. `e^-8` is 3e-4 of the best token's weight: at usual temperatures the
/// nucleus lies above it, and only a few hundred tokens do. The last, `-inf`, takes every
/// allowed token.
const CANDIDATE_THRESHOLD: f32 = -8.0;

/// If more tokens than this lie above [`CANDIDATE_THRESHOLD`] (a flat distribution), or they
/// do not hold the nucleus, top-p finds its cut with a histogram instead ([`nucleus_cut`]).
const CANDIDATE_LIMIT: usize = 8192;

/// Buckets of the [`nucleus_cut`] histogram, [`BUCKETS_PER_NAT`] to a unit of scaled logit:
/// they cover 32 nats below the best token (`e^-32` ~ 1e-14), the last one everything lower.
const CUT_BUCKETS: usize = 2048;

/// See [`CUT_BUCKETS`].
const BUCKETS_PER_NAT: f32 = 64.0;

/// A mask allowing at most `1 / SPARSE_MASK` of the vocabulary is handled sparsely: its
/// allowed tokens are gathered into a compact slice, and every later pass runs over that
/// slice instead of the whole vocabulary (constrained decoding often allows a few dozen
/// tokens out of 150,000).
const SPARSE_MASK: usize = 8;

/// One sequence's sampler: its [`SamplingParams`], its random stream, the tokens it has seen
/// (for the penalties), and scratch buffers reused from step to step.
///
/// Create one per sequence with [`Sampler::new`], call [`Sampler::sample`] once per step
/// (and [`Sampler::record`] for tokens forced without sampling), and [`Sampler::fork`] it for
/// the siblings of an `n > 1` request.
///
/// Memory: the generated-token counts (a hash map over distinct tokens), a bitset over the
/// vocabulary only when the repetition penalty is on (19 KB at 151,936 tokens), and scratch
/// that grows to the largest candidate set seen (the top-k, or the top-p candidates: usually
/// a few hundred tokens, the whole vocabulary only for very flat distributions) and to the
/// largest sparse mask (at most an eighth of the vocabulary, 8 bytes a token).
#[derive(Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab_size: usize,
    seed: u64,
    rng: Xoshiro256,
    /// How often each token was generated (sampled or recorded).
    generated: HashMap<u32, u32>,
    /// Prompt and generated tokens, for the repetition penalty; empty when it is off.
    seen: TokenSet,
    /// Scratch: top-k heap, top-p candidates, top_logprobs.
    candidates: Vec<Candidate>,
    /// Scratch: per-block weight sums of a full-vocabulary draw.
    block_sums: Vec<f32>,
    /// Scratch: the allowed tokens of a sparse mask, and their logits.
    compact_ids: Vec<u32>,
    /// See `compact_ids`.
    compact_values: Vec<f32>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("vocab_size", &self.vocab_size)
            .field("seed", &self.seed)
            .field("distinct_generated", &self.generated.len())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler for one sequence over a vocabulary of `vocab_size` tokens (the length of
    /// the logits), after `prompt_tokens` (which only the repetition penalty looks at).
    ///
    /// Errors: the parameters fail [`SamplingParams::validate`], or a prompt token is not
    /// below `vocab_size` ([`SamplerError::TokenOutOfRange`]).
    pub fn new(
        params: SamplingParams,
        vocab_size: usize,
        prompt_tokens: &[u32],
    ) -> Result<Sampler, SamplerError> {
        params.validate(vocab_size)?;
        if let Some(&token) = prompt_tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(SamplerError::TokenOutOfRange { token, vocab_size });
        }
        let mut seen = TokenSet::default();
        if params.repetition_penalty != 1.0 {
            seen = TokenSet::with_vocab(vocab_size);
            for &token in prompt_tokens {
                seen.insert(token);
            }
        }
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Ok(Sampler {
            params,
            vocab_size,
            seed,
            rng: Xoshiro256::from_seed(seed),
            generated: HashMap::new(),
            seen,
            candidates: Vec::new(),
            block_sums: Vec::new(),
            compact_ids: Vec::new(),
            compact_values: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The vocabulary size: the length `sample` expects of the logits.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The seed of this sampler's random stream: `params().seed` if given (plus the offset
    /// for a [`fork`](Sampler::fork)), else the one drawn at creation. Giving it back as
    /// `seed` reproduces an unseeded run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Picks the next token and records it (for the penalties).
    ///
    /// `logits` must have `vocab_size` entries; it is scratch, its contents afterwards are
    /// unspecified. `mask` is an allowed-token bitset (bit `i % 64` of word `i / 64` set =
    /// token `i` allowed) of at least `vocab_size.div_ceil(64)` words; `None` allows all.
    ///
    /// Order: mask → `logit_bias` → repetition penalty → presence and frequency penalties →
    /// (log-probabilities, if requested) → greedy argmax if the temperature is 0, else
    /// temperature → top-k → top-p → min-p → a draw from the random stream. A masked-out
    /// token is never chosen, whatever its bias. Greedy steps use no random numbers; every
    /// other step uses exactly one.
    ///
    /// Errors: [`SamplerError::LengthMismatch`] for a wrong logits length or short mask,
    /// [`SamplerError::NonFiniteLogits`] for a NaN or `+inf` logit of an allowed token,
    /// [`SamplerError::NoAllowedToken`] when no token is allowed with a finite logit. A failed
    /// step records nothing and draws nothing.
    pub fn sample(
        &mut self,
        logits: &mut [f32],
        mask: Option<&[u64]>,
    ) -> Result<Sampled, SamplerError> {
        if logits.len() != self.vocab_size {
            return Err(SamplerError::LengthMismatch {
                what: "logits",
                expected: self.vocab_size,
                got: logits.len(),
            });
        }
        if let Some(mask) = mask {
            let words = self.vocab_size.div_ceil(64);
            if mask.len() < words {
                return Err(SamplerError::LengthMismatch {
                    what: "mask",
                    expected: words,
                    got: mask.len(),
                });
            }
        }
        // Bias and penalties change single tokens, and -inf is a fixed point of both, so
        // applying them before the mask gives what mask -> bias -> penalties gives.
        apply_bias(logits, &self.params.logit_bias);
        if self.params.repetition_penalty != 1.0 {
            apply_repetition_penalty(logits, &self.seen.ids, self.params.repetition_penalty);
        }
        if self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0 {
            apply_presence_frequency(
                logits,
                self.generated.iter().map(|(&t, &c)| (t, c)),
                self.params.presence_penalty,
                self.params.frequency_penalty,
            );
        }
        let sampled = match mask {
            Some(mask) if count_allowed(mask, self.vocab_size) * SPARSE_MASK <= self.vocab_size => {
                // Few tokens allowed: gather them into a compact slice and work on that alone.
                let mut ids = std::mem::take(&mut self.compact_ids);
                let mut values = std::mem::take(&mut self.compact_values);
                gather_allowed(logits, mask, &mut ids, &mut values);
                let sampled = self.pick(&values, Some(&ids));
                self.compact_ids = ids;
                self.compact_values = values;
                sampled
            }
            Some(mask) => {
                apply_mask(logits, mask);
                self.pick(logits, None)
            }
            None => self.pick(logits, None),
        }?;
        self.record(sampled.token);
        Ok(sampled)
    }

    /// Everything after the mask, bias and penalties, over `work`: the processed logits of
    /// the whole vocabulary (`ids == None`), or of the allowed tokens `ids` only (in id order,
    /// so ties still go to the lowest id).
    fn pick(&mut self, work: &[f32], ids: Option<&[u32]>) -> Result<Sampled, SamplerError> {
        // Positions in `work` are tokens, or index `ids` (same length, by construction).
        let token_at = |pos: usize| ids.map_or(pos as u32, |ids| ids[pos]);
        let max = checked_max(work).map_err(|e| match e {
            SamplerError::NonFiniteLogits { token, value } => SamplerError::NonFiniteLogits {
                token: token_at(token as usize),
                value,
            },
            e => e,
        })?;
        let (pos, softmax_sum) = if self.params.is_greedy() {
            let pos = first_position(work, max).ok_or(SamplerError::NoAllowedToken)?;
            (pos, None)
        } else {
            self.draw(work, max)?
        };
        let (logprob, top_logprobs) = match self.params.top_logprobs {
            Some(k) => {
                let (logprob, mut top) = self.logprobs(work, max, softmax_sum, pos, k);
                for (t, _) in &mut top {
                    *t = token_at(*t as usize);
                }
                (logprob, top)
            }
            None => (f32::NAN, Vec::new()),
        };
        Ok(Sampled {
            token: token_at(pos),
            logprob,
            top_logprobs,
        })
    }

    /// Records a token chosen elsewhere (a forced token of a constrained sequence), so the
    /// penalties count it as generated. Ids not below the vocabulary size are ignored: they
    /// have no logit to penalize.
    pub fn record(&mut self, token: u32) {
        if token as usize >= self.vocab_size {
            return;
        }
        *self.generated.entry(token).or_insert(0) += 1;
        if self.params.repetition_penalty != 1.0 {
            self.seen.insert(token);
        }
    }

    /// A sampler for a sibling sequence (`n > 1`): the same parameters and token history,
    /// with its own random stream seeded with `seed().wrapping_add(seed_offset)`, so seeded
    /// requests stay reproducible. Use distinct non-zero offsets for siblings: offset 0
    /// restarts this sampler's own stream from its beginning.
    pub fn fork(&self, seed_offset: u64) -> Sampler {
        let seed = self.seed.wrapping_add(seed_offset);
        Sampler {
            params: self.params.clone(),
            vocab_size: self.vocab_size,
            seed,
            rng: Xoshiro256::from_seed(seed),
            generated: self.generated.clone(),
            seen: self.seen.clone(),
            candidates: Vec::new(),
            block_sums: Vec::new(),
            compact_ids: Vec::new(),
            compact_values: Vec::new(),
        }
    }

    /// Temperature, top-k, top-p, min-p and the draw, over processed logits whose maximum is
    /// `max` (finite). Returns the token and, when the draw happened to compute it (at
    /// temperature 1, over the whole vocabulary, min-p off), `sum(exp(l - max))`, which the
    /// log-probabilities then reuse instead of another pass.
    fn draw(&mut self, logits: &[f32], max: f32) -> Result<(usize, Option<f64>), SamplerError> {
        let params = &self.params;
        let inv_t = 1.0 / params.temperature;
        // The scaled logit (l - max) / T is <= 0, and its exp is the token's weight relative
        // to the most likely token; min-p keeps weights >= min_p, i.e. scaled >= ln(min_p).
        let scaled = move |l: f32| (l - max) * inv_t;
        let min_scaled = if params.min_p > 0.0 {
            params.min_p.ln()
        } else {
            f32::NEG_INFINITY
        };
        let use_top_k = params.top_k > 0 && params.top_k < logits.len();
        let use_top_p = params.top_p < 1.0;
        // At T = 1, (l - max) * inv_t is exactly l - max: the weights are the softmax's.
        let unit_temperature = inv_t == 1.0;
        let u = self.rng.next_f64();

        if !use_top_k && !use_top_p {
            // The whole vocabulary: one pass for per-block sums, then a walk to the block
            // holding the target and a scan inside it.
            let sums = &mut self.block_sums;
            let (token, total) = if min_scaled == f32::NEG_INFINITY {
                draw_full(logits, move |_, l| exp_nonpositive(scaled(l)), sums, u)
            } else {
                // Selecting the argument rather than the result keeps the loop branch-free (a
                // select with an `exp` on one side compiles to a branch, and no SIMD).
                let weight = move |_, l: f32| {
                    let s = scaled(l);
                    exp_nonpositive(if s >= min_scaled {
                        s
                    } else {
                        f32::NEG_INFINITY
                    })
                };
                draw_full(logits, weight, sums, u)
            };
            let token = token.ok_or(SamplerError::NoAllowedToken)?;
            let reusable = unit_temperature && min_scaled == f32::NEG_INFINITY;
            return Ok((token as usize, reusable.then_some(total)));
        }

        let cands = &mut self.candidates;
        let mut softmax_sum = None;
        let total = if use_top_k {
            select::top_k(logits, params.top_k, cands);
            let mut total = 0.0f64;
            for c in cands.iter_mut() {
                c.weight = exp_nonpositive(scaled(c.logit));
                total += f64::from(c.weight);
            }
            total
        } else {
            // Top-p over the whole vocabulary: the tokens within e^-8 of the best, if they are
            // few, and the total weight (one vectorized pass); if those tokens hold the
            // nucleus, it is found among them.
            let mass = collect_candidates(
                logits,
                max,
                inv_t,
                CANDIDATE_THRESHOLD,
                CANDIDATE_LIMIT,
                cands,
            );
            let total =
                mass.map(|_| blocked_sum(logits, move |_, l| exp_nonpositive(scaled(l)), None));
            match (mass, total) {
                (Some(mass), Some(total)) if mass >= f64::from(params.top_p) * total => {
                    if unit_temperature {
                        softmax_sum = Some(total);
                    }
                    total
                }
                _ => {
                    // A large nucleus: find its last token with a histogram (which also
                    // gives the total), then draw over the logits, keeping the tokens that
                    // rank at or above it and pass min-p.
                    let (cut, total) =
                        nucleus_cut(logits, max, inv_t, f64::from(params.top_p), cands);
                    if unit_temperature {
                        softmax_sum = Some(total);
                    }
                    let weight = move |i: usize, l: f32| {
                        let s = scaled(l);
                        let in_nucleus = cut.is_none_or(|cut| {
                            l > cut.logit || (l == cut.logit && i as u32 <= cut.id)
                        });
                        let keep = in_nucleus && s >= min_scaled;
                        exp_nonpositive(if keep { s } else { f32::NEG_INFINITY })
                    };
                    let (pos, _) = draw_full(logits, weight, &mut self.block_sums, u);
                    let pos = pos.ok_or(SamplerError::NoAllowedToken)?;
                    return Ok((pos as usize, softmax_sum));
                }
            }
        };
        if use_top_p {
            let n = select::nucleus_any(cands, f64::from(params.top_p) * total);
            cands.truncate(n);
        }
        if min_scaled > f32::NEG_INFINITY {
            cands.retain(|c| scaled(c.logit) >= min_scaled);
        }
        let pos = select::draw(cands, u).ok_or(SamplerError::NoAllowedToken)?;
        Ok((pos as usize, softmax_sum))
    }

    /// The chosen token's log-probability and the `k` most likely tokens with theirs, over
    /// the processed logits (no temperature). `softmax_sum` is `sum(exp(l - max))` if the
    /// draw already computed it.
    fn logprobs(
        &mut self,
        logits: &[f32],
        max: f32,
        softmax_sum: Option<f64>,
        pos: usize,
        k: usize,
    ) -> (f32, Vec<(u32, f32)>) {
        let z = softmax_sum
            .unwrap_or_else(|| blocked_sum(logits, move |_, l| exp_nonpositive(l - max), None));
        let log_norm = f64::from(max) + z.ln();
        let logprob = move |l: f32| (f64::from(l) - log_norm) as f32;
        let chosen = logits.get(pos).map_or(f32::NAN, |&l| logprob(l));
        let mut top = Vec::new();
        if k > 0 {
            select::top_k(logits, k, &mut self.candidates);
            self.candidates.sort_unstable_by(rank_order);
            top.extend(self.candidates.iter().map(|c| (c.id, logprob(c.logit))));
        }
        (chosen, top)
    }
}

/// Draws a token with probability proportional to `weight(logit)` over the whole
/// vocabulary; returns it and the total weight.
fn draw_full(
    logits: &[f32],
    weight: impl Fn(usize, f32) -> f32 + Copy,
    block_sums: &mut Vec<f32>,
    u: f64,
) -> (Option<u32>, f64) {
    let total = blocked_sum(logits, weight, Some(block_sums));
    (draw_blocked(logits, weight, block_sums, total, u), total)
}

/// Draws a token with probability proportional to `weight(logit)` over the whole vocabulary,
/// given the per-block sums and their total from [`blocked_sum`] and a uniform `u`.
fn draw_blocked(
    logits: &[f32],
    weight: impl Fn(usize, f32) -> f32,
    block_sums: &[f32],
    total: f64,
    u: f64,
) -> Option<u32> {
    let target = u * total;
    let mut acc = 0.0f64;
    for (b, (block, &sum)) in logits.chunks(BLOCK).zip(block_sums).enumerate() {
        let next = acc + f64::from(sum);
        if next > target {
            let mut last = None;
            for (i, &l) in block.iter().enumerate() {
                let w = weight(b * BLOCK + i, l);
                if w > 0.0 {
                    last = Some((b * BLOCK + i) as u32);
                    acc += f64::from(w);
                    if acc > target {
                        break;
                    }
                }
            }
            // `last` is the crossing token, or, if rounding kept the scan inside the block
            // below the target, the block's last token with any weight.
            return last;
        }
        acc = next;
    }
    // Only reached through rounding (u * total rounded up to total).
    (0..logits.len())
        .rev()
        .find(|&i| logits.get(i).is_some_and(|&l| weight(i, l) > 0.0))
        .map(|i| i as u32)
}

/// Replaces `cands` with the allowed tokens whose scaled logit `(l - max) * inv_t` is at
/// least `threshold`, with their weights, and returns the sum of those weights; `None` (and
/// a partial `cands`) as soon as there are more than `limit`.
fn collect_candidates(
    logits: &[f32],
    max: f32,
    inv_t: f32,
    threshold: f32,
    limit: usize,
    cands: &mut Vec<Candidate>,
) -> Option<f64> {
    let scaled = move |l: f32| (l - max) * inv_t;
    let is_candidate = move |l: f32| l > f32::NEG_INFINITY && scaled(l) >= threshold;
    cands.clear();
    let mut mass = 0.0f64;
    for (c, chunk) in logits.chunks(64).enumerate() {
        // Test the chunk as a whole first (branch-free, vectorized): with a tight threshold
        // most chunks hold no candidate.
        if !chunk.iter().fold(false, |hit, &l| hit | is_candidate(l)) {
            continue;
        }
        for (i, &logit) in chunk.iter().enumerate() {
            if is_candidate(logit) {
                let weight = exp_nonpositive(scaled(logit));
                mass += f64::from(weight);
                cands.push(Candidate {
                    id: (c * 64 + i) as u32,
                    logit,
                    weight,
                });
            }
        }
        if cands.len() > limit {
            return None;
        }
    }
    Some(mass)
}

/// The last token (in rank order) of the top-p nucleus over the whole vocabulary: the
/// smallest set of best-ranked tokens whose weights `exp((l - max) * inv_t)` reach `top_p`
/// of their total; and that total. The token is `None` only if rounding leaves no token to
/// name (then every token is in).
///
/// One pass sums the weights into [`CUT_BUCKETS`] buckets of scaled logit (monotone in the
/// logit, so earlier buckets hold only better-ranked tokens); the bucket where the running
/// sum reaches `target` is the only one whose tokens need ranking, so only they become
/// candidates (`cands` is scratch).
fn nucleus_cut(
    logits: &[f32],
    max: f32,
    inv_t: f32,
    top_p: f64,
    cands: &mut Vec<Candidate>,
) -> (Option<Candidate>, f64) {
    const ROUND: f32 = 12_582_912.0;
    const LAST: f32 = (CUT_BUCKETS - 1) as f32;
    let scale = inv_t * BUCKETS_PER_NAT;
    // The bucket is (max - l) * scale rounded to an integer, capped at the last bucket (-inf
    // logits land there, with weight 0). Rounding by adding 1.5 * 2^23 and reading the bits
    // rather than a float-to-int `as` (which saturates) keeps the loops vectorizable; any
    // monotone rounding will do, as long as every use agrees.
    let bucket = move |l: f32| -> u32 {
        let d = (max - l) * scale;
        let d = if d < LAST { d } else { LAST };
        (d + ROUND).to_bits().wrapping_sub(ROUND.to_bits())
    };
    let mut mass = vec![0.0f64; CUT_BUCKETS];
    for chunk in logits.chunks(16) {
        // The weights and buckets of a chunk in one vectorizable loop, then the scattered
        // adds.
        let mut weights = [0.0f32; 16];
        let mut buckets = [0u32; 16];
        for ((w, b), &l) in weights.iter_mut().zip(&mut buckets).zip(chunk) {
            *w = exp_nonpositive((l - max) * inv_t);
            *b = bucket(l);
        }
        for (&w, &b) in weights.iter().zip(&buckets).take(chunk.len()) {
            if let Some(m) = mass.get_mut(b as usize) {
                *m += f64::from(w);
            }
        }
    }
    let total: f64 = mass.iter().sum();
    let target = top_p * total;
    let mut above = 0.0f64;
    let mut cut = (CUT_BUCKETS - 1) as u32;
    for (b, &m) in mass.iter().enumerate() {
        if above + m >= target {
            cut = b as u32;
            break;
        }
        above += m;
    }
    cands.clear();
    for (c, chunk) in logits.chunks(64).enumerate() {
        let in_cut = move |l: f32| l > f32::NEG_INFINITY && bucket(l) == cut;
        if !chunk.iter().fold(false, |hit, &l| hit | in_cut(l)) {
            continue;
        }
        for (i, &logit) in chunk.iter().enumerate() {
            if in_cut(logit) {
                cands.push(Candidate {
                    id: (c * 64 + i) as u32,
                    logit,
                    weight: exp_nonpositive((logit - max) * inv_t),
                });
            }
        }
    }
    let n = select::nucleus_any(cands, target - above);
    let last = cands
        .get(..n)
        .and_then(|nucleus| nucleus.iter().copied().max_by(rank_order));
    (last, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_set_inserts_once_and_ignores_ids_past_its_words() {
        // 100 tokens take two words (ids up to 127); callers check the vocabulary bound.
        let mut set = TokenSet::with_vocab(100);
        for t in [5, 99, 5, 64, 128, 1000] {
            set.insert(t);
        }
        assert_eq!(set.ids, [5, 99, 64]);
    }

    #[test]
    fn candidates_above_a_threshold() {
        let logits = [0.0, -1.0, f32::NEG_INFINITY, -3.0, -0.5];
        let mut cands = Vec::new();
        // T = 0.5: scaled logits 0, -2, -inf, -6, -1.
        let mass = collect_candidates(&logits, 0.0, 2.0, -2.0, 10, &mut cands).unwrap();
        let ids: Vec<u32> = cands.iter().map(|c| c.id).collect();
        assert_eq!(ids, [0, 1, 4]);
        let want = 1.0 + (-2.0f64).exp() + (-1.0f64).exp();
        assert!((mass - want).abs() < 1e-6);
        collect_candidates(&logits, 0.0, 2.0, f32::NEG_INFINITY, 10, &mut cands);
        assert_eq!(cands.len(), 4);
        assert_eq!(
            collect_candidates(&logits, 0.0, 2.0, f32::NEG_INFINITY, 3, &mut cands),
            None
        );
    }

    #[test]
    fn nucleus_cut_names_the_last_token_of_the_nucleus() {
        // 3000 tokens in 30 tie groups of 100 (logits 0, -0.1, ..., -2.9), scattered.
        let logits: Vec<f32> = (0..3000).map(|i| -((i * 7 % 30) as f32) * 0.1).collect();
        let weights: Vec<f64> = logits.iter().map(|&l| f64::from(l).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let mut cands = Vec::new();
        for p in [0.01, 0.3, 0.77, 0.95, 0.999] {
            let target = p * total;
            let mut acc = 0.0;
            let last = order
                .iter()
                .copied()
                .find(|&i| {
                    acc += weights[i];
                    acc >= target
                })
                .unwrap();
            let (cut, sum) = nucleus_cut(&logits, 0.0, 1.0, p, &mut cands);
            let cut = cut.unwrap();
            assert!((sum - total).abs() < 1e-6 * total);
            assert_eq!(cut.id as usize, last, "p = {p}");
            assert_eq!(cut.logit, logits[last]);
        }
    }

    #[test]
    fn draw_blocked_finds_the_token_across_blocks() {
        // Three tokens with weight, in different blocks.
        let mut logits = vec![f32::NEG_INFINITY; 3 * BLOCK];
        logits[10] = 0.0;
        logits[BLOCK + 3] = 0.0;
        logits[2 * BLOCK + BLOCK - 1] = 0.0;
        let weight = |_, l: f32| exp_nonpositive(l);
        let mut sums = Vec::new();
        let total = blocked_sum(&logits, weight, Some(&mut sums));
        assert_eq!(total, 3.0);
        for (u, want) in [(0.0, 10), (0.34, BLOCK + 3), (0.9, 3 * BLOCK - 1)] {
            assert_eq!(
                draw_blocked(&logits, weight, &sums, total, u),
                Some(want as u32)
            );
        }
        // A target at the very top (as rounding can give) still lands on a real token.
        assert_eq!(
            draw_blocked(&logits, weight, &sums, total, 1.0),
            Some(3 * BLOCK as u32 - 1)
        );
    }
}
