//! Training (CLIP on image–sentence pairs) and retrieval evaluation, on the shared run harness.

use crate::config::ClairesConfig;
use crate::model::Claires;
use crate::records::{load_manifest, vqa_rad_records, Fields, Record};
use anyhow::{bail, Context, Result};
use contrast_core::eval::retrieval::{
    candidate_pool, first_relevant_rank, metrics_from_ranks, RetrievalMetrics,
};
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::Optimizer;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{config::to_toml, Progress, Run, RunOptions};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The VQA-RAD folder of a config (see `data.root`).
pub fn data_root(cfg: &ClairesConfig) -> PathBuf {
    if !cfg.data.root.is_empty() {
        return PathBuf::from(&cfg.data.root);
    }
    if let Some(d) = std::env::var_os("CONTRAST_DATA") {
        return PathBuf::from(d).join("vqa-rad");
    }
    // the development copy beside the repository when there is one, else the download folder
    if let Some(d) = contrast_core::data::dev_data_root().map(|d| d.join("vqa-rad")) {
        if d.is_dir() {
            return d;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/vqa-rad")
}

/// All records of a config: the manifest if given, else the VQA-RAD converter.
pub fn load_records(cfg: &ClairesConfig) -> Result<Vec<Record>> {
    if !cfg.data.manifest.is_empty() {
        return load_manifest(Path::new(&cfg.data.manifest));
    }
    let root = data_root(cfg);
    let (r, skipped) = vqa_rad_records(&root)?;
    if skipped > 0 {
        eprintln!(
            "vqa-rad: {} records; {skipped} image(s) without questions skipped",
            r.len()
        );
    }
    Ok(r)
}

/// Seeded train/test split by record: `(train, test)`, each sorted by original position.
pub fn split(
    records: &[Record],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<Record>, Vec<Record>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        bail!("data.test_fraction must be in [0, 1), got {test_fraction}");
    }
    let n = records.len();
    let n_test = ((n as f64) * test_fraction).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut test: Vec<usize> = idx[..n_test].to_vec();
    let mut train: Vec<usize> = idx[n_test..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    Ok((
        train.into_iter().map(|i| records[i].clone()).collect(),
        test.into_iter().map(|i| records[i].clone()).collect(),
    ))
}

/// Images `[N, 3, S, S]` and sentences of records.
pub fn materialise(records: &[Record], size: u32) -> Result<(Tensor, Vec<String>)> {
    let paths: Vec<&Path> = records.iter().map(|r| r.image.as_path()).collect();
    let x = crate::images::load_images(&paths, size)?;
    Ok((x, records.iter().map(Record::text).collect()))
}

/// Metrics of one evaluation setting.
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    /// `paired` (relevant = the query's own image) or `label-match` (relevant = any image whose
    /// fields equal the query's).
    pub mode: String,
    /// Candidate pool per query: 0 = the whole test gallery.
    pub pool: usize,
    pub gallery: usize,
    pub metrics: RetrievalMetrics,
}

/// Text→image retrieval over a test gallery: query `q` is record `q`'s sentence, candidates are
/// the gallery images (or a seeded pool of `pool` of them that contains image `q`).
pub fn retrieval_eval(
    text_emb: &Tensor,
    image_emb: &Tensor,
    fields: &[Fields],
    ks: &[usize],
    pools: &[usize],
    seed: u64,
) -> Result<Vec<EvalResult>> {
    let n = fields.len();
    let s = text_emb.matmul(&image_emb.transpose(0, 1)); // [Q, C]
    let rows: Vec<Vec<f32>> = (0..n as i64)
        .map(|q| Vec::<f32>::try_from(s.get(q)).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for &pool in pools {
        for mode in ["paired", "label-match"] {
            let mut ranks = Vec::with_capacity(n);
            for (q, row) in rows.iter().enumerate() {
                let cands =
                    candidate_pool(n, q, pool, seed ^ (q as u64).wrapping_mul(0x9e37_79b9))?;
                let sc: Vec<f32> = cands.iter().map(|&c| row[c]).collect();
                let rel: Vec<bool> = cands
                    .iter()
                    .map(|&c| {
                        if mode == "paired" {
                            c == q
                        } else {
                            fields[c] == fields[q]
                        }
                    })
                    .collect();
                ranks.push(first_relevant_rank(&sc, &rel)?);
            }
            out.push(EvalResult {
                mode: mode.into(),
                pool,
                gallery: n,
                metrics: metrics_from_ranks(&ranks, ks)?,
            });
        }
    }
    Ok(out)
}

/// One line per setting: `mode pool hit@k… MRR mean median`.
pub fn format_results(results: &[EvalResult]) -> String {
    let mut s = String::new();
    for r in results {
        let pool = if r.pool == 0 {
            format!("all {}", r.gallery)
        } else {
            format!("{} of {}", r.pool, r.gallery)
        };
        let hits: Vec<String> = r
            .metrics
            .hits
            .iter()
            .map(|(k, v)| format!("hit@{k} {v:.3}"))
            .collect();
        s.push_str(&format!(
            "{:<11} pool {:<10} {}  MRR {:.3}  mean rank {:.2}  median rank {}\n",
            r.mode,
            pool,
            hits.join("  "),
            r.metrics.mrr,
            r.metrics.mean_rank,
            r.metrics.median_rank
        ));
    }
    s
}

/// Evaluate a model on records (eval mode).
pub fn evaluate(
    model: &Claires,
    cfg: &ClairesConfig,
    images: &Tensor,
    texts: &[String],
    fields: &[Fields],
    pools: &[usize],
) -> Result<Vec<EvalResult>> {
    let img = model.search_images(images, 32)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut txt = Vec::new();
    for chunk in refs.chunks(64) {
        txt.push(model.search_text(chunk)?);
    }
    retrieval_eval(
        &Tensor::cat(&txt, 0),
        &img,
        fields,
        &cfg.eval.ks,
        pools,
        cfg.eval.pool_seed,
    )
}

pub struct Outcome {
    pub report: Option<serde_json::Value>,
    pub step: u64,
    pub run_dir: PathBuf,
}

/// The final weights of a run.
pub fn model_path(run_dir: &Path) -> PathBuf {
    run_dir.join("model.safetensors")
}

/// Train (or resume) and evaluate; writes `model.safetensors` and `report.json` in the run.
/// AdamW over the model's parameter groups (heads at `optim.lr_head`, encoders at their own
/// rates, see [`Claires::param_groups`]).
pub fn build_optimizer(cfg: &ClairesConfig, model: &Claires) -> Result<AdamW> {
    AdamW::new(
        model.param_groups(cfg)?,
        AdamWConfig {
            lr: cfg.optim.lr_head,
            ..AdamWConfig::default()
        },
    )
}

pub fn train(cfg: &ClairesConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let device = cfg.runtime.init_without_autocast("claires")?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let records = load_records(cfg)?;
    let (train_r, test_r) = split(&records, cfg.data.test_fraction, cfg.data.split_seed)?;
    let (train_x, train_t) = materialise(&train_r, cfg.data.image_size)?;
    let (test_x, test_t) = if test_r.is_empty() {
        (Tensor::zeros([0], (tch::Kind::Float, Device::Cpu)), vec![])
    } else {
        materialise(&test_r, cfg.data.image_size)?
    };
    let test_fields: Vec<Fields> = test_r.iter().map(|r| r.fields.clone()).collect();
    eprintln!(
        "records: {} train / {} test, {} distinct train sentences; loaded in {:.1} s",
        train_r.len(),
        test_r.len(),
        train_t
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        t0.elapsed().as_secs_f64()
    );
    let b = cfg.optim.batch_size;
    if b < 2 || train_r.len() < b {
        bail!(
            "optim.batch_size {b} must be ≥ 2 and ≤ the {} training records",
            train_r.len()
        );
    }
    let iters = (train_r.len() / b) as u64; // drop_last
    let total = iters * cfg.optim.epochs;

    tch::manual_seed(cfg.runtime.seed as i64);
    let mut model = Claires::new(cfg, device)?;
    let text_trains = model.text_trains(cfg);
    let image_trains = model.image_trains(cfg);
    // a frozen text encoder: its sentence features are computed once
    let text_cache = if text_trains {
        None
    } else {
        let refs: Vec<&str> = train_t.iter().map(String::as_str).collect();
        let mut parts = Vec::new();
        for c in refs.chunks(64) {
            parts.push(tch::no_grad(|| model.text_features(c, false))?);
        }
        Some(Tensor::cat(&parts, 0))
    };
    let mut opt = build_optimizer(cfg, &model)?;
    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        load_into(&model.vs, ck.group("model")?, true).context("restoring the model")?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}/{total}", run.dir.display());
    }
    let end = stop_at.map_or(total, |s| s.min(total));
    let progress = Progress::new(total, start, "claires");
    let save = |run: &Run, step: u64, model: &Claires, opt: &AdamW| -> Result<()> {
        let m = named_variables(&model.vs);
        let o = opt.state();
        let groups: Vec<(&str, &Named)> = vec![("model", &m), ("optim", &o)];
        run.checkpoints.save(
            step,
            cfg.runtime.seed,
            &groups,
            json!({"epoch": step / iters}),
        )?;
        Ok(())
    };
    let mut step = start;
    while step < end {
        let epoch = step / iters;
        let mut order: Vec<usize> = (0..train_r.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.runtime.seed ^ (epoch + 1).wrapping_mul(0x51_7cc1_b727),
        ));
        let first = step % iters;
        for it in first..iters {
            if step >= end {
                break;
            }
            seed_step(cfg.runtime.seed, step);
            let idx: Vec<i64> = order[(it as usize) * b..(it as usize + 1) * b]
                .iter()
                .map(|&i| i as i64)
                .collect();
            let it_t = Tensor::from_slice(&idx);
            let x = train_x.index_select(0, &it_t);
            let img = model.embed_images(&x, true, image_trains)?;
            let tf = match &text_cache {
                Some(c) => c.index_select(0, &it_t).to_device(device),
                None => {
                    let t: Vec<&str> = idx.iter().map(|&i| train_t[i as usize].as_str()).collect();
                    model.text_features(&t, true)?
                }
            };
            let txt = model.project_text(&tf, true);
            let loss = model.loss(&img, &txt)?;
            let lv = loss.double_value(&[]);
            let done = step + 1;
            run.check_finite(done, &[("loss", lv)])?;
            opt.zero_grad();
            loss.backward();
            opt.step()?;
            model.after_step();
            step = done;
            if done % cfg.log.log_every == 0 || done == end {
                run.metrics.log(
                    done,
                    &[
                        ("loss", json!(lv)),
                        ("logit_scale", json!(model.logit_scale())),
                        ("epoch", json!(epoch)),
                        ("elapsed_s", json!(t0.elapsed().as_secs_f64())),
                    ],
                )?;
            }
            progress.update(done, &format!("ep {epoch} loss {lv:.4}"));
        }
        if step % iters == 0 && step > start {
            let ep = step / iters;
            if cfg.eval.every_epoch && !test_r.is_empty() {
                let r = evaluate(&model, cfg, &test_x, &test_t, &test_fields, &[0])?;
                let p = &r[0].metrics;
                let mut fields: Vec<(String, serde_json::Value)> = p
                    .hits
                    .iter()
                    .map(|(k, v)| (format!("paired_hit@{k}"), json!(v)))
                    .collect();
                fields.push(("paired_mrr".into(), json!(p.mrr)));
                fields.push(("paired_mean_rank".into(), json!(p.mean_rank)));
                fields.push(("paired_median_rank".into(), json!(p.median_rank)));
                fields.push(("label_match_mrr".into(), json!(r[1].metrics.mrr)));
                fields.push(("logit_scale".into(), json!(model.logit_scale())));
                let refs: Vec<(&str, serde_json::Value)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                run.metrics.log(step, &refs)?;
                progress.println(&format!(
                    "epoch {ep}: paired MRR {:.3}, label-match MRR {:.3}, logit scale {:.2}",
                    p.mrr,
                    r[1].metrics.mrr,
                    model.logit_scale()
                ));
            }
            if ep.is_multiple_of(cfg.log.checkpoint_every_epochs.max(1)) || step == end {
                save(&run, step, &model, &opt)?;
            }
        } else if step == end {
            save(&run, step, &model, &opt)?;
        }
    }
    progress.finish();
    if end < total {
        return Ok(Outcome {
            report: None,
            step: end,
            run_dir: run.dir.clone(),
        });
    }
    let train_wall = t0.elapsed().as_secs_f64();
    let mp = model_path(&run.dir);
    model.save(&mp)?;
    let results = if test_r.is_empty() {
        vec![]
    } else {
        evaluate(&model, cfg, &test_x, &test_t, &test_fields, &cfg.eval.pools)?
    };
    if !test_r.is_empty() {
        let fig = run.figures_dir()?.join("retrieval_topk.png");
        crate::figures::topk_figure(&model, &test_x, &test_r, 5, 4, &fig)
            .with_context(|| format!("drawing {}", fig.display()))?;
    }
    // the headline number for comparison tables: paired MRR over the whole test gallery
    let headline = results
        .iter()
        .find(|r| r.mode == "paired" && r.pool == 0)
        .map(|r| r.metrics.mrr);
    let report = json!({
        "method": "claires",
        "metric": "MRR (paired, whole test gallery)",
        "value": headline,
        "task": "text → image retrieval (query: the template sentence of a test record)",
        "results": results,
        "paper": cfg.paper,
        "data": if cfg.data.manifest.is_empty() {
            format!("VQA-RAD records ({}): {} train / {} test", data_root(cfg).display(), train_r.len(), test_r.len())
        } else {
            format!("manifest {}: {} train / {} test", cfg.data.manifest, train_r.len(), test_r.len())
        },
        "distinct_test_sentences": test_t.iter().collect::<std::collections::BTreeSet<_>>().len(),
        "model": format!("{} {}px + MiniLM-L6 ({} pooling{}), heads → {}", cfg.model.image_arch, cfg.data.image_size, cfg.model.text_pooling, if text_trains {""} else {", frozen"}, cfg.model.embed_dim),
        "loss": cfg.loss.kind,
        "logit_scale": model.logit_scale(),
        "epochs": cfg.optim.epochs,
        "batch_size": b,
        "steps": total,
        "model_checksum": model.checksum(),
        "model_file": mp.display().to_string(),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "train_wall_s": train_wall,
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    run.write_report(&report)?;
    Ok(Outcome {
        report: Some(report),
        step: end,
        run_dir: run.dir.clone(),
    })
}

/// A trained model from a run folder (`config.toml` + `model.safetensors`).
pub fn load_run(run_dir: &Path) -> Result<(ClairesConfig, Claires)> {
    let cp = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&cp).with_context(|| format!("reading {}", cp.display()))?;
    let cfg: ClairesConfig = contrast_core::train::load_config(
        Some(contrast_core::train::ConfigSource::text(
            text,
            cp.display().to_string(),
        )),
        &[],
    )?;
    let device = cfg.runtime.init_without_autocast("claires")?;
    let mut cfg2 = cfg.clone();
    cfg2.model.text_pretrained = false; // the run's weights replace them
    let mut model = Claires::new(&cfg2, device)?;
    let mp = model_path(run_dir);
    if !mp.exists() {
        bail!(
            "{} has no model.safetensors: the run did not finish (`claires train --resume`)",
            run_dir.display()
        );
    }
    model.load(&mp)?;
    Ok((cfg, model))
}
