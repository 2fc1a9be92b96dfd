//! Crop-based 3-D contrastive pretraining with spatial priors (our reading of the Spade
//! abstract; see the crate README). Each step takes `pretrain.volumes` training volumes, cuts two
//! overlapping crops from each with random flips / quarter turns (their geometry is kept,
//! `contrast_core::volume::crops`), and trains a V-Net encoder (+ projection head; + a decoder
//! feature head for the local term) with:
//! * `simclr`: NT-Xent over the twins only (the plain 3-D SimCLR baseline);
//! * `spade-global`: the spatially debiased global loss (`contrast_core::spatial_contrast`):
//!   crops of other volumes at nearby normalised positions are extra positives, near negatives
//!   are dropped, the rest weighted by distance;
//! * `spade`: the global loss plus the local dense loss between the two crops' decoder features
//!   at voxels that show the same physical location.
//!
//! The encoder's variables are named like FBA-Net's (`encoder.*`), so the downstream V-Net is
//! initialised from `encoder.safetensors` by name (`finetune.model.init`).
//!
//! These are the pieces of one step; [`crate::method::SpadePretrain`] runs them on the shared
//! Trainer.

use crate::config::SpadeConfig;
use anyhow::{bail, Result};
use contrast_core::dist;
use contrast_core::nn::heads::{LastNorm, MlpConfig, MlpHead};
use contrast_core::nn::vnet::{Norm, UpMode, VNetConfig, VNetDecoder, VNetEncoder};
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::decay_groups;
use contrast_core::spatial_contrast::{global_loss, local_loss, GlobalConfig};
use contrast_core::volume::crops::{body_bbox, correspondences, CropGeometry};
use contrast_core::volume::Case;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

/// Encoder + global head (+ local feature decoder).
pub struct PretrainNet {
    pub vs: VarStore,
    encoder: VNetEncoder,
    head: MlpHead,
    local: Option<VNetDecoder>,
}

impl PretrainNet {
    pub fn new(cfg: &SpadeConfig, device: Device) -> Result<Self> {
        let f = cfg.finetune.model.n_filters;
        let vcfg = VNetConfig {
            in_channels: 1,
            n_classes: cfg.local.dim,
            n_filters: f,
            norm: Norm::BatchNorm,
            dropout: 0.0,
        };
        let vs = VarStore::new(device);
        let root = vs.root();
        let encoder = VNetEncoder::new(&(&root / "encoder"), &vcfg);
        let head = MlpHead::new(
            &root / "head",
            &MlpConfig {
                dims: vec![16 * f, 16 * f, cfg.pretrain.proj_dim],
                bias: true,
                hidden_bn: true,
                last_norm: LastNorm::None,
            },
        )?;
        let local = (cfg.pretrain.method == "spade")
            .then(|| VNetDecoder::new(&(&root / "local"), &vcfg, UpMode::Transpose));
        Ok(Self {
            vs,
            encoder,
            head,
            local,
        })
    }
}

/// The crops of one step: images `[2V, 1, c, c, c]` (first crops, then their twins), their
/// geometries, the volume index of each, and normalised centres `[2V, 3]`.
pub struct CropBatch {
    pub images: Tensor,
    pub geometry: Vec<CropGeometry>,
    pub volume: Vec<i64>,
    pub centres: Tensor,
}

fn random_geometry(
    rng: &mut ChaCha8Rng,
    shape: [i64; 3],
    crop: [i64; 3],
    near: Option<[i64; 3]>,
    max_shift: f64,
) -> Result<CropGeometry> {
    let mut origin = [0i64; 3];
    for a in 0..3 {
        let hi = (shape[a] - crop[a]).max(0);
        origin[a] = match near {
            None => rng.gen_range(0..=hi),
            Some(o) => {
                let s = ((crop[a] as f64) * max_shift).floor() as i64;
                (o[a] + rng.gen_range(-s..=s)).clamp(0, hi)
            }
        };
    }
    let flips = [rng.gen_bool(0.5), rng.gen_bool(0.5), rng.gen_bool(0.5)];
    let rot = if crop[0] == crop[1] {
        rng.gen_range(0..4)
    } else {
        2 * rng.gen_range(0..2)
    };
    CropGeometry::new(shape, origin, crop, flips, rot)
}

/// A pretraining volume prepared once: its tensor `[X, Y, Z]` and its normalised frame.
pub struct PoolVolume {
    pub id: String,
    pub image: Tensor,
    pub shape: [i64; 3],
    /// `[lo, hi)` of the frame positions are normalised to (`pretrain.frame`).
    pub frame: ([i64; 3], [i64; 3]),
}

impl PoolVolume {
    /// Checks the volume against the crop and computes its frame (once, not per step).
    pub fn new(cfg: &SpadeConfig, case: &Case) -> Result<Self> {
        let p = &cfg.pretrain;
        let image = case.image.to_tensor();
        let shape = case.image.shape.map(|s| s as i64);
        if (0..3).any(|a| shape[a] < p.crop[a]) {
            bail!(
                "case {}: volume {shape:?} is smaller than the crop {:?}",
                case.id,
                p.crop
            );
        }
        let frame = match p.frame.as_str() {
            "volume" => ([0; 3], shape),
            "body" => body_bbox(&image, p.body_threshold)?,
            other => bail!("pretrain.frame `{other}`: use volume or body"),
        };
        Ok(Self {
            id: case.id.clone(),
            image,
            shape,
            frame,
        })
    }
}

