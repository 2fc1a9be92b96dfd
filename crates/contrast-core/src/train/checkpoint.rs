//! Checkpoints: one folder per saved step, written atomically, verified on load.
//!
//! Layout: `checkpoints/step-00000120/` holding one safetensors file per group (`model`,
//! `optim`, `ema`, … — whatever the method saves) and `state.json` with the step, the schedule
//! position, the RNG state (seed and step: randomness is counter-based, see
//! [`crate::train::runtime::step_seed`]), free-form method state, and the byte size and SHA-256
//! of every file. The folder is assembled under a temporary name and renamed into place, so a
//! crash never leaves a half-written checkpoint under a real name; on load every file is checked
//! against `state.json`, and a file cut short or altered is reported as corrupt, by name.

use crate::tensors::Named;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Size and digest of one file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimisation steps completed.
    pub step: u64,
    /// The run's seed; with `step` this is the whole RNG state.
    pub seed: u64,
    /// Method-specific state (epoch, schedule position, queue pointer, …).
    pub extra: serde_json::Value,
    /// Every tensor file of the checkpoint with its size and digest.
    pub files: BTreeMap<String, FileDigest>,
}

/// A loaded, verified checkpoint.
pub struct Checkpoint {
    pub path: PathBuf,
    pub state: CheckpointState,
    pub groups: BTreeMap<String, Named>,
}

impl Checkpoint {
    /// The tensors of `group` (error naming the group and the folder when absent).
    pub fn group(&self, group: &str) -> Result<&Named> {
        self.groups
            .get(group)
            .ok_or_else(|| anyhow!("checkpoint {} has no group `{group}`", self.path.display()))
    }
}

/// Saves and finds the checkpoints of one run.
pub struct Checkpointer {
    dir: PathBuf,
    keep: usize,
}

impl Checkpointer {
    /// Checkpoints under `dir`, keeping the last `keep` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Save `groups` at `step`; prune to the last `keep`. Returns the checkpoint folder.
    pub fn save(
        &self,
        step: u64,
        seed: u64,
        groups: &[(&str, &Named)],
        extra: serde_json::Value,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let name = format!("step-{step:08}");
        super::fault::fail_write()
            .with_context(|| format!("writing checkpoint {}", self.dir.join(&name).display()))?;
        let final_dir = self.dir.join(&name);
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let mut files = BTreeMap::new();
        for (group, tensors) in groups {
            let file = format!("{group}.safetensors");
            let path = tmp.join(&file);
            // safetensors wants contiguous CPU tensors
            let cpu: Vec<(&str, Tensor)> = tensors
                .iter()
                .map(|(n, t)| {
                    (
                        n.as_str(),
                        t.detach().to_device(tch::Device::Cpu).contiguous(),
                    )
                })
                .collect();
            Tensor::write_safetensors(&cpu, &path)
                .with_context(|| format!("writing {}", path.display()))?;
            files.insert(file, digest(&path)?);
        }
        let state = CheckpointState {
            step,
            seed,
            extra,
            files,
        };
        super::fault::pause_in_write();
        let state_path = tmp.join("state.json");
        std::fs::write(&state_path, serde_json::to_vec_pretty(&state)?)
            .with_context(|| format!("writing {}", state_path.display()))?;
        sync_dir(&tmp);
        if final_dir.exists() {
            // same step saved again (e.g. after a resume): replace it
            let old = self.dir.join(format!(".old-{name}-{}", std::process::id()));
            std::fs::rename(&final_dir, &old)?;
            std::fs::rename(&tmp, &final_dir)?;
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&tmp, &final_dir)
                .with_context(|| format!("renaming {} into place", tmp.display()))?;
        }
        sync_dir(&self.dir);
        self.prune()?;
        Ok(final_dir)
    }

    /// Clean up after a process killed inside [`Checkpointer::save`]: a `.old-step-N-<pid>`
    /// whose `step-N` is missing (killed between the two renames of a re-save) is put back;
    /// every other `.tmp-*` / `.old-*` entry is an incomplete or superseded write and is
    /// removed. Returns what it did, one line per entry.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(done);
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let path = self.dir.join(&name);
            if let Some(rest) = name.strip_prefix(".old-") {
                // `.old-step-NNNNNNNN-<pid>`
                if let Some((step, _pid)) = rest.rsplit_once('-') {
                    let target = self.dir.join(step);
                    if step.starts_with("step-") && !target.exists() {
                        std::fs::rename(&path, &target).with_context(|| {
                            format!("restoring {} as {}", path.display(), target.display())
                        })?;
                        done.push(format!(
                            "restored {} (a re-save was interrupted between its renames)",
                            target.display()
                        ));
                        continue;
                    }
                }
            } else if !name.starts_with(".tmp-") {
                continue;
            }
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            r.with_context(|| format!("removing {}", path.display()))?;
            done.push(format!("removed {} (an interrupted write)", path.display()));
        }
        Ok(done)
    }

    /// Saved checkpoint folders, oldest first, as `(step, path)`.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(step) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((step, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest checkpoint folder, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    /// Load and verify a checkpoint folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let state_path = path.join("state.json");
        let text = std::fs::read(&state_path)
            .with_context(|| format!("checkpoint {} has no readable state.json", path.display()))?;
        let state: CheckpointState = serde_json::from_slice(&text)
            .map_err(|e| anyhow!("checkpoint file {} is corrupt: {e}", state_path.display()))?;
        let mut groups = BTreeMap::new();
        for (file, want) in &state.files {
            let fp = path.join(file);
            let got = digest(&fp)
                .with_context(|| format!("checkpoint file {} is missing", fp.display()))?;
            if got.bytes != want.bytes {
                bail!(
                    "checkpoint file {} is corrupt: {} bytes, expected {} (cut short?)",
                    fp.display(),
                    got.bytes,
                    want.bytes
                );
            }
            if got.sha256 != want.sha256 {
                bail!(
                    "checkpoint file {} is corrupt: SHA-256 {} differs from the recorded {}",
                    fp.display(),
                    got.sha256,
                    want.sha256
                );
            }
            let tensors = Tensor::read_safetensors(&fp)
                .map_err(|e| anyhow!("checkpoint file {} is corrupt: {e}", fp.display()))?;
            let mut tensors: Named = tensors;
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let group = file.trim_end_matches(".safetensors").to_string();
            groups.insert(group, tensors);
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            state,
            groups,
        })
    }

    fn prune(&self) -> Result<()> {
        let all = self.list()?;
        if all.len() > self.keep {
            for (_, p) in &all[..all.len() - self.keep] {
                std::fs::remove_dir_all(p)
                    .with_context(|| format!("pruning old checkpoint {}", p.display()))?;
            }
        }
        Ok(())
    }
}

