//! CLAIRES as a [`Method`] of the shared [`contrast_core::train::Trainer`]: CLIP on
//! image–sentence pairs ([`ClairesMethod`]: the epoch order [`EpochOrder`], the step, the logit
//! scale's clamp after each update, the per-epoch retrieval monitor on the test split, the
//! final retrieval evaluation that also saves `model.safetensors`, the top-k figure), and the
//! retrieval evaluation itself.

use crate::config::ClairesConfig;
use crate::model::Claires;
use crate::records::{load_manifest, vqa_rad_records, Fields, Record};
use anyhow::{bail, Context, Result};
use contrast_core::eval::retrieval::{
    candidate_pool, first_relevant_rank, metrics_from_ranks, RetrievalMetrics,
};
use contrast_core::nn::export::{backbone_state, resnet_meta, Export};
use contrast_core::nn::resnet::{resnet18, resnet50};
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::schedule::Schedule;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::{
    derive_seed, Batches, Checkpoint, Evaluation, Length, LogConfig, Losses, Method, Monitor,
    Optimization, Preset, RunCtx, RunReport, RuntimeConfig, StepCtx,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
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
/// the gallery images (or a pool of `pool` of them that contains image `q`, drawn from
/// `derive_seed(seed, "candidate-pool", q)`).
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
                    candidate_pool(n, q, pool, derive_seed(seed, "candidate-pool", q as u64))?;
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

/// The final weights of a run.
pub fn model_path(run_dir: &Path) -> PathBuf {
    run_dir.join("model.safetensors")
}

/// AdamW over the model's parameter groups (heads at `optim.lr_head`, encoders at their own
/// rates, see [`Claires::param_groups`]).
pub fn build_optimizer(cfg: &ClairesConfig, model: &Claires) -> Result<AdamW> {
    AdamW::new(model.param_groups(cfg)?, adamw_config(cfg))
}

/// The AdamW settings every group shares (PyTorch's betas and eps; lr = `optim.lr_head`).
pub fn adamw_config(cfg: &ClairesConfig) -> AdamWConfig {
    AdamWConfig {
        lr: cfg.optim.lr_head,
        ..AdamWConfig::default()
    }
}

/// The training order: every epoch a permutation of the training records (seeded by the run
/// seed and the epoch), cut into `records / batch` batches of record indices (the last
/// incomplete batch dropped).
#[derive(Debug, Clone)]
pub struct EpochOrder {
    pub records: usize,
    pub batch: usize,
    pub seed: u64,
}

impl EpochOrder {
    /// The permutation of epoch `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.records).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(
            self.seed,
            "epoch-order",
            epoch,
        )));
        order
    }
}

impl Batches for EpochOrder {
    /// Indices of the batch's training records.
    type Batch = Vec<i64>;
    fn per_epoch(&self) -> u64 {
        (self.records / self.batch.max(1)) as u64
    }
    fn iter_from(&mut self, step: u64) -> Box<dyn Iterator<Item = Result<Vec<i64>>> + '_> {
        let (per, b) = (self.per_epoch().max(1), self.batch);
        let (epoch, first) = (step / per, step % per);
        let this = self.clone();
        Box::new((epoch..).flat_map(move |e| {
            let order = this.order(e);
            let from = if e == epoch { first } else { 0 };
            (from..per).map(move |it| {
                let it = it as usize;
                Ok(order[it * b..(it + 1) * b]
                    .iter()
                    .map(|&i| i as i64)
                    .collect())
            })
        }))
    }
}

/// CLAIRES training: CLIP (or the tutorial's soft-target CLIP) between projected image and
/// sentence embeddings of the training records; evaluated by text → image retrieval on the
/// held-out records.
pub struct ClairesMethod {
    cfg: ClairesConfig,
    device: Device,
    pub model: Claires,
    train_n: usize,
    train_x: Tensor,
    train_t: Vec<String>,
    /// Sentence features of the training records when the text encoder is frozen (computed
    /// once).
    text_cache: Option<Tensor>,
    text_trains: bool,
    image_trains: bool,
    test_r: Vec<Record>,
    test_x: Tensor,
    test_t: Vec<String>,
    test_fields: Vec<Fields>,
}

/// The headline metric of every run.
const METRIC: &str = "MRR (paired, whole test gallery)";

/// Records with their images decoded and their sentences.
pub struct Split {
    pub records: Vec<Record>,
    /// `[N, 3, S, S]` (an empty tensor when there are no records).
    pub images: Tensor,
    pub texts: Vec<String>,
}

