//! Gradient-guided sampling: boxes from synthetic heat maps (hand-derived), the flat-map rule,
//! the heat-map formula, nearest crops, and `run_backward` on the layer-4 map.

use contrast_core::loss::NtXent;
use grass::model::GrassNet;
use grass::sampling::{
    box_from_heat, boxes, crop_views, feature_gradient, gradient_guided_crops, heat_map, BoxRect,
};
use tch::{Device, Kind, Tensor};

fn cam7(cells: &[(i64, i64, f64)]) -> Tensor {
    let c = Tensor::zeros([1, 7, 7], (Kind::Float, Device::Cpu));
    for &(r, k, v) in cells {
        let _ = c.get(0).get(r).get(k).fill_(v);
    }
    c
}

/// One hot cell k of a 7×7 map up-sampled ×32 (bilinear, half-pixel centres): output pixel i
/// sits at source (i + 0.5)/32 − 0.5, so its weight is 1 − |(i + 0.5)/32 − 0.5 − k|. The peak
/// is (63/64)² and the 50 % level (63/64)²/2; a row i is inside the blob's box iff
/// w(i)·63/64 > (63/64)²/2, i.e. |i + 0.5 − 16 − 32k| < 16.25 ⇔ 32k ≤ i ≤ 32k + 31. At the border
/// (k = 0) the clamped source gives weight 1 for i < 16 and the same [0, 32).
#[test]
fn hot_cell_gives_its_32px_box() {
    for &(r, c) in &[(3i64, 3i64), (1, 5), (0, 0), (6, 2)] {
        let b = boxes(&cam7(&[(r, c, 1.0)]), 224, 0.5).unwrap()[0].unwrap();
        let (r, c) = (r as usize, c as usize);
        assert_eq!(
            b,
            BoxRect {
                r0: 32 * r,
                r1: 32 * r + 32,
                c0: 32 * c,
                c1: 32 * c + 32
            },
            "hot cell ({r}, {c})"
        );
    }
}

#[test]
fn equal_peaks_pick_the_later_component_and_higher_peak_wins() {
    // two separate blobs with the same peak: ties go to the later label (raster order)
    let b = boxes(&cam7(&[(1, 1, 1.0), (5, 5, 1.0)]), 224, 0.5).unwrap()[0].unwrap();
    assert_eq!(
        b,
        BoxRect {
            r0: 160,
            r1: 192,
            c0: 160,
            c1: 192
        }
    );
    // a higher earlier peak wins; the weaker blob is still above 50 % but loses
    let b = boxes(&cam7(&[(1, 1, 1.0), (5, 5, 0.9)]), 224, 0.5).unwrap()[0].unwrap();
    assert_eq!(
        b,
        BoxRect {
            r0: 32,
            r1: 64,
            c0: 32,
            c1: 64
        }
    );
}

#[test]
fn diagonal_neighbours_are_one_component() {
    // 8-connectivity: a diagonal pair of on-pixels is one component (bbox spans both)
    let h = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0f32];
    assert_eq!(
        box_from_heat(&h, 3, 3, 0.5),
        Some(BoxRect {
            r0: 1,
            r1: 3,
            c0: 1,
            c1: 3
        })
    );
    // 4-neighbours only would split these; with 8 they merge with the middle one
    let h = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0f32];
    assert_eq!(
        box_from_heat(&h, 3, 3, 0.5),
        Some(BoxRect {
            r0: 0,
            r1: 2,
            c0: 0,
            c1: 3
        })
    );
}

#[test]
fn flat_map_leaves_the_view_unchanged() {
    let flat = Tensor::full([2, 7, 7], 0.3, (Kind::Float, Device::Cpu));
    let bx = boxes(&flat, 32, 0.5).unwrap();
    assert_eq!(bx, vec![None, None]);
    // the normalised constant map (all 1) at the paper's 224 px
    let one = Tensor::ones([1, 7, 7], (Kind::Float, Device::Cpu));
    assert_eq!(boxes(&one, 224, 0.5).unwrap(), vec![None]);
    // a NaN map (max = 0 → 0/0) also keeps the view, as in the official code
    let nan = Tensor::full([1, 7, 7], f64::NAN, (Kind::Float, Device::Cpu));
    assert_eq!(boxes(&nan, 32, 0.5).unwrap(), vec![None]);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = crop_views(&x, &bx).unwrap();
    assert!(y.equal(&x));
}