/// Two overlapping crops from each of `volumes` random pool volumes.
pub fn sample_crops(
    cfg: &SpadeConfig,
    pool: &[PoolVolume],
    rng: &mut ChaCha8Rng,
) -> Result<CropBatch> {
    let p = &cfg.pretrain;
    let v = p.volumes;
    let (mut first, mut second) = (Vec::with_capacity(v), Vec::with_capacity(v));
    let (mut g1, mut g2, mut ids, mut c1, mut c2) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..v {
        let i = rng.gen_range(0..pool.len());
        let (img, shape, (lo, hi)) = (&pool[i].image, pool[i].shape, pool[i].frame);
        let a = random_geometry(rng, shape, p.crop, None, p.max_shift)?;
        let b = random_geometry(rng, shape, p.crop, Some(a.origin), p.max_shift)?;
        for (g, out, cs) in [(&a, &mut first, &mut c1), (&b, &mut second, &mut c2)] {
            let x = g.extract(img)?;
            let scale = 1.0 + p.intensity * (2.0 * rng.gen::<f64>() - 1.0);
            let noise = Tensor::randn(x.size(), (Kind::Float, tch::Device::Cpu)) * p.noise;
            out.push((x * scale + noise).unsqueeze(0));
            cs.extend(g.normalized_centre(lo, hi).map(|c| c as f32));
        }
        g1.push(a);
        g2.push(b);
        ids.push(i as i64);
    }
    first.extend(second);
    let images = Tensor::stack(&first, 0); // [2V, 1, c, c, c]
    let centres = Tensor::from_slice(&[c1, c2].concat()).view([2 * v as i64, 3]);
    Ok(CropBatch {
        images,
        geometry: [g1, g2].concat(),
        volume: [ids.clone(), ids].concat(),
        centres,
    })
}

/// The local term's sampled voxel pairs of one step: for each overlapping crop pair `k`, the
/// flat voxel indices `ia` (in crop `k`) and `ib` (in its twin `k + V`), and the volume
/// coordinates of all B voxels `[M, 3]` (each volume's frame offset so crops of different
/// volumes are far apart).
pub struct LocalSamples {
    pub pairs: Vec<(i64, Tensor, Tensor)>,
    pub pos: Tensor,
}

/// Draw `local.samples` corresponding voxel pairs per crop pair (CPU geometry only).
pub fn sample_local(
    cfg: &SpadeConfig,
    batch: &CropBatch,
    rng: &mut ChaCha8Rng,
) -> Result<LocalSamples> {
    let v = batch.geometry.len() / 2;
    let (mut out, mut pos) = (vec![], vec![]);
    for k in 0..v {
        let (a, b) = (&batch.geometry[k], &batch.geometry[k + v]);
        let pairs = correspondences(a, b)?;
        if pairs.is_empty() {
            continue;
        }
        let m = cfg.local.samples.min(pairs.len());
        let sa = a.shape();
        let sb = b.shape();
        let (mut ia, mut ib) = (Vec::with_capacity(m), Vec::with_capacity(m));
        for _ in 0..m {
            let (p, q) = pairs[rng.gen_range(0..pairs.len())];
            ia.push((p[0] * sa[1] + p[1]) * sa[2] + p[2]);
            ib.push((q[0] * sb[1] + q[1]) * sb[2] + q[2]);
            let w = b.to_volume(q);
            // crops of different volumes are always far apart: offset each volume's frame
            pos.extend([(w[0] + 100_000 * k as i64) as f32, w[1] as f32, w[2] as f32]);
        }
        out.push((k as i64, Tensor::from_slice(&ia), Tensor::from_slice(&ib)));
    }
    if out.is_empty() {
        bail!("no crop pair overlaps: pretrain.max_shift must stay below 1");
    }
    Ok(LocalSamples {
        pairs: out,
        pos: Tensor::from_slice(&pos).view([-1, 3]),
    })
}

/// The pretraining optimiser: AdamW with decay groups (no decay on biases and norms).
pub fn optimizer(cfg: &SpadeConfig, net: &PretrainNet) -> Result<AdamW> {
    AdamW::new(
        decay_groups(&net.vs, cfg.pretrain.weight_decay),
        AdamWConfig {
            lr: cfg.pretrain.lr,
            ..AdamWConfig::default()
        },
    )
}

