//! Formwork's own CPU forward pass for GGUF models: the hot path without candle.
//!
//! candle's quantized CPU kernels cost the same per row however many rows a batch has, have
//! no SIMD path for Q4_1, and allocate on every small op. This backend keeps the weights in
//! their GGML bytes and runs:
//!
//! - matrix products that quantize each input once (ggml's `vec_dot_type`: Q8_1 for Q4_1,
//!   Q8_0 for Q4_0/Q8_0, Q8_K for the k-quants) and multiply each unpacked weight block into
//!   up to four rows ([`matmul`], AVX2 kernels in [`simd`], picked at run time from what the
//!   CPU has: [`isa`]), split over a thread pool of our own size;
//! - attention over an f16 key/value cache with the arithmetic of llama.cpp's CPU flash
//!   attention (f16 queries, f16 value accumulator, online softmax), as llama.cpp runs by
//!   default, so greedy runs follow llama.cpp's. Prompt rows take the same row kernel unless
//!   [`PromptAttention::LlamaCpp`] asks for llama.cpp's tiled kernel on long prompts, and
//!   for its Q4_K products in groups of four rows and its tiled Q6_K product
//!   ([`quant::QuantKernel`]);
//! - RMS norms summed in f64, rotary tables built as ggml builds them.
//!
//! A GGUF whose tensors are all in a format this backend knows ([`quant::WeightType`]) runs
//! here on the CPU; any other file, and every GPU device, runs on candle ([`crate::candle`]).
//! Each sequence's keys and values live in a [`NativeCache`] behind its [`KvCache`].

mod attention;
mod cache;
pub(crate) mod isa;
mod load;
pub(crate) mod matmul;
pub(crate) mod pool;
pub(crate) mod quant;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;

use std::ops::Range;
use std::sync::Mutex;

use crate::cache::KvCache;
use crate::config::{Architecture, RopeStyle, TransformerConfig};
use crate::transformer::{Span, stack};
use crate::{BatchItem, Model, ModelError, PromptAttention};
use cache::NativeCache;
use isa::Isa;
pub(crate) use load::load_gguf;
use matmul::RowKernels;
use matmul::{Input, QMatrix, lock, matmul, matmul_many};
use pool::Pool;
use quant::WeightType;

/// One decoder block's weights.
#[derive(Debug)]
pub(crate) struct NativeLayer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) q: QMatrix,
    pub(crate) k: QMatrix,
    pub(crate) v: QMatrix,
    pub(crate) q_bias: Option<Vec<f32>>,
    pub(crate) k_bias: Option<Vec<f32>>,
    pub(crate) v_bias: Option<Vec<f32>>,
    pub(crate) o: QMatrix,
    pub(crate) q_norm: Option<Vec<f32>>,
    pub(crate) k_norm: Option<Vec<f32>>,
    /// Gemma: the norm of the attention output before it joins the residual stream.
    pub(crate) post_attn_norm: Option<Vec<f32>>,
    pub(crate) ffn_norm: Vec<f32>,
    /// Gemma: the norm of the feed-forward output before it joins the residual stream.
    pub(crate) post_ffn_norm: Option<Vec<f32>>,
    pub(crate) gate: QMatrix,
    pub(crate) up: QMatrix,
    pub(crate) down: QMatrix,
}

/// A transformer whose weights stay in their GGML formats, run by this module's kernels.
#[derive(Debug)]
pub(crate) struct NativeModel {
    pub(crate) config: TransformerConfig,
    pub(crate) embedding: QMatrix,
    /// `None`: the output projection is the embedding (tied weights).
    pub(crate) lm_head: Option<QMatrix>,
    pub(crate) layers: Vec<NativeLayer>,
    pub(crate) norm: Vec<f32>,
    pool: Pool,
    /// Which kernel computes prompt rows.
    prompt_attention: PromptAttention,
    /// The kernels every product and attention call runs, picked when the model is built.
    isa: Isa,
    /// Whether a layer has a Q4_K matrix llama.cpp repacks ([`QMatrix::repacked`]): only
    /// then does a row's [`RowKernels::q4k_gemm`] make a difference.
    repacked_q4k: bool,
    /// Whether a layer has a Q6_K matrix: only then does a row's [`RowKernels::tiled`] make a
    /// difference.
    q6k: bool,
}

