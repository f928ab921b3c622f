//! Choosing among candidate tokens without sorting the vocabulary: top-k by a bounded heap,
//! the top-p nucleus by weighted quickselect, and the weighted draw.
//!
//! Candidates are ranked by logit, highest first, and among equal logits by id, lowest
//! first. That total order makes every cut (top-k, top-p, the `top_logprobs` list)
//! deterministic when logits tie.

use std::cmp::Ordering;

/// A token still in the running, with its processed logit and its unnormalized probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    /// Where the token is in the logits being sampled: its id, or, for a sparse mask, its
    /// index among the allowed tokens (which are in id order, so ranks are unchanged).
    pub(crate) id: u32,
    /// Its logit after mask, bias and penalties (no temperature).
    pub(crate) logit: f32,
    /// `exp((logit - max) / T)`, or 0 until computed.
    pub(crate) weight: f32,
}

/// Whether `a` ranks strictly above `b`: a higher logit, or the same logit and a lower id.
#[inline]
fn ranks_above(a: &Candidate, b: &Candidate) -> bool {
    a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
}

/// The ranking as an ordering: `Less` means "ranks above" (comes first).
pub(crate) fn rank_order(a: &Candidate, b: &Candidate) -> Ordering {
    if ranks_above(a, b) {
        Ordering::Less
    } else if ranks_above(b, a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// Fills `out` with the `k` best-ranked tokens whose logit is finite (fewer if there are
/// fewer), in no particular order, with weight 0.
///
/// One pass with a min-heap of the `k` best so far: a token enters only if it beats the
/// heap's worst, which after the first few thousand tokens almost none do, so the pass costs
/// about one comparison per token. Because tokens are visited in increasing id order, a later
/// token with a logit equal to the worst's ranks below it, so "beats" is a plain `>`.
pub(crate) fn top_k(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    out.clear();
    if k == 0 {
        return;
    }
    let mut next = logits.len();
    for (id, &logit) in logits.iter().enumerate() {
        if logit > f32::NEG_INFINITY {
            out.push(Candidate {
                id: id as u32,
                logit,
                weight: 0.0,
            });
            let last = out.len() - 1;
            sift_up(out, last);
            if out.len() == k {
                next = id + 1;
                break;
            }
        }
    }
    let Some(rest) = logits.get(next..) else {
        return;
    };
    for (c, chunk) in rest.chunks(64).enumerate() {
        // Most chunks hold no token that beats the heap's worst: test the whole chunk
        // branch-free (vectorized) before looking at tokens one by one.
        let worst = out[0].logit;
        if !chunk.iter().fold(false, |hit, &l| hit | (l > worst)) {
            continue;
        }
        for (i, &logit) in chunk.iter().enumerate() {
            if logit > out[0].logit {
                out[0] = Candidate {
                    id: (next + c * 64 + i) as u32,
                    logit,
                    weight: 0.0,
                };
                sift_down(out, 0);
            }
        }
    }
}

/// Restores the heap (worst-ranked at the root) after a push at `i`.
fn sift_up(heap: &mut [Candidate], mut i: usize) {
    while i > 0 {
        let parent = (i - 1) / 2;
        if ranks_above(&heap[parent], &heap[i]) {
            heap.swap(parent, i);
            i = parent;
        } else {
            break;
        }
    }
}

/// Restores the heap (worst-ranked at the root) after the root was replaced.
fn sift_down(heap: &mut [Candidate], mut i: usize) {
    loop {
        let left = 2 * i + 1;
        let right = left + 1;
        let mut worst = i;
        if left < heap.len() && ranks_above(&heap[worst], &heap[left]) {
            worst = left;
        }
        if right < heap.len() && ranks_above(&heap[worst], &heap[right]) {
            worst = right;
        }
        if worst == i {
            return;
        }
        heap.swap(i, worst);
        i = worst;
    }
}

/// Ranges at most this long are sorted rather than partitioned further.
const SORT_BELOW: usize = 32;

/// Top-p: reorders `cands` so that its first `n` entries are the best-ranked candidates
/// whose weights first reach `target`, and returns that `n` (every candidate when their
/// weights never reach it, which only rounding can cause).
///
/// Weighted quickselect: partition the undecided range at its middle rank
/// (`select_nth_unstable_by`, linear time), sum the better half, and keep whichever half
/// holds the cut; the last few candidates are sorted. Expected linear time in
/// `cands.len()`; nothing is sorted but the final short range.
pub(crate) fn nucleus(cands: &mut [Candidate], target: f64) -> usize {
    let mut lo = 0;
    let mut hi = cands.len();
    // Weight of cands[..lo], all of which are in the nucleus.
    let mut acc = 0.0f64;
    while hi - lo > SORT_BELOW {
        let mid = lo + (hi - lo) / 2;
        cands[lo..hi].select_nth_unstable_by(mid - lo, rank_order);
        let upper: f64 = cands[lo..mid].iter().map(|c| f64::from(c.weight)).sum();
        if acc + upper >= target {
            hi = mid;
        } else {
            acc += upper;
            lo = mid;
        }
    }
    cands[lo..hi].sort_unstable_by(rank_order);
    for (i, c) in cands[lo..hi].iter().enumerate() {
        acc += f64::from(c.weight);
        if acc >= target {
            return lo + i + 1;
        }
    }
    hi
}

/// Above this many candidates, [`nucleus`] first narrows the cut down with a histogram.
const HISTOGRAM_ABOVE: usize = 4096;

/// Buckets of that histogram.
const BUCKETS: usize = 1024;

/// Top-p for any number of candidates: like [`nucleus`] (same result), but for large sets
/// (a flat distribution, whose nucleus is most of the vocabulary) it first buckets the
/// candidates by logit, linearly between the highest and the lowest, sums each bucket's
/// weight, and keeps the buckets above the one where the cut falls; only that bucket goes to
/// the quickselect. Two passes over the candidates instead of about ten branchy partition
/// passes.
pub(crate) fn nucleus_any(cands: &mut [Candidate], target: f64) -> usize {
    if cands.len() <= HISTOGRAM_ABOVE {
        return nucleus(cands, target);
    }
    let (mut hi, mut lo) = (f32::NEG_INFINITY, f32::INFINITY);
    for c in cands.iter() {
        hi = hi.max(c.logit);
        lo = lo.min(c.logit);
    }
    if hi == lo {
        // All tied (equal weights): the nucleus is the lowest ids, as many as reach the
        // target.
        let weight = f64::from(cands[0].weight);
        let n = if weight > 0.0 {
            ((target / weight).ceil() as usize).clamp(1, cands.len())
        } else {
            cands.len()
        };
        if n < cands.len() {
            cands.select_nth_unstable_by_key(n - 1, |c| c.id);
        }
        return n;
    }
    // Bucket 0 holds the highest logits. `hi - l` and the scaling are monotone, so a token
    // that ranks above another is never in a later bucket.
    let scale = (BUCKETS as f32 - 0.5) / (hi - lo);
    let bucket = move |c: &Candidate| (((hi - c.logit) * scale) as usize).min(BUCKETS - 1);
    let mut mass = [0.0f64; BUCKETS];
    for c in cands.iter() {
        mass[bucket(c)] += f64::from(c.weight);
    }
    let mut above = 0.0f64;
    let mut cut = BUCKETS - 1;
    for (b, &m) in mass.iter().enumerate() {
        if above + m >= target {
            cut = b;
            break;
        }
        above += m;
    }
    // Partition: buckets before the cut, then the cut bucket, then the rest (dropped).
    let mut inside = 0;
    for i in 0..cands.len() {
        if bucket(&cands[i]) < cut {
            cands.swap(i, inside);
            inside += 1;
        }
    }
    let mut boundary = inside;
    for i in inside..cands.len() {
        if bucket(&cands[i]) == cut {
            cands.swap(i, boundary);
            boundary += 1;
        }
    }
    inside + nucleus(&mut cands[inside..boundary], target - above)
}

/// Draws one candidate with probability proportional to its weight, given a uniform `u` in
/// `[0, 1)`. `None` only if no candidate has a positive weight.
pub(crate) fn draw(cands: &[Candidate], u: f64) -> Option<u32> {
    let total: f64 = cands.iter().map(|c| f64::from(c.weight)).sum();
    let target = u * total;
    let mut acc = 0.0f64;
    for c in cands {
        acc += f64::from(c.weight);
        if acc > target {
            return Some(c.id);
        }
    }
    // Only reached through rounding: the last token with any weight.
    cands.iter().rev().find(|c| c.weight > 0.0).map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: u32, logit: f32, weight: f32) -> Candidate {
        Candidate { id, logit, weight }
    }

    fn ids(cands: &[Candidate]) -> Vec<u32> {
        let mut ids: Vec<u32> = cands.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn top_k_keeps_the_best_and_breaks_ties_by_lowest_id() {
        let logits = [1.0, 5.0, 3.0, 5.0, f32::NEG_INFINITY, 3.0, 0.0, 3.0];
        let mut out = Vec::new();
        top_k(&logits, 3, &mut out);
        assert_eq!(ids(&out), [1, 2, 3]);
        top_k(&logits, 1, &mut out);
        assert_eq!(ids(&out), [1]);
        top_k(&logits, 100, &mut out);
        assert_eq!(ids(&out), [0, 1, 2, 3, 5, 6, 7]);
        top_k(&logits, 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut state = 1u64;
        let logits: Vec<f32> = (0..5000)
            .map(|_| (crate::rng::splitmix64(&mut state) % 200) as f32 / 10.0)
            .collect();
        let mut all: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| cand(i as u32, l, 0.0))
            .collect();
        all.sort_by(rank_order);
        let mut out = Vec::new();
        for k in [1, 2, 40, 333, 4999, 5000] {
            top_k(&logits, k, &mut out);
            assert_eq!(ids(&out), ids(&all[..k]), "k = {k}");
        }
    }

    #[test]
    fn nucleus_is_the_shortest_prefix_reaching_the_target() {
        // Weights 0.4, 0.3, 0.2, 0.1 (by rank), shuffled.
        let base = [
            cand(3, 1.0, 0.1),
            cand(0, 4.0, 0.4),
            cand(2, 2.0, 0.2),
            cand(1, 3.0, 0.3),
        ];
        for (target, want) in [
            (0.35, 1),
            (0.4, 1),
            (0.65, 2),
            (0.85, 3),
            (0.95, 4),
            (2.0, 4),
        ] {
            let mut c = base;
            let n = nucleus(&mut c, target);
            assert_eq!(n, want, "target {target}");
            let mut kept: Vec<u32> = c[..n].iter().map(|c| c.id).collect();
            kept.sort_unstable();
            assert_eq!(kept, (0..want as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn nucleus_matches_a_full_sort_on_large_inputs() {
        let mut state = 9u64;
        let cands: Vec<Candidate> = (0..3000)
            .map(|i| {
                let logit = (crate::rng::splitmix64(&mut state) % 1000) as f32 / 100.0;
                cand(i, logit, (logit - 10.0).exp())
            })
            .collect();
        let total: f64 = cands.iter().map(|c| f64::from(c.weight)).sum();
        let mut sorted = cands.clone();
        sorted.sort_by(rank_order);
        for p in [0.01, 0.3, 0.9, 0.999] {
            let target = p * total;
            let mut acc = 0.0;
            let want = sorted
                .iter()
                .position(|c| {
                    acc += f64::from(c.weight);
                    acc >= target
                })
                .map_or(sorted.len(), |i| i + 1);
            let mut c = cands.clone();
            let n = nucleus(&mut c, target);
            assert_eq!(n, want, "p = {p}");
            assert_eq!(ids(&c[..n]), ids(&sorted[..n]));
        }
    }

    #[test]
    fn nucleus_any_matches_a_full_sort_on_flat_and_tied_inputs() {
        let mut state = 11u64;
        // Flat logits with many exact ties, and one set with all logits equal.
        let flat: Vec<Candidate> = (0..20_000)
            .map(|i| {
                let logit = (crate::rng::splitmix64(&mut state) % 300) as f32 / 100.0;
                cand(i, logit, (logit - 3.0).exp())
            })
            .collect();
        let equal: Vec<Candidate> = (0..10_000).map(|i| cand(i, 1.0, 1.0)).collect();
        for cands in [flat, equal] {
            let total: f64 = cands.iter().map(|c| f64::from(c.weight)).sum();
            let mut sorted = cands.clone();
            sorted.sort_by(rank_order);
            for p in [0.001, 0.5, 0.9, 0.95, 1.0] {
                let target = p * total;
                let mut acc = 0.0;
                let want = sorted
                    .iter()
                    .position(|c| {
                        acc += f64::from(c.weight);
                        acc >= target
                    })
                    .map_or(sorted.len(), |i| i + 1);
                let mut c = cands.clone();
                let n = nucleus_any(&mut c, target);
                assert_eq!(n, want, "p = {p}");
                assert_eq!(ids(&c[..n]), ids(&sorted[..n]), "p = {p}");
            }
        }
    }

    #[test]
    fn draw_follows_the_cumulative_weights() {
        let c = [cand(7, 0.0, 1.0), cand(8, 0.0, 0.0), cand(9, 0.0, 3.0)];
        assert_eq!(draw(&c, 0.0), Some(7));
        assert_eq!(draw(&c, 0.2499), Some(7));
        assert_eq!(draw(&c, 0.25), Some(9));
        assert_eq!(draw(&c, 0.999_999), Some(9));
        assert_eq!(draw(&[cand(1, 0.0, 0.0)], 0.5), None);
    }
}
