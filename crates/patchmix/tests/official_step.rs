//! One training step of ours against one step of the OFFICIAL PatchMix code
//! (`visresearch/patchmix`, checked out by `cargo xtask official fetch patchmix` into the
//! git-ignored `.official/patchmix`): same weights (ours, loaded by name into the official model),
//! same two views, same patch permutations. The official side runs its own `train_epoch` on a
//! one-batch loader (tests/py/official_step.py). Compared: the four loss terms, every gradient,
//! every variable after the AdamW step (BN running statistics included).
//!
//! Without the official checkout (or without Python) our step is compared with the official
//! step's numbers committed in `official/fixtures/patchmix_step.json` instead, with one line
//! saying so.

use contrast_core::loss::InfoNce;
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::{decay_groups, Optimizer};
use contrast_core::tensors::named_variables;
use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use patchmix::config::PatchMixConfig;
use patchmix::mix::PatchMixer;
use patchmix::train::{build_net, step_terms, StepTargets};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed numbers of the official step (written with `CONTRAST_WRITE_FIXTURES=1` when
/// the checkout is present), checked when it is not.
fn fixture_path() -> PathBuf {
    repo_root().join("official/fixtures/patchmix_step.json")
}

fn l2(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).norm().double_value(&[])
}

#[test]
fn one_step_equals_the_official_train_epoch() {
    let official = repo_root().join(".official/patchmix");
    let _rng = global_rng_lock();
    let (b, size, depth, patch, mlp, out_dim, m) = (8i64, 32i64, 2i64, 4i64, 64i64, 32i64, 2i64);
    let (lr, wd) = (1e-3, 0.05);
    let mut cfg = PatchMixConfig::default();
    cfg.data.image_size = size as usize;
    cfg.model.depth = depth;
    cfg.model.patch_size = patch;
    cfg.model.mlp_dim = mlp;
    cfg.model.out_dim = out_dim;
    cfg.model.drop_path = 0.0; // the official step is then deterministic too
    cfg.optim.batch_size = b as usize;
    tch::manual_seed(3);
    let net = build_net(&cfg, Device::Cpu).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    let x1 = Tensor::randn([b, 3, size, size], opts);
    let x2 = Tensor::randn([b, 3, size, size], opts);
    let mixer = PatchMixer::new(m, 1.0, patch, 0.0).unwrap();
    // the permutations step_terms will draw (same seed, same two calls in the same order)
    tch::manual_seed(11);
    let p1 = mixer.mix_images(&x1, true).unwrap().1.unwrap();
    let p2 = mixer.mix_images(&x2, true).unwrap().1.unwrap();

    let mut inputs: Vec<(String, Tensor)> = vec![
        ("x1".into(), x1.copy()),
        ("x2".into(), x2.copy()),
        ("perm1".into(), p1.to_kind(Kind::Float)),
        ("perm2".into(), p2.to_kind(Kind::Float)),
    ];
    for vs in [&net.encoder_vs, &net.predictor_vs] {
        for (n, t) in named_variables(vs) {
            inputs.push((format!("w.{n}"), t.detach().copy()));
        }
    }

    // our step, as `pretrain` runs it
    let mut groups = decay_groups(&net.encoder_vs, wd);
    groups.extend(decay_groups(&net.predictor_vs, wd));
    let mut opt = AdamW::new(
        groups,
        AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    opt.set_lr(lr);
    opt.set_weight_decay(wd);
    let targets = StepTargets::new(&mixer, b, cfg.mix.src_smoothing, Device::Cpu);
    let nce = InfoNce::new(cfg.optim.temperature).unwrap();
    tch::manual_seed(11);
    let terms = step_terms(&net, &mixer, &nce, &targets, &[x1, x2], true).unwrap();
    opt.zero_grad();
    terms.total.backward();
    opt.step().unwrap();

    let ours_vars: Vec<(String, Tensor)> = [&net.encoder_vs, &net.predictor_vs]
        .iter()
        .flat_map(|vs| named_variables(vs))
        .collect();
    if !official.join(".contrast-commit").exists() {
        compare_with_fixture(&terms, &ours_vars, lr, &official);
        return;
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_step.py");
    let args = [
        official.display().to_string(),
        repo_root().display().to_string(),
        lr.to_string(),
        wd.to_string(),
        depth.to_string(),
        patch.to_string(),
        mlp.to_string(),
        out_dim.to_string(),
        m.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(out) = run_reference(script, &refs, &args).unwrap() else {
        compare_with_fixture(&terms, &ours_vars, lr, &official); // no Python with torch here
        return;
    };

    // loss terms: official mix losses are already halved
    for (ours, name) in [
        (terms.orig.shallow_clone(), "src_loss"),
        (&terms.mix_orig * 0.5, "mix_loss"),
        (&terms.mix_mix * 0.5, "mix2_loss"),
        (terms.total.shallow_clone(), "loss"),
    ] {
        assert_close(&ours, get(&out, name), 1e-6, 1e-6, name);
    }
    // rounding noise in a gradient scales with the largest gradients of the network (a bias
    // just before a BatchNorm has a true gradient of 0 and a computed one of pure noise)
    let global = out
        .iter()
        .filter(|(n, _)| n.starts_with("g."))
        .map(|(_, g)| g.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    let mut checked = 0;
    for vs in [&net.encoder_vs, &net.predictor_vs] {
        for (n, t) in named_variables(vs) {
            if t.requires_grad() {
                let g = get(&out, &format!("g.{n}"));
                assert_close(&t.grad(), g, 1e-6 * global, 1e-4, &format!("dL/d{n}"));
            }
            // after the step: AdamW's first update is lr·g/(|g| + eps) ≈ lr·sign(g), so an entry
            // whose gradient is rounding noise may move by up to 2·lr either way
            let w = get(&out, &format!("w.{n}"));
            let diff = (&t - w).abs();
            let worst = diff.max().double_value(&[]);
            if t.requires_grad() {
                let g = get(&out, &format!("g.{n}")).abs();
                let scale = g.max().double_value(&[]);
                // float noise in a gradient is relative to its largest entries (sums of
                // cancelling terms), so a tiny entry's sign, and with it its Adam update, is
                // noise: compare the updates of entries above 1e-3 of the largest
                let conditioned = g.gt((1e-3 * scale).max(1e-4 * global));
                let sel = diff.masked_select(&conditioned);
                let worst_cond = if sel.numel() == 0 {
                    0.0 // every entry is noise (e.g. a bias before a BatchNorm)
                } else {
                    sel.max().double_value(&[])
                };
                assert!(
                    worst_cond <= 1e-6 && worst <= 2.0 * lr,
                    "{n} after the step: max |ours − official| = {worst_cond:e} where |g| is above noise, {worst:e} overall"
                );
            } else {
                assert!(worst <= 1e-5, "{n} (buffer) after the step: {worst:e}");
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} variables compared");
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        write_fixture(&out, &official);
    }
    println!(
        "official_step: loss {:.7} (official {:.7}); {checked} variables equal after one step",
        terms.total.double_value(&[]),
        get(&out, "loss").double_value(&[])
    );
}

/// What the fixture keeps of the official step: the loss terms, the L2 norm of every gradient
/// and of every variable after the step, the largest gradient entry.
fn write_fixture(out: &[(String, Tensor)], official: &std::path::Path) {
    let commit = std::fs::read_to_string(official.join(".contrast-commit")).unwrap();
    let mut grad = serde_json::Map::new();
    let mut after = serde_json::Map::new();
    let mut global = 0.0f64;
    for (n, t) in out {
        if let Some(v) = n.strip_prefix("g.") {
            grad.insert(v.into(), l2(t).into());
            global = global.max(t.abs().max().double_value(&[]));
        } else if let Some(v) = n.strip_prefix("w.") {
            after.insert(v.into(), l2(t).into());
        }
    }
    let loss: serde_json::Map<String, serde_json::Value> =
        ["src_loss", "mix_loss", "mix2_loss", "loss"]
            .iter()
            .map(|k| (k.to_string(), get(out, k).double_value(&[]).into()))
            .collect();
    let v = serde_json::json!({
        "what": "one step of the official PatchMix train_epoch on the weights, views and permutations of crates/patchmix/tests/official_step.rs",
        "official_commit": commit.trim(),
        "loss": loss, "grad_l2": grad, "after_l2": after, "grad_max_abs": global,
    });
    std::fs::create_dir_all(fixture_path().parent().unwrap()).unwrap();
    std::fs::write(
        fixture_path(),
        serde_json::to_string_pretty(&v).unwrap() + "\n",
    )
    .unwrap();
    println!("official_step: wrote {}", fixture_path().display());
}

/// Without the official checkout: our step against the committed official numbers.
fn compare_with_fixture(
    terms: &patchmix::loss::Terms,
    vars: &[(String, Tensor)],
    lr: f64,
    official: &std::path::Path,
) {
    let text = std::fs::read_to_string(fixture_path()).unwrap_or_else(|e| {
        panic!(
            "no official checkout in {} and no fixture {}: {e}",
            official.display(),
            fixture_path().display()
        )
    });
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    let close = |a: f64, b: f64, rtol: f64, atol: f64, what: &str| {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}: ours {a} vs official {b}"
        );
    };
    for (ours, name) in [
        (terms.orig.double_value(&[]), "src_loss"),
        (terms.mix_orig.double_value(&[]) * 0.5, "mix_loss"),
        (terms.mix_mix.double_value(&[]) * 0.5, "mix2_loss"),
        (terms.total.double_value(&[]), "loss"),
    ] {
        close(ours, f["loss"][name].as_f64().unwrap(), 1e-6, 1e-6, name);
    }
    let global = f["grad_max_abs"].as_f64().unwrap();
    let mut n = 0;
    for (name, t) in vars {
        if t.requires_grad() {
            let g = f["grad_l2"][name.as_str()]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} not in the fixture"));
            // a noise-only gradient (bias before a BatchNorm) has a norm of rounding noise
            close(
                l2(&t.grad()),
                g,
                1e-4,
                1e-6 * global * (t.numel() as f64).sqrt(),
                &format!("|dL/d{name}|"),
            );
        }
        let w = f["after_l2"][name.as_str()]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} not in the fixture"));
        // entries whose gradient is noise move by ±lr either way (see above)
        close(
            l2(t),
            w,
            1e-5,
            2.0 * lr * (t.numel() as f64).sqrt(),
            &format!("|{name}| after the step"),
        );
        n += 1;
    }
    println!(
        "official_step: no official checkout (`cargo xtask official fetch patchmix`); our step matches the committed official numbers ({} variables, official commit {})",
        n,
        f["official_commit"].as_str().unwrap_or("?")
    );
}
