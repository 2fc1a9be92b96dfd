//! The two stages of GraSS as [`Method`]s of the shared [`Trainer`]:
//!
//! * [`Pretrain`]: stage A (SimCLR instance discrimination) for `pretrain.warmup_epochs`, then
//!   stage B (gradient-guided sampling); `pretrain.method = "simclr"` is the baseline (stage A
//!   throughout). LARC over SGD, the official composite LR schedule. Its evaluation draws the
//!   heat-map overlays (the pre-training has no metric of its own).
//! * [`Finetune`]: DeepLabV3+ on the encoder of a pre-training run (`finetune.encoder`), frozen
//!   or fine-tuned, SGD with poly LR, batches of random labelled tiles drawn per step; evaluated
//!   by mIoU / per-class IoU / overall accuracy on the test scenes, predicted tile by tile.
//!
//! [`reproduce`] runs both pre-trainings and both fine-tunes and prints the comparison table.

use crate::config::{GrassConfig, PretrainConfig};
use crate::data::{source, Source};
use crate::deeplab::{DeepLabConfig, DeepLabV3Plus};
use crate::model::{model_trunk, GrassNet};
use crate::overlay::save_overlays;
use crate::raster::{read_tiles, tile_grid, MaskCoding, Raster, TileIndex, Window};
use crate::sampling::{feature_gradient, gradient_guided_crops, BoxRect};
use anyhow::{bail, ensure, Context, Result};
use contrast_core::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
use contrast_core::data::{Batch, Dataset, InMemoryDataset, Loader, LoaderConfig, Recipe};
use contrast_core::dist::Shard;
use contrast_core::eval::miou::ConfusionMatrix;
use contrast_core::loss::NtXent;
use contrast_core::nn::export::{backbone_state, resnet_meta, Export};
use contrast_core::nn::resnet::ResNetConfig;
use contrast_core::optim::lars::{Lars, LarsConfig, LarsMode};
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::{single_group, ParamGroup, Sgd};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::config::{load_config, ConfigSource};
use contrast_core::train::{
    derive_seed, Batches, Checkpoint, Checkpointer, Evaluation, Length, LogConfig, Losses, Method,
    Optimization, PerStep, Preset, Progress, RunCtx, RunOptions, RunReport, RuntimeConfig, StepCtx,
    Trainer,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Reduction, Tensor};

/// The data set of a config.
pub fn open_source(cfg: &GrassConfig) -> Result<Source> {
    if cfg.data.root.is_empty() {
        bail!("data.root is empty: pass --set data.root=<folder> or use `cargo xtask reproduce grass`");
    }
    source(
        &cfg.data.format,
        Path::new(&cfg.data.root),
        cfg.data.test_every,
        cfg.data.max_scenes,
        cfg.data.ignore_index,
    )
}

/// GraSS/VISSL parameter groups: BN parameters without weight decay (`regularize_bn: False`),
/// every other parameter (biases included) with it.
pub fn grass_groups(named: Named, wd: f64) -> Vec<ParamGroup> {
    let (bn, rest): (Named, Named) = named
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .partition(|(n, _)| n.contains(".bn") || n.contains("downsample.1"));
    vec![
        ParamGroup {
            name: "decay".into(),
            params: rest,
            weight_decay: wd,
            lr_scale: 1.0,
        },
        ParamGroup {
            name: "bn".into(),
            params: bn,
            weight_decay: 0.0,
            lr_scale: 1.0,
        },
    ]
}

/// The pre-training optimiser at base learning rate `lr`: VISSL's LARC (`clip: False`, i.e.
/// scale mode) over SGD with momentum, BN parameters in a no-decay group; every group runs at
/// `lr · pretrain.lr_scale`.
pub fn build_optimizer(p: &PretrainConfig, net: &GrassNet, lr: f64) -> Result<Lars> {
    let mut groups = grass_groups(named_variables(&net.vs), p.weight_decay);
    for g in &mut groups {
        g.lr_scale = p.lr_scale;
    }
    Lars::new(
        groups,
        LarsConfig {
            momentum: p.momentum,
            trust_coefficient: p.trust_coefficient,
            mode: LarsMode::Scale,
            ..LarsConfig::grass(lr)
        },
    )
}

/// What one pre-training step computed ([`step_output`]).
pub struct StepOutput {
    /// The training loss (of the second forward, on the crops, in the GS stage).
    pub loss: Tensor,
    /// GS stage only: the gradient-guided boxes (`None` entries: views kept whole) and the loss
    /// of the first forward on the whole views (the official step's `loss_guide`).
    pub sampling: Option<(Vec<Option<BoxRect>>, f64)>,
}

