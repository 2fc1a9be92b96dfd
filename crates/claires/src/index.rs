//! The on-disk index: L2-normalised image embeddings of a gallery of records, tied to the model
//! that made them by the model's weight checksum (a stale index is refused), and the searches
//! over it (text → image, image → image; cosine similarity).
//!
//! Layout of an index folder: `index.json` (format version, model checksum, image size,
//! embedding width, the records, and the name and SHA-256 of its embeddings file) and
//! `embeddings-<sha>.safetensors` (`embeddings [N, D]`; indexes written before the name was
//! recorded have `embeddings.safetensors`, unchecked).
//!
//! A rebuild survives being killed at any moment: the new embeddings are written whole under a
//! name of their own, then `index.json` is replaced in one rename (written and synced first), and
//! only then are files that no `index.json` names removed. So the folder always holds the old
//! index or the new one, each with its own embeddings, never a mix (`tests/index_kills.rs`).

use crate::model::Claires;
use crate::records::Record;
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::{Kind, Tensor};

pub const FORMAT: u32 = 1;

/// The embeddings file of an index written before `index.json` named it.
const LEGACY_EMBEDDINGS: &str = "embeddings.safetensors";

fn legacy_embeddings() -> String {
    LEGACY_EMBEDDINGS.into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    pub format: u32,
    pub model_checksum: String,
    pub image_size: u32,
    pub dim: i64,
    pub records: Vec<Record>,
    /// The embeddings file, in the index folder (set by [`Index::save`]).
    #[serde(default = "legacy_embeddings")]
    pub embeddings: String,
    /// Its SHA-256, checked on load (absent in indexes written before it was recorded).
    #[serde(default)]
    pub embeddings_sha256: Option<String>,
}

impl IndexMeta {
    /// The metadata of `records` embedded `dim`-wide by the model with `model_checksum` (the
    /// embeddings file is named when the index is saved).
    pub fn new(model_checksum: String, image_size: u32, dim: i64, records: Vec<Record>) -> Self {
        Self {
            format: FORMAT,
            model_checksum,
            image_size,
            dim,
            records,
            embeddings: legacy_embeddings(),
            embeddings_sha256: None,
        }
    }
}

pub struct Index {
    pub meta: IndexMeta,
    /// `[N, D]`, L2-normalised, CPU.
    pub embeddings: Tensor,
}

/// The first `n` characters of `s` (a checksum read from a file may hold any text: slicing it at
/// a byte offset could split a character and panic).
fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Position in the index (what the GUI serves images by).
    pub index: usize,
    pub score: f32,
}

impl Index {
    /// Embed every record's image with `model`.
    pub fn build(model: &Claires, records: Vec<Record>, image_size: u32) -> Result<Self> {
        ensure!(!records.is_empty(), "nothing to index");
        let mut embs = Vec::new();
        let chunk = 64;
        let progress = contrast_core::train::Progress::new(records.len() as u64, 0, "index");
        for (i, part) in records.chunks(chunk).enumerate() {
            let paths: Vec<&Path> = part.iter().map(|r| r.image.as_path()).collect();
            let x = crate::images::load_images(&paths, image_size)?;
            embs.push(model.search_images(&x, 32)?);
            progress.update((i * chunk + part.len()) as u64, "");
        }
        progress.finish();
        let embeddings = Tensor::cat(&embs, 0);
        let dim = embeddings.size()[1];
        Ok(Self {
            meta: IndexMeta::new(model.checksum(), image_size, dim, records),
            embeddings,
        })
    }

    pub fn len(&self) -> usize {
        self.meta.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.records.is_empty()
    }

