//! Matrix products of GGML-format weights with rows of activations, split over threads.
//!
//! The activations are quantized once per input (ggml's `vec_dot_type` of the weight
//! format) and shared by every matrix that reads the same input (q/k/v, gate/up). Threads
//! take chunks of weight rows; within a chunk each weight row is multiplied into up to eight
//! activation rows at a time ([`TILE`]), so a batch reads each weight block once per eight
//! rows. Each task writes its weight rows' outputs in place, one run per activation row.
//!
//! A row's result does not depend on the other rows, with one exception asked for by name:
//! an [`Input`] may say, row by row, how llama.cpp's call holds the row ([`RowKernels`]),
//! which picks the kernel ([`QuantKernel`]) of the matrices llama.cpp repacks
//! ([`QMatrix::repacked`]) and of its Q6_K matrices.

use std::collections::HashMap;
use std::sync::Mutex;

use super::isa::Isa;
use super::pool::Pool;

use super::quant::{ActKind, Acts, QuantKernel, WeightType, dequantize_row, dot_scalar};

/// A weight matrix in its file format: `rows` outputs, each a row of `cols` inputs.
#[derive(Debug, Clone)]
pub(crate) struct QMatrix {
    pub(crate) ty: WeightType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<u8>,
}

impl QMatrix {
    /// Wraps raw GGML bytes; `None` when the size does not match the shape.
    pub(crate) fn new(ty: WeightType, rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        (cols.is_multiple_of(ty.block_len()) && data.len() == rows * ty.row_bytes(cols)).then_some(
            QMatrix {
                ty,
                rows,
                cols,
                data,
            },
        )
    }

