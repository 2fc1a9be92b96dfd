//! Retrieval metrics: hit@k (recall@k), mean reciprocal rank, mean and median rank
//! (open_clip `open_clip_train/metrics.py::get_clip_metrics` conventions).
//!
//! For a query with candidate scores `s` and a set of relevant candidates `R` (one in "paired"
//! mode, possibly several in "label-match" mode), candidates are ordered by descending score,
//! **ties broken by the lower index first** (a stable sort, as open_clip's `argsort`
//! usually behaves). The query's rank is the 1-based position of the first relevant candidate
//! in that order:
//!
//! ```text
//! g*   = the relevant candidate that comes first (highest score, then lowest index)
//! rank = 1 + #{ c : s_c > s_g*  or  (s_c = s_g* and c < g*) }
//! hit@k = mean_q [rank_q ≤ k]        MRR = mean_q 1/rank_q
//! mean rank = mean_q rank_q          median rank = floor(median_q rank_q)
//! ```
//! (open_clip reports `floor(median(rank₀)) + 1` with 0-based ranks, which is the same number.)
//!
//! A query without any relevant candidate has no rank; callers decide (the metrics skip it and
//! count it in [`RetrievalMetrics::unanswerable`]).
//!
//! [`candidate_pool`] draws a random candidate pool of a given size that always contains a
//! designated target (e.g. the query's own pair), reproducibly from a seed.

use anyhow::{bail, ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// 1-based rank of the first relevant candidate, or `None` when nothing is relevant.
/// `scores` and `relevant` have one entry per candidate.
pub fn first_relevant_rank(scores: &[f32], relevant: &[bool]) -> Result<Option<usize>> {
    ensure!(
        scores.len() == relevant.len(),
        "{} scores but {} relevance flags",
        scores.len(),
        relevant.len()
    );
    // the relevant candidate that sorts first
    let mut best: Option<usize> = None;
    for (i, (&s, &r)) in scores.iter().zip(relevant).enumerate() {
        if s.is_nan() {
            bail!("candidate {i} has a NaN score");
        }
        if r && best.is_none_or(|b| s > scores[b]) {
            best = Some(i);
        }
    }
    let Some(g) = best else { return Ok(None) };
    let sg = scores[g];
    let before = scores
        .iter()
        .enumerate()
        .filter(|&(c, &s)| s > sg || (s == sg && c < g))
        .count();
    Ok(Some(before + 1))
}

/// hit@k, MRR, mean / median rank over a set of queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// `(k, fraction of queries with rank ≤ k)`.
    pub hits: Vec<(usize, f64)>,
    pub mrr: f64,
    pub mean_rank: f64,
    pub median_rank: f64,
    /// Queries that had at least one relevant candidate (the ones averaged over).
    pub queries: usize,
    /// Queries without any relevant candidate (excluded).
    pub unanswerable: usize,
}

impl RetrievalMetrics {
    /// hit@k for one k (`None` if k was not asked for).
    pub fn hit(&self, k: usize) -> Option<f64> {
        self.hits.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v)
    }
}

/// Metrics from per-query ranks (`None` = unanswerable query). Errors on an empty set.
pub fn metrics_from_ranks(ranks: &[Option<usize>], ks: &[usize]) -> Result<RetrievalMetrics> {
    let mut r: Vec<usize> = ranks.iter().flatten().copied().collect();
    ensure!(!r.is_empty(), "no query has a relevant candidate");
    ensure!(r.iter().all(|&x| x >= 1), "ranks are 1-based");
    let n = r.len() as f64;
    let hits = ks
        .iter()
        .map(|&k| (k, r.iter().filter(|&&x| x <= k).count() as f64 / n))
        .collect();
    let mrr = r.iter().map(|&x| 1.0 / x as f64).sum::<f64>() / n;
    let mean_rank = r.iter().sum::<usize>() as f64 / n;
    r.sort_unstable();
    let m = r.len();
    let median = if m % 2 == 1 {
        r[m / 2] as f64
    } else {
        (r[m / 2 - 1] + r[m / 2]) as f64 / 2.0
    };
    Ok(RetrievalMetrics {
        hits,
        mrr,
        mean_rank,
        median_rank: median.floor(),
        queries: m,
        unanswerable: ranks.len() - m,
    })
}

/// Metrics of a score matrix `scores[q][c]` with a relevance predicate `relevant(q, c)`.
pub fn evaluate(
    scores: &[Vec<f32>],
    relevant: impl Fn(usize, usize) -> bool,
    ks: &[usize],
) -> Result<RetrievalMetrics> {
    let mut ranks = Vec::with_capacity(scores.len());
    for (q, row) in scores.iter().enumerate() {
        let rel: Vec<bool> = (0..row.len()).map(|c| relevant(q, c)).collect();
        ranks.push(first_relevant_rank(row, &rel)?);
    }
    metrics_from_ranks(&ranks, ks)
}