/// NT-Xent of the projections `z [2N, D]` (`[z₁…z_N, z'₁…z'_N]`). On several ranks: over the
/// projections of every rank, gathered with gradient (VISSL's `SimclrInfoNCECriterion`
/// `gather_from_all`) into the global batch's `[z₁…z_{WN}, z'₁…z'_{WN}]`, which is the loss a
/// single process computes on the global batch.
pub fn nt_xent(loss_fn: &NtXent, z: &Tensor) -> Result<Tensor> {
    if contrast_core::dist::world() == 1 {
        return loss_fn.forward(z);
    }
    let halves = z.chunk(2, 0);
    ensure!(
        halves.len() == 2,
        "NT-Xent needs the two views' projections, got shape {:?}",
        z.size()
    );
    let all = contrast_core::dist::gather_columns_with_grad(&[&halves[0], &halves[1]])?;
    loss_fn.forward(&Tensor::cat(&all, 0))
}

/// One pre-training step on the views `x [2N, 3, S, S]` (`[x₁…x_N, x'₁…x'_N]`). With
/// `sampling` (the GS stage) a first forward gives `dL/dF` of the layer-4 map only, every view
/// is cropped to its gradient-guided box (`threshold_ratio`), and the loss is that of a second
/// forward on the crops.
pub fn step_output(
    net: &GrassNet,
    loss_fn: &NtXent,
    x: &Tensor,
    sampling: bool,
    threshold_ratio: f32,
) -> Result<StepOutput> {
    let mut guided = None;
    let crops;
    let x = if sampling {
        // first forward (train mode, as the official step): only dL/dF of the layer-4 map is
        // needed, so the trunk runs without an autograd graph and the gradient flows through
        // the pooling and the head alone: the same F and dL/dF as through the full graph (and
        // the same BN statistics updates), without recording the trunk's backward
        let f = tch::no_grad(|| net.trunk.forward_features(x, true))?
            .layer4
            .detach()
            .set_requires_grad(true);
        let z = net.project(&f.adaptive_avg_pool2d([1, 1]).flatten(1, -1), true);
        let l0 = nt_xent(loss_fn, &z)?;
        // several ranks: the gradient of the global loss (× the world size, which the heat
        // map's per-view normalisation removes; VISSL's `GatherLayer` sums over the ranks too)
        let g = feature_gradient(&l0, &f)?;
        let (c, b, _) = gradient_guided_crops(x, &f.detach(), &g, threshold_ratio)?;
        guided = Some((b, l0.double_value(&[])));
        crops = c;
        &crops
    } else {
        x
    };
    let out = net.forward(x, true)?;
    Ok(StepOutput {
        loss: nt_xent(loss_fn, &out.z)?,
        sampling: guided,
    })
}

/// [`step_output`] as `(loss, boxes)`.
pub fn step_loss(
    net: &GrassNet,
    loss_fn: &NtXent,
    x: &Tensor,
    sampling: bool,
    threshold_ratio: f32,
) -> Result<(Tensor, Option<Vec<Option<BoxRect>>>)> {
    let o = step_output(net, loss_fn, x, sampling, threshold_ratio)?;
    Ok((o.loss, o.sampling.map(|(b, _)| b)))
}

/// Unlabelled training tiles as an in-memory data set (HWC bytes).
fn pretrain_dataset(cfg: &GrassConfig, src: &Source) -> Result<InMemoryDataset> {
    let pairs: Vec<(PathBuf, Option<PathBuf>)> =
        src.train.iter().map(|(i, _)| (i.clone(), None)).collect();
    let idx = TileIndex::build(&pairs, cfg.data.tile_size, cfg.data.tile_stride)?;
    ensure!(
        !idx.is_empty(),
        "no training tiles of {} px",
        cfg.data.tile_size
    );
    let tiles = read_tiles(&idx, &src.masks, cfg.data.threads)?;
    let t = cfg.data.tile_size;
    let mut px = Vec::with_capacity(tiles.len() * t * t * 3);
    for d in &tiles {
        px.extend_from_slice(&d.rgb_hwc);
    }
    InMemoryDataset::from_nhwc(px, t, t, 3, vec![-1; tiles.len()], vec![])
}

/// The pre-training stage: GraSS (`pretrain.method = "grass"`: SimCLR for `warmup_epochs`,
/// then gradient-guided sampling) or the SimCLR baseline (`"simclr"`: SimCLR throughout).
pub struct Pretrain {
    cfg: GrassConfig,
    device: Device,
    pub net: GrassNet,
    loss_fn: NtXent,
    ds: Arc<dyn Dataset>,
    train_scenes: usize,
    /// Gradient-guided sampling after the warm-up (`false`: the baseline).
    gs: bool,
    warmup_epochs: u64,
}