#[test]
fn heat_map_formula_by_hand() {
    // F [1, 2, 1, 2]: channel 0 = [1, 2], channel 1 = [3, −1]; G: channel 0 = [1, 3] (mean 2),
    // channel 1 = [−2, 0] (mean −1). cam = mean_c(F·w) = ([2, 4] + [−3, 1]) / 2 = [−0.5, 2.5];
    // / max 2.5 → [−0.2, 1].
    let f = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -1.0]).view([1, 2, 1, 2]);
    let g = Tensor::from_slice(&[1.0f32, 3.0, -2.0, 0.0]).view([1, 2, 1, 2]);
    let cam = heat_map(&f, &g).unwrap();
    let v = Vec::<f32>::try_from(cam.view([-1])).unwrap();
    assert!(
        (v[0] + 0.2).abs() < 1e-6 && (v[1] - 1.0).abs() < 1e-6,
        "{v:?}"
    );
    // a negative maximum flips the sign (official behaviour): cam [−2, −1] → [2, 1]
    let g = Tensor::from_slice(&[-1.0f32, -1.0, 0.0, 0.0]).view([1, 2, 1, 2]);
    let f = Tensor::from_slice(&[4.0f32, 2.0, 0.0, 0.0]).view([1, 2, 1, 2]);
    let v = Vec::<f32>::try_from(heat_map(&f, &g).unwrap().view([-1])).unwrap();
    assert_eq!(v, vec![2.0, 1.0]);
}

#[test]
fn crop_is_nearest_resize_of_the_box() {
    // 4×4 image 0..16, box rows [1, 3) cols [2, 4) = [[6, 7], [10, 11]] → each value 2×2
    let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 4, 4]);
    let y = crop_views(
        &x,
        &[Some(BoxRect {
            r0: 1,
            r1: 3,
            c0: 2,
            c1: 4,
        })],
    )
    .unwrap();
    let v = Vec::<f32>::try_from(y.view([-1])).unwrap();
    assert_eq!(
        v,
        vec![6., 6., 7., 7., 6., 6., 7., 7., 10., 10., 11., 11., 10., 10., 11., 11.]
    );
}

/// ResNet-50 at 224 px, 2N = 4 views (with 2N = 2 NT-Xent has no negatives and a zero gradient): `run_backward` gives dL/dF of the layer-4 shape, equal to
/// the gradient autograd computes from a detached copy of F, and no parameter gets a `.grad`.
#[test]
fn run_backward_gives_layer4_gradient_and_leaves_parameters_alone() {
    let _g = contrast_core::testing::global_rng_lock();
    tch::manual_seed(3);
    let net = GrassNet::new(Device::Cpu, "resnet50", 128, true).unwrap();
    let x = Tensor::randn([4, 3, 224, 224], (Kind::Float, Device::Cpu));
    let out = net.forward(&x, false).unwrap();
    assert_eq!(out.layer4.size(), vec![4, 2048, 7, 7]);
    let loss = NtXent::new(0.5).unwrap().forward(&out.z).unwrap();
    let g = feature_gradient(&loss, &out.layer4).unwrap();
    assert_eq!(g.size(), vec![4, 2048, 7, 7]);
    for (name, p) in net.vs.variables() {
        assert!(!p.grad().defined(), "parameter {name} got a gradient");
    }
    // the same gradient through autograd on a leaf copy of F
    let f = out.layer4.detach().set_requires_grad(true);
    let pooled = f.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
    let l2 = NtXent::new(0.5)
        .unwrap()
        .forward(&net.project(&pooled, false))
        .unwrap();
    l2.backward();
    let diff = (f.grad() - &g).abs().max().double_value(&[]);
    let scale = g.abs().max().double_value(&[]);
    assert!(
        scale > 0.0 && diff <= 1e-5 * scale,
        "diff {diff} scale {scale}"
    );
    // the full step: crops have the input's shape
    let (crops, bx, cam) = gradient_guided_crops(&x, &out.layer4, &g, 0.5).unwrap();
    assert_eq!(crops.size(), x.size());
    assert_eq!(cam.size(), vec![4, 7, 7]);
    assert_eq!(bx.len(), 4);
}