/// The forward pass and objective of one step on given crops and local samples (`None` for
/// `simclr` / `spade-global`): `(total, global, local)`.
pub fn step_terms(
    cfg: &SpadeConfig,
    net: &PretrainNet,
    batch: &CropBatch,
    samples: Option<&LocalSamples>,
    device: Device,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let n = batch.geometry.len() as i64;
    let v = n / 2;
    // several ranks: every rank holds the global batch's geometry and embeds the crops of its
    // own volumes `[k0, k0 + vl)` (first crops, then their twins)
    let shard = dist::Shard::current();
    if shard.world > 1 && v % shard.world as i64 != 0 {
        bail!(
            "pretrain.volumes = {v} must divide by the {} processes",
            shard.world
        );
    }
    let vl = v / shard.world as i64;
    let k0 = shard.rank as i64 * vl;
    let x = if shard.world > 1 {
        Tensor::cat(
            &[
                batch.images.narrow(0, k0, vl),
                batch.images.narrow(0, v + k0, vl),
            ],
            0,
        )
    } else {
        batch.images.shallow_clone()
    }
    .to_device(device);
    let feats = net.encoder.forward_t(&x, true)?;
    let deepest = &feats[feats.len() - 1];
    let pooled = deepest.mean_dim([2i64, 3, 4].as_slice(), false, Kind::Float);
    let z = net.head.forward_t(&pooled, true);
    // the global batch's embeddings (first crops of every rank, then the twins), with gradient
    let z = if shard.world > 1 {
        let g = dist::gather_columns_with_grad(&[&z.narrow(0, 0, vl), &z.narrow(0, vl, vl)])?;
        Tensor::cat(&g, 0)
    } else {
        z
    };
    let twin = Tensor::cat(
        &[
            Tensor::arange_start(v, n, (Kind::Int64, device)),
            Tensor::arange(v, (Kind::Int64, device)),
        ],
        0,
    );
    let volume = Tensor::from_slice(&batch.volume).to_device(device);
    let g = &cfg.global;
    let gcfg = if cfg.pretrain.method == "simclr" {
        GlobalConfig {
            temperature: g.temperature,
            ..GlobalConfig::default()
        }
    } else {
        GlobalConfig {
            temperature: g.temperature,
            cross_volume_radius: g.cross_volume_radius,
            negative_radius: g.negative_radius,
            weight_power: g.weight_power,
            far_radius: g.far_radius,
        }
    };
    let global = global_loss(&z, &twin, &volume, &batch.centres.to_device(device), &gcfg)?;
    let (Some(dec), Some(samples)) = (&net.local, samples) else {
        return Ok((global.shallow_clone(), global, None));
    };
    // local: decoder features of each crop pair at the sampled corresponding voxels
    let maps = dec.forward_t(&feats, true); // [2·vl, C, c, c, c]
    let c = maps.size()[1];
    let (mut fa, mut fb) = (vec![], vec![]);
    // this rank's crop pairs (all of them in one process), in the global order
    for (k, ia, ib) in samples
        .pairs
        .iter()
        .filter(|(k, _, _)| (k0..k0 + vl).contains(k))
    {
        let at = |i: i64, idx: &Tensor| {
            maps.get(i)
                .view([c, -1])
                .index_select(1, &idx.to_device(device))
                .transpose(0, 1)
        };
        fa.push(at(k - k0, ia));
        fb.push(at(k - k0 + vl, ib));
    }
    let empty = || Tensor::zeros([0, c], (maps.kind(), maps.device()));
    let cat = |f: &[Tensor]| {
        if f.is_empty() {
            empty()
        } else {
            Tensor::cat(f, 0)
        }
    };
    let (fa, fb) = (cat(&fa), cat(&fb));
    // several ranks: every rank's sampled features (a varying number per rank), with gradient
    let (fa, fb) = if shard.world > 1 {
        let both = dist::gather_rows_with_grad(&Tensor::cat(&[&fa, &fb], 1))?;
        (both.narrow(1, 0, c), both.narrow(1, c, c))
    } else {
        (fa, fb)
    };
    let local = local_loss(
        &fa,
        &fb,
        &samples.pos.to_device(device),
        cfg.local.temperature,
        cfg.local.negative_radius,
    )?;
    let total = &global + &local * cfg.local.weight;
    Ok((total, global, Some(local)))
}

/// An unlabelled pretraining volume from a NIfTI file, z-scored (the LA volumes are already
/// normalised).
pub fn nifti_case(path: &Path) -> Result<Case> {
    let v = contrast_core::volume::nifti::read_nifti(path)?.volume;
    let n = v.data.len().max(1) as f64;
    let mean = v.data.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v
        .data
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = var.sqrt().max(1e-6);
    let img = v.map(|x| ((x as f64 - mean) / sd) as f32);
    let label = contrast_core::volume::Volume::<u8>::zeros(img.shape);
    Case::new(path.display().to_string(), img, label)
}

/// The pretraining pool of a config: the LA training cases of `finetune.data` (labels unused)
/// and the `pretrain.extra_nifti` volumes, each prepared once.
pub fn pool(cfg: &SpadeConfig) -> Result<Vec<PoolVolume>> {
    let data = fba_net::data::LaData::load(&cfg.finetune)?;
    let mut cases = data.train;
    for f in &cfg.pretrain.extra_nifti {
        cases.push(nifti_case(Path::new(f))?);
    }
    cases.iter().map(|c| PoolVolume::new(cfg, c)).collect()
}
