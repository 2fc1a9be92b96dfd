//! The local branch on hand-derived values, and the gradient flag of the global-vs-local term.

use multinet::local::{combinations, combine, local_split};
use multinet::loss::{mnclglf_loss, LossConfig, LossInputs};
use tch::{Device, Kind, Tensor};

#[test]
fn split_is_cell_major_in_the_official_order() {
    let opts = (Kind::Float, Device::Cpu);
    // one 1-channel 4×4 image per sample, value = 100·sample + 10·row + col
    let x = Tensor::arange(2, opts).view([2, 1, 1, 1]) * 100.0
        + Tensor::arange(4, opts).view([1, 1, 4, 1]) * 10.0
        + Tensor::arange(4, opts).view([1, 1, 1, 4]);
    let cells = local_split(&x, 2).unwrap();
    assert_eq!(cells.size(), vec![8, 1, 2, 2]);
    // order: (col 0,row 0), (col 0,row 1), (col 1,row 0), (col 1,row 1); each block holds N = 2
    let top_left = |t: &Tensor| t.double_value(&[0, 0, 0]);
    let want = [0.0, 100.0, 20.0, 120.0, 2.0, 102.0, 22.0, 122.0];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(top_left(&cells.get(i as i64)), *w, "cell row {i}");
    }
    // a full cell: sample 1, (col 1, row 1) = rows 2..4, cols 2..4
    let c = Vec::<f32>::try_from(cells.get(7).flatten(0, -1)).unwrap();
    assert_eq!(c, vec![122.0, 123.0, 132.0, 133.0]);
    assert!(local_split(&Tensor::zeros([1, 1, 5, 4], opts), 2).is_err());
}

#[test]
fn pair_averages_cover_all_six_pairs() {
    assert_eq!(
        combinations(4, 2),
        vec![
            vec![0, 1],
            vec![0, 2],
            vec![0, 3],
            vec![1, 2],
            vec![1, 3],
            vec![2, 3]
        ]
    );
    assert_eq!(combinations(4, 3).len(), 4);
    // N = 2 samples, D = 1; cell c of sample s has feature 10^c + s
    let f: Vec<f32> = (0..4)
        .flat_map(|c| (0..2).map(move |s| 10f32.powi(c) + s as f32))
        .collect();
    let f = Tensor::from_slice(&f).view([8, 1]);
    let out = combine(&f, 4, 2).unwrap();
    assert_eq!(out.size(), vec![12, 1]);
    let got = Vec::<f32>::try_from(out.flatten(0, -1)).unwrap();
    let mut want = Vec::new();
    for (a, b) in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] {
        for s in 0..2 {
            want.push((10f32.powi(a) + 10f32.powi(b) + 2.0 * s as f32) / 2.0);
        }
    }
    assert_eq!(got, want);
    assert!(combine(&f, 3, 2).is_err());
}

#[test]
fn released_code_flag_removes_the_global_local_gradient() {
    let _g = contrast_core::testing::global_rng_lock();
    tch::manual_seed(5);
    let opts = (Kind::Float, Device::Cpu);
    let (n, d) = (5i64, 8i64);
    let base: Vec<Tensor> = (0..5).map(|_| Tensor::randn([n, d], opts)).collect();
    let k1 = Tensor::randn([6 * n, d], opts);
    let k2 = Tensor::randn([6 * n, d], opts);
    for released in [false, true] {
        let ps: Vec<Tensor> = base[..3]
            .iter()
            .map(|t| t.copy().set_requires_grad(true))
            .collect();
        let terms = mnclglf_loss(
            &LossConfig {
                released_code_l1: released,
                ..LossConfig::default()
            },
            &LossInputs {
                p1: &ps[0],
                p2: &ps[1],
                p3: &ps[2],
                k1: &k1,
                k2: &k2,
                j1: &base[3],
                j3: &base[4],
            },
        )
        .unwrap();
        assert!(terms.global_local.double_value(&[]) > 0.0);
        if released {
            // the term is computed (and logged) but carries no gradient
            assert!(!terms.global_local.requires_grad());
            terms.total.backward();
            // p2 appears only in L1: no gradient at all
            assert!(!ps[1].grad().defined());
        } else {
            terms.global_local.backward();
            for (i, p) in ps.iter().enumerate().take(2) {
                let g = p.grad().abs().sum(Kind::Float).double_value(&[]);
                assert!(g > 1e-4, "p{} got no gradient from L1 ({g})", i + 1);
            }
            // p3 is not in L1
            assert!(!ps[2].grad().defined());
        }
    }
}