/// The thread count: `FORMWORK_THREADS`, else `CANDLE_NUM_THREADS`, else every core.
pub(crate) fn default_threads() -> usize {
    ["FORMWORK_THREADS", "CANDLE_NUM_THREADS"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool(threads: usize) -> Result<Pool, ModelError> {
    Pool::new(threads).map_err(|e| ModelError::Device {
        name: "cpu".into(),
        message: format!("cannot start {threads} threads: {e}"),
    })
}

impl NativeModel {
    /// Assembles a model; its thread pool has `threads` threads (default
    /// [`default_threads`]), and it runs the `isa` kernels.
    pub(crate) fn new(
        config: TransformerConfig,
        embedding: QMatrix,
        lm_head: Option<QMatrix>,
        layers: Vec<NativeLayer>,
        norm: Vec<f32>,
        threads: Option<usize>,
        isa: Isa,
    ) -> Result<NativeModel, ModelError> {
        let any = |f: fn(&QMatrix) -> bool| {
            layers.iter().any(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .any(|m| f(m))
            })
        };
        let repacked_q4k = any(QMatrix::repacked);
        let q6k = any(|m| m.ty == WeightType::Q6K);
        Ok(NativeModel {
            config,
            embedding,
            lm_head,
            layers,
            norm,
            pool: pool(threads.unwrap_or_else(default_threads))?,
            prompt_attention: PromptAttention::default(),
            isa,
            repacked_q4k,
            q6k,
        })
    }

    /// The same model with prompt rows computed as `prompt_attention` says.
    pub(crate) fn with_prompt_attention(mut self, prompt_attention: PromptAttention) -> Self {
        self.prompt_attention = prompt_attention;
        self
    }

    /// Whether llama.cpp's server cuts this model's prompts for context checkpoints
    /// ([`prompt_ubatch`]): it does for a model with a sliding window, whose cache cannot be
    /// rolled back.
    fn checkpoints(&self) -> bool {
        self.config.sliding_window.is_some()
    }

    /// Whether row `pos` of a sequence runs the tiled kernel: only under
    /// [`PromptAttention::LlamaCpp`], for rows of a prompt of `prompt_len` tokens (when the
    /// cache knows it) in a ubatch of 64 or more, else for rows of a call of 64 or more.
    fn tiled_row(&self, prompt_len: Option<usize>, call_rows: usize, pos: usize) -> bool {
        self.prompt_attention == PromptAttention::LlamaCpp
            && match prompt_len {
                Some(p) => tiled_prompt_row(p, pos, self.checkpoints()),
                None => call_rows >= attention::TILE,
            }
    }

    /// How llama.cpp holds row `pos` of a sequence (row `i` of the `call_rows` this call
    /// computes for it), for its products' kernels: one row at a time unless
    /// [`PromptAttention::LlamaCpp`] asks for llama.cpp's choice (and the model has a matrix
    /// it concerns). Then a repacked Q4_K matrix takes the gemm for the rows of a prompt of
    /// `prompt_len` tokens (when the cache knows it) in its ubatches' whole groups of four,
    /// else for those of this call; and a Q6_K matrix the tiled product for the rows in a
    /// ubatch (else this call) of 8 rows or more.
    fn row_kernels(
        &self,
        prompt_len: Option<usize>,
        call_rows: usize,
        pos: usize,
        i: usize,
    ) -> RowKernels {
        if self.prompt_attention != PromptAttention::LlamaCpp {
            return RowKernels::default();
        }
        let checkpoints = self.checkpoints();
        RowKernels {
            q4k_gemm: self.repacked_q4k
                && match prompt_len {
                    Some(p) => gemm_prompt_row(p, pos, checkpoints),
                    None => i < call_rows - call_rows % 4,
                },
            tiled: self.q6k
                && match prompt_len {
                    Some(p) => {
                        pos < p && prompt_ubatch(p, pos, checkpoints).len() >= KQUANT_TILED_ROWS
                    }
                    None => call_rows >= KQUANT_TILED_ROWS,
                },
        }
    }

    /// Threads a forward pass uses.
    pub(crate) fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The kernels every product and attention call runs.
    pub(crate) fn kernels(&self) -> crate::CpuKernels {
        self.isa.kernels()
    }

    /// Bytes of weights held.
    pub(crate) fn weight_bytes(&self) -> usize {
        let mut n = self.embedding.bytes() + self.lm_head.as_ref().map_or(0, QMatrix::bytes);
        for l in &self.layers {
            n += [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                .iter()
                .map(|m| m.bytes())
                .sum::<usize>();
        }
        n
    }
}

impl Model for NativeModel {
    fn config(&self) -> &TransformerConfig {
        &self.config
    }

    fn new_cache(&self) -> KvCache {
        let cfg = &self.config;
        KvCache::new(
            cfg,
            NativeCache::new(cfg.layers, cfg.kv_heads * cfg.head_dim),
        )
    }

    fn kernel_class(&self, prompt_len: usize, position: usize) -> u8 {
        let tiled = self.tiled_row(Some(prompt_len), 0, position);
        let k = self.row_kernels(Some(prompt_len), 0, position, 0);
        u8::from(tiled) | (u8::from(k.q4k_gemm) << 1) | (u8::from(k.tiled) << 2)
    }

    /// The batch was checked by [`crate::Transformer::forward`].
    fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let cfg = &self.config;
        let hidden = cfg.hidden_size;
        let (heads, kv_heads, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let (ids, spans) = stack(batch);
        // A sequence's first call is its whole prompt unless its cache says otherwise.
        let prompt_lens: Vec<Option<usize>> = batch
            .iter()
            .zip(&spans)
            .map(|(i, s)| i.cache.prompt_len().or((s.start == 0).then_some(s.len)))
            .collect();
        let mut caches = batch
            .iter_mut()
            .map(|item| item.cache.buffers_mut::<NativeCache>(cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = ids.len();
        let mut x = vec![0f32; rows * hidden];
        for (t, &id) in ids.iter().enumerate() {
            self.embedding
                .dequantize_row(id as usize, &mut x[t * hidden..(t + 1) * hidden]);
        }
        if cfg.architecture == Architecture::Gemma3 {
            // llama.cpp: `ggml_scale(inpL, sqrtf(n_embd))`.
            let scale = (hidden as f32).sqrt();
            for v in &mut x {
                *v *= scale;
            }
        }
        // Rotary tables for every row's position, shared by all layers of a kind.
        let positions: Vec<usize> = spans
            .iter()
            .flat_map(|s| s.start..s.start + s.len)
            .collect();
        let rope = RopeTable::new(cfg.rope_theta, cfg.rope_freq_scale, hd, &positions);
        let local_rope = cfg
            .sliding_window
            .as_ref()
            .map(|w| RopeTable::new(w.rope_theta, 1.0, hd, &positions));
        let eps = cfg.rms_norm_eps as f32;
        let q_width = heads * hd;
        let kv_width = kv_heads * hd;
        // How llama.cpp holds each row, in every layer's products but the last layer's
        // feed-forward, which (as in llama.cpp) runs only for the rows whose logits are
        // wanted, one row per sequence.
        let kernels: Vec<RowKernels> = spans
            .iter()
            .zip(&prompt_lens)
            .flat_map(|(s, &p)| (0..s.len).map(move |i| (s, p, i)))
            .map(|(s, p, i)| self.row_kernels(p, s.len, s.start + i, i))
            .collect();
        let last_rows: Vec<usize> = spans.iter().map(|s| s.offset + s.len - 1).collect();

        for (li, layer) in self.layers.iter().enumerate() {
            let window = cfg
                .sliding_window
                .as_ref()
                .filter(|w| w.is_local(li))
                .map(|w| w.window);
            let rope = match (&local_rope, window) {
                (Some(local), Some(_)) => local,
                _ => &rope,
            };
            let h = rms_norm_rows(&x, hidden, &layer.attn_norm, eps);
            let mut input = Input::new(&h, rows, hidden).with_kernels(&kernels);
            let mut qkv = matmul_many(
                &self.pool,
                self.isa,
                &[&layer.q, &layer.k, &layer.v],
                &mut input,
            )
            .into_iter();
            let (mut q, mut k, mut v) = (
                qkv.next().expect("q"),
                qkv.next().expect("k"),
                qkv.next().expect("v"),
            );
            add_bias(&mut q, layer.q_bias.as_deref());
            add_bias(&mut k, layer.k_bias.as_deref());
            add_bias(&mut v, layer.v_bias.as_deref());
            if let Some(w) = &layer.q_norm {
                q = rms_norm_rows(&q, hd, w, eps);
            }
            if let Some(w) = &layer.k_norm {
                k = rms_norm_rows(&k, hd, w, eps);
            }
            self.isa.run(
                #[inline(always)]
                || {
                    rope.apply(&mut q, heads, hd, cfg.rope_style);
                    rope.apply(&mut k, kv_heads, hd, cfg.rope_style);
                },
            );
            if let Some(s) = cfg.query_scale {
                let s = s as f32;
                for v in &mut q {
                    *v *= s;
                }
            }
            for (cache, span) in caches.iter_mut().zip(&spans) {
                let r = span.offset..span.offset + span.len;
                cache.append(
                    li,
                    span.start,
                    &k[r.start * kv_width..r.end * kv_width],
                    &v[r.start * kv_width..r.end * kv_width],
                );
            }
            let attn = self.attention(&caches, &prompt_lens, &spans, li, window, &q);
            debug_assert_eq!(attn.len(), rows * q_width);
            let mut o = matmul(
                &self.pool,
                self.isa,
                &layer.o,
                &mut Input::new(&attn, rows, q_width).with_kernels(&kernels),
            );
            // After the last layer's attention only the rows whose logits are wanted go on
            // (llama.cpp's `inp_out_ids`), each alone: the gemv kernel.
            let ffn_kernels: &[RowKernels] = if li + 1 == self.layers.len() {
                o = gather_rows(&o, &last_rows, hidden);
                x = gather_rows(&x, &last_rows, hidden);
                &[]
            } else {
                &kernels
            };
            let ffn_rows = x.len() / hidden;
            if let Some(w) = &layer.post_attn_norm {
                o = rms_norm_rows(&o, hidden, w, eps);
            }
            add_into(&mut x, &o);
            let h = rms_norm_rows(&x, hidden, &layer.ffn_norm, eps);
            let mut input = Input::new(&h, ffn_rows, hidden).with_kernels(ffn_kernels);
            let mut gu = matmul_many(&self.pool, self.isa, &[&layer.gate, &layer.up], &mut input)
                .into_iter();
            let (mut g, u) = (gu.next().expect("gate"), gu.next().expect("up"));
            let gemma = cfg.architecture == Architecture::Gemma3;
            self.isa.run(
                #[inline(always)]
                || {
                    if gemma {
                        for (g, u) in g.iter_mut().zip(&u) {
                            *g = quant::geglu(*g, *u);
                        }
                    } else {
                        for (g, u) in g.iter_mut().zip(&u) {
                            *g = quant::silu(*g) * u;
                        }
                    }
                },
            );
            let mut d = matmul(
                &self.pool,
                self.isa,
                &layer.down,
                &mut Input::new(&g, ffn_rows, cfg.intermediate_size).with_kernels(ffn_kernels),
            );
            if let Some(w) = &layer.post_ffn_norm {
                d = rms_norm_rows(&d, hidden, w, eps);
            }
            add_into(&mut x, &d);
        }
        drop(caches);
        if self.layers.is_empty() {
            x = gather_rows(&x, &last_rows, hidden);
        }
        // `x` holds each sequence's last row now.
        let last = rms_norm_rows(&x, hidden, &self.norm, eps);
        let head = self.lm_head.as_ref().unwrap_or(&self.embedding);
        let mut logits = matmul(
            &self.pool,
            self.isa,
            head,
            &mut Input::new(&last, spans.len(), hidden),
        );
        if let Some(cap) = cfg.final_logit_softcapping {
            // llama.cpp: scale by 1/cap, tanh, scale by cap.
            let (cap, inv) = (cap as f32, 1.0 / cap as f32);
            for l in &mut logits {
                *l = (*l * inv).tanh() * cap;
            }
        }
        for (item, span) in batch.iter_mut().zip(&spans) {
            item.cache.commit(span.len);
        }
        Ok(logits
            .chunks_exact(cfg.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }
}

impl NativeModel {
    /// Causal attention of every item's new rows over its cache, one task per (item, head).
    fn attention(
        &self,
        caches: &[&mut NativeCache],
        prompt_lens: &[Option<usize>],
        spans: &[Span],
        layer: usize,
        window: Option<usize>,
        q: &[f32],
    ) -> Vec<f32> {
        let cfg = &self.config;
        let (heads, kv_heads, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let group = heads / kv_heads;
        let q_width = heads * hd;
        // Scores are scaled by 1/sqrt(head_dim) unless the queries were scaled already.
        let scale = if cfg.query_scale.is_some() {
            1.0
        } else {
            1.0 / (hd as f32).sqrt()
        };
        // llama.cpp computes a ubatch of 64 or more query rows with its tiled kernel (f32
        // throughout) and smaller ones row by row with an f16 accumulator. Which kernel a row
        // gets is decided per sequence, from its prompt length when the cache knows it
        // (`KvCache::set_prompt_len`: the prompt's ubatches of 512 as llama.cpp cuts them),
        // else from this call's rows; never from the rest of the batch.
        // One task per item and pair of query heads that share a key/value head: the row
        // kernel converts each key and value once for both.
        let tasks: Vec<(usize, usize, usize)> = (0..spans.len())
            .flat_map(|b| {
                (0..heads).step_by(2).flat_map(move |h| {
                    if h + 1 < heads && h / group == (h + 1) / group {
                        vec![(b, h, 2)]
                    } else {
                        (h..(h + 2).min(heads)).map(|h| (b, h, 1)).collect()
                    }
                })
            })
            .collect();
        let results: Vec<Mutex<Vec<Vec<f32>>>> =
            tasks.iter().map(|_| Mutex::new(Vec::new())).collect();
        self.pool.run(tasks.len(), &|ti| {
            let (b, h0, count) = tasks[ti];
            let span = &spans[b];
            let kv = caches[b].layer(layer);
            let tiled_at = |pos: usize| self.tiled_row(prompt_lens[b], span.len, pos);
            let mut outs: Vec<Vec<f32>> = (0..count)
                .map(|_| Vec::with_capacity(span.len * hd))
                .collect();
            let mut i = 0;
            while i < span.len {
                // A run of rows that use the same kernel.
                let tiled = tiled_at(span.start + i);
                let mut j = i + 1;
                while j < span.len && tiled_at(span.start + j) == tiled {
                    j += 1;
                }
                let jobs: Vec<attention::Head<'_>> = (h0..h0 + count)
                    .map(|h| attention::Head {
                        kv,
                        stride: kv_heads * hd,
                        offset: (h / group) * hd,
                        dim: hd,
                        scale,
                        window,
                        start: span.start + i,
                        queries: (i..j)
                            .map(|r| {
                                let row = span.offset + r;
                                &q[row * q_width + h * hd..row * q_width + (h + 1) * hd]
                            })
                            .collect(),
                    })
                    .collect();
                let pair = match &jobs[..] {
                    [a, b] if !tiled => a.rows_pair(b, self.isa),
                    _ => None,
                };
                if let Some(pair) = pair {
                    for (out, rows) in outs.iter_mut().zip(pair) {
                        out.extend(rows);
                    }
                } else {
                    for (out, job) in outs.iter_mut().zip(&jobs) {
                        out.extend(if tiled {
                            job.tiled(self.isa)
                        } else {
                            job.rows(self.isa)
                        });
                    }
                }
                i = j;
            }
            *lock(&results[ti]) = outs;
        });
        let rows: usize = spans.iter().map(|s| s.len).sum();
        let mut attn = vec![0f32; rows * q_width];
        for (&(b, h0, _), outs) in tasks.iter().zip(results) {
            let outs = outs.into_inner().unwrap_or_else(|e| e.into_inner());
            let span = &spans[b];
            for (h, out) in (h0..).zip(outs) {
                for i in 0..span.len {
                    let row = span.offset + i;
                    attn[row * q_width + h * hd..row * q_width + (h + 1) * hd]
                        .copy_from_slice(&out[i * hd..(i + 1) * hd]);
                }
            }
        }
        attn
    }
}

/// Rows `rows` of `x` (rows of `width` values), in that order.
fn gather_rows(x: &[f32], rows: &[usize], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&x[r * width..(r + 1) * width]);
    }
    out
}

fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// ggml's RMS norm (the sum of squares in f64) followed by the multiplication by `w`.
fn rms_norm_rows(x: &[f32], width: usize, w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / width as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
            *o = (v * scale) * w;
        }
    }
    out
}

/// cos/sin of every (row, dimension pair), built as ggml's rope cache is: the angle starts
/// at the position and is multiplied by `base^(-2/d)` from one pair to the next.
struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table for base frequency `theta` and linear scaling `freq_scale` (ggml's
    /// `rope_yarn` without extrapolation: the angle times `freq_scale`).
    fn new(theta: f64, freq_scale: f64, head_dim: usize, positions: &[usize]) -> RopeTable {
        let half = head_dim / 2;
        let theta_scale = (theta as f32).powf(-2.0 / head_dim as f32);
        let freq_scale = freq_scale as f32;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let mut theta = p as f32;
            for _ in 0..half {
                let angle = freq_scale * theta;
                cos.push(angle.cos());
                sin.push(angle.sin());
                theta *= theta_scale;
            }
        }
        RopeTable { half, cos, sin }
    }

    /// Rotates every head of every row of `x` (`rows x heads*head_dim`). Inlined into each
    /// instruction set's code ([`Isa::run`]).
    #[inline(always)]
    fn apply(&self, x: &mut [f32], heads: usize, hd: usize, style: RopeStyle) {
        let half = self.half;
        for (r, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let (cos, sin) = (
                &self.cos[r * half..(r + 1) * half],
                &self.sin[r * half..(r + 1) * half],
            );
            for head in row.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    let (c, s) = (cos[i], sin[i]);
                    // `x0*c - x1*s` and `x0*s + x1*c` with the first product fused, as GCC
                    // contracts ggml's C (which llama.cpp's builds are compiled with).
                    head[a] = x0.mul_add(c, -(x1 * s));
                    head[b] = x0.mul_add(s, x1 * c);
                }
            }
        }
    }
}

