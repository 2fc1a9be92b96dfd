//! Optimisers and schedules against torch.optim's own and, where no official code is installed
//! (apex LARC, the DINO / MMSeg / VISSL schedules), our own restatement (tests/py/optim.py), on
//! the same parameters, gradients, learning rates and weight decays; plus the state round trip
//! and hand-computed LARS / EMA values.

use contrast_core::optim::ema::{BufferPolicy, Ema};
use contrast_core::optim::lars::{lars_direction, LarsConfig, LarsMode};
use contrast_core::optim::schedule::{scaled_lr, Schedule};
use contrast_core::optim::{
    decay_groups, split_groups, AdamW, AdamWConfig, Lars, Optimizer, ParamGroup, Sgd,
};
use contrast_core::testing::{assert_close, get, run_reference};
use tch::{nn, Device, Kind, Tensor};

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

const STEPS: usize = 5;
const NAMES: [&str; 3] = ["b", "w", "zero"];
const SHAPES: [&[i64]; 3] = [&[5], &[6, 5], &[3, 3]];

type Builder = fn(Vec<ParamGroup>, f64) -> Box<dyn Optimizer>;

fn cases() -> Vec<(&'static str, Builder)> {
    vec![
        ("sgd", |g, lr| {
            Box::new(Sgd::new(g, lr, 0.9, 0.1, false).unwrap())
        }),
        ("sgd_nesterov", |g, lr| {
            Box::new(Sgd::new(g, lr, 0.9, 0.0, true).unwrap())
        }),
        ("adamw", |g, lr| {
            let c = AdamWConfig {
                lr,
                ..Default::default()
            };
            Box::new(AdamW::new(g, c).unwrap())
        }),
        ("adamw_ams", |g, lr| {
            let c = AdamWConfig {
                lr,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                amsgrad: true,
            };
            Box::new(AdamW::new(g, c).unwrap())
        }),
        ("larc_clip", |g, lr| {
            let c = LarsConfig {
                lr,
                ..Default::default()
            };
            Box::new(Lars::new(g, c).unwrap())
        }),
        ("lars_scale", |g, lr| {
            Box::new(Lars::new(g, LarsConfig::grass(lr)).unwrap())
        }),
        ("lars_excl", |g, lr| {
            let c = LarsConfig {
                nesterov: true,
                trust_coefficient: 0.001, // small enough that the clip is active
                ..LarsConfig::solo_learn(lr)
            };
            Box::new(Lars::new(g, c).unwrap())
        }),
    ]
}

/// Groups as in optim.py: decay [w], decay.scaled [zero] at lr × 0.5, no_decay [b].
fn groups(vs: &nn::VarStore, wd: f64) -> Vec<ParamGroup> {
    let g = split_groups(decay_groups(vs, wd), |n| n == "zero", "scaled", 0.5);
    let names: Vec<(&str, usize, f64)> = g
        .iter()
        .map(|g| (g.name.as_str(), g.params.len(), g.lr_scale))
        .collect();
    assert_eq!(
        names,
        vec![
            ("decay.scaled", 1, 0.5),
            ("decay", 1, 1.0),
            ("no_decay", 1, 1.0)
        ]
    );
    g
}

/// Round-trip a state through a safetensors file, as a checkpoint does.
fn through_file(state: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let dir = contrast_core::testing::tempdir().unwrap();
    let path = dir.join("optim.safetensors");
    let named: Vec<(&str, Tensor)> = state
        .iter()
        .map(|(n, t)| (n.as_str(), t.contiguous()))
        .collect();
    Tensor::write_safetensors(&named, &path).unwrap();
    let back = Tensor::read_safetensors(&path).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    back
}

fn schedules() -> Vec<(&'static str, Schedule, u64)> {
    let toml = |s: &str| Schedule::from_toml(s).unwrap();
    vec![
        (
            "warmup_cosine",
            Schedule::WarmupCosine {
                base: scaled_lr(2e-3, 512),
                final_value: 1e-6,
                total_steps: 40,
                warmup_steps: 10,
                warmup_start: 0.0,
            },
            40,
        ),
        (
            "wd_cosine",
            toml("kind = \"cosine\"\nstart = 0.02\nend = 0.2\nsteps = 40"),
            40,
        ),
        ("ema", Schedule::ema_momentum(0.996, 40), 40),
        (
            "step",
            toml("kind = \"step\"\nbase = 0.1\nmilestones = [10, 25]\ngamma = 0.1"),
            40,
        ),
        (
            "poly",
            toml("kind = \"poly\"\nbase = 0.1\npower = 0.9\nsteps = 30"),
            40,
        ),
        (
            "poly_min",
            toml("kind = \"poly\"\nbase = 0.01\nend = 1e-4\npower = 0.9\nsteps = 30"),
            40,
        ),
        ("grass1000", Schedule::grass_vissl(1000).unwrap(), 1000),
        ("grass1234", Schedule::grass_vissl(1234).unwrap(), 1234),
    ]
}

