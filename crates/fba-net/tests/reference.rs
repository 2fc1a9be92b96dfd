//! FBA-Net's objective and network against a PyTorch reference (`tests/py/fba_reference.py`,
//! one script call): the loss terms and their gradients on random inputs, the consistency
//! ramp-up, and the three-decoder network loaded by state-dict name (eval and train mode).

use contrast_core::nn::count_parameters;
use contrast_core::tensors::named_variables;
use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use fba_net::config::FbaNetConfig;
use fba_net::loss::{consistency_weight, fba_loss, sim_max, sim_min, DecoderOutputs, LossWeights};
use fba_net::method::build_model;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[test]
fn loss_terms_gradients_and_network_match_pytorch() {
    let _g = global_rng_lock();
    tch::manual_seed(3);
    let (n, l, s) = (4i64, 2i64, [6i64, 5, 4]);
    let lambda = 0.5;
    let cons_w = 0.7;
    let temp = 0.1;
    let mut named: Vec<(String, Tensor)> = vec![];
    let mut logits = vec![];
    let mut fgs = vec![];
    let mut bgs = vec![];
    for d in 0..3 {
        let o = Tensor::randn([n, 2, s[0], s[1], s[2]], (Kind::Float, Device::Cpu)) * 2.0;
        // post-ReLU embeddings, as the heads produce
        let f = (Tensor::randn([n, 8], (Kind::Float, Device::Cpu)) + 0.3).relu();
        let b = (Tensor::randn([n, 8], (Kind::Float, Device::Cpu)) + 0.3).relu();
        named.push((format!("o{d}"), o.shallow_clone()));
        named.push((format!("f{d}"), f.shallow_clone()));
        named.push((format!("b{d}"), b.shallow_clone()));
        logits.push(o.set_requires_grad(true));
        fgs.push(f.set_requires_grad(true));
        bgs.push(b.set_requires_grad(true));
    }
    let y = Tensor::randint(2, [l, s[0], s[1], s[2]], (Kind::Int64, Device::Cpu));
    named.push(("y".into(), y.shallow_clone()));

    // The network: FBA-Net+ at a tiny size (width 4, 16×16×16 input, dim 8).
    let mut cfg = FbaNetConfig::default();
    cfg.model.n_filters = 4;
    cfg.model.dim = 8;
    cfg.data.patch = [16, 16, 16];
    let net = build_model(&cfg, Device::Cpu, false).unwrap();
    // Non-trivial BN running statistics so that eval mode checks them by name.
    tch::no_grad(|| {
        for (name, mut t) in net.vs.variables() {
            if name.ends_with("running_mean") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            } else if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5));
            }
        }
    });
    let x = Tensor::randn([2, 1, 16, 16, 16], (Kind::Float, Device::Cpu));
    named.push(("x".into(), x.shallow_clone()));
    for (k, v) in named_variables(&net.vs) {
        named.push((format!("w:{k}"), v));
    }
    let inputs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/fba_reference.py");
    let args = [
        lambda.to_string(),
        cons_w.to_string(),
        temp.to_string(),
        "4".into(),
        "8".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(out) = run_reference(&script, &inputs, &args).unwrap() else {
        return;
    };

    let dec: Vec<DecoderOutputs> = (0..3)
        .map(|d| DecoderOutputs {
            logits: &logits[d],
            fg: Some(&fgs[d]),
            bg: Some(&bgs[d]),
        })
        .collect();
    let w = LossWeights {
        lambda_seg: lambda,
        ce: 0.0,
        dice: fba_net::loss::DiceForm::FbaNet,
        consistency: cons_w,
        contrast: 1.0,
        temperature: temp,
        alpha_max: 0.25,
        alpha_min: 2.5,
    };
    let terms = fba_loss(&dec, &y, &w).unwrap();
    let ours = Tensor::from_slice(&terms.values().iter().map(|v| v.1).collect::<Vec<_>>());
    assert_close(
        &ours,
        get(&out, "terms"),
        1e-5,
        1e-5,
        "total / dice / consistency / contrast",
    );
    let sm = sim_max(&fgs[0].detach(), 0.25)
        .to_kind(Kind::Double)
        .reshape([1]);
    assert_close(&sm, get(&out, "sim_max_f0"), 1e-6, 1e-6, "SimMax");
    let sn = sim_min(&fgs[0].detach(), &bgs[0].detach(), 2.5)
        .to_kind(Kind::Double)
        .reshape([1]);
    assert_close(&sn, get(&out, "sim_min_f0b0"), 1e-6, 1e-6, "SimMin");
    terms.total.backward();
    for d in 0..3 {
        assert_close(
            &logits[d].grad(),
            get(&out, &format!("go{d}")),
            1e-6,
            1e-4,
            "d/d logits",
        );
        assert_close(
            &fgs[d].grad(),
            get(&out, &format!("gf{d}")),
            1e-6,
            1e-4,
            "d/d fg",
        );
        assert_close(
            &bgs[d].grad(),
            get(&out, &format!("gb{d}")),
            1e-6,
            1e-4,
            "d/d bg",
        );
    }
    let ramp: Vec<f64> = [1u64, 149, 150, 3000, 5999, 6000, 15000]
        .iter()
        .map(|&i| consistency_weight(i, 150, 40.0, 1.0))
        .collect();
    assert_close(
        &Tensor::from_slice(&ramp),
        get(&out, "ramp"),
        1e-12,
        0.0,
        "ramp-up",
    );

    // Network: same parameter count, same outputs in eval and train (batch-statistics) mode.
    let n_params = Vec::<i64>::try_from(get(&out, "n_params")).unwrap()[0];
    assert_eq!(count_parameters(&net.vs), n_params);
    let res = tch::no_grad(|| net.forward_t(&x, false, true)).unwrap();
    for (d, o) in res.iter().enumerate() {
        assert_close(
            &o.logits,
            get(&out, &format!("net_o{d}")),
            1e-4,
            1e-4,
            "eval logits",
        );
        assert_close(
            o.fg.as_ref().unwrap(),
            get(&out, &format!("net_f{d}")),
            1e-6,
            1e-4,
            "eval fg",
        );
        assert_close(
            o.bg.as_ref().unwrap(),
            get(&out, &format!("net_b{d}")),
            1e-6,
            1e-4,
            "eval bg",
        );
    }
    let res = tch::no_grad(|| net.forward_t(&x, true, true)).unwrap();
    for (d, o) in res.iter().enumerate() {
        assert_close(
            &o.logits,
            get(&out, &format!("train_o{d}")),
            1e-4,
            1e-4,
            "train logits",
        );
    }
}