/// llama.cpp's default ubatch (`n_ubatch`): `llama_decode` computes a batch in pieces of
/// this many tokens.
const UBATCH: usize = 512;

/// llama.cpp's default batch (`n_batch`): its server hands a prompt to `llama_decode` in
/// batches of at most this many tokens.
const BATCH: usize = 2048;

/// How many tokens before a prompt's end llama.cpp's server ends a batch, so that it can
/// save a context checkpoint there, for a model whose cache cannot be rolled back (a sliding
/// window): `4 + n_ubatch` and 4 (`checkpoint_offsets` in `tools/server/server-context.cpp`).
const CHECKPOINT_OFFSETS: [usize; 2] = [4 + UBATCH, 4];

/// The ubatch llama.cpp's server computes row `pos` (`< prompt_len`) of a prompt of
/// `prompt_len` tokens in: it cuts the prompt into batches of [`BATCH`] tokens, and (when
/// `checkpoints`) ends a batch at each of [`CHECKPOINT_OFFSETS`] before the prompt's end;
/// `llama_decode` cuts each batch into ubatches of [`UBATCH`]. So a 6-token prompt of Gemma 3
/// is computed as 2 rows, then 4.
fn prompt_ubatch(prompt_len: usize, pos: usize, checkpoints: bool) -> Range<usize> {
    let mut start = 0;
    loop {
        let mut end = (start + BATCH).min(prompt_len);
        if checkpoints {
            for off in CHECKPOINT_OFFSETS {
                if let Some(cut) = prompt_len.checked_sub(off).filter(|&c| c > start) {
                    end = end.min(cut);
                }
            }
        }
        if pos < end || end >= prompt_len {
            let first = start + (pos - start) / UBATCH * UBATCH;
            return first..(first + UBATCH).min(end);
        }
        start = end;
    }
}