    /// Write the index into `dir`, replacing the one there (see the module docs for why a kill
    /// at any moment leaves a whole index, old or new).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // the embeddings, whole, under the name of their content
        let tmp = dir.join(format!(".embeddings-{}.tmp", std::process::id()));
        Tensor::write_safetensors(&[("embeddings", &self.embeddings)], &tmp)
            .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?;
        let bytes = std::fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let name = format!("embeddings-{}.safetensors", &sha[..16]);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(&name))
            .with_context(|| format!("writing {}", dir.join(&name).display()))?;
        contrast_core::train::fault::pause_in_write();
        // then the index that names them, in one rename
        let mut meta = self.meta.clone();
        meta.embeddings = name;
        meta.embeddings_sha256 = Some(sha);
        let json = serde_json::to_string_pretty(&meta)?;
        contrast_core::train::checkpoint::write_atomic(&dir.join("index.json"), json.as_bytes())?;
        // then what no index names any more (a replaced index's embeddings, an interrupted
        // write's leftovers)
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let f = e.file_name().to_string_lossy().into_owned();
            let stale = (f.starts_with("embeddings") && f.ends_with(".safetensors")
                || f.starts_with(".embeddings-") && f.ends_with(".tmp")
                || f == "index.json.tmp")
                && f != meta.embeddings;
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Load an index and check that it was built by the model with checksum `model_checksum`.
    pub fn load(dir: &Path, model_checksum: &str) -> Result<Self> {
        let mp = dir.join("index.json");
        let text = std::fs::read_to_string(&mp)
            .with_context(|| format!("reading {} (run `claires index` first)", mp.display()))?;
        let meta: IndexMeta =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", mp.display()))?;
        ensure!(
            meta.format == FORMAT,
            "{}: index format {} (this build reads {FORMAT}); rebuild it with `claires index`",
            mp.display(),
            meta.format
        );
        if meta.model_checksum != model_checksum {
            bail!(
                "stale index {}: it was built by the model with checksum {}…, but the current \
                 model's checksum is {}…; rebuild it with `claires index`",
                dir.display(),
                prefix(&meta.model_checksum, 12),
                prefix(model_checksum, 12)
            );
        }
        // a plain file name in the index folder, nothing else
        let plain = Path::new(&meta.embeddings).file_name() == Some(meta.embeddings.as_ref())
            && meta.embeddings != ".."
            && !meta.embeddings.contains(['/', '\\']);
        ensure!(
            plain,
            "{}: the embeddings file must be a file name in the index folder, not {:?}",
            mp.display(),
            meta.embeddings
        );
        let ep = dir.join(&meta.embeddings);
        if let Some(want) = &meta.embeddings_sha256 {
            let bytes = std::fs::read(&ep).with_context(|| format!("reading {}", ep.display()))?;
            let got = hex::encode(Sha256::digest(&bytes));
            ensure!(
                &got == want,
                "{} does not match its index ({}: SHA-256 {}…, expected {}…): the index is \
                 damaged; rebuild it with `claires index`",
                ep.display(),
                mp.display(),
                prefix(&got, 12),
                prefix(want, 12)
            );
        }
        let ts =
            Tensor::read_safetensors(&ep).map_err(|e| anyhow!("reading {}: {e}", ep.display()))?;
        let embeddings = ts
            .into_iter()
            .find(|(n, _)| n == "embeddings")
            .map(|(_, t)| t)
            .with_context(|| format!("{} has no `embeddings` tensor", ep.display()))?;
        ensure!(
            embeddings.size() == [meta.records.len() as i64, meta.dim],
            "{}: embeddings {:?} do not match {} records of width {}",
            ep.display(),
            embeddings.size(),
            meta.records.len(),
            meta.dim
        );
        Ok(Self { meta, embeddings })
    }

    /// Top-`k` by cosine similarity to a normalised query `[D]` or `[1, D]`, excluding `skip`.
    pub fn top_k(&self, query: &Tensor, k: usize, skip: Option<usize>) -> Result<Vec<Hit>> {
        let q = query.to_kind(Kind::Float).view([-1]);
        ensure!(
            q.size()[0] == self.meta.dim,
            "query embedding width {} ≠ index width {}",
            q.size()[0],
            self.meta.dim
        );
        let s = self.embeddings.mv(&q);
        let scores: Vec<f32> = Vec::<f32>::try_from(s).map_err(|e| anyhow!("{e}"))?;
        let mut order: Vec<usize> = (0..scores.len()).filter(|&i| Some(i) != skip).collect();
        // descending score, ties by lower index (the metrics' convention): a strict total order,
        // so selecting the k best first and sorting only those gives the full sort's top k
        let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        if k > 0 && k < order.len() {
            order.select_nth_unstable_by(k - 1, cmp);
            order.truncate(k);
        }
        order.sort_by(cmp);
        Ok(order
            .into_iter()
            .take(k)
            .map(|i| Hit {
                index: i,
                score: scores[i],
            })
            .collect())
    }

    /// Text → image search.
    pub fn search_text(&self, model: &Claires, query: &str, k: usize) -> Result<Vec<Hit>> {
        let q = model.search_text(&[query])?;
        self.top_k(&q, k, None)
    }

    /// Image → image search from an indexed image (itself excluded).
    pub fn search_similar(&self, item: usize, k: usize) -> Result<Vec<Hit>> {
        ensure!(
            item < self.len(),
            "no indexed image {item} (index has {})",
            self.len()
        );
        let q = self.embeddings.get(item as i64);
        self.top_k(&q, k, Some(item))
    }

    /// Image → image search from an image file.
    pub fn search_image_file(&self, model: &Claires, path: &Path, k: usize) -> Result<Vec<Hit>> {
        let x = crate::images::load_image(path, self.meta.image_size)?.unsqueeze(0);
        let q = model.search_images(&x, 1)?;
        self.top_k(&q, k, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(scores_like: &[f32]) -> Index {
        // 1-D "embeddings": the score of row i against the query [1] is the row's value
        Index {
            meta: IndexMeta::new(String::new(), 0, 1, vec![]),
            embeddings: Tensor::from_slice(scores_like).view([-1, 1]),
        }
    }

    #[test]
    fn top_k_is_the_full_sorts_prefix_with_ties_by_lower_index() {
        // values with many ties
        let v: Vec<f32> = (0..200).map(|i| ((i * 37) % 11) as f32 / 10.0).collect();
        let idx = index(&v);
        let q = Tensor::from_slice(&[1.0f32]);
        for skip in [None, Some(3), Some(150)] {
            let mut full: Vec<usize> = (0..v.len()).filter(|&i| Some(i) != skip).collect();
            full.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
            for k in [0, 1, 5, 11, 199, 200, 500] {
                let got: Vec<usize> = idx
                    .top_k(&q, k, skip)
                    .unwrap()
                    .iter()
                    .map(|h| h.index)
                    .collect();
                let want: Vec<usize> = full.iter().copied().take(k).collect();
                assert_eq!(got, want, "k {k}, skip {skip:?}");
            }
        }
    }
}
