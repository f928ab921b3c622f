//! The engine's thread: admission, continuous batching, sampling and streaming.
//!
//! Each step, every active sequence contributes its next input to one batched forward pass:
//! a chunk of its prompt while prefilling (at most `prefill_chunk` prompt tokens per step over
//! all sequences, so a long prompt never stalls the others for long), else the token it
//! sampled last (followed by the tokens its constraint forces next, when jump-forward
//! decoding found some: see [`crate::jump`]). New requests are admitted between steps, first
//! come first served, while the sequence limit and the KV-cache budget allow. An admitted
//! prompt starts from the cached blocks of earlier sequences that share its first tokens
//! ([`crate::prefix`]), and a sequence's blocks are kept for later ones.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use formwork_model::{BatchItem, KvCache};
use formwork_sampler::Sampler;
use tokio::sync::mpsc::UnboundedSender;

use crate::end_valid::Steering;
use crate::guide::ConstraintGuide;
use crate::jump::{self, MAX_FORCED_BYTES};
use crate::prefix::PrefixCache;
use crate::text::{Pushed, TextStream};
use crate::{Event, FinishReason, Shared, TokenLogprob, Usage, panic_message};

/// Messages to the engine's thread.
pub(crate) enum Command {
    Submit(Box<Pending>),
    Shutdown,
}

/// A prepared request waiting for a slot.
pub(crate) struct Pending {
    pub(crate) prompt: Vec<u32>,
    pub(crate) n: usize,
    pub(crate) max_tokens: usize,
    pub(crate) stop: Vec<String>,
    pub(crate) ignore_eos: bool,
    pub(crate) top_logprobs: Option<usize>,
    /// Whether forced text is appended without sampling ([`crate::jump`]).
    pub(crate) jump_forward: bool,
    pub(crate) sampler: Sampler,
    pub(crate) guide: Option<ConstraintGuide>,
    /// Steer the reply to end valid near `max_tokens` (`crate::end_valid`).
    pub(crate) end_valid: bool,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) submitted: Instant,
}

impl Pending {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }

    /// The most KV tokens the request's choices may hold beside the `cached` first prompt
    /// tokens they share: the rest of the prompt once (forks share its full blocks), each
    /// choice's completion, and a copied partial block per fork.
    fn kv_tokens(&self, cached: usize, block: usize) -> usize {
        (self.prompt.len() - cached.min(self.prompt.len()))
            + self.n * self.max_tokens
            + (self.n - 1) * block
    }
}

/// What the choices of one request share.
struct Group {
    events: UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    prompt_tokens: usize,
    remaining: usize,
    completion_tokens: usize,
    submitted: Instant,
    first_token: Option<Instant>,
    reserved: usize,
    masked_tokens: usize,
    cached_tokens: usize,
    forced_tokens: usize,
}

impl Group {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// One choice being generated.
struct Seq {
    group: u64,
    index: usize,
    prompt: Arc<Vec<u32>>,
    prefilled: usize,
    cache: KvCache,
    /// The next forward pass's input: the token sampled last, then any forced tokens.
    input: Vec<u32>,
    has_input: bool,
    generated: usize,
    max_tokens: usize,
    sampler: Sampler,
    guide: Option<ConstraintGuide>,
    /// `Some` when the reply is steered to end valid (`crate::end_valid`).
    steering: Option<Steering>,
    text: TextStream,
    stop: Arc<Vec<String>>,
    ignore_eos: bool,
    top_logprobs: Option<usize>,
    /// The tokens fed after the prompt, in order (with the prompt, what its cache holds).
    fed: Vec<u32>,
    /// Prompt tokens taken from cached blocks (its own prefill starts after them).
    reused: usize,
    jump_forward: bool,
    /// Choices still to be forked from this one when its prefill completes.
    forks: usize,
    last_token_at: Option<Instant>,
}

/// What a batch item feeds.
#[derive(Clone, Copy)]
enum Input {
    Prompt(usize, usize),
    Token,
}

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    waiting: VecDeque<Box<Pending>>,
    active: Vec<Seq>,
    groups: HashMap<u64, Group>,
    next_group: u64,
    reserved: usize,
    mask: Vec<u64>,
    /// Blocks of ended sequences for later prompts that start the same; `None` when prefix
    /// reuse is off or the model's caches have no blocks.
    prefixes: Option<PrefixCache>,
    /// Positions per cache block (1 for a model without blocks).
    block_tokens: usize,
    /// Steps in a row that panicked.
    panics_in_a_row: u32,
}