/// The fewest rows of a call for which llama.cpp multiplies a K-quant matrix it does not
/// repack with its tiled product (`ggml_tiled_min_batch` in `ggml-cpu/tiled/tiled.cpp`).
const KQUANT_TILED_ROWS: usize = 8;

/// Whether row `pos` of a sequence whose prompt is `prompt_len` tokens runs the tiled
/// attention kernel: a prompt row in a ubatch of at least [`attention::TILE`] rows
/// ([`prompt_ubatch`]); never a generated row.
fn tiled_prompt_row(prompt_len: usize, pos: usize, checkpoints: bool) -> bool {
    pos < prompt_len && prompt_ubatch(prompt_len, pos, checkpoints).len() >= attention::TILE
}

/// Whether llama.cpp multiplies row `pos` of a prompt of `prompt_len` tokens into its repacked
/// Q4_K matrices with the gemm kernel: a ubatch's rows ([`prompt_ubatch`]) go four at a time,
/// its last `rows % 4` one at a time. Never a generated row.
fn gemm_prompt_row(prompt_len: usize, pos: usize, checkpoints: bool) -> bool {
    pos < prompt_len && {
        let u = prompt_ubatch(prompt_len, pos, checkpoints);
        pos < u.end - u.len() % 4
    }
}

#[cfg(test)]
mod tests;