impl Pretrain {
    /// Pre-training on tiles that are already cut (the benches' in-memory set): what
    /// [`Method::build`] does after reading the `train_scenes` scenes and tiling them.
    pub fn with_data(
        cfg: &GrassConfig,
        device: Device,
        ds: Arc<dyn Dataset>,
        train_scenes: usize,
    ) -> Result<Self> {
        let (gs, warmup_epochs) = Self::check(cfg)?;
        let p = &cfg.pretrain;
        ensure!(
            ds.len() >= p.batch_size,
            "{} training tiles are fewer than one batch of {}",
            ds.len(),
            p.batch_size
        );
        let net = GrassNet::with_trunk(
            device,
            &model_trunk(&cfg.model)?,
            cfg.model.out_dim,
            cfg.model.head_relu,
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            device,
            net,
            loss_fn: NtXent::new(p.temperature)?,
            ds,
            train_scenes,
            gs,
            warmup_epochs,
        })
    }

    /// `(gradient-guided sampling on, warm-up epochs)` of a valid `pretrain` section.
    fn check(cfg: &GrassConfig) -> Result<(bool, u64)> {
        let p = &cfg.pretrain;
        let Some(warmup_epochs) = p.warmup_epochs else {
            bail!("pretrain.warmup_epochs is required (the paper does not give it): set it in the preset or with --set pretrain.warmup_epochs=N");
        };
        let gs = match p.method.as_str() {
            "grass" => true,
            "simclr" => false,
            other => bail!("unknown pretrain.method `{other}`: use grass or simclr"),
        };
        ensure!(
            warmup_epochs <= p.epochs,
            "pretrain.warmup_epochs {warmup_epochs} exceeds pretrain.epochs {}",
            p.epochs
        );
        Ok((gs, warmup_epochs))
    }

    /// The SimCLR view loader (VISSL's `ImgPilGaussianBlur`: PIL's radius-σ filter).
    fn loader(&self) -> Result<Loader> {
        let c = &self.cfg;
        Loader::new(
            Arc::clone(&self.ds),
            Recipe::simclr_pil_blur(c.data.crop_size, c.data.blur_p)?,
            LoaderConfig {
                batch_size: c.pretrain.batch_size,
                shuffle: true,
                drop_last: true,
                seed: c.runtime.seed,
                prefetch: c.data.prefetch.max(1),
                threads: c.data.threads,
                shard: contrast_core::dist::Shard::current(),
            },
        )
    }

    /// `[x_1..x_N, x'_1..x'_N]` (VISSL `simclr_collator`) on the device.
    fn views(&self, batch: &Batch) -> Tensor {
        Tensor::cat(&[&batch.views[0], &batch.views[1]], 0).to_device(self.device)
    }

    fn gs_steps(&self, total: u64, per_epoch: u64) -> u64 {
        if self.gs {
            total.saturating_sub(per_epoch * self.warmup_epochs)
        } else {
            0
        }
    }
}

/// What a pre-training run reports as its metric (it has no score of its own).
const PRETRAIN_METRIC: &str = "none (pre-training; the fine-tune reports mIoU)";

impl Method for Pretrain {
    type Config = GrassConfig;
    type Batch = Batch;
    const NAME: &'static str = "grass";

    fn runtime(cfg: &GrassConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &GrassConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &GrassConfig) -> Length {
        Length::Epochs(cfg.pretrain.epochs)
    }

