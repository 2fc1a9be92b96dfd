//! Pair selection on a constructed embedding set: exact expected pairs for the threshold, top-k
//! and mutual rules (and their combinations), independent of the block size; the pair file
//! round-trips with its settings.

use spps::config::SamplerConfig;
use spps::sampler::{select_pairs, Pair, PairSet};
use tch::Tensor;

/// Five unit vectors at angles 0°, 10°, 30°, 100°, 180° (2-D): cosine similarities are
/// cos(Δangle), all distinct except by symmetry:
///
/// ```text
///        0      1      2      3      4
/// 0      –    .985   .866  -.174  -1
/// 1    .985    –     .940  -.000  -.985
/// 2    .866   .940    –     .643  -.866
/// 3   -.174  -.000   .643    –     .174
/// 4   -1     -.985  -.866   .174    –
/// ```
/// (rows scaled by different norms: the sampler must normalise).
fn embeddings() -> Tensor {
    let deg = [0.0f64, 10.0, 30.0, 100.0, 180.0];
    let scale = [1.0f64, 2.0, 0.5, 3.0, 1.5];
    let v: Vec<f32> = deg
        .iter()
        .zip(scale)
        .flat_map(|(d, s)| {
            let r = d.to_radians();
            [(s * r.cos()) as f32, (s * r.sin()) as f32]
        })
        .collect();
    Tensor::from_slice(&v).view([5, 2])
}

fn ij(p: &[Pair]) -> Vec<(usize, usize)> {
    p.iter().map(|p| (p.i, p.j)).collect()
}

fn cfg(top_k: usize, threshold: Option<f64>, mutual: bool, block: usize) -> SamplerConfig {
    SamplerConfig {
        embedding: "backbone".into(),
        threshold,
        top_k,
        mutual,
        block_size: block,
    }
}

#[test]
fn top_k_threshold_and_mutual_pick_exactly_the_expected_pairs() {
    let e = embeddings();
    for block in [1, 2, 5, 64] {
        // top-1: each image's nearest other image
        let p = select_pairs(&e, &cfg(1, None, false, block)).unwrap();
        assert_eq!(
            ij(&p),
            vec![(0, 1), (1, 0), (2, 1), (3, 2), (4, 3)],
            "block {block}"
        );
        let want_sim = (10f64.to_radians()).cos() as f32;
        assert!((p[0].sim - want_sim).abs() < 1e-6);
        // top-2, in order of decreasing similarity
        let p = select_pairs(&e, &cfg(2, None, false, block)).unwrap();
        assert_eq!(
            ij(&p),
            vec![
                (0, 1),
                (0, 2),
                (1, 0),
                (1, 2),
                (2, 1),
                (2, 0),
                (3, 2),
                (3, 4),
                (4, 3),
                (4, 2)
            ]
        );
        // threshold only (cos ≥ 0.9: angles ≤ 25.8°)
        let p = select_pairs(&e, &cfg(0, Some(0.9), false, block)).unwrap();
        assert_eq!(ij(&p), vec![(0, 1), (1, 0), (1, 2), (2, 1)]);
        // threshold 0.3 (≤ 72.5°): 0-1, 0-2, 1-2, 2-3 (80° and 90° are out)
        let p = select_pairs(&e, &cfg(0, Some(0.3), false, block)).unwrap();
        assert_eq!(
            ij(&p),
            vec![
                (0, 1),
                (0, 2),
                (1, 0),
                (1, 2),
                (2, 1),
                (2, 0),
                (2, 3),
                (3, 2)
            ]
        );
        // top-1 with a threshold: 3 → 2 (0.342) and 4 → 3 (0.174) drop out at 0.7
        let p = select_pairs(&e, &cfg(1, Some(0.7), false, block)).unwrap();
        assert_eq!(ij(&p), vec![(0, 1), (1, 0), (2, 1)]);
        // mutual top-1: only 0 ↔ 1 are each other's nearest
        let p = select_pairs(&e, &cfg(1, None, true, block)).unwrap();
        assert_eq!(ij(&p), vec![(0, 1), (1, 0)]);
        // mutual top-2: 0-1, 0-2, 1-2, 2-1 … and 3 ↔ 4 (3's 2nd is 4, 4's 1st is 3); 3 → 2 is
        // not mutual (2's top-2 are 1 and 0)
        let p = select_pairs(&e, &cfg(2, None, true, block)).unwrap();
        assert_eq!(
            ij(&p),
            vec![
                (0, 1),
                (0, 2),
                (1, 0),
                (1, 2),
                (2, 1),
                (2, 0),
                (3, 4),
                (4, 3)
            ]
        );
    }
    // nothing selected without a rule
    assert!(select_pairs(&e, &cfg(0, None, false, 4)).is_err());
}

#[test]
fn pair_file_round_trips_with_settings_and_precision() {
    let e = embeddings();
    let settings = cfg(1, None, false, 2);
    let pairs = select_pairs(&e, &settings).unwrap();
    // labels: {0, 1, 2} one class, {3, 4} another → 0→1, 1→0, 2→1, 4→3 agree; 3→2 does not
    let labels = [0i64, 0, 0, 1, 1];
    let precision = PairSet::label_precision(&pairs, &labels);
    assert_eq!(precision, Some(0.8));
    let set = PairSet {
        n: 5,
        dim: 2,
        source: "constructed".into(),
        settings: settings.clone(),
        pairs,
        precision,
    };
    assert_eq!(set.pairs_per_image(), 1.0);
    assert_eq!(set.partners()[3], vec![(2, set.pairs[3].sim)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.json");
    set.save(&path).unwrap();
    assert_eq!(PairSet::load(&path).unwrap(), set);
}