/// A random pool of `size` distinct candidate indices out of `0..n` that contains `target`,
/// sorted ascending; `size = 0` or `size ≥ n` gives all candidates. Deterministic in `seed`.
pub fn candidate_pool(n: usize, target: usize, size: usize, seed: u64) -> Result<Vec<usize>> {
    ensure!(target < n, "target {target} out of {n} candidates");
    if size == 0 || size >= n {
        return Ok((0..n).collect());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut others: Vec<usize> = (0..n).filter(|&c| c != target).collect();
    others.shuffle(&mut rng);
    let mut pool: Vec<usize> = others.into_iter().take(size - 1).collect();
    pool.push(target);
    pool.sort_unstable();
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_hand() {
        // scores 0.9 0.5 0.7 0.5; relevant = {1}: 0 and 2 score higher → rank 3
        let s = [0.9, 0.5, 0.7, 0.5];
        assert_eq!(
            first_relevant_rank(&s, &[false, true, false, false]).unwrap(),
            Some(3)
        );
        // relevant = {3}: 0, 2 higher, 1 ties with a lower index → rank 4
        assert_eq!(
            first_relevant_rank(&s, &[false, false, false, true]).unwrap(),
            Some(4)
        );
        // label-match: relevant = {1, 2} → the first is 2 (0.7) → rank 2
        assert_eq!(
            first_relevant_rank(&s, &[false, true, true, false]).unwrap(),
            Some(2)
        );
        // relevant = {1, 3}: tie, lower index 1 comes first → rank 3
        assert_eq!(
            first_relevant_rank(&s, &[false, true, false, true]).unwrap(),
            Some(3)
        );
        assert_eq!(first_relevant_rank(&s, &[false; 4]).unwrap(), None);
        assert!(first_relevant_rank(&s, &[true]).is_err());
        assert!(first_relevant_rank(&[f32::NAN], &[true]).is_err());
    }

    #[test]
    fn metrics_by_hand() {
        // ranks 1, 2, 4, 10 and one unanswerable query
        let m = metrics_from_ranks(&[Some(1), Some(2), None, Some(4), Some(10)], &[1, 3, 5, 10])
            .unwrap();
        assert_eq!(m.hits, vec![(1, 0.25), (3, 0.5), (5, 0.75), (10, 1.0)]);
        // (1 + 1/2 + 1/4 + 1/10) / 4 = 1.85 / 4
        assert!((m.mrr - 0.4625).abs() < 1e-12);
        assert!((m.mean_rank - 4.25).abs() < 1e-12);
        // median of 1 2 4 10 = 3
        assert_eq!(m.median_rank, 3.0);
        assert_eq!((m.queries, m.unanswerable), (4, 1));
        assert_eq!(m.hit(3), Some(0.5));
        assert_eq!(m.hit(2), None);
        // odd count; the median 2.5 of 2 3 is floored
        let m = metrics_from_ranks(&[Some(3), Some(1), Some(2)], &[1]).unwrap();
        assert_eq!(m.median_rank, 2.0);
        let m = metrics_from_ranks(&[Some(2), Some(3)], &[1]).unwrap();
        assert_eq!(m.median_rank, 2.0);
        assert!(metrics_from_ranks(&[None], &[1]).is_err());
    }

    #[test]
    fn evaluate_paired_and_label_match() {
        // 3 queries × 3 candidates
        let scores = vec![
            vec![0.1, 0.8, 0.3], // paired target 0 → rank 3
            vec![0.2, 0.9, 0.1], // target 1 → rank 1
            vec![0.5, 0.4, 0.3], // target 2 → rank 3
        ];
        let paired = evaluate(&scores, |q, c| q == c, &[1, 3]).unwrap();
        assert_eq!(paired.hits, vec![(1, 1.0 / 3.0), (3, 1.0)]);
        assert!((paired.mrr - (1.0 / 3.0 + 1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        // labels a, a, b: query 0 finds candidate 1 first (rank 1), query 2 still rank 3
        let labels = ['a', 'a', 'b'];
        let lm = evaluate(&scores, |q, c| labels[q] == labels[c], &[1]).unwrap();
        assert_eq!(lm.hits, vec![(1, 2.0 / 3.0)]);
        assert!((lm.mean_rank - 5.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn pools() {
        let p = candidate_pool(100, 42, 8, 7).unwrap();
        assert_eq!(p.len(), 8);
        assert!(p.contains(&42));
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p, candidate_pool(100, 42, 8, 7).unwrap());
        assert_eq!(candidate_pool(5, 1, 0, 0).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(candidate_pool(5, 1, 9, 0).unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(candidate_pool(5, 5, 2, 0).is_err());
    }
}