/// Every optimiser, several steps with weight decay, momentum, Nesterov, amsgrad, LARC clip and
/// scale, bias/norm exclusion, three parameter groups (one with an lr scale), lr and wd changed
/// every step, and an interruption after step 2 (state → safetensors → fresh optimiser); then
/// every schedule at every step. One Python run.
#[test]
fn optimisers_and_schedules_match_pytorch() {
    tch::manual_seed(11);
    let opts = (Kind::Float, Device::Cpu);
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for (n, s) in NAMES.iter().zip(SHAPES) {
        let init = if *n == "zero" {
            Tensor::zeros(s, opts)
        } else {
            Tensor::randn(s, opts)
        };
        inputs.push((format!("init.{n}"), init));
        for t in 0..STEPS {
            inputs.push((format!("grad.{n}.{t}"), Tensor::randn(s, opts) * 0.5));
        }
    }
    let lrs: Vec<f64> = (0..STEPS).map(|t| 0.05 * (1.0 - 0.15 * t as f64)).collect();
    let wds: Vec<f64> = (0..STEPS).map(|t| 0.01 * (1.0 + t as f64)).collect();
    inputs.push(("lrs".into(), Tensor::from_slice(&lrs)));
    inputs.push(("wds".into(), Tensor::from_slice(&wds)));
    inputs.push(("steps".into(), Tensor::from(STEPS as i64)));
    let input = |name: &str| {
        inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .unwrap()
    };

    let mut got: Vec<(String, Tensor)> = Vec::new();
    for (case, build) in cases() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let vars: Vec<Tensor> = NAMES
            .iter()
            .zip(SHAPES)
            .map(|(n, s)| root.var(n, s, nn::Init::Const(0.0)))
            .collect();
        tch::no_grad(|| {
            for (n, v) in NAMES.iter().zip(&vars) {
                let mut v = v.shallow_clone();
                v.copy_(&input(&format!("init.{n}")));
            }
        });
        let mut opt = build(groups(&vs, wds[0]), lrs[0]);
        for t in 0..STEPS {
            if t == 2 {
                // interruption: a fresh optimiser resumes from the saved state
                let state = through_file(&opt.state());
                opt = build(groups(&vs, wds[0]), lrs[0]);
                opt.load_state(&state)
                    .unwrap_or_else(|e| panic!("{case}: {e:#}"));
            }
            opt.set_lr(lrs[t]);
            opt.set_weight_decay(wds[t]);
            opt.zero_grad();
            let loss = NAMES
                .iter()
                .zip(&vars)
                .map(|(n, v)| (v * input(&format!("grad.{n}.{t}"))).sum(Kind::Float))
                .fold(Tensor::zeros([], opts), |a, b| a + b);
            loss.backward();
            opt.step().unwrap();
        }
        for (n, v) in NAMES.iter().zip(&vars) {
            got.push((format!("{case}.{n}"), v.detach().copy()));
        }
        for (key, t) in opt.state() {
            got.push((format!("{case}.state.{key}"), t));
        }
    }
    let sched = schedules();
    for (name, s, n) in &sched {
        s.validate().unwrap();
        let v: Vec<f64> = (0..*n).map(|t| s.value(t)).collect();
        got.push((format!("sched.{name}"), Tensor::from_slice(&v)));
    }

    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let Some(out) = run_reference(script("optim.py"), &refs, &[]).unwrap() else {
        return;
    };
    let mut theirs: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    let mut ours: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    theirs.sort();
    ours.sort();
    assert_eq!(ours, theirs, "the same parameters, states and schedules");
    for (name, value) in &got {
        let r = get(&out, name);
        let (atol, rtol) = if name.starts_with("sched.") {
            (1e-12, 1e-9)
        } else {
            (1e-6, 1e-5)
        };
        assert_close(value, r, atol, rtol, name);
    }
    // the updates did something: final parameters differ from the initial ones
    for (case, _) in cases() {
        let moved = (get(&out, &format!("{case}.w")) - input("init.w"))
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved > 1e-4, "{case}: parameters barely moved ({moved})");
    }
}

