//! Attention of one head over an f16 key/value cache, with the arithmetic of llama.cpp's CPU
//! flash attention (`ggml_compute_forward_flash_attn_ext_f16`): its row-by-row kernel for
//! small batches and its tiled kernel for 64 query rows or more.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::cache::LayerView;
use super::isa::Isa;
use super::quant::{dot_f32_ggml, hsum8, v_expf};

/// Query rows and key positions per tile of the tiled kernel.
pub(crate) const TILE: usize = 64;

/// One head's share of an attention call.
#[derive(Clone)]
pub(crate) struct Head<'a> {
    /// The sequence's keys and values of this layer, `[position][kv_head][dim]`.
    pub(crate) kv: LayerView<'a>,
    /// Values per position (`kv_heads * dim`).
    pub(crate) stride: usize,
    /// Where this head's key/value head starts within a position.
    pub(crate) offset: usize,
    /// Head width.
    pub(crate) dim: usize,
    /// The factor of every score (`1 / sqrt(dim)`, or 1 where the queries were scaled).
    pub(crate) scale: f32,
    /// A local layer's window: query row at position `p` sees only positions
    /// `p + 1 - window..=p` (llama.cpp's standard sliding-window mask).
    pub(crate) window: Option<usize>,
    /// Position of the first query row.
    pub(crate) start: usize,
    /// The query rows; row `i` sees positions `0..=start + i`.
    pub(crate) queries: Vec<&'a [f32]>,
}

