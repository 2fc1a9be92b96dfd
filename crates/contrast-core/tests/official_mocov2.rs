//! Our MoCo v2 (`frameworks::mocov2`, the SPPS baseline) against the OFFICIAL MoCo v2
//! (`facebookresearch/moco` `moco/builder.py` + the `main_moco.py` step, checked out by
//! `cargo xtask official fetch moco` into the git-ignored `.official/moco`): same ResNet-18 +
//! MLP weights for the query and key encoders, same queue, same batches, three SGD steps.
//! Compared: every step's loss, the last step's gradients, every variable after the steps
//! (key encoder and BN statistics included) and the queue.
//!
//! Without the official checkout (or Python) the test says so in one line and compares with the
//! official numbers committed in `official/fixtures/moco_steps.json`.

use contrast_core::frameworks::mocov2::{MocoV2, MocoV2Config};
use contrast_core::nn::resnet::Stem;
use contrast_core::optim::{single_group, Optimizer, Sgd};
use contrast_core::tensors::named_variables;
use contrast_core::testing::official::{
    check_steps, check_weights, grad_max, perturb_rounding, read_fixture, repo_root, write_fixture,
    WeightRow,
};
use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use tch::{Device, Kind, Tensor};

/// Our names → the official ones: `backbone.x` → `encoder_?.x`, `projector.{0,2}` →
/// `encoder_?.fc.{0,2}`.
fn official_name(prefix: &str, name: &str) -> String {
    match name.strip_prefix("backbone.") {
        Some(rest) => format!("{prefix}.{rest}"),
        None => format!("{prefix}.fc.{}", name.trim_start_matches("projector.")),
    }
}