impl Split {
    /// Decode the records' images at `size` px.
    pub fn load(records: Vec<Record>, size: u32) -> Result<Self> {
        let (images, texts) = if records.is_empty() {
            (Tensor::zeros([0], (tch::Kind::Float, Device::Cpu)), vec![])
        } else {
            materialise(&records, size)?
        };
        Ok(Self {
            records,
            images,
            texts,
        })
    }

    /// Images and sentences without records (the benches' synthetic batch).
    pub fn unrecorded(images: Tensor, texts: Vec<String>) -> Self {
        Self {
            records: vec![],
            images,
            texts,
        }
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

impl ClairesMethod {
    /// A run on records that are already decoded: what [`Method::build`] does after loading
    /// and splitting them.
    pub fn with_data(
        cfg: &ClairesConfig,
        device: Device,
        train: Split,
        test: Split,
    ) -> Result<Self> {
        let b = cfg.optim.batch_size;
        if b < 2 || train.len() < b {
            bail!(
                "optim.batch_size {b} must be ≥ 2 and ≤ the {} training records",
                train.len()
            );
        }
        let model = Claires::new(cfg, device)?;
        let text_trains = model.text_trains(cfg);
        let image_trains = model.image_trains(cfg);
        // a frozen text encoder: its sentence features are computed once
        let text_cache = if text_trains {
            None
        } else {
            let refs: Vec<&str> = train.texts.iter().map(String::as_str).collect();
            let mut parts = Vec::new();
            for c in refs.chunks(64) {
                parts.push(tch::no_grad(|| model.text_features(c, false))?);
            }
            Some(Tensor::cat(&parts, 0))
        };
        let test_fields: Vec<Fields> = test.records.iter().map(|r| r.fields.clone()).collect();
        Ok(Self {
            cfg: cfg.clone(),
            device,
            model,
            train_n: train.len(),
            train_x: train.images,
            train_t: train.texts,
            text_cache,
            text_trains,
            image_trains,
            test_r: test.records,
            test_x: test.images,
            test_t: test.texts,
            test_fields,
        })
    }

    /// The training images of data-set `indices` (what [`Method::step`] encodes).
    pub fn images(&self, indices: &[i64]) -> Tensor {
        self.train_x.index_select(0, &Tensor::from_slice(indices))
    }

    /// The training sentences of data-set `indices` (what [`Method::step`] encodes).
    pub fn texts(&self, indices: &[i64]) -> Vec<&str> {
        indices
            .iter()
            .map(|&i| self.train_t[i as usize].as_str())
            .collect()
    }
}

impl Method for ClairesMethod {
    type Config = ClairesConfig;
    type Batch = Vec<i64>;
    const NAME: &'static str = "claires";

    fn runtime(cfg: &ClairesConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &ClairesConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &ClairesConfig) -> Length {
        Length::Epochs(cfg.optim.epochs)
    }

    fn build(cfg: &ClairesConfig, device: Device) -> Result<Self> {
        let t0 = std::time::Instant::now();
        let records = load_records(cfg)?;
        let (train_r, test_r) = split(&records, cfg.data.test_fraction, cfg.data.split_seed)?;
        let train = Split::load(train_r, cfg.data.image_size)?;
        let test = Split::load(test_r, cfg.data.image_size)?;
        eprintln!(
            "records: {} train / {} test, {} distinct train sentences; loaded in {:.1} s",
            train.len(),
            test.len(),
            train.texts.iter().collect::<BTreeSet<_>>().len(),
            t0.elapsed().as_secs_f64()
        );
        Self::with_data(cfg, device, train, test)
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Vec<i64>>>> {
        Ok(Box::new(EpochOrder {
            records: self.train_n,
            batch: self.cfg.optim.batch_size,
            seed: self.cfg.runtime.seed,
        }))
    }

    fn optimization(&self, _total: u64, _per_epoch: u64) -> Result<Optimization> {
        Ok(Optimization {
            optimizer: Box::new(build_optimizer(&self.cfg, &self.model)?),
            // no schedule: every group at its fixed rate (`lr_scale` relative to `lr_head`)
            lr: Schedule::constant(self.cfg.optim.lr_head),
            weight_decay: None,
            clip: None,
        })
    }

    fn variant(&self) -> String {
        self.cfg.loss.kind.clone()
    }
    fn preset(cfg: &ClairesConfig) -> Option<Preset> {
        Some(Preset {
            variant: cfg.loss.kind.clone(),
            metric: METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        self.cfg.optim.batch_size as u64
    }

    fn distributed(_cfg: &ClairesConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::AsOfficial(
            "the CLIP loss runs over the image and text features of every rank, gathered with gradient (open_clip's ClipLoss with --gather-with-grad: the loss of one process on the global batch; open_clip's default gathers without gradient, which gives the encoders 1/W of that gradient); the tutorial's soft targets are taken over the global batch too; BatchNorm per rank, as open_clip's default (runtime.sync_batch_norm = true synchronises it)",
        )
    }
    fn describe_data(&self) -> String {
        let c = &self.cfg;
        let n_test = self.test_r.len();
        if c.data.manifest.is_empty() {
            format!(
                "VQA-RAD records ({}): {} train / {n_test} test",
                data_root(c).display(),
                self.train_n
            )
        } else {
            format!(
                "manifest {}: {} train / {n_test} test",
                c.data.manifest, self.train_n
            )
        }
    }
    fn describe_model(&self) -> String {
        let m = &self.cfg.model;
        format!(
            "{} {}px + MiniLM-L6 ({} pooling{}), heads → {}",
            m.image_arch,
            self.cfg.data.image_size,
            m.text_pooling,
            if self.text_trains { "" } else { ", frozen" },
            m.embed_dim
        )
    }
    fn paper(&self) -> Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or(Value::Null)
    }

    /// Several ranks: each takes its rows of the global batch, and the loss runs over the
    /// features of every rank, gathered with gradient.
    fn step(&mut self, idx: Vec<i64>, _ctx: &StepCtx) -> Result<Losses> {
        let shard = contrast_core::dist::Shard::current();
        shard.local_batch(idx.len())?;
        let idx = &idx[shard.range(idx.len())];
        let img = self
            .model
            .embed_images(&self.images(idx), true, self.image_trains)?;
        let tf = match &self.text_cache {
            Some(c) => c
                .index_select(0, &Tensor::from_slice(idx))
                .to_device(self.device),
            None => self.model.text_features(&self.texts(idx), true)?,
        };
        let txt = self.model.project_text(&tf, true);
        let (img, txt) = if shard.world > 1 {
            let mut all = contrast_core::dist::gather_columns_with_grad(&[&img, &txt])?;
            let txt = all.pop().context("the gathered text features")?;
            (all.pop().context("the gathered image features")?, txt)
        } else {
            (img, txt)
        };
        let loss = self.model.loss(&img, &txt)?;
        // the scale this step's loss used (before the update and its clamp)
        Ok(Losses::single("loss", loss).with("logit_scale", self.model.logit_scale()))
    }

    /// Clamp the CLIP logit scale.
    fn after_step(&mut self, _ctx: &StepCtx) -> Result<()> {
        self.model.after_step();
        Ok(())
    }

    /// `--record`: the global batch's record indices (`indices`, rows of the training split):
    /// the images and sentences follow from them.
    fn batch_tensors(idx: &Vec<i64>) -> Named {
        vec![("indices".into(), Tensor::from_slice(idx))]
    }

    fn state(&self) -> Vec<(String, Named)> {
        vec![("model".into(), named_variables(&self.model.vs))]
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.model.vs, ck.group("model")?, true).context("restoring the model")
    }

    /// The image encoder as a headless torchvision ResNet (the text encoder and the heads are
    /// not part of the export).
    fn export(&self) -> Result<Export> {
        let cfg = match self.cfg.model.image_arch.as_str() {
            "resnet18" => resnet18(),
            "resnet50" => resnet50(),
            other => bail!("unknown model.image_arch `{other}`"),
        };
        Ok(Export {
            tensors: backbone_state(&named_variables(&self.model.vs), "image"),
            meta: resnet_meta(&cfg),
        })
    }

    /// After every epoch (`eval.every_epoch`): paired retrieval over the whole test gallery.
    fn monitor(&mut self, ctx: &StepCtx, _run: &RunCtx) -> Result<Monitor> {
        if !(ctx.epoch_end() && self.cfg.eval.every_epoch && !self.test_r.is_empty()) {
            return Ok(Monitor::default());
        }
        let r = evaluate(
            &self.model,
            &self.cfg,
            &self.test_x,
            &self.test_t,
            &self.test_fields,
            &[0],
        )?;
        let p = &r[0].metrics;
        let mut fields: Vec<(String, Value)> = p
            .hits
            .iter()
            .map(|(k, v)| (format!("paired_hit@{k}"), json!(v)))
            .collect();
        fields.push(("paired_mrr".into(), json!(p.mrr)));
        fields.push(("paired_mean_rank".into(), json!(p.mean_rank)));
        fields.push(("paired_median_rank".into(), json!(p.median_rank)));
        fields.push(("label_match_mrr".into(), json!(r[1].metrics.mrr)));
        fields.push(("logit_scale".into(), json!(self.model.logit_scale())));
        Ok(Monitor {
            fields,
            message: Some(format!(
                "epoch {}: paired MRR {:.3}, label-match MRR {:.3}, logit scale {:.2}",
                ctx.done() / ctx.per_epoch,
                p.mrr,
                r[1].metrics.mrr,
                self.model.logit_scale()
            )),
        })
    }

    /// Save `model.safetensors` in the run folder (at the end of training; `eval --run` leaves
    /// it as trained), then evaluate every `eval.pools` setting in both modes; the headline is
    /// the paired MRR over the whole test gallery.
    fn evaluate(&mut self, run: &RunCtx) -> Result<Evaluation> {
        let mp = model_path(&run.dir);
        if run.end_of_training {
            self.model.save(&mp)?;
        }
        let results = if self.test_r.is_empty() {
            vec![]
        } else {
            evaluate(
                &self.model,
                &self.cfg,
                &self.test_x,
                &self.test_t,
                &self.test_fields,
                &self.cfg.eval.pools,
            )?
        };
        let headline = results
            .iter()
            .find(|r| r.mode == "paired" && r.pool == 0)
            .map(|r| r.metrics.mrr);
        Ok(Evaluation::new(METRIC, headline)
            .with(
                "task",
                "text → image retrieval (query: the template sentence of a test record)",
            )
            .with("results", &results)
            .with(
                "distinct_test_sentences",
                self.test_t.iter().collect::<BTreeSet<_>>().len(),
            )
            .with("loss", &self.cfg.loss.kind)
            .with("logit_scale", self.model.logit_scale())
            .with("model_checksum", self.model.checksum())
            .with("model_file", mp.display().to_string()))
    }

    /// The top-k retrieval figure of a few test queries (`retrieval_topk.png`).
    fn figures(&mut self, dir: &Path) -> Result<()> {
        if self.test_r.is_empty() {
            return Ok(());
        }
        let fig = dir.join("retrieval_topk.png");
        crate::figures::topk_figure(&self.model, &self.test_x, &self.test_r, 5, 4, &fig)
            .with_context(|| format!("drawing {}", fig.display()))?;
        Ok(())
    }

    /// Our retrieval numbers beside the paper's (no baseline).
    fn table(ours: &RunReport, _baseline: Option<&RunReport>) -> String {
        paper_table(&serde_json::to_value(ours).unwrap_or(Value::Null))
    }
}

/// One line per retrieval setting of a report's (or `eval.json`'s) `results`.
pub fn results_lines(report: &Value) -> String {
    let mut s = String::new();
    for r in report["results"].as_array().into_iter().flatten() {
        let m = &r["metrics"];
        let pool = match r["pool"].as_u64() {
            Some(0) | None => format!("all {}", r["gallery"]),
            Some(p) => format!("{p} of {}", r["gallery"]),
        };
        let hits: Vec<String> = m["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| format!("hit@{} {:.3}", h[0], h[1].as_f64().unwrap_or(f64::NAN)))
            .collect();
        s.push_str(&format!(
            "  ours  {:<11} pool {:<10} {}  MRR {:.3}\n",
            r["mode"].as_str().unwrap_or("?"),
            pool,
            hits.join("  "),
            m["mrr"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    s
}

/// Our retrieval settings beside the paper's numbers, with the caveat.
pub fn paper_table(report: &Value) -> String {
    let mut s = String::from("CLAIRES text → image retrieval (held-out records)\n");
    s.push_str(&results_lines(report));
    s.push_str(&format!(
        "  paper (Dental CLAIRES, private dental data, mode/pool unknown): hit@3 {}  MRR {}\n\
         caveat: different data (VQA-RAD radiology records here, private periapical radiographs \
         in the paper) and unknown protocol: the numbers are not comparable.\n",
        report["paper"]["hit3"], report["paper"]["mrr"]
    ));
    s
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
    let device = cfg.runtime.init()?;
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
