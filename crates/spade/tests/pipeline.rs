//! End to end on a synthetic LA-layout data set: every pretraining variant runs, writes its
//! report and an `encoder.*` weight file that the fine-tune loads by name (the V-Net's encoder
//! starts from the pretrained values, not at random); an interrupted pretraining resumes to the
//! same weights; the four-way reproduce reports Dice for every initialisation; bad settings stop
//! with a message naming the key.

use contrast_core::testing::{global_rng_lock, write_synthetic_la};
use contrast_core::train::RunOptions;
use spade::config::SpadeConfig;
use spade::pretrain::pretrain;
use std::path::Path;
use tch::Tensor;

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
    c.pretrain.checkpoint_every = 2;
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
        let enc = read(out.encoder.as_ref().unwrap());
        assert!(!enc.is_empty() && enc.iter().all(|(n, _)| n.starts_with("encoder.")));
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
        pretrain(&c, &opts(&runs, "nifti-bad", false), None).unwrap_err()
    );
    assert!(err.contains("missing.nii.gz"), "{err}");

    // interrupted + resumed = uninterrupted
    let half = pretrain(&cfg, &opts(&runs, "split", false), Some(2)).unwrap();
    assert!(half.encoder.is_none());
    let rest = pretrain(&cfg, &opts(&runs, "split", true), None).unwrap();
    let a = read(&runs.join("spade/spade/encoder.safetensors"));
    let b = read(rest.encoder.as_ref().unwrap());
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }

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

    // the four-way comparison
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
    }
    assert!(spade::reproduce::table(&rows).contains("| Spade global + local |"));

    // bad settings name the key
    let mut c = cfg.clone();
    c.pretrain.method = "byol".into();
    let err = format!(
        "{:#}",
        pretrain(&c, &opts(&runs, "bad", false), None).unwrap_err()
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
