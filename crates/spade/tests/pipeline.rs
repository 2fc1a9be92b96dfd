//! End to end on a synthetic LA-layout data set, through the shared `Trainer<SpadePretrain>`:
//! every pretraining variant runs, writes its report and an `encoder.*` weight file that the
//! fine-tune loads by name (the V-Net's encoder starts from the pretrained values, not at
//! random); an interrupted pretraining resumes bit-exactly (weights, optimiser state, metrics
//! lines); the five-row reproduce reports Dice for every initialisation; bad settings stop with
//! a message naming the key.

use contrast_core::testing::{global_rng_lock, write_synthetic_la};
use contrast_core::train::{Checkpointer, MetricsLog, Outcome, RunOptions, Trainer};
use spade::config::SpadeConfig;
use spade::SpadePretrain;
use std::path::Path;
use tch::Tensor;

/// Pretrain `c` as run `o` through the Trainer.
fn pretrain(c: &SpadeConfig, o: &RunOptions, stop_at: Option<u64>) -> anyhow::Result<Outcome> {
    Trainer::<SpadePretrain>::new(c.clone(), o.clone()).run(stop_at)
}

fn tiny(root: &Path) -> SpadeConfig {
    let mut c = SpadeConfig::default();
    c.finetune.data.root = root.display().to_string();
    c.finetune.data.labeled = 2;
    c.finetune.data.patch = [16, 16, 16];
    c.finetune.data.labeled_bs = 2;
    c.finetune.data.batch_size = 2;
    c.finetune.model.n_filters = 2;
    c.finetune.model.dropout = 0.0;
    c.finetune.optim.iterations = 4;
    c.finetune.eval.stride = [9, 8, 6];
    c.finetune.eval.every = 0;
    c.finetune.log.checkpoint_every = 4;
    c.pretrain.steps = 4;
    c.pretrain.volumes = 2;
    c.pretrain.crop = [16, 16, 16];
    c.log.checkpoint_every = 2;
    c.log.log_every = 1;
    c.pretrain.proj_dim = 8;
    c.local.dim = 4;
    c.local.samples = 16;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 5;
    c
}

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("spade", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

/// The tensors of a safetensors file, sorted by name (the file's order is not stable).
fn read(p: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(p).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn pretrain_resume_finetune_and_reproduce() {
    let _g = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("la");
    write_synthetic_la(&data, 6);
    let runs = dir.path().join("runs");
    let cfg = tiny(&data);

    // every variant pretrains and leaves encoder.* weights
    for m in ["simclr", "spade-global", "spade"] {
        let mut c = cfg.clone();
        c.pretrain.method = m.into();
        let out = pretrain(&c, &opts(&runs, m, false), None).unwrap();
        let rep = serde_json::to_value(out.report.as_ref().unwrap()).unwrap();
        assert_eq!(
            (rep["method"].as_str(), rep["variant"].as_str()),
            (Some("spade"), Some(m))
        );
        assert_eq!(rep["stage"], "pretraining");
        let enc = read(&out.dir.join("encoder.safetensors"));
        assert_eq!(
            rep["encoder"],
            out.dir.join("encoder.safetensors").display().to_string()
        );
        assert!(!enc.is_empty() && enc.iter().all(|(n, _)| n.starts_with("encoder.")));
        assert_eq!(
            out.dir.join("encoder_decoder.safetensors").is_file(),
            m == "spade"
        );
        let metrics = std::fs::read_to_string(out.dir.join("metrics.jsonl")).unwrap();
        assert!(metrics.contains("\"global\""), "{m}: {metrics}");
        assert_eq!(metrics.contains("\"local\""), m == "spade", "{m}");
    }

    // extra NIfTI volumes join the pretraining pool
    let nii = dir.path().join("extra.nii.gz");
    let mut v = contrast_core::volume::Volume::<f32>::zeros([20, 20, 18]);
    for (i, x) in v.data.iter_mut().enumerate() {
        *x = (i % 7) as f32 * 10.0;
    }
    contrast_core::volume::nifti::write_nifti(&nii, &v, None).unwrap();
    let mut c = cfg.clone();
    c.pretrain.extra_nifti = vec![nii.display().to_string()];
    let out = pretrain(&c, &opts(&runs, "nifti", false), None).unwrap();
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(rep["pretraining_volumes"], 5); // 4 LA train cases + 1 NIfTI
    let mut c = cfg.clone();
    c.pretrain.extra_nifti = vec![dir.path().join("missing.nii.gz").display().to_string()];
    let err = format!(
        "{:#}",
        pretrain(&c, &opts(&runs, "nifti-bad", false), None)
            .expect_err("a missing NIfTI file is an error")
    );
    assert!(err.contains("missing.nii.gz"), "{err}");

    // interrupted + resumed = uninterrupted, bit for bit: every step's loss, the encoder file,
    // the model and optimiser groups of the final checkpoints, the metrics lines
    let half = pretrain(&cfg, &opts(&runs, "split", false), Some(2)).unwrap();
    assert!(half.report.is_none());
    assert!(!half.dir.join("encoder.safetensors").exists());
    let rest = pretrain(&cfg, &opts(&runs, "split", true), None).unwrap();
    assert_eq!(
        rest.losses.first().unwrap().0,
        3,
        "resume continues at step 3"
    );
    let full = pretrain(&cfg, &opts(&runs, "full", false), None).unwrap();
    let joined: Vec<(u64, f64)> = half.losses.iter().chain(&rest.losses).cloned().collect();
    assert_eq!(joined.len(), full.losses.len());
    for ((s1, x), (s2, y)) in full.losses.iter().zip(&joined) {
        assert_eq!(s1, s2);
        assert_eq!(x.to_bits(), y.to_bits(), "loss at step {s1}: {x} vs {y}");
    }
    let a = read(&runs.join("spade/spade/encoder.safetensors"));
    let b = read(&rest.dir.join("encoder.safetensors"));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
    let last_ck = |name: &str| {
        let ck = Checkpointer::new(runs.join("spade").join(name).join("checkpoints"), 9);
        Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap()
    };
    let (c1, c2) = (last_ck("full"), last_ck("split"));
    assert_eq!((c1.state.step, c2.state.step), (4, 4));
    for g in ["model", "optim"] {
        let (x, y) = (c1.group(g).unwrap(), c2.group(g).unwrap());
        assert!(!x.is_empty() && x.len() == y.len(), "{g}");
        for ((n1, t1), (n2, t2)) in x.iter().zip(y) {
            assert_eq!(n1, n2);
            assert!(t1.equal(t2), "{g}: {n1} differs after resume");
        }
    }
    let lines = |name: &str| {
        let mut v = MetricsLog::read(runs.join("spade").join(name).join("metrics.jsonl")).unwrap();
        for l in &mut v {
            l.as_object_mut().unwrap().remove("elapsed_s");
        }
        v
    };
    let (m_full, m_split) = (lines("full"), lines("split"));
    assert_eq!(m_full.len(), 4);
    assert_eq!(m_full, m_split, "metrics lines differ after resume");

    // the fine-tune starts from the pretrained encoder
    let mut ft = cfg.finetune.clone();
    ft.model.variant = "supervised".into();
    ft.model.init = runs
        .join("spade/spade/encoder.safetensors")
        .display()
        .to_string();
    let net = fba_net::method::build_model(&ft, tch::Device::Cpu, true).unwrap();
    let n = fba_net::method::init_from(&net, Path::new(&ft.model.init)).unwrap();
    assert_eq!(n, a.len());
    let vars = net.vs.variables();
    for (name, t) in &a {
        assert!(vars[name].equal(t), "{name} not initialised from the file");
    }
    let bad = dir.path().join("bad.safetensors");
    Tensor::write_safetensors(
        &[(
            "x.weight",
            Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)),
        )],
        &bad,
    )
    .unwrap();
    let err = format!("{:#}", fba_net::method::init_from(&net, &bad).unwrap_err());
    assert!(err.contains("bad.safetensors"), "{err}");

    // with the decoder transfer, the local term's decoder initialises the fine-tune's decoder
    // (all of it but `out_conv`, whose width is the local feature size)
    let both_path = runs.join("spade/spade/encoder_decoder.safetensors");
    let both = read(&both_path);
    let net2 = fba_net::method::build_model(&ft, tch::Device::Cpu, true).unwrap();
    let n2 = fba_net::method::init_from(&net2, &both_path).unwrap();
    assert_eq!(n2, both.len());
    let dec: Vec<&String> = both
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("decoder."))
        .collect();
    assert!(!dec.is_empty() && dec.iter().all(|n| !n.contains("out_conv")));
    let vars2 = net2.vs.variables();
    for (name, t) in &both {
        assert!(vars2[name].equal(t), "{name} not initialised from the file");
    }

    // the five-row comparison
    let rows = spade::reproduce::reproduce(&cfg, &opts(&runs, "four", false), None)
        .unwrap()
        .unwrap();
    let inits: Vec<&str> = rows.iter().map(|r| r.init).collect();
    assert_eq!(
        inits,
        [
            "scratch",
            "3-D SimCLR",
            "Spade global",
            "Spade global + local",
            "Spade global + local, decoder transferred"
        ]
    );
    for r in &rows {
        let d = r.report["last_iteration"]["mean"]["dice"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&d));
        // the fine-tune is FBA-Net's supervised V-Net through Trainer<FbaNetMethod>
        assert_eq!(r.report["method"], "fba-net");
        assert_eq!(r.report["variant"], "supervised");
        assert_eq!(r.report["value"].as_f64(), Some(d));
    }
    // runs/spade/<name>-pretrain-<m> and -finetune-<tag>; the spade pretraining serves two rows
    for run in [
        "four-pretrain-simclr",
        "four-pretrain-spade-global",
        "four-pretrain-spade",
        "four-finetune-scratch",
        "four-finetune-simclr",
        "four-finetune-spade-global",
        "four-finetune-spade",
        "four-finetune-spade-decoder",
    ] {
        assert!(
            runs.join("spade").join(run).join("report.json").is_file(),
            "{run}"
        );
    }
    let ft_cfg =
        std::fs::read_to_string(runs.join("spade/four-finetune-spade-decoder/config.toml"))
            .unwrap();
    let init = runs.join("spade/four-pretrain-spade/encoder_decoder.safetensors");
    assert!(ft_cfg.contains(&init.display().to_string()), "{ft_cfg}");
    assert!(spade::reproduce::table(&rows).contains("| Spade global + local |"));

    // bad settings name the key
    let mut c = cfg.clone();
    c.pretrain.method = "byol".into();
    let err = format!(
        "{:#}",
        pretrain(&c, &opts(&runs, "bad", false), None)
            .expect_err("an unknown pretrain.method is an error")
    );
    assert!(err.contains("pretrain.method"), "{err}");
}

#[test]
fn presets_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let cfg: SpadeConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(cfg.pretrain.steps > 0, "{}", p.display());
        // a [log] table fills missing keys from core's defaults (checkpoint every epoch): the
        // presets spell out the step cadence, for the pretraining and for the fine-tune
        for log in [&cfg.log, &cfg.finetune.log] {
            assert_eq!(log.checkpoint_every_epochs, 0, "{}", p.display());
            assert!(log.checkpoint_every > 0, "{}", p.display());
        }
    }
}

/// The fine-tune is FBA-Net's supervised V-Net with Dice weight 1 (FBA-Net's supervised
/// baseline), not FBA-Net+'s 0.5, in the defaults and in every preset.
#[test]
fn finetune_dice_weight_is_the_supervised_baselines() {
    use contrast_core::train::{load_config, ConfigSource};
    assert_eq!(
        spade::config::SpadeConfig::default()
            .finetune
            .loss
            .lambda_seg,
        1.0
    );
    for p in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let p = p.unwrap().path();
        let c: spade::config::SpadeConfig =
            load_config(Some(ConfigSource::file(&p).unwrap()), &[]).unwrap();
        assert_eq!(c.finetune.loss.lambda_seg, 1.0, "{}", p.display());
    }
}