/// GraSS's LR at the checkpoints listed in `shared/papers/grass-claires.md` §1.5 (w = step/T).
/// The note's numbers are rounded; the two peaks come out 3.5954 / 1.1929 from VISSL's formula
/// (the note says 3.597 / 1.195), hence the 3e-3 tolerance there.
#[test]
fn grass_composite_schedule_checkpoints() {
    let t = 10_000u64;
    let s = Schedule::grass_vissl(t).unwrap();
    s.validate().unwrap();
    let at = |w: f64| s.value((w * t as f64).round() as u64);
    let close = |got: f64, want: f64, tol: f64, what: &str| {
        assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
    };
    close(at(0.0), 0.6, 1e-12, "start");
    close(at(0.0999), 4.796, 1e-3, "w=0.0999");
    close(at(0.05), 2.7, 1e-12, "w=0.05 (linear midpoint)");
    close(at(0.1), 3.597, 3e-3, "w=0.1 (jump down)");
    close(at(0.4006), 0.0048, 1e-6, "w=0.4006 (first trough)");
    close(at(0.7012), 1.195, 3e-3, "w=0.7012 (second peak)");
    close(s.value(t - 1), 0.005, 1e-3, "w→1");
    // exact peaks from VISSL's adaptive formula
    let pi = std::f64::consts::PI;
    let peak0 = 0.0048 + 0.5 * (4.8 - 0.0048) * (1.0 + (pi * 0.334).cos());
    let peak1 = 0.0048 + 0.5 * (4.8 - 0.0048) * (1.0 + (pi * 0.668).cos());
    close(at(0.1), peak0, 1e-9, "peak 0");
    close(at(0.7012), peak1, 1e-9, "peak 1");
    // the schedule is data: it survives a TOML round trip
    let text = toml::to_string(&s).unwrap();
    assert_eq!(Schedule::from_toml(&text).unwrap(), s);
}

#[test]
fn schedules_validate_and_compose() {
    assert!(Schedule::from_toml("kind = \"cosine\"\nstart = 1.0\nend = 0.0\nsteps = 0").is_err());
    assert!(Schedule::from_toml("kind = \"cosine\"\nstart = 1.0\nend = 0.0").is_err());
    assert!(Schedule::from_toml("kind = \"nope\"\nvalue = 1.0").is_err());
    assert!(
        Schedule::from_toml("kind = \"step\"\nbase = 1.0\nmilestones = [5, 2]\ngamma = 0.1")
            .is_err()
    );
    // warm-up 0 → 1 over 4 steps, then constant 1 until 10, then step decay
    let s = Schedule::from_toml(
        r#"kind = "composite"
[[pieces]]
until = 4
schedule = { kind = "linear", start = 0.0, end = 1.0, steps = 4.0 }
[[pieces]]
until = 10
schedule = { kind = "constant", value = 1.0 }
[[pieces]]
until = 20
schedule = { kind = "step", base = 1.0, milestones = [5], gamma = 0.5 }
"#,
    )
    .unwrap();
    let v: Vec<f64> = [0, 1, 3, 4, 9, 10, 14, 15, 30]
        .iter()
        .map(|&t| s.value(t))
        .collect();
    assert_eq!(v, vec![0.0, 0.25, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]);
    let bad = Schedule::Composite { pieces: vec![] };
    assert!(bad.validate().is_err());
}

/// LARS trust ratio by hand: p = [3, 4] (‖p‖ = 5), g = [0, 2] (‖g‖ = 2), wd = 0.1, c = 0.02,
/// ε = 0: a = 0.02·5 / (2 + 0.5) = 0.04; d = (g + 0.1·p)·a = [0.3, 2.4]·0.04.
#[test]
fn lars_trust_ratio_by_hand() {
    let p = Tensor::from_slice(&[3f32, 4.0]).view([1, 2]);
    let g = Tensor::from_slice(&[0f32, 2.0]).view([1, 2]);
    let mut cfg = LarsConfig {
        eps: 0.0,
        mode: LarsMode::Scale,
        ..Default::default()
    };
    let d = lars_direction(&p, &g, 0.1, 0.5, &cfg);
    let want = Tensor::from_slice(&[0.012f32, 0.096]).view([1, 2]);
    assert_close(&d, &want, 1e-7, 1e-6, "LARS scale");
    // clip: min(0.04 / lr, 1) with lr 0.5 → 0.08; with lr 0.01 → 1
    cfg.mode = LarsMode::Clip;
    let d = lars_direction(&p, &g, 0.1, 0.5, &cfg);
    let want = Tensor::from_slice(&[0.024f32, 0.192]).view([1, 2]);
    assert_close(&d, &want, 1e-7, 1e-6, "LARC clip");
    let d = lars_direction(&p, &g, 0.1, 0.01, &cfg);
    let want = Tensor::from_slice(&[0.3f32, 2.4]).view([1, 2]);
    assert_close(&d, &want, 1e-7, 1e-6, "LARC clip at 1");
    // a zero parameter: no adaptation and no decay
    let z = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
    assert_close(
        &lars_direction(&z, &g, 0.1, 0.5, &cfg),
        &g,
        0.0,
        0.0,
        "zero p",
    );
    // excluded 1-D parameter
    cfg.exclude_bias_and_norm = true;
    let b = Tensor::from_slice(&[3f32, 4.0]);
    let gb = Tensor::from_slice(&[0f32, 2.0]);
    assert_close(
        &lars_direction(&b, &gb, 0.1, 0.5, &cfg),
        &gb,
        0.0,
        0.0,
        "excluded",
    );
}