    fn row(&self, r: usize) -> &[u8] {
        let n = self.ty.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` decoded to f32 (an embedding lookup).
    pub(crate) fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), out);
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether llama.cpp's x86 build keeps this matrix repacked (Q4_K, output rows a multiple
    /// of 8: `ggml_repack_get_optimal_repack_type`), so that its products follow the
    /// [`QuantKernel`] of each row.
    pub(crate) fn repacked(&self) -> bool {
        self.ty == WeightType::Q4K && self.rows.is_multiple_of(8)
    }
}

/// Activations prepared once per kind for the matrices that read one input.
pub(crate) struct Input<'a> {
    x: &'a [f32],
    rows: usize,
    cols: usize,
    prepared: HashMap<ActKind, Acts>,
    /// How llama.cpp holds each row; empty: [`QuantKernel::Gemv`] for every row and matrix.
    kernels: &'a [RowKernels],
}

/// How llama.cpp's call holds one activation row, which decides the kernel of its products
/// with some formats ([`Input::with_kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RowKernels {
    /// The row is in a whole group of four of its call: [`QuantKernel::Gemm`] for a repacked
    /// Q4_K matrix.
    pub(crate) q4k_gemm: bool,
    /// The call has 8 rows or more: [`QuantKernel::Tiled`] for a Q6_K matrix.
    pub(crate) tiled: bool,
}

impl<'a> Input<'a> {
    /// `rows` rows of `cols` values.
    pub(crate) fn new(x: &'a [f32], rows: usize, cols: usize) -> Input<'a> {
        debug_assert_eq!(x.len(), rows * cols);
        Input {
            x,
            rows,
            cols,
            prepared: HashMap::new(),
            kernels: &[],
        }
    }

    /// The same rows, row `j` held by llama.cpp's call as `kernels[j]` says (`kernels` empty
    /// or one per row).
    pub(crate) fn with_kernels(mut self, kernels: &'a [RowKernels]) -> Input<'a> {
        assert!(kernels.is_empty() || kernels.len() == self.rows);
        self.kernels = kernels;
        self
    }

    /// Row `j`'s kernel for matrix `m`.
    fn kernel(&self, m: &QMatrix, j: usize) -> QuantKernel {
        let k = self.kernels.get(j).copied().unwrap_or_default();
        if m.repacked() {
            if k.q4k_gemm {
                QuantKernel::Gemm
            } else {
                QuantKernel::Gemv
            }
        } else if m.ty == WeightType::Q6K && k.tiled {
            QuantKernel::Tiled
        } else {
            QuantKernel::Gemv
        }
    }

    fn prepare(&mut self, pool: &Pool, isa: Isa, kind: ActKind) {
        if !self.prepared.contains_key(&kind) {
            let acts = quantize_rows(pool, isa, kind, self.x, self.rows, self.cols);
            self.prepared.insert(kind, acts);
        }
    }
}

/// Quantizes rows in parallel when there are many; the scales are packed once, after the
/// parts are joined. The code is compiled for `isa`'s instruction set.
fn quantize_rows(
    pool: &Pool,
    isa: Isa,
    kind: ActKind,
    x: &[f32],
    rows: usize,
    cols: usize,
) -> Acts {
    if rows < 16 || pool.threads() == 1 {
        return isa.run(
            #[inline(always)]
            || Acts::new(kind, x, rows, cols),
        );
    }
    let per = rows.div_ceil(pool.threads());
    let chunks: Vec<&[f32]> = x.chunks(per * cols).collect();
    let parts: Vec<Mutex<Option<Acts>>> = chunks.iter().map(|_| Mutex::new(None)).collect();
    pool.run(chunks.len(), &|i| {
        let c = chunks[i];
        let acts = isa.run(
            #[inline(always)]
            || Acts::unpacked(kind, c, c.len() / cols, cols),
        );
        *lock(&parts[i]) = Some(acts);
    });
    let parts = parts.into_iter().map(|p| {
        p.into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .expect("every part was quantized")
    });
    let mut all = Acts::unpacked(kind, &[], 0, cols);
    for p in parts {
        all.rows += p.rows;
        all.qs.extend_from_slice(&p.qs);
        all.d.extend_from_slice(&p.d);
        all.s.extend_from_slice(&p.s);
        all.bsums.extend_from_slice(&p.bsums);
        all.f.extend_from_slice(&p.f);
    }
    all.pack4();
    all
}

/// How many activation rows one weight row is multiplied into at a time (two tiles of the
/// packed scales; a multiple of 4).
const TILE: usize = 8;

/// Weight rows multiplied into one tile of activation rows before the next tile.
const ROW_BLOCK: usize = 16;

/// `out[m][t * rows_m + r] = mats[m].row(r) . x[t]` for every matrix `m`, all in one parallel
/// region, with the `isa` kernels. Every matrix must have `input.cols` columns.
pub(crate) fn matmul_many(
    pool: &Pool,
    isa: Isa,
    mats: &[&QMatrix],
    input: &mut Input<'_>,
) -> Vec<Vec<f32>> {
    for m in mats {
        assert_eq!(m.cols, input.cols, "matrix columns against input width");
        input.prepare(pool, isa, m.ty.act_kind());
    }
    let t = input.rows;
    let threads = pool.threads();
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows * t]).collect();
    let total_rows: usize = mats.iter().map(|m| m.rows).sum();
    // Threads take chunks of weight rows; a chunk's outputs are a column range of every
    // activation row's output, so each task writes its cells of the shared outputs.
    let chunk_rows = (total_rows / (threads * 8)).clamp(4, 512);
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (mi, m) in mats.iter().enumerate() {
        for r0 in (0..m.rows).step_by(chunk_rows) {
            tasks.push((mi, r0, chunk_rows.min(m.rows - r0)));
        }
    }
    let cells: Vec<Cells<'_>> = outs.iter_mut().map(|o| Cells::new(o)).collect();
    let input = &*input;
    let run = |(mi, r0, count): (usize, usize, usize)| {
        let m = mats[mi];
        let acts = &input.prepared[&m.ty.act_kind()];
        // Blocks of weight rows small enough to stay in L1 while every tile of activation
        // rows passes over them. The chunk's results (`[row][t]`) then go to their cells, each
        // activation row's as one run of `count` values.
        let mut chunk = vec![0f32; count * t];
        for first in (r0..r0 + count).step_by(ROW_BLOCK) {
            let rows = ROW_BLOCK.min(r0 + count - first);
            let block = &mut chunk[(first - r0) * t..(first - r0 + rows) * t];
            let mut j = 0;
            while j < t {
                // A tile ends where the rows' kernel changes (only Q4_K and Q6_K tiles may
                // start off a multiple of 4).
                let kernel = input.kernel(m, j);
                let n = (1..(t - j).min(TILE))
                    .find(|&c| input.kernel(m, j + c) != kernel)
                    .unwrap_or((t - j).min(TILE));
                dot_block(isa, m, first, acts, j, n, kernel, block, t);
                j += n;
            }
        }
        if t == 1 {
            // One activation row (a decode step): the chunk is that row's run already.
            // SAFETY: these cells (rows `r0..r0 + count`) are this task's alone: each weight
            // row belongs to one task.
            #[allow(unsafe_code)]
            unsafe {
                cells[mi].write(r0, &chunk)
            };
            return;
        }
        let mut line = vec![0f32; count];
        for j in 0..t {
            for (i, v) in line.iter_mut().enumerate() {
                *v = chunk[i * t + j];
            }
            // SAFETY: as above, for activation row `j`.
            #[allow(unsafe_code)]
            unsafe {
                cells[mi].write(j * m.rows + r0, &line)
            };
        }
    };
    if threads == 1 || tasks.len() == 1 {
        tasks.into_iter().for_each(run);
    } else {
        pool.run(tasks.len(), &|i| run(tasks[i]));
    }
    drop(cells);
    outs
}

/// An output buffer that the tasks of one parallel region write into, each its own cells.
struct Cells<'a> {
    ptr: *mut f32,
    len: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `Cells` hands out no references, and `write`'s callers promise that no two threads
// write the same cells (see `write`), so sharing it between the region's threads is sound.
#[allow(unsafe_code)]
unsafe impl Sync for Cells<'_> {}

impl<'a> Cells<'a> {
    fn new(out: &'a mut [f32]) -> Cells<'a> {
        Cells {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _out: std::marker::PhantomData,
        }
    }

    /// `out[at..at + values.len()] = values` (panics when out of range).
    ///
    /// # Safety
    ///
    /// No other thread writes these cells while `self` lives (in [`matmul_many`] a cell
    /// belongs to one weight row, and each weight row to one task; the outputs are read only
    /// after the region).
    #[allow(unsafe_code)]
    unsafe fn write(&self, at: usize, values: &[f32]) {
        assert!(at + values.len() <= self.len, "cells out of range");
        // SAFETY: in bounds (checked above); the buffer outlives `self` (`'a`), and no other
        // thread touches these cells (the caller's promise).
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(at), values.len());
        }
    }
}

/// One matrix: `out[t * rows + r]`.
pub(crate) fn matmul(pool: &Pool, isa: Isa, m: &QMatrix, input: &mut Input<'_>) -> Vec<f32> {
    matmul_many(pool, isa, &[m], input)
        .pop()
        .expect("one output")
}

/// Locks a task slot; a poisoned lock (a panicked task) still hands its value over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `block[i * t + j0 + c] = m.row(first + i) . acts[j0 + c]` for the block's rows (at most
/// [`ROW_BLOCK`]) and `c < n` (at most [`TILE`]), Q4_K and Q6_K rows with `kernel`'s float steps: the
/// `isa` kernel of the format where it has one (one call for the whole block, so a build that
/// does not target its features pays the call once per block, not once per row), else the
/// portable code.
#[allow(clippy::too_many_arguments)]
fn dot_block(
    isa: Isa,
    m: &QMatrix,
    first: usize,
    acts: &Acts,
    j0: usize,
    n: usize,
    kernel: QuantKernel,
    block: &mut [f32],
    t: usize,
) {
    debug_assert_eq!(acts.kind, m.ty.act_kind());
    let count = block.len() / t;
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = isa.avx2()
        && super::simd::supports(m.ty)
    {
        let mut rows: [&[u8]; ROW_BLOCK] = [&[]; ROW_BLOCK];
        for (i, row) in rows.iter_mut().take(count).enumerate() {
            *row = m.row(first + i);
        }
        let tiles = super::simd::Tiles {
            ty: m.ty,
            rows: &rows[..count],
            acts,
            r0: j0,
            kernel,
            stride: t,
        };
        super::simd::dot_tiles(avx2, tiles, n, &mut block[j0..]);
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    for (i, out_row) in block.chunks_mut(t).enumerate() {
        dot_row(
            m.ty,
            m.row(first + i),
            acts,
            j0,
            kernel,
            &mut out_row[j0..j0 + n],
        );
    }
}

/// `out[c] = row . acts[j0 + c]` for `c < out.len()` in portable code, Q4_K and Q6_K rows
/// with `kernel`'s float steps.
fn dot_row(
    ty: WeightType,
    row: &[u8],
    acts: &Acts,
    j0: usize,
    kernel: QuantKernel,
    out: &mut [f32],
) {
    match ty {
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => {
            let len = acts.len;
            let mut w = vec![0f32; len];
            dequantize_row(ty, row, &mut w);
            for (c, o) in out.iter_mut().enumerate() {
                let j = j0 + c;
                *o = super::quant::dot_f32_ggml(&w, &acts.f[j * len..(j + 1) * len]);
            }
        }
        _ => {
            for (c, o) in out.iter_mut().enumerate() {
                *o = dot_scalar(ty, row, acts, j0 + c, kernel);
            }
        }
    }
}