    fn build(cfg: &GrassConfig, device: Device) -> Result<Self> {
        // the settings first: a wrong one fails before the scenes are read
        Self::check(cfg)?;
        let src = open_source(cfg)?;
        let ds: Arc<dyn Dataset> = Arc::new(pretrain_dataset(cfg, &src)?);
        Self::with_data(cfg, device, ds, src.train.len())
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Batch>>> {
        Ok(Box::new(self.loader()?))
    }

    fn optimization(&self, total: u64, _per_epoch: u64) -> Result<Optimization> {
        let lr = Schedule::grass_vissl(total)?;
        Ok(Optimization {
            optimizer: Box::new(build_optimizer(&self.cfg.pretrain, &self.net, lr.value(0))?),
            lr,
            weight_decay: None,
            clip: None,
        })
    }

    fn variant(&self) -> String {
        self.cfg.pretrain.method.clone()
    }
    fn preset(cfg: &GrassConfig) -> Option<Preset> {
        Some(Preset {
            variant: cfg.pretrain.method.clone(),
            metric: PRETRAIN_METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        self.cfg.pretrain.batch_size as u64
    }
    fn describe_data(&self) -> String {
        let d = &self.cfg.data;
        format!(
            "{} ({} scenes → {} tiles of {} px)",
            d.format,
            self.train_scenes,
            self.ds.len(),
            d.tile_size
        )
    }
    fn describe_model(&self) -> String {
        format!(
            "{} head_relu={}",
            self.cfg.model.arch, self.cfg.model.head_relu
        )
    }
    fn paper(&self) -> Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or(Value::Null)
    }

    fn step(&mut self, batch: Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = self.views(&batch);
        let sampling = self.gs && ctx.step >= ctx.per_epoch * self.warmup_epochs;
        let p = &self.cfg.pretrain;
        let out = step_output(&self.net, &self.loss_fn, &x, sampling, p.threshold_ratio)?;
        let mut l =
            Losses::single("loss", out.loss).with("stage", if sampling { "gs" } else { "id" });
        if let Some((boxes, guide)) = &out.sampling {
            let s = self.cfg.data.crop_size as f64;
            let areas: Vec<f64> = boxes
                .iter()
                .map(|b| b.map_or(1.0, |b| (b.height() * b.width()) as f64 / (s * s)))
                .collect();
            let kept = boxes.iter().filter(|b| b.is_none()).count();
            l = l
                .with(
                    "box_area_frac",
                    areas.iter().sum::<f64>() / areas.len() as f64,
                )
                .with("views_kept", kept)
                .with("loss_guide", guide);
        }
        Ok(l)
    }

    /// `--record`: the step's two views (`view0`, `view1`: the step runs on their
    /// concatenation, VISSL's `simclr_collator` layout), labels and tile indices.
    fn batch_tensors(batch: &Batch) -> Named {
        batch.named()
    }

    /// VISSL's GraSS configuration converts every BatchNorm to SyncBatchNorm
    /// (`SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN: True` in `grass_1gpu_resnet_b256.yaml`).
    fn official_sync_batch_norm(_cfg: &GrassConfig) -> bool {
        true
    }

    fn distributed(_cfg: &GrassConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::AsOfficial(
            "NT-Xent over the projections of every rank, gathered with gradient (VISSL's SimclrInfoNCECriterion), so the heat maps of the gradient-guided stage come from the global loss as VISSL's GatherLayer gives them; BatchNorm synchronised (runtime.sync_batch_norm, on by default as the GraSS configuration's CONVERT_BN_TO_SYNC_BN); the official configuration itself trains on one GPU",
        )
    }

    fn state(&self) -> Vec<(String, Named)> {
        vec![("model".into(), named_variables(&self.net.vs))]
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.net.vs, ck.group("model")?, true).context("restoring the model")
    }

    /// The pre-trained trunk as a torchvision ResNet (headless).
    fn export(&self) -> Result<Export> {
        Ok(Export {
            tensors: backbone_state(&named_variables(&self.net.vs), "trunk"),
            meta: resnet_meta(&model_trunk(&self.cfg.model)?),
        })
    }

    /// No metric of its own (the fine-tune gives the mIoU): the heat-map boxes of the first
    /// views of the first batch, as PNG overlays in `figures/` (a failure is a warning).
    fn evaluate(&mut self, run: &RunCtx) -> Result<Evaluation> {
        let p = &self.cfg.pretrain;
        let per_epoch = (self.ds.len() / p.batch_size) as u64;
        let total = per_epoch * p.epochs;
        let overlays = if p.overlays > 0 {
            let drawn = (|| -> Result<Vec<Value>> {
                let b = self.loader()?.batch(0, 0)?;
                let x = self.views(&b);
                save_overlays(
                    &self.net,
                    &self.loss_fn,
                    &x,
                    p.overlays,
                    p.threshold_ratio,
                    &run.figures_dir()?,
                )
            })();
            drawn.unwrap_or_else(|e| {
                eprintln!("warning: heat-map overlays not drawn: {e:#}");
                vec![]
            })
        } else {
            vec![]
        };
        Ok(Evaluation::new(PRETRAIN_METRIC, None)
            .with("stage", "pretrain")
            .with("warmup_epochs", self.warmup_epochs)
            .with("crop_size", self.cfg.data.crop_size)
            .with("gs_steps", self.gs_steps(total, per_epoch))
            .with("overlays", overlays))
    }

    fn baseline(cfg: &GrassConfig) -> Option<(String, GrassConfig)> {
        let mut b = cfg.clone();
        b.pretrain.method = "simclr".into();
        Some(("simclr".into(), b))
    }
}

/// Images `[N, H, W, 3]` bytes → normalised float `[N, 3, H, W]`.
fn normalise(hwc: &Tensor) -> Tensor {
    let x = hwc.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
    let dev = x.device();
    let m = Tensor::from_slice(&IMAGENET_MEAN)
        .view([1, 3, 1, 1])
        .to_device(dev);
    let s = Tensor::from_slice(&IMAGENET_STD)
        .view([1, 3, 1, 1])
        .to_device(dev);
    (x - m) / s
}

/// The segmentation network: pretrained trunk + DeepLabV3+ decoder.
struct SegNet {
    net: GrassNet,
    dec_vs: tch::nn::VarStore,
    dec: DeepLabV3Plus,
    frozen: bool,
}

impl SegNet {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (h, w) = (x.size()[2], x.size()[3]);
        let f = if self.frozen {
            // frozen_stages=4 + norm_eval: eval-mode BN, no gradient
            tch::no_grad(|| self.net.trunk.forward_features(x, false))?
        } else {
            self.net.trunk.forward_features(x, train)?
        };
        Ok(self.dec.forward_t(&f.layer1, &f.layer4, (h, w), train))
    }
}