impl Head<'_> {
    fn key(&self, p: usize) -> &[f16] {
        &self.kv.key(p)[self.offset..self.offset + self.dim]
    }

    fn value(&self, p: usize) -> &[f16] {
        &self.kv.value(p)[self.offset..self.offset + self.dim]
    }

    /// The first position the query row at `pos` sees.
    fn first(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    /// The row-by-row kernel: queries rounded to f16, scores from f16 operands, an online
    /// softmax with libm's `exp`, the weighted sum of values kept in f16 (rounded after every
    /// update). Returns `rows x dim`. The AVX2 kernel (`simd::flash_rows`) runs each
    /// row where `isa` has it and the head width suits it; it gives the same bits as the
    /// portable code ([`Head::rows_portable`]).
    pub(crate) fn rows(&self, isa: Isa) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = self.row_kernel(isa) {
            let [out] = Head::rows_with([self], avx2);
            return out;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = isa;
        self.rows_portable()
    }

    /// [`Head::rows`] of this head and `other`, a query head of the same key/value head over
    /// the same positions (`kv`, `offset`, `start`, `window`, rows): each head's rows are the
    /// bits [`Head::rows`] gives it, with each key and value converted once for both. `None`
    /// where the AVX2 kernel does not apply (then each head's [`Head::rows`]).
    pub(crate) fn rows_pair(&self, other: &Head<'_>, isa: Isa) -> Option<[Vec<f32>; 2]> {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = self.row_kernel(isa) {
            return Some(Head::rows_with([self, other], avx2));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (other, isa);
        None
    }

    /// The AVX2 row kernel, where `isa` has it and the head width suits it.
    #[cfg(target_arch = "x86_64")]
    fn row_kernel(&self, isa: Isa) -> Option<super::simd::Avx2> {
        isa.avx2().filter(|_| {
            self.dim.is_multiple_of(32) && (32..=super::simd::FLASH_MAX_DIM).contains(&self.dim)
        })
    }

    /// The AVX2 row kernel over `G` heads that read the same keys and values (the first
    /// head's `kv`, `offset`, `start` and `window`): each head's rows, as [`each_row`] walks
    /// them for one head.
    ///
    /// [`each_row`]: Head::each_row
    #[cfg(target_arch = "x86_64")]
    fn rows_with<const G: usize>(heads: [&Head<'_>; G], avx2: super::simd::Avx2) -> [Vec<f32>; G] {
        let h = heads[0];
        assert!(
            heads.iter().all(|o| {
                (o.offset, o.stride, o.dim, o.start, o.window)
                    == (h.offset, h.stride, h.dim, h.start, h.window)
                    && o.scale.to_bits() == h.scale.to_bits()
                    && o.queries.len() == h.queries.len()
            }),
            "heads over the same keys and values"
        );
        let hd = h.dim;
        let rows = h.queries.len();
        let mut outs: [Vec<f32>; G] = core::array::from_fn(|_| vec![0f32; rows * hd]);
        let mut qs: [Vec<f32>; G] = core::array::from_fn(|_| vec![0f32; hd]);
        let mut q16 = vec![f16::ZERO; hd];
        for i in 0..rows {
            for (q, head) in qs.iter_mut().zip(heads) {
                q16.convert_from_f32_slice(head.queries[i]);
                q16.convert_to_f32_slice(q);
            }
            let pos = h.start + i;
            let runs = h.kv.runs(h.first(pos), pos + 1);
            let queries = qs.each_ref().map(Vec::as_slice);
            let out = outs.each_mut().map(|o| &mut o[i * hd..(i + 1) * hd]);
            super::simd::flash_rows::<G>(avx2, queries, runs, h.stride, h.offset, h.scale, out);
        }
        outs
    }

    /// [`Head::rows`] in portable code only.
    pub(crate) fn rows_portable(&self) -> Vec<f32> {
        let hd = self.dim;
        let scale = self.scale;
        let mut k = vec![0f32; hd];
        let mut v = vec![0f32; hd];
        let mut acc = vec![0f32; hd];
        let mut acc16 = vec![f16::ZERO; hd];
        self.each_row(|q, from, n, out| {
            let mut m = f32::NEG_INFINITY;
            let mut sum = 0f32;
            acc.fill(0.0);
            // Masked positions are skipped, as llama.cpp skips a -inf mask entry.
            for p in from..n {
                self.key(p).convert_to_f32_slice(&mut k);
                let s = dot_f32_ggml(&k, q) * scale;
                let mut ms = 1f32;
                let mut vs = 1f32;
                if s > m {
                    let old = m;
                    m = s;
                    ms = (old - m).exp();
                    for a in acc.iter_mut() {
                        *a *= ms;
                    }
                    round_f16(&mut acc, &mut acc16);
                } else {
                    vs = (s - m).exp();
                }
                self.value(p).convert_to_f32_slice(&mut v);
                for (a, &x) in acc.iter_mut().zip(&v) {
                    *a = x.mul_add(vs, *a);
                }
                round_f16(&mut acc, &mut acc16);
                // Not fused: llama.cpp's build computes this product and sum in two roundings.
                sum = sum * ms + vs;
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = a * inv;
            }
        })
    }

    /// Runs `row(q, from, n, out)` for every query row: `q` the row rounded to f16,
    /// `from..n` the positions it sees, `out` its `dim` outputs. Returns `rows x dim`.
    fn each_row(&self, mut row: impl FnMut(&[f32], usize, usize, &mut [f32])) -> Vec<f32> {
        let hd = self.dim;
        let mut out = vec![0f32; self.queries.len() * hd];
        let mut q16 = vec![f16::ZERO; hd];
        let mut q = vec![0f32; hd];
        for (i, (query, out)) in self
            .queries
            .iter()
            .zip(out.chunks_exact_mut(hd))
            .enumerate()
        {
            q16.convert_from_f32_slice(query);
            q16.convert_to_f32_slice(&mut q);
            let pos = self.start + i;
            row(&q, self.first(pos), pos + 1, out);
        }
        out
    }

    /// The tiled kernel: f32 queries, each score one `fma` chain over the head, keys in tiles
    /// of 64 positions with an online softmax per tile (ggml's vectorized `exp`, sums of each
    /// 8 in f32 added in f64), values accumulated in f32. Tiles go outermost so a tile's keys
    /// are converted and transposed once for every query row. A row none of whose positions
    /// in a tile it may see skips that tile, as llama.cpp skips a tile row masked throughout.
    /// Returns `rows x dim`. The portable code, compiled for AVX2, FMA and F16C when `isa`
    /// has them (the same bits).
    pub(crate) fn tiled(&self, isa: Isa) -> Vec<f32> {
        isa.run(
            #[inline(always)]
            || self.tiled_portable(),
        )
    }

    /// [`Head::tiled`]'s code, inlined into each of its instruction sets.
    #[inline(always)]
    fn tiled_portable(&self) -> Vec<f32> {
        let hd = self.dim;
        let scale = self.scale;
        let rows = self.queries.len();
        let end = self.start + rows;
        let mut m = vec![f32::NEG_INFINITY; rows];
        let mut sum = vec![0f32; rows];
        let mut acc = vec![0f32; rows * hd];
        // Keys transposed, `[dim][TILE]`; values `[TILE][dim]`.
        let mut kt = vec![0f32; hd * TILE];
        let mut vt = vec![0f32; TILE * hd];
        let mut row16 = vec![0f32; hd];
        let mut p = [0f32; TILE];
        // Tiles start at multiples of TILE, as llama.cpp's cover the cache from its start; the
        // ones before every row's window are masked throughout and skipped.
        let mut t0 = self.first(self.start) / TILE * TILE;
        while t0 < end {
            let in_tile = (end - t0).min(TILE);
            for kk in 0..in_tile {
                self.key(t0 + kk).convert_to_f32_slice(&mut row16);
                for (d, &x) in row16.iter().enumerate() {
                    kt[d * TILE + kk] = x;
                }
                self.value(t0 + kk)
                    .convert_to_f32_slice(&mut vt[kk * hd..(kk + 1) * hd]);
            }
            for i in 0..rows {
                let n = self.start + i + 1;
                let from = self.first(n - 1);
                if n <= t0 || from >= t0 + TILE {
                    continue;
                }
                let valid = (n - t0).min(TILE);
                let masked = from.saturating_sub(t0);
                let q = self.queries[i];
                let mut a = [0f32; TILE];
                for (d, &qd) in q.iter().enumerate() {
                    let col = &kt[d * TILE..(d + 1) * TILE];
                    for (a, &k) in a.iter_mut().zip(col) {
                        *a = k.mul_add(qd, *a);
                    }
                }
                for (kk, slot) in p.iter_mut().enumerate() {
                    *slot = if masked <= kk && kk < valid {
                        a[kk] * scale
                    } else {
                        f32::NEG_INFINITY
                    };
                }
                let tile_max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let acc = &mut acc[i * hd..(i + 1) * hd];
                let m_new = m[i].max(tile_max);
                if m_new > m[i] {
                    let ms = (m[i] - m_new).exp();
                    for a in acc.iter_mut() {
                        *a *= ms;
                    }
                    sum[i] *= ms;
                }
                let mut tile_sum = 0f64;
                for chunk in p.chunks_exact_mut(8) {
                    let mut e = [0f32; 8];
                    for (e, x) in e.iter_mut().zip(chunk.iter_mut()) {
                        *e = v_expf(*x - m_new);
                        *x = *e;
                    }
                    tile_sum += hsum8(&e) as f64;
                }
                sum[i] = (sum[i] as f64 + tile_sum) as f32;
                m[i] = m_new;
                for (kk, &w) in p.iter().enumerate().take(valid).skip(masked) {
                    for (a, &v) in acc.iter_mut().zip(&vt[kk * hd..(kk + 1) * hd]) {
                        *a = v.mul_add(w, *a);
                    }
                }
            }
            t0 += TILE;
        }
        for (i, acc) in acc.chunks_exact_mut(hd).enumerate() {
            let inv = 1.0 / sum[i];
            for a in acc.iter_mut() {
                *a *= inv;
            }
        }
        acc
    }
}

/// Rounds every value to the nearest f16.
fn round_f16(x: &mut [f32], scratch: &mut [f16]) {
    scratch.convert_from_f32_slice(x);
    scratch.convert_to_f32_slice(x);
}