/// Steps in a row that may panic before the engine reports itself unhealthy: one panic is a
/// fault of one step's requests; panics that recur on fresh state mean the fault is not.
const MAX_PANICS_IN_A_ROW: u32 = 3;

impl Scheduler {
    pub(crate) fn new(shared: Arc<Shared>, commands: mpsc::Receiver<Command>) -> Scheduler {
        let words = shared.info.vocab_size.div_ceil(64);
        let block_tokens = shared.model.new_cache().block_tokens();
        let prefixes = block_tokens
            .filter(|_| shared.config.prefix_cache)
            .map(PrefixCache::new);
        Scheduler {
            prefixes,
            block_tokens: block_tokens.unwrap_or(1),
            shared,
            commands,
            waiting: VecDeque::new(),
            active: Vec::new(),
            groups: HashMap::new(),
            next_group: 0,
            reserved: 0,
            mask: vec![0; words],
            panics_in_a_row: 0,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                match self.commands.recv() {
                    Ok(Command::Submit(p)) => self.waiting.push_back(p),
                    Ok(Command::Shutdown) | Err(_) => break,
                }
            }
            let mut shutdown = false;
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Submit(p) => self.waiting.push_back(p),
                    Command::Shutdown => shutdown = true,
                }
            }
            if shutdown {
                break;
            }
            // A panic in a step (a kernel assertion, a bug) fails the requests of that step
            // and no others; the engine goes on with a clean slate.
            let stepped = catch_unwind(AssertUnwindSafe(|| {
                self.drop_cancelled();
                self.admit();
                if !self.active.is_empty() {
                    self.step();
                }
            }));
            match stepped {
                Ok(()) => self.panics_in_a_row = 0,
                Err(payload) => self.recover(panic_message(payload.as_ref())),
            }
        }
        // Shutting down: everything still running or waiting is cancelled.
        let seqs: Vec<Seq> = self.active.drain(..).collect();
        for mut s in seqs {
            self.finish(&mut s, FinishReason::Cancelled);
        }
        for p in self.waiting.drain(..) {
            self.shared.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            for index in 0..p.n {
                let _ = p.events.send(Event::Finished {
                    index,
                    reason: FinishReason::Cancelled,
                    completion_tokens: 0,
                });
            }
        }
        self.shared.metrics.active.store(0, Ordering::Relaxed);
    }

    /// After a panic in a step: every running request fails with an error naming it (its
    /// sequences and KV reservations are dropped), so the scheduler's state is fresh again;
    /// waiting requests stay queued. Recurring panics mark the engine unhealthy.
    fn recover(&mut self, message: String) {
        let metrics = &self.shared.metrics;
        metrics.engine_panics.fetch_add(1, Ordering::Relaxed);
        self.panics_in_a_row += 1;
        if self.panics_in_a_row >= MAX_PANICS_IN_A_ROW {
            // Before the requests hear of it, so what they see and `health` agree.
            self.shared.fail(format!(
                "{} engine steps in a row panicked, the last with: {message}",
                self.panics_in_a_row
            ));
        }
        // The state is fresh before the requests hear of it, so what they see and the
        // metrics agree.
        self.active.clear();
        self.reserved = 0;
        if let Some(prefixes) = &mut self.prefixes {
            prefixes.clear();
        }
        metrics.prefix_cached_tokens.store(0, Ordering::Relaxed);
        metrics.active.store(0, Ordering::Relaxed);
        let error = format!("internal error in the engine: {message}");
        let mut failed = 0;
        for (_, group) in self.groups.drain() {
            let _ = group.events.send(Event::Error {
                message: error.clone(),
            });
            for _ in 0..group.remaining {
                metrics.finished(FinishReason::Error);
            }
            failed += 1;
        }
        tracing::error!(panic = %message, failed, "an engine step panicked; its requests failed");
    }

    fn drop_cancelled(&mut self) {
        let waiting_before = self.waiting.len();
        self.waiting.retain(|p| !p.cancelled());
        let dropped = waiting_before - self.waiting.len();
        if dropped > 0 {
            self.shared
                .metrics
                .queued
                .fetch_sub(dropped as u64, Ordering::Relaxed);
        }
        let mut i = 0;
        while i < self.active.len() {
            let cancelled = self
                .groups
                .get(&self.active[i].group)
                .is_none_or(Group::cancelled);
            if cancelled {
                let mut s = self.active.swap_remove(i);
                self.finish(&mut s, FinishReason::Cancelled);
            } else {
                i += 1;
            }
        }
    }

    fn admit(&mut self) {
        let config = &self.shared.config;
        let metrics = &self.shared.metrics;
        while let Some(p) = self.waiting.front() {
            if self.active.len() + p.n > config.max_active {
                break;
            }
            let model = self.shared.model.as_ref();
            let cached = match &mut self.prefixes {
                Some(prefixes) => prefixes.lookup(model, &p.prompt),
                None => Vec::new(),
            };
            let cached_tokens = cached.len() * self.block_tokens;
            let reserve = p.kv_tokens(cached_tokens, self.block_tokens);
            // Room for this request beside the running ones, dropping idle cached blocks
            // (never the ones it is about to use: they are held by `cached`).
            let room = config
                .kv_cache_tokens
                .saturating_sub(self.reserved + reserve);
            let held = self.prefixes.as_mut().map_or(0, |c| c.shrink_to(room));
            metrics
                .prefix_cached_tokens
                .store(held as u64, Ordering::Relaxed);
            let fits_kv = self.reserved + reserve + held <= config.kv_cache_tokens;
            if !(fits_kv || self.active.is_empty()) {
                break;
            }
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            metrics.queued.fetch_sub(1, Ordering::Relaxed);
            if self.prefixes.is_some() {
                metrics.prefix_queries.fetch_add(1, Ordering::Relaxed);
                if cached_tokens > 0 {
                    metrics.prefix_hits.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .prefix_hit_tokens
                        .fetch_add(cached_tokens as u64, Ordering::Relaxed);
                }
            }
            let id = self.next_group;
            self.next_group += 1;
            self.reserved += reserve;
            self.groups.insert(
                id,
                Group {
                    events: p.events,
                    cancel: p.cancel,
                    prompt_tokens: p.prompt.len(),
                    remaining: p.n,
                    completion_tokens: 0,
                    submitted: p.submitted,
                    first_token: None,
                    reserved: reserve,
                    masked_tokens: 0,
                    cached_tokens,
                    forced_tokens: 0,
                },
            );
            // The prompt is prefilled in chunks that depend on what else is running; telling
            // the cache its length keeps the model's arithmetic independent of the chunking.
            let mut cache = self.shared.model.new_cache();
            cache.set_prompt_len(p.prompt.len());
            // Blocks found for this prompt: the same bits its own prefill would compute.
            let prefilled = match cache.attach_prefix(&cached) {
                Ok(()) => cached_tokens,
                Err(_) => 0,
            };
            self.active.push(Seq {
                group: id,
                index: 0,
                prompt: Arc::new(p.prompt),
                prefilled,
                cache,
                input: Vec::new(),
                has_input: false,
                generated: 0,
                max_tokens: p.max_tokens,
                sampler: p.sampler,
                steering: (p.end_valid && p.guide.as_ref().is_some_and(ConstraintGuide::is_whole))
                    .then(Steering::default),
                guide: p.guide,
                text: TextStream::new(&p.stop),
                stop: Arc::new(p.stop),
                ignore_eos: p.ignore_eos,
                top_logprobs: p.top_logprobs,
                fed: Vec::new(),
                reused: prefilled,
                jump_forward: p.jump_forward,
                forks: p.n - 1,
                last_token_at: None,
            });
        }
        metrics
            .active
            .store(self.active.len() as u64, Ordering::Relaxed);
    }

    fn step(&mut self) {
        self.reuse_new_prefixes();
        // Prompt chunks go to the earliest requests first (their first tokens are due first);
        // a prompt waits while an earlier one computes blocks it will reuse.
        let mut prefilling: Vec<usize> = (0..self.active.len())
            .filter(|&i| {
                let s = &self.active[i];
                s.prefilled < s.prompt.len() && !self.awaits_shared_prefix(s)
            })
            .collect();
        prefilling.sort_by_key(|&i| self.active[i].group);
        let mut budget = self.shared.config.prefill_chunk.max(1);
        let mut chunks = vec![None; self.active.len()];
        for i in prefilling {
            if budget == 0 {
                break;
            }
            let s = &self.active[i];
            let take = budget.min(s.prompt.len() - s.prefilled);
            budget -= take;
            chunks[i] = Some(Input::Prompt(s.prefilled, s.prefilled + take));
        }
        let mut plan: Vec<(usize, Input)> = Vec::with_capacity(self.active.len());
        for (i, (s, chunk)) in self.active.iter().zip(chunks).enumerate() {
            if let Some(chunk) = chunk {
                plan.push((i, chunk));
            } else if s.prefilled >= s.prompt.len() && s.has_input {
                plan.push((i, Input::Token));
            }
        }
        if plan.is_empty() {
            return;
        }
        let result = {
            let mut items: Vec<BatchItem<'_>> = Vec::with_capacity(plan.len());
            let mut next = plan.iter().peekable();
            for (i, s) in self.active.iter_mut().enumerate() {
                let Some((_, input)) = next.next_if(|(j, _)| *j == i) else {
                    continue;
                };
                let tokens: &[u32] = match input {
                    Input::Prompt(a, b) => &s.prompt[*a..*b],
                    Input::Token => &s.input,
                };
                items.push(BatchItem {
                    tokens,
                    cache: &mut s.cache,
                });
            }
            self.shared.model.forward(&mut items)
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let message = e.to_string();
                let mut failed: Vec<usize> = plan.iter().map(|(i, _)| *i).collect();
                failed.sort_unstable_by(|a, b| b.cmp(a));
                for i in failed {
                    let mut s = self.active.swap_remove(i);
                    if let Some(g) = self.groups.get(&s.group) {
                        let _ = g.events.send(Event::Error {
                            message: message.clone(),
                        });
                    }
                    self.finish(&mut s, FinishReason::Error);
                }
                return;
            }
        };
        let mut done = Vec::new();
        let mut forked = Vec::new();
        for ((i, input), logits) in plan.into_iter().zip(logits) {
            let s = &mut self.active[i];
            match input {
                Input::Prompt(_, b) => {
                    self.shared
                        .metrics
                        .prompt_tokens
                        .fetch_add((b - s.prefilled) as u64, Ordering::Relaxed);
                    s.prefilled = b;
                    if b < s.prompt.len() {
                        continue;
                    }
                    // The prompt's blocks are found from now on, not only once it ends, so
                    // requests arriving while it generates reuse them.
                    if let Some(prefixes) = &mut self.prefixes {
                        let model = self.shared.model.as_ref();
                        prefixes.insert(model, &s.cache, s.prompt.len(), &s.prompt);
                        self.shared
                            .metrics
                            .prefix_cached_tokens
                            .store(prefixes.tokens() as u64, Ordering::Relaxed);
                    }
                }
                Input::Token => {
                    s.has_input = false;
                    s.fed.extend_from_slice(&s.input);
                }
            }
            if s.forks > 0 {
                let forks = std::mem::take(&mut s.forks);
                for k in 1..=forks {
                    match s.cache.try_clone() {
                        Ok(cache) => forked.push((
                            Seq {
                                group: s.group,
                                index: k,
                                prompt: s.prompt.clone(),
                                prefilled: s.prefilled,
                                cache,
                                input: Vec::new(),
                                has_input: false,
                                generated: 0,
                                max_tokens: s.max_tokens,
                                sampler: s.sampler.fork(k as u64),
                                guide: s.guide.clone(),
                                steering: s.steering.clone(),
                                text: TextStream::new(&s.stop),
                                stop: s.stop.clone(),
                                ignore_eos: s.ignore_eos,
                                top_logprobs: s.top_logprobs,
                                fed: Vec::new(),
                                reused: s.reused,
                                jump_forward: s.jump_forward,
                                forks: 0,
                                last_token_at: None,
                            },
                            logits.clone(),
                        )),
                        Err(e) => {
                            // The choice never runs: it ends now, so its group still
                            // finishes and frees its KV reservation.
                            if let Some(g) = self.groups.get_mut(&s.group) {
                                let _ = g.events.send(Event::Error {
                                    message: e.to_string(),
                                });
                                let _ = g.events.send(Event::Finished {
                                    index: k,
                                    reason: FinishReason::Error,
                                    completion_tokens: 0,
                                });
                                self.shared.metrics.finished(FinishReason::Error);
                                g.remaining = g.remaining.saturating_sub(1);
                            }
                        }
                    }
                }
            }
            if let Some(reason) = self.sample(i, logits) {
                done.push((i, reason));
            }
        }
        for (seq, logits) in forked {
            self.active.push(seq);
            let i = self.active.len() - 1;
            if let Some(reason) = self.sample(i, logits) {
                done.push((i, reason));
            }
        }
        done.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        for (i, reason) in done {
            let mut s = self.active.swap_remove(i);
            self.finish(&mut s, reason);
        }
        self.shared
            .metrics
            .active
            .store(self.active.len() as u64, Ordering::Relaxed);
    }

    /// Whether `s` has not started its own prefill while an earlier request's prefill is
    /// computing blocks `s` would reuse: it waits for them instead of computing them twice
    /// (many clients sending one long system prompt at once).
    fn awaits_shared_prefix(&self, s: &Seq) -> bool {
        if self.prefixes.is_none() || s.prefilled != s.reused || s.prefilled >= s.prompt.len() {
            return false;
        }
        let b = self.block_tokens;
        self.active.iter().any(|t| {
            if t.group >= s.group || t.prefilled >= t.prompt.len() {
                return false;
            }
            let common = s
                .prompt
                .iter()
                .zip(t.prompt.iter())
                .take_while(|(a, b)| a == b);
            let reusable = common.count().min(t.prompt.len()).min(s.prompt.len() - 1) / b * b;
            reusable > s.reused
        })
    }

    /// Sequences that have not started their own prefill take the blocks cached since they
    /// were admitted (an earlier prompt they waited for has finished its prefill).
    fn reuse_new_prefixes(&mut self) {
        let Some(prefixes) = &mut self.prefixes else {
            return;
        };
        let model = self.shared.model.as_ref();
        let metrics = &self.shared.metrics;
        for s in &mut self.active {
            if s.prefilled != s.reused || s.prefilled >= s.prompt.len() {
                continue;
            }
            let found = prefixes.lookup(model, &s.prompt);
            let tokens = found.len() * self.block_tokens;
            if tokens <= s.reused {
                continue;
            }
            let mut cache = model.new_cache();
            cache.set_prompt_len(s.prompt.len());
            if cache.attach_prefix(&found).is_err() {
                continue;
            }
            if s.reused == 0 {
                metrics.prefix_hits.fetch_add(1, Ordering::Relaxed);
            }
            metrics
                .prefix_hit_tokens
                .fetch_add((tokens - s.reused) as u64, Ordering::Relaxed);
            if let Some(g) = self.groups.get_mut(&s.group) {
                g.cached_tokens = tokens;
            }
            s.cache = cache;
            s.prefilled = tokens;
            s.reused = tokens;
        }
    }

    /// Samples sequence `i`'s next token from `logits` and streams it; `Some` when the
    /// sequence is done.
    fn sample(&mut self, i: usize, mut logits: Vec<f32>) -> Option<FinishReason> {
        let shared = &self.shared;
        let s = &mut self.active[i];
        let group = self.groups.get_mut(&s.group)?;
        if group.cancelled() {
            return Some(FinishReason::Cancelled);
        }
        if s.guide.as_ref().is_some_and(ConstraintGuide::is_finished) {
            return Some(FinishReason::Stop);
        }
        // A guide that cannot go on (no token allowed, a grammar too ambiguous to follow)
        // ends this choice with its reason.
        let mask = match s.guide.as_mut().map(ConstraintGuide::mask).transpose() {
            Ok(mask) => mask.flatten(),
            Err(e) => {
                let _ = group.events.send(Event::Error {
                    message: e.to_string(),
                });
                return Some(FinishReason::Error);
            }
        };
        let mask = mask.map(|m| {
            if m.len() == self.mask.len() {
                m
            } else {
                self.mask.fill(0);
                let n = m.len().min(self.mask.len());
                self.mask[..n].copy_from_slice(&m[..n]);
                &self.mask[..]
            }
        });
        if mask.is_some() {
            group.masked_tokens += 1;
        }
        // The sampler before this step, for penalties that must not count a token the
        // end-valid rule replaces.
        let params = s.sampler.params();
        let penalties = params.repetition_penalty != 1.0
            || params.presence_penalty != 0.0
            || params.frequency_penalty != 0.0;
        let spare = (s.steering.is_some() && penalties).then(|| s.sampler.clone());
        let mut sampled = match s.sampler.sample(&mut logits, mask) {
            Ok(x) => x,
            Err(e) => {
                let _ = group.events.send(Event::Error {
                    message: e.to_string(),
                });
                return Some(FinishReason::Error);
            }
        };
        let mut token = sampled.token;
        let now = Instant::now();
        if group.first_token.is_none() {
            group.first_token = Some(now);
            shared
                .metrics
                .time_to_first_token
                .observe(now - group.submitted);
        }
        if let Some(last) = s.last_token_at {
            shared.metrics.time_per_token.observe(now - last);
        }
        s.last_token_at = Some(now);
        s.generated += 1;
        group.completion_tokens += 1;
        shared
            .metrics
            .completion_tokens
            .fetch_add(1, Ordering::Relaxed);

        if shared.info.eos_token_ids.contains(&token) && !s.ignore_eos {
            return Some(FinishReason::Stop);
        }
        if let Some(guide) = &mut s.guide
            && let Err(e) = guide.advance(token)
        {
            let _ = group.events.send(Event::Error {
                message: e.to_string(),
            });
            return Some(FinishReason::Error);
        }
        if let (Some(steering), Some(guide)) = (&mut s.steering, &mut s.guide) {
            let left = s.max_tokens.saturating_sub(s.generated);
            let vocab = shared.indexes.vocabulary();
            let replaced = steering
                .check(guide, token, left, &shared.tokenizer, vocab)
                .and_then(|r| match r {
                    Some(t) if !vocab.is_eos(t) => guide.advance(t).map(|()| Some(t)),
                    r => Ok(r),
                });
            match replaced {
                Ok(None) => {}
                Ok(Some(t)) => {
                    token = t;
                    if let Some(sampler) = spare {
                        s.sampler = sampler;
                    }
                    s.sampler.record(t);
                    // The only token the rule allows: probability 1 after its mask.
                    sampled.token = t;
                    if s.top_logprobs.is_some() {
                        sampled.logprob = 0.0;
                        sampled.top_logprobs = vec![(t, 0.0)];
                    }
                    if vocab.is_eos(t) {
                        return Some(FinishReason::Stop);
                    }
                }
                Err(e) => {
                    let _ = group.events.send(Event::Error {
                        message: e.to_string(),
                    });
                    return Some(FinishReason::Error);
                }
            }
        }
        let vocab = shared.indexes.vocabulary();
        let spelled = s.guide.as_ref().is_some_and(ConstraintGuide::special_text);
        let bytes: &[u8] = if vocab.is_special(token) && !spelled {
            &[]
        } else {
            vocab.token(token).unwrap_or(&[])
        };
        let logprobs = match s.top_logprobs {
            Some(_) => vec![TokenLogprob {
                token,
                bytes: bytes.to_vec(),
                logprob: sampled.logprob,
                top: sampled
                    .top_logprobs
                    .iter()
                    .map(|&(t, lp)| (t, vocab.token(t).unwrap_or(&[]).to_vec(), lp))
                    .collect(),
            }],
            None => Vec::new(),
        };
        let (text, stopped) = match s.text.push(bytes) {
            Pushed::Text(t) => (t, false),
            Pushed::Stopped(t) => (t, true),
        };
        if !text.is_empty() || !logprobs.is_empty() {
            let _ = group.events.send(Event::Delta {
                index: s.index,
                text,
                logprobs,
            });
        }
        if stopped {
            s.text = TextStream::new(&[]);
            return Some(FinishReason::Stop);
        }
        // A document completed by the budget's last token ends as a stop, not a cut.
        if s.guide.as_ref().is_some_and(ConstraintGuide::is_finished) {
            return Some(FinishReason::Stop);
        }
        if s.generated >= s.max_tokens {
            return Some(FinishReason::Length);
        }
        s.input.clear();
        s.input.push(token);
        s.has_input = true;
        if s.jump_forward && !s.steering.as_ref().is_some_and(Steering::follows_plan) {
            return jump_forward(shared, s, group, token);
        }
        None
    }

    /// Ends a sequence: flushes its held text, reports, and closes its request when it was
    /// the last choice.
    fn finish(&mut self, s: &mut Seq, reason: FinishReason) {
        let Some(group) = self.groups.get_mut(&s.group) else {
            return;
        };
        // A reply cut by its budget drops a character whose bytes were not all generated.
        let rest = s.text.finish(reason != FinishReason::Length);
        if !rest.is_empty() && reason != FinishReason::Cancelled {
            let _ = group.events.send(Event::Delta {
                index: s.index,
                text: rest,
                logprobs: Vec::new(),
            });
        }
        let metrics = &self.shared.metrics;
        let mut ended = vec![(s.index, s.generated)];
        // Choices that were never forked (cancelled or failed during prefill) end too.
        ended.extend((1..=std::mem::take(&mut s.forks)).map(|k| (k, 0)));
        for (index, completion_tokens) in ended {
            let _ = group.events.send(Event::Finished {
                index,
                reason,
                completion_tokens,
            });
            metrics.finished(reason);
            group.remaining = group.remaining.saturating_sub(1);
        }
        if group.remaining == 0 {
            let end = Instant::now();
            let first = group.first_token.unwrap_or(end);
            let _ = group.events.send(Event::Done(Usage {
                prompt_tokens: group.prompt_tokens,
                completion_tokens: group.completion_tokens,
                time_to_first_token: first - group.submitted,
                decode_time: end - first,
                masked_tokens: group.masked_tokens,
                cached_tokens: group.cached_tokens,
                forced_tokens: group.forced_tokens,
            }));
            self.reserved = self.reserved.saturating_sub(group.reserved);
            self.groups.remove(&s.group);
        }
        self.keep_prefix(s, reason);
    }

    /// Keeps the full blocks of an ended sequence for later prompts (not after an error: its
    /// cache may hold a failed pass), within the KV budget left beside the running requests.
    fn keep_prefix(&mut self, s: &Seq, reason: FinishReason) {
        let Some(prefixes) = &mut self.prefixes else {
            return;
        };
        if reason != FinishReason::Error {
            let tokens: Vec<u32> = s.prompt.iter().chain(&s.fed).copied().collect();
            let model = self.shared.model.as_ref();
            prefixes.insert(model, &s.cache, s.prompt.len(), &tokens);
        }
        let room = self
            .shared
            .config
            .kv_cache_tokens
            .saturating_sub(self.reserved);
        let held = prefixes.shrink_to(room);
        self.shared
            .metrics
            .prefix_cached_tokens
            .store(held as u64, Ordering::Relaxed);
    }
}