fn digest(path: &Path) -> Result<FileDigest> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileDigest {
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

pub use contrast_report::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    fn named(v: f32) -> Named {
        vec![
            (
                "a.weight".into(),
                Tensor::from_slice(&[v, 2.0, 3.0]).view([3, 1]),
            ),
            ("b".into(), Tensor::from_slice(&[7i64])),
        ]
    }

    #[test]
    fn recover_puts_back_an_interrupted_resave_and_removes_partial_writes() {
        let dir = tempfile::tempdir().unwrap();
        let ck = Checkpointer::new(dir.path(), 3);
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        let g: Named = vec![("w".into(), t)];
        ck.save(5, 0, &[("model", &g)], serde_json::json!({}))
            .unwrap();
        ck.save(10, 0, &[("model", &g)], serde_json::json!({}))
            .unwrap();
        // killed between `step-10 → .old-step-10-<pid>` and `.tmp → step-10`
        std::fs::rename(
            dir.path().join("step-00000010"),
            dir.path().join(".old-step-00000010-77"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".tmp-step-00000010-77")).unwrap();
        std::fs::create_dir_all(dir.path().join(".tmp-step-00000015-78")).unwrap();
        let done = ck.recover().unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        let steps: Vec<u64> = ck.list().unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [5, 10]);
        Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
        assert!(ck.recover().unwrap().is_empty());
    }

    #[test]
    fn save_load_prune_and_detect_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let ck = Checkpointer::new(dir.path().join("checkpoints"), 2);
        for step in [10u64, 20, 30] {
            ck.save(
                step,
                5,
                &[("model", &named(step as f32))],
                serde_json::json!({"epoch": 1}),
            )
            .unwrap();
        }
        let steps: Vec<u64> = ck.list().unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![20, 30]);
        let latest = ck.latest().unwrap().unwrap();
        let c = Checkpointer::load(&latest).unwrap();
        assert_eq!(c.state.step, 30);
        assert_eq!(c.state.seed, 5);
        assert_eq!(c.state.extra["epoch"], 1);
        let g = c.group("model").unwrap();
        assert_eq!(g[0].0, "a.weight");
        assert_eq!(g[0].1.size(), vec![3, 1]);
        assert_eq!(g[0].1.double_value(&[0, 0]), 30.0);
        assert!(c.group("optim").is_err());

        // cut the weights file short: reported as corrupt, by name
        let f = latest.join("model.safetensors");
        let len = std::fs::metadata(&f).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        file.set_len(len / 2).unwrap();
        let e = Checkpointer::load(&latest).err().unwrap().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("corrupt"),
            "{e}"
        );
        assert!(e.contains("cut short"), "{e}");
        // the previous checkpoint is intact
        assert!(Checkpointer::load(&ck.list().unwrap()[0].1).is_ok());
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