/// Windows covering a scene with tiles of at most `size` (a scene smaller than `size` is one
/// window).
fn eval_windows(w: usize, h: usize, size: usize) -> Result<Vec<Window>> {
    let (tw, th) = (size.min(w), size.min(h));
    let xs: Vec<usize> = tile_grid(w, th, tw, tw)?.iter().map(|t| t.x).collect();
    let ys: Vec<usize> = tile_grid(tw, h, th, th)?.iter().map(|t| t.y).collect();
    Ok(ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| Window::new(x, y, tw, th)))
        .collect())
}

/// Predict every test scene tile by tile into a full-size canvas (each pixel counted once)
/// and accumulate the confusion matrix.
fn confusion(
    seg: &SegNet,
    scenes: &[(PathBuf, Option<PathBuf>)],
    masks: &MaskCoding,
    tile: usize,
    device: Device,
) -> Result<ConfusionMatrix> {
    let mut cm = ConfusionMatrix::new(masks.num_classes(), masks.ignore())?;
    let progress = Progress::new(scenes.len() as u64, 0, "evaluate");
    for (k, (img, mask)) in scenes.iter().enumerate() {
        let mask = mask
            .as_ref()
            .with_context(|| format!("test scene {} has no mask", img.display()))?;
        let r = Raster::open(img)?;
        let (w, h) = r.size();
        let canvas = Tensor::zeros([h as i64, w as i64], (Kind::Int64, Device::Cpu));
        for win in eval_windows(w, h, tile)? {
            let px = r.read_rgb(win)?;
            let x = Tensor::from_slice(&px.to_hwc())
                .view([1, win.height as i64, win.width as i64, 3])
                .to_device(device);
            let pred = tch::no_grad(|| -> Result<Tensor> {
                Ok(seg.logits(&normalise(&x), false)?.argmax(1, false))
            })?;
            canvas
                .narrow(0, win.y as i64, win.height as i64)
                .narrow(1, win.x as i64, win.width as i64)
                .copy_(&pred.get(0).to_device(Device::Cpu));
        }
        let m = Raster::open(mask)?;
        ensure!(
            m.size() == (w, h),
            "mask {} size differs from image {}",
            mask.display(),
            img.display()
        );
        let labels = masks.decode(&m, Window::new(0, 0, w, h))?;
        cm.update(
            &canvas,
            &Tensor::from_slice(&labels).view([h as i64, w as i64]),
        )?;
        progress.update(k as u64 + 1, "");
    }
    progress.finish();
    Ok(cm)
}

/// The fine-tune stage: DeepLabV3+ on the encoder of `finetune.encoder` (a pre-training run
/// folder; empty: random init), evaluated by mIoU / per-class IoU / OA on the test scenes.
pub struct Finetune {
    cfg: GrassConfig,
    device: Device,
    seg: SegNet,
    src: Source,
    /// Labelled training tiles `[n, t, t, 3]` bytes and their labels `[n, t, t]` (CPU).
    images: Tensor,
    labels: Tensor,
    /// The step of the encoder's checkpoint, and its pre-training method.
    encoder_step: Option<u64>,
    encoder_method: Option<String>,
}

impl Finetune {
    fn labelled(&self) -> usize {
        self.images.size()[0] as usize
    }
    fn batch_size(&self) -> usize {
        self.cfg.finetune.batch_size.min(self.labelled())
    }
}

impl Method for Finetune {
    type Config = GrassConfig;
    /// Normalised crops `[B, 3, c, c]` and their labels `[B, c, c]`, on the device.
    type Batch = (Tensor, Tensor);
    const NAME: &'static str = "grass";

    fn runtime(cfg: &GrassConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &GrassConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &GrassConfig) -> Length {
        Length::Steps(cfg.finetune.iters)
    }