/// After `token` was sampled and streamed: appends the tokens the constraint forces next
/// ([`crate::jump`]) to the sequence's next input, advancing its guide and streaming their
/// text; `Some` when the sequence is done (a stop string, `max_tokens`, a complete
/// constraint).
fn jump_forward(
    shared: &Shared,
    s: &mut Seq,
    group: &mut Group,
    token: u32,
) -> Option<FinishReason> {
    let guide = s.guide.as_mut()?;
    let room = s.max_tokens.saturating_sub(s.generated);
    if room == 0 {
        return None;
    }
    let mut forced = Vec::new();
    guide.forced_bytes(MAX_FORCED_BYTES, &mut forced);
    if forced.is_empty() {
        return None;
    }
    let vocab = shared.indexes.vocabulary();
    let tokens = jump::forced_tokens(token, &forced, vocab, |text| {
        shared.tokenizer.encode(text, false).ok()
    });
    let mut text = Vec::new();
    let mut jumped = 0;
    for &t in tokens.iter().take(room) {
        if guide.advance(t).is_err() {
            // Not a token the constraint takes here (a vocabulary that cannot spell what the
            // automaton allows): the model samples from here on.
            break;
        }
        s.sampler.record(t);
        s.input.push(t);
        text.extend_from_slice(vocab.token(t).unwrap_or(&[]));
        jumped += 1;
    }
    if jumped == 0 {
        return None;
    }
    s.generated += jumped;
    group.completion_tokens += jumped;
    group.forced_tokens += jumped;
    let metrics = &shared.metrics;
    metrics
        .completion_tokens
        .fetch_add(jumped as u64, Ordering::Relaxed);
    metrics
        .jump_forward_tokens
        .fetch_add(jumped as u64, Ordering::Relaxed);
    let (delta, stopped) = match s.text.push(&text) {
        Pushed::Text(t) => (t, false),
        Pushed::Stopped(t) => (t, true),
    };
    if !delta.is_empty() {
        let _ = group.events.send(Event::Delta {
            index: s.index,
            text: delta,
            logprobs: Vec::new(),
        });
    }
    if stopped {
        s.text = TextStream::new(&[]);
        return Some(FinishReason::Stop);
    }
    if s.generated >= s.max_tokens {
        return Some(FinishReason::Length);
    }
    if s.guide.as_ref().is_some_and(ConstraintGuide::is_finished) {
        return Some(FinishReason::Stop);
    }
    None
}