#[test]
fn optimiser_arguments_are_validated() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().var("w", &[2, 2], nn::Init::Const(1.0));
    let bad_lr = AdamWConfig {
        lr: -1.0,
        ..Default::default()
    };
    assert!(AdamW::new(decay_groups(&vs, 0.1), bad_lr).is_err());
    let bad_beta = AdamWConfig {
        beta2: 1.0,
        ..Default::default()
    };
    assert!(AdamW::new(decay_groups(&vs, 0.1), bad_beta).is_err());
    let bad_trust = LarsConfig {
        trust_coefficient: 0.0,
        ..Default::default()
    };
    assert!(Lars::new(decay_groups(&vs, 0.1), bad_trust).is_err());
    // state for a parameter that does not exist, or with the wrong shape
    let mut sgd = Sgd::new(decay_groups(&vs, 0.1), 0.1, 0.9, 0.0, false).unwrap();
    let e = sgd
        .load_state(&vec![(
            "momentum_buffer.nope".into(),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        )])
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("unknown parameter `nope`"),
        "{e:#}"
    );
    let e = sgd
        .load_state(&vec![(
            "momentum_buffer.w".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )])
        .unwrap_err();
    assert!(format!("{e:#}").contains("shape [3]"), "{e:#}");
    let mut adam = AdamW::new(decay_groups(&vs, 0.1), AdamWConfig::default()).unwrap();
    let e = adam
        .load_state(&vec![(
            "exp_avg.w".into(),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        )])
        .unwrap_err();
    assert!(format!("{e:#}").contains("no `step.w`"), "{e:#}");
}

/// EMA against hand-computed values: t = m·t + (1 − m)·o for parameters; buffers per policy.
#[test]
fn ema_update_by_hand() {
    let online = nn::VarStore::new(Device::Cpu);
    let target = nn::VarStore::new(Device::Cpu);
    for vs in [&online, &target] {
        let bn = nn::batch_norm1d(vs.root() / "bn", 2, Default::default());
        let _ = vs.root().var("w", &[2], nn::Init::Const(0.0));
        drop(bn);
    }
    let set = |vs: &nn::VarStore, name: &str, v: &[f32]| {
        tch::no_grad(|| {
            let mut t = vs.variables()[name].shallow_clone();
            t.copy_(&Tensor::from_slice(v));
        });
    };
    let val = |vs: &nn::VarStore, name: &str| -> Vec<f32> {
        Vec::<f32>::try_from(&vs.variables()[name]).unwrap()
    };
    set(&online, "w", &[1.0, 2.0]);
    set(&online, "bn.running_mean", &[10.0, 20.0]);
    set(&target, "w", &[5.0, 6.0]);
    set(&target, "bn.running_mean", &[-1.0, -2.0]);

    let mut ema = Ema::new(&target, &online, BufferPolicy::Keep).unwrap();
    let (params, buffers) = ema.names();
    assert_eq!(params, vec!["bn.bias", "bn.weight", "w"]);
    assert_eq!(buffers, vec!["bn.running_mean", "bn.running_var"]);
    ema.update(0.75).unwrap();
    // 0.75·[5, 6] + 0.25·[1, 2] = [4, 5]
    assert_eq!(val(&target, "w"), vec![4.0, 5.0]);
    assert_eq!(val(&target, "bn.running_mean"), vec![-1.0, -2.0], "Keep");
    assert!(!target.variables()["w"].requires_grad(), "target frozen");

    ema.buffers = BufferPolicy::Average;
    ema.update(0.5).unwrap();
    assert_eq!(val(&target, "w"), vec![2.5, 3.5]);
    assert_eq!(val(&target, "bn.running_mean"), vec![4.5, 9.0], "Average");

    ema.buffers = BufferPolicy::Copy;
    ema.update(1.0).unwrap();
    assert_eq!(val(&target, "w"), vec![2.5, 3.5], "m = 1 keeps the target");
    assert_eq!(val(&target, "bn.running_mean"), vec![10.0, 20.0], "Copy");

    assert!(ema.update(1.5).is_err());
    ema.init_copy();
    assert_eq!(val(&target, "w"), vec![1.0, 2.0]);

    // mismatched networks are an error naming the variable
    let other = nn::VarStore::new(Device::Cpu);
    let _ = other.root().var("w", &[3], nn::Init::Const(0.0));
    let e = Ema::new(&other, &online, BufferPolicy::Keep).err().unwrap();
    assert!(format!("{e:#}").contains("bn.weight"), "{e:#}");
}
