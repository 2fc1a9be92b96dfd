//! Our own restatement (no official code covers these forms): the losses against our PyTorch
//! statements of their formulas (tests/py/info_nce.py, losses.py), on the same random inputs.
//! NT-Xent and the hard CLIP loss are compared with official code instead
//! (crates/spps/tests/official_simclr.rs, crates/grass/tests/official_sampling.rs,
//! crates/claires/tests/official_clip.rs).

use contrast_core::loss::info_nce;
use contrast_core::testing::{assert_close, get, run_reference};
use tch::{Kind, Tensor};

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

#[test]
fn info_nce_matches_pytorch_value_and_gradients() {
    tch::manual_seed(1);
    let q = Tensor::randn([32, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let k = Tensor::randn([32, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let loss = info_nce(&q, &k, 0.2);
    loss.backward();
    let Some(out) =
        run_reference(script("info_nce.py"), &[("q", &q), ("k", &k)], &["0.2"]).unwrap()
    else {
        return;
    };
    assert_close(&loss, get(&out, "loss"), 1e-5, 1e-5, "info_nce loss");
    assert_close(&q.grad(), get(&out, "grad_q"), 1e-6, 1e-4, "info_nce dL/dq");
    assert_close(&k.grad(), get(&out, "grad_k"), 1e-6, 1e-4, "info_nce dL/dk");
}

use contrast_core::loss::{ClipLoss, InfoNce, MultiPositiveInfoNce, NtXent, SoftClipLoss};

/// A fresh leaf copy of `t` that records gradients.
fn leaf(t: &Tensor) -> Tensor {
    t.detach().copy().set_requires_grad(true)
}

/// Backpropagate `loss`; keep its value and the gradients of `leaves` under `<tag>.…`.
fn record(got: &mut Vec<(String, Tensor)>, tag: &str, loss: Tensor, leaves: &[(&str, &Tensor)]) {
    loss.backward();
    got.push((format!("{tag}.loss"), loss.detach()));
    for (n, t) in leaves {
        got.push((format!("{tag}.grad_{n}"), t.grad()));
    }
}

fn scalar(x: f64) -> Tensor {
    Tensor::from(x)
}

/// The losses of `contrast_core::loss` that no official code covers, value and gradients,
/// against our restatement `tests/py/losses.py` (one Python run for all cases).
#[test]
fn losses_match_pytorch_values_and_gradients() {
    tch::manual_seed(7);
    let opts = (Kind::Float, tch::Device::Cpu);
    let q = Tensor::randn([32, 16], opts);
    let k = Tensor::randn([48, 16], opts); // 16 extra keys: negatives only
    let soft = (Tensor::randn([32, 48], opts) * 2.0).softmax(1, Kind::Float);
    let feat = Tensor::randn([24, 16], opts);
    // labels 0..4, and sample 5 alone in its class (an anchor without positives)
    let labels = Tensor::randint(4, [24], (Kind::Int64, tch::Device::Cpu));
    let _ = labels.get(5).fill_(99);
    // weighted positives with two empty rows
    let w = Tensor::rand([32, 48], opts) * Tensor::rand([32, 48], opts).gt(0.8);
    let _ = w.get(3).zero_();
    let _ = w.get(17).zero_();
    let img = Tensor::randn([16, 16], opts);
    let txt = Tensor::randn([16, 16], opts);
    let clip_targets = (Tensor::randn([16, 16], opts) * 3.0).softmax(1, Kind::Float);
    let pimg = Tensor::randn([16, 8], opts) * 0.5;
    let ptxt = Tensor::randn([16, 8], opts) * 0.5;
    let (tau, tau_mp, ls2) = (0.2, 0.1, 3.1);

    let mut got: Vec<(String, Tensor)> = Vec::new();
    let info = InfoNce::new(tau).unwrap();
    let (lq, lk) = (leaf(&q), leaf(&k));
    let loss = info.forward(&lq, &lk).unwrap();
    record(&mut got, "info_hard", loss, &[("q", &lq), ("k", &lk)]);
    let (lq, lk) = (leaf(&q), leaf(&k));
    let loss = info.forward_soft(&lq, &lk, &soft).unwrap();
    record(&mut got, "info_soft", loss, &[("q", &lq), ("k", &lk)]);
    let mp = MultiPositiveInfoNce::new(tau_mp).unwrap();
    let lf = leaf(&feat);
    let loss = mp.forward_labels(&lf, &labels).unwrap();
    record(&mut got, "supcon", loss, &[("f", &lf)]);
    let (lq, lk) = (leaf(&q), leaf(&k));
    let loss = mp.forward_qk(&lq, &lk, &w).unwrap();
    record(&mut got, "mp_qk", loss, &[("q", &lq), ("k", &lk)]);
    {
        // soft targets: our extension of open_clip's loss (the hard form is compared with
        // open_clip itself in crates/claires/tests/official_clip.rs)
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let mut clip = ClipLoss::new(&vs.root(), 0.07).unwrap();
        tch::no_grad(|| {
            let _ = clip.logit_scale.fill_(ls2);
        });
        let (li, lt) = (leaf(&img), leaf(&txt));
        let loss = clip.forward_soft(&li, &lt, &clip_targets).unwrap();
        record(&mut got, "clip_soft", loss, &[("img", &li), ("txt", &lt)]);
        got.push((
            "clip_soft.grad_scale".into(),
            clip.logit_scale.grad().reshape([1]),
        ));
        clip.clamp(); // within range: unchanged
    }
    for (tag, t) in [("tut1", 1.0), ("tut05", 0.5)] {
        let (li, lt) = (leaf(&pimg), leaf(&ptxt));
        let loss = SoftClipLoss::new(t).unwrap().forward(&li, &lt).unwrap();
        record(&mut got, tag, loss, &[("img", &li), ("txt", &lt)]);
    }

    let inputs: Vec<(&str, Tensor)> = vec![
        ("q", q),
        ("k", k),
        ("soft", soft),
        ("feat", feat),
        ("labels", labels),
        ("w", w),
        ("img", img),
        ("txt", txt),
        ("clip_targets", clip_targets),
        ("pimg", pimg),
        ("ptxt", ptxt),
        ("tau", scalar(tau)),
        ("tau_mp", scalar(tau_mp)),
        ("logit_scale2", scalar(ls2)),
    ];
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
    let Some(out) = run_reference(script("losses.py"), &refs, &[]).unwrap() else {
        return;
    };
    assert_eq!(
        out.len(),
        got.len(),
        "reference and Rust produce different outputs"
    );
    for (name, value) in &got {
        let r = get(&out, name);
        let (atol, rtol) = if name.ends_with(".loss") {
            (1e-5, 1e-5)
        } else {
            (1e-6, 1e-4)
        };
        assert_close(value, r, atol, rtol, name);
        // the references are not trivially zero
        assert!(
            r.abs().sum(Kind::Double).double_value(&[]) > 0.0,
            "{name} is all zero"
        );
    }
}

#[test]
fn loss_arguments_are_validated() {
    let opts = (Kind::Float, tch::Device::Cpu);
    for t in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let e = InfoNce::new(t).unwrap_err().to_string();
        assert!(e.contains("Illegal temperature"), "{e}");
        assert!(NtXent::new(t).is_err());
        assert!(MultiPositiveInfoNce::new(t).is_err());
        assert!(SoftClipLoss::new(t).is_err());
    }
    let info = InfoNce::new(0.2).unwrap();
    let q = Tensor::randn([4, 8], opts);
    let e = info
        .forward(&q, &Tensor::randn([4, 6], opts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 8") && e.contains("has 6"), "{e}");
    let e = info
        .forward(&q, &Tensor::randn([3, 8], opts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 queries, 3 keys"), "{e}");
    // targets whose rows do not sum to 1
    let bad = Tensor::full([4, 4], 0.3, opts);
    let e = info.forward_soft(&q, &q, &bad).unwrap_err().to_string();
    assert!(e.contains("not row-stochastic"), "{e}");
    let e = info
        .forward_soft(&q, &q, &Tensor::full([4, 5], 0.2, opts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[4, 5]") && e.contains("[4, 4]"), "{e}");
    let ok = Tensor::full([4, 4], 0.25, opts);
    let l = info.forward_soft(&q, &q, &ok).unwrap().double_value(&[]);
    assert!(l.is_finite());
    // NT-Xent: odd rows
    let e = NtXent::new(0.5)
        .unwrap()
        .forward(&Tensor::randn([5, 8], opts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("even number"), "{e}");
    // multi-positive: mask shape; no positive at all gives 0
    let mp = MultiPositiveInfoNce::new(0.1).unwrap();
    assert!(mp.forward(&q, &Tensor::ones([4, 3], opts)).is_err());
    let none = Tensor::zeros([4, 4], (Kind::Bool, tch::Device::Cpu));
    assert_eq!(mp.forward(&q, &none).unwrap().double_value(&[]), 0.0);
    // CLIP: unequal batch; logit scale init and clamp to ln 100
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut clip = ClipLoss::new(&vs.root(), 0.07).unwrap();
    assert!((clip.logit_scale.double_value(&[]) - (1.0f64 / 0.07).ln()).abs() < 1e-6);
    assert!((clip.scale() - 1.0 / 0.07).abs() < 1e-4);
    assert!(clip.forward(&q, &Tensor::randn([3, 8], opts)).is_err());
    tch::no_grad(|| {
        let _ = clip.logit_scale.fill_(7.0);
    });
    clip.clamp();
    assert!((clip.logit_scale.double_value(&[]) - 100f64.ln()).abs() < 1e-6);
    tch::no_grad(|| {
        let _ = clip.logit_scale.fill_(-1.0);
    });
    clip.clamp();
    assert_eq!(clip.logit_scale.double_value(&[]), 0.0);
    assert_eq!(vs.variables().len(), 1, "one variable named logit_scale");
    assert!(vs.variables().contains_key("logit_scale"));
}

/// NT-Xent on a hand-computed 2N = 4 example (grass-claires.md §1.10 test 1): unit vectors
/// e1, e2, e1, −e2 with τ = 1. Sample 0 = (e1, e1), sample 1 = (e2, −e2).
#[test]
fn nt_xent_hand_computed_layout() {
    let z = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 0., 0., -1.]).view([4, 2]);
    let l = NtXent::new(1.0)
        .unwrap()
        .forward(&z)
        .unwrap()
        .double_value(&[]);
    let e = std::f64::consts::E;
    // anchor 0: positive row 2 (s = 1), negatives rows 1, 3 (s = 0) → −log(e/(e+2))
    let a0 = -(e / (e + 2.0)).ln();
    // anchor 1: positive row 3 (s = −1), negatives rows 0, 2 (s = 0) → −log(e⁻¹/(e⁻¹+2))
    let a1 = -((1.0 / e) / (1.0 / e + 2.0)).ln();
    // anchors 2, 3 mirror 0, 1
    let want = (2.0 * a0 + 2.0 * a1) / 4.0;
    assert!((l - want).abs() < 1e-6, "{l} vs {want}");
}