    fn build(cfg: &GrassConfig, device: Device) -> Result<Self> {
        let f = &cfg.finetune;
        let frozen = match f.mode.as_str() {
            "frozen" => true,
            "finetune" => false,
            other => bail!("unknown finetune.mode `{other}`: use frozen or finetune"),
        };
        ensure!(
            f.label_fraction > 0.0 && f.label_fraction <= 1.0,
            "finetune.label_fraction must be in (0, 1], got {}",
            f.label_fraction
        );
        let src = open_source(cfg)?;
        let idx = TileIndex::build(&src.train, cfg.data.tile_size, cfg.data.tile_stride)?;
        let tiles = read_tiles(&idx, &src.masks, cfg.data.threads)?;
        let mut order: Vec<usize> = (0..tiles.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            cfg.runtime.seed,
            "label-subset",
            0,
        )));
        let n = ((tiles.len() as f64 * f.label_fraction).ceil() as usize).max(1);
        order.truncate(n);
        order.sort();
        let t = cfg.data.tile_size as i64;
        let mut px = Vec::with_capacity(n * (t * t * 3) as usize);
        let mut lab = Vec::with_capacity(n * (t * t) as usize);
        for &i in &order {
            px.extend_from_slice(&tiles[i].rgb_hwc);
            lab.extend_from_slice(
                tiles[i]
                    .labels
                    .as_ref()
                    .context("training tile without mask")?,
            );
        }
        drop(tiles);
        let images = Tensor::from_slice(&px).view([n as i64, t, t, 3]);
        let labels = Tensor::from_slice(&lab).view([n as i64, t, t]);
        drop((px, lab));

        let mut net = GrassNet::with_trunk(
            device,
            &ResNetConfig {
                output_stride: f.output_stride,
                ..model_trunk(&cfg.model)?
            },
            cfg.model.out_dim,
            cfg.model.head_relu,
        )?;
        let (encoder_step, encoder_method) = if f.encoder.is_empty() {
            (None, None)
        } else {
            let run = Path::new(&f.encoder);
            let dir = run.join("checkpoints");
            let latest = Checkpointer::new(&dir, usize::MAX)
                .latest()?
                .with_context(|| format!("no checkpoint in {}", dir.display()))?;
            let ck = Checkpointer::load(&latest)?;
            load_into(&net.vs, ck.group("model")?, true)
                .with_context(|| format!("loading the encoder from {}", latest.display()))?;
            // the encoder run's own config says how it was pre-trained
            let method = ConfigSource::file(run.join("config.toml"))
                .and_then(|s| load_config::<GrassConfig>(Some(s), &[]))
                .map(|c| c.pretrain.method)
                .ok();
            (Some(ck.state.step), method)
        };
        if frozen {
            net.vs.freeze();
        }
        let c4 = net.trunk.num_features();
        let low = c4 / 8; // layer1 width: 64·expansion = C4 / 8 for both block kinds
        let dec_vs = tch::nn::VarStore::new(device);
        let dec = DeepLabV3Plus::new(
            dec_vs.root() / "decode_head",
            &DeepLabConfig {
                in_channels: c4,
                low_channels: low,
                channels: f.channels,
                c1_channels: f.c1_channels,
                dilations: f.dilations.clone(),
                dropout: f.dropout,
                num_classes: src.masks.num_classes() as i64,
            },
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            device,
            seg: SegNet {
                net,
                dec_vs,
                dec,
                frozen,
            },
            src,
            images,
            labels,
            encoder_step,
            encoder_method,
        })
    }

    /// Batch `step`: `batch_size` tiles drawn with replacement, a random crop and random
    /// flips, all from a generator seeded by `(run seed, step)`.
    fn data(&mut self) -> Result<Box<dyn Batches<Batch = (Tensor, Tensor)>>> {
        let f = self.cfg.finetune.clone();
        let (seed, device) = (self.cfg.runtime.seed, self.device);
        let (images, labels) = (self.images.shallow_clone(), self.labels.shallow_clone());
        let (n, bs) = (self.labelled(), self.batch_size());
        let t = images.size()[1];
        Ok(Box::new(PerStep {
            per_epoch: (n / bs) as u64,
            draw: move |step| {
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "finetune-batch", step));
                let ids: Vec<i64> = (0..bs).map(|_| rng.gen_range(0..n as i64)).collect();
                let ids = Tensor::from_slice(&ids);
                let mut x = images.index_select(0, &ids);
                let mut y = labels.index_select(0, &ids);
                if f.crop_size > 0 && (f.crop_size as i64) < t {
                    let c = f.crop_size as i64;
                    let (mut xs, mut ys) = (Vec::new(), Vec::new());
                    for i in 0..bs as i64 {
                        let (oy, ox) = (rng.gen_range(0..=t - c), rng.gen_range(0..=t - c));
                        xs.push(x.get(i).narrow(0, oy, c).narrow(1, ox, c));
                        ys.push(y.get(i).narrow(0, oy, c).narrow(1, ox, c));
                    }
                    x = Tensor::stack(&xs, 0);
                    y = Tensor::stack(&ys, 0);
                }
                let mut x = normalise(&x).to_device(device);
                let mut y = y.to_device(device);
                if f.flip {
                    let (hf, vf): (Vec<bool>, Vec<bool>) = (0..bs)
                        .map(|_| (rng.gen_bool(0.5), rng.gen_bool(0.5)))
                        .unzip();
                    let flip = |x: &Tensor, y: &Tensor, i: usize, dx: i64, dy: i64| {
                        let i = i as i64;
                        x.get(i).copy_(&x.get(i).flip([dx]));
                        y.get(i).copy_(&y.get(i).flip([dy]));
                    };
                    x = x.copy();
                    y = y.copy();
                    for i in 0..bs {
                        if hf[i] {
                            flip(&x, &y, i, 2, 1);
                        }
                        if vf[i] {
                            flip(&x, &y, i, 1, 0);
                        }
                    }
                }
                // several ranks: every rank draws the global batch and keeps its rows
                let shard = Shard::current();
                shard.local_batch(bs)?;
                Ok((shard.rows(&x), shard.rows(&y)))
            },
        }))
    }

    fn optimization(&self, _total: u64, _per_epoch: u64) -> Result<Optimization> {
        let f = &self.cfg.finetune;
        let mut groups = single_group(&self.seg.dec_vs, f.weight_decay);
        if !self.seg.frozen {
            groups.extend(single_group(&self.seg.net.vs, f.weight_decay));
        }
        Ok(Optimization {
            optimizer: Box::new(Sgd::new(groups, f.lr, f.momentum, 0.0, false)?),
            lr: Schedule::Poly {
                base: f.lr,
                end: f.min_lr,
                power: f.power,
                steps: f.iters,
            },
            weight_decay: None,
            clip: None,
        })
    }

    /// `<pre-training method>-ft` (`grass-ft`, `simclr-ft`), or `random-init-ft`.
    fn variant(&self) -> String {
        match (&self.encoder_step, &self.encoder_method) {
            (None, _) => "random-init-ft".into(),
            (Some(_), Some(m)) => format!("{m}-ft"),
            (Some(_), None) => "pretrained-ft".into(),
        }
    }
    fn samples_per_step(&self) -> u64 {
        self.batch_size() as u64
    }
    fn describe_data(&self) -> String {
        let (c, f) = (&self.cfg.data, &self.cfg.finetune);
        format!(
            "{}: {} train scenes → {} labelled tiles of {} px (label fraction {}); {} test scenes",
            c.format,
            self.src.train.len(),
            self.labelled(),
            c.tile_size,
            f.label_fraction,
            self.src.test.len()
        )
    }
    fn describe_model(&self) -> String {
        let f = &self.cfg.finetune;
        format!(
            "DeepLabV3+ ({} wide, ASPP {:?}) on {} at output stride {} ({} encoder)",
            f.channels, f.dilations, self.cfg.model.arch, f.output_stride, f.mode
        )
    }
    fn paper(&self) -> Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or(Value::Null)
    }

    /// Pixel cross-entropy, the mean over the labelled (not ignored) pixels of the global
    /// batch: on several ranks each rank's sum over its pixels divided by the global count
    /// (times the ranks, which the gradient average divides out), so N ranks train what one
    /// process trains however the ignored pixels fall.
    fn step(&mut self, (x, y): (Tensor, Tensor), _ctx: &StepCtx) -> Result<Losses> {
        let logits = self.seg.logits(&x, true)?;
        let ignore = self.cfg.data.ignore_index;
        let loss = match contrast_core::dist::current() {
            None => logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, ignore, 0.0),
            Some(d) => {
                let sum =
                    logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, ignore, 0.0);
                let count = y.ne(ignore).sum(tch::Kind::Int64).int64_value(&[]) as f64;
                let world = d.world() as f64;
                let global = d.mean_f64(&[count])?[0] * world;
                sum * (world / global)
            }
        };
        Ok(Losses::single("loss", loss))
    }

    /// N ranks train what one process trains on the global batch (the fine-tune's code is not
    /// released): each rank its rows of every global batch, the loss the global batch's mean.
    fn distributed(_cfg: &GrassConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::GlobalBatch
    }

    /// On, so that N ranks see one process's BatchNorm statistics (as mmsegmentation's
    /// DeepLabV3+ configurations use SyncBN).
    fn official_sync_batch_norm(_cfg: &GrassConfig) -> bool {
        true
    }

    fn state(&self) -> Vec<(String, Named)> {
        let mut g = vec![("decoder".into(), named_variables(&self.seg.dec_vs))];
        if !self.seg.frozen {
            g.push(("encoder".into(), named_variables(&self.seg.net.vs)));
        }
        g
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.seg.dec_vs, ck.group("decoder")?, true).context("restoring the decoder")?;
        if !self.seg.frozen {
            load_into(&self.seg.net.vs, ck.group("encoder")?, true)
                .context("restoring the encoder")?;
        }
        Ok(())
    }

    /// The segmentation encoder (the pre-trained trunk, fine-tuned when not frozen) as a
    /// torchvision ResNet at `finetune.output_stride` (headless; the decoder is not exported).
    fn export(&self) -> Result<Export> {
        Ok(Export {
            tensors: backbone_state(&named_variables(&self.seg.net.vs), "trunk"),
            meta: resnet_meta(&ResNetConfig {
                output_stride: self.cfg.finetune.output_stride,
                ..model_trunk(&self.cfg.model)?
            }),
        })
    }

    fn evaluate(&mut self, _run: &RunCtx) -> Result<Evaluation> {
        let f = &self.cfg.finetune;
        let cm = confusion(
            &self.seg,
            &self.src.test,
            &self.src.masks,
            f.eval_tile,
            self.device,
        )?;
        let names = self.src.masks.names();
        let iou = cm.iou();
        let per_class: Vec<Value> = names
            .iter()
            .zip(&iou)
            .map(|(n, v)| json!({"class": n, "iou": if v.is_nan() { None } else { Some(v * 100.0) }}))
            .collect();
        Ok(Evaluation::new("mIoU (%)", Some(cm.miou() * 100.0))
            .with("stage", "finetune")
            .with(
                "encoder",
                if f.encoder.is_empty() {
                    "random init"
                } else {
                    f.encoder.as_str()
                },
            )
            .with("encoder_step", self.encoder_step)
            .with("mode", &f.mode)
            .with("miou", cm.miou() * 100.0)
            .with("overall_accuracy", cm.overall_accuracy() * 100.0)
            .with("per_class_iou", per_class)
            .with("iters", f.iters))
    }

    /// The GraSS vs SimCLR table, with the pre-training side read from each fine-tune's
    /// encoder run (`<encoder>/report.json`).
    fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
        let Some(base) = baseline else {
            return contrast_core::train::report::table(ours, None);
        };
        let pre = |r: &RunReport| -> Value {
            r.detail("encoder")
                .as_str()
                .and_then(|e| RunReport::read(&Path::new(e).join("report.json")).ok())
                .and_then(|r| serde_json::to_value(r).ok())
                .unwrap_or(Value::Null)
        };
        let v = |r: &RunReport| serde_json::to_value(r).unwrap_or(Value::Null);
        crate::report::table((&pre(ours), &v(ours)), (&pre(base), &v(base)))
    }
}