#[test]
fn three_steps_equal_the_official_moco_v2() {
    let _rng = global_rng_lock();
    let checkout = repo_root().join(".official/moco");
    let fixture = repo_root().join("official/fixtures/moco_steps.json");
    let (b, dim, k_queue, steps, lr) = (8i64, 32i64, 32i64, 3usize, 0.03);
    let cfg = MocoV2Config {
        hidden_dim: 512, // official `mlp=True`: Linear(dim_mlp, dim_mlp), dim_mlp = 512 for ResNet-18
        out_dim: dim,
        queue_size: k_queue,
        momentum: 0.9, // visible in three steps (official default 0.999)
        temperature: 0.2,
        shuffle_bn: true,
    };
    tch::manual_seed(5);
    let rc = MocoV2::resnet18(Stem::ImageNet).unwrap();
    let mut moco = MocoV2::new(&rc, &cfg, 9, Device::Cpu).unwrap();
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for (n, t) in named_variables(&moco.query_vs) {
        inputs.push((
            format!("w.{}", official_name("encoder_q", &n)),
            t.detach().copy(),
        ));
    }
    for (n, t) in named_variables(&moco.key_vs) {
        inputs.push((
            format!("w.{}", official_name("encoder_k", &n)),
            t.detach().copy(),
        ));
    }
    inputs.push(("queue".into(), moco.queue.features().tr().contiguous()));
    let opts = (Kind::Float, Device::Cpu);
    let batches: Vec<(Tensor, Tensor)> = (0..steps)
        .map(|_| {
            (
                Tensor::randn([b, 3, 32, 32], opts),
                Tensor::randn([b, 3, 32, 32], opts),
            )
        })
        .collect();
    for (k, (q, kk)) in batches.iter().enumerate() {
        inputs.push((format!("xq_{k}"), q.copy()));
        inputs.push((format!("xk_{k}"), kk.copy()));
    }

    // ours, as the SPPS MoCo-v2 baseline steps: key-encoder update, loss (enqueues), SGD
    let train = |moco: &mut MocoV2| -> Vec<f64> {
        let mut opt = Sgd::new(single_group(&moco.query_vs, 1e-4), lr, 0.9, 0.0, false).unwrap();
        let mut losses = Vec::new();
        for (q, kk) in &batches {
            moco.update_key_encoder().unwrap();
            let loss = moco.loss(q, kk, None, true).unwrap();
            opt.zero_grad();
            loss.backward();
            opt.step().unwrap();
            losses.push(loss.double_value(&[]));
        }
        losses
    };
    // the same model, its weights perturbed by one float32 rounding before the steps: how far
    // fp32 arithmetic alone carries a run in these steps (the bar of the fixture comparison)
    let mut perturbed = MocoV2::new(&rc, &cfg, 9, Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (vs_to, vs_from) in [
            (&perturbed.query_vs, &moco.query_vs),
            (&perturbed.key_vs, &moco.key_vs),
        ] {
            let from = named_variables(vs_from);
            for ((_, mut t), (_, f)) in named_variables(vs_to).into_iter().zip(from) {
                t.copy_(&f);
            }
        }
        perturbed
            .queue
            .features()
            .shallow_clone()
            .copy_(moco.queue.features());
    });
    let vars: Vec<Tensor> = named_variables(&perturbed.query_vs)
        .into_iter()
        .chain(named_variables(&perturbed.key_vs))
        .map(|(_, t)| t)
        .collect();
    perturb_rounding(&vars, 17);
    let losses_perturbed = train(&mut perturbed);
    let losses = train(&mut moco);
    let mut ours: Vec<(String, Tensor)> = named_variables(&moco.query_vs)
        .into_iter()
        .map(|(n, t)| (official_name("encoder_q", &n), t))
        .collect();
    ours.extend(
        named_variables(&moco.key_vs)
            .into_iter()
            .map(|(n, t)| (official_name("encoder_k", &n), t)),
    );
    let queue = moco.queue.features().tr();

    let have = checkout.join(".contrast-commit").exists();
    let out = if have {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_mocov2.py");
        let args = [
            checkout.display().to_string(),
            dim.to_string(),
            k_queue.to_string(),
            cfg.momentum.to_string(),
            cfg.temperature.to_string(),
            lr.to_string(),
            steps.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_reference(script, &refs, &args).unwrap()
    } else {
        None
    };
    let Some(out) = out else {
        let f = read_fixture(&fixture);
        let names: Vec<String> = (0..steps).map(|k| format!("loss_{k}")).collect();
        let terms: Vec<(&str, f64)> = names
            .iter()
            .map(String::as_str)
            .zip(losses.iter().copied())
            .collect();
        // the N-step bar of every official comparison: the loss terms and every variable
        // within eight times our own fp32 drift per step (measured above), floored at 1e-5
        let official: Vec<Vec<f64>> = terms
            .iter()
            .map(|(n, _)| vec![f["terms"][*n].as_f64().expect("a loss in the fixture")])
            .collect();
        let per_step = |v: &[f64]| v.iter().map(|&x| vec![x]).collect::<Vec<_>>();
        check_steps(
            "official_mocov2",
            &["loss"],
            &per_step(&losses),
            &official,
            &per_step(&losses_perturbed),
        );
        let theirs: std::collections::BTreeMap<String, Tensor> =
            named_variables(&perturbed.query_vs)
                .into_iter()
                .map(|(n, t)| (official_name("encoder_q", &n), t))
                .chain(
                    named_variables(&perturbed.key_vs)
                        .into_iter()
                        .map(|(n, t)| (official_name("encoder_k", &n), t)),
                )
                .collect();
        let mut rows: Vec<WeightRow> = ours
            .iter()
            .map(|(n, t)| {
                let norm = f["after_l2"][n.as_str()]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{n} not in the fixture"));
                let group = n.split('.').take(2).collect::<Vec<_>>().join(".");
                WeightRow::new(n, group, t, &theirs[n], Err(norm))
            })
            .collect();
        rows.push(WeightRow::new(
            "queue",
            "queue",
            &queue,
            &perturbed.queue.features().tr(),
            Err(f["after_l2"]["queue"].as_f64().unwrap()),
        ));
        check_weights("official_mocov2", steps, &rows, 1e-5);
        println!(
            "official_mocov2: {} (`cargo xtask official fetch moco`); our steps match the committed official numbers ({} variables, official commit {})",
            if have { "no Python with torch" } else { "no official checkout" },
            ours.len(),
            f["official_commit"].as_str().unwrap_or("?")
        );
        return;
    };

    for (k, l) in losses.iter().enumerate() {
        let o = get(&out, &format!("loss_{k}")).double_value(&[]);
        assert!(
            (l - o).abs() <= 1e-5 * o.abs().max(1.0),
            "loss {k}: ours {l} vs official {o}"
        );
    }
    let global = grad_max(&out);
    for (n, t) in &ours {
        if t.requires_grad() {
            let g = get(&out, &format!("g.{n}"));
            // three steps compound the float rounding of two implementations (and shuffle-BN
            // sums the batch in another order): the losses above stay within 1e-5
            assert_close(&t.grad(), g, 1e-4 * global, 1e-2, &format!("dL/d{n}"));
        }
        let w = get(&out, &format!("w.{n}"));
        assert_close(t, w, 1e-5, 1e-4, &format!("{n} after {steps} steps"));
    }
    assert_close(&queue, get(&out, "w.queue"), 1e-5, 1e-4, "queue");
    println!(
        "official_mocov2: losses {losses:?} equal the official ones; {} variables and the queue equal after {steps} steps",
        ours.len()
    );
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        let terms: Vec<String> = (0..steps).map(|k| format!("loss_{k}")).collect();
        let terms: Vec<&str> = terms.iter().map(String::as_str).collect();
        write_fixture(
            &fixture,
            &out,
            &checkout,
            "official MoCo v2 (moco/builder.py + main_moco.py step) on the weights, queue and batches of crates/contrast-core/tests/official_mocov2.rs",
            &terms,
        );
    }
}