/// `reproduce`: pre-train GraSS (`<name>-grass`) and the SimCLR baseline (`<name>-simclr`)
/// with the same settings, fine-tune both (`<name>-grass-ft`, `<name>-simclr-ft`), and return
/// the comparison table (also written to `<runs>/grass/<name>-table.md`). `stop_at` applies to
/// the pre-trainings; `None` when one stopped early. With `opts.resume`, a stage that already
/// finished (its `report.json` exists) is reused.
pub fn reproduce(
    cfg: &GrassConfig,
    opts: &RunOptions,
    stop_at: Option<u64>,
) -> Result<Option<String>> {
    let mut ours = cfg.clone();
    ours.pretrain.method = "grass".into();
    let (base_name, base) = Pretrain::baseline(&ours).context("GraSS has a baseline")?;
    let finished = |o: &RunOptions| -> Result<Option<RunReport>> {
        let p = o.runs_root.join("grass").join(&o.name).join("report.json");
        if !o.resume || !p.is_file() {
            return Ok(None);
        }
        eprintln!("reusing the finished run {}", p.display());
        Ok(Some(RunReport::read(&p)?))
    };
    let mut fine = Vec::new();
    for (name, mut c) in [("grass".to_string(), ours), (base_name, base)] {
        let mut o = opts.clone();
        o.name = format!("{}-{name}", opts.name);
        let dir = o.runs_root.join("grass").join(&o.name);
        if finished(&o)?.is_none() {
            let out = Trainer::<Pretrain>::new(c.clone(), o.clone()).run(stop_at)?;
            if out.report.is_none() {
                return Ok(None);
            }
        }
        c.finetune.encoder = dir.display().to_string();
        o.name = format!("{}-{name}-ft", opts.name);
        let ft = match finished(&o)? {
            Some(r) => r,
            None => Trainer::<Finetune>::new(c, o)
                .run(None)?
                .report
                .context("the fine-tune ended without a report")?,
        };
        fine.push(ft);
    }
    let t = Finetune::table(&fine[0], Some(&fine[1]));
    let path = opts
        .runs_root
        .join("grass")
        .join(format!("{}-table.md", opts.name));
    std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(Some(t))
}
