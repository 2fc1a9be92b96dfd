//! Small tensor utilities shared by the harness and the methods.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use tch::{nn::VarStore, Tensor};

/// A named set of tensors (sorted by name): what a checkpoint group holds.
pub type Named = Vec<(String, Tensor)>;

/// All variables of a VarStore, sorted by name, as shallow clones (no copy).
pub fn named_variables(vs: &VarStore) -> Named {
    let map: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    map.into_iter().collect()
}

/// Write `named` as a safetensors file, atomically: detached, contiguous CPU copies into a
/// temporary file in the same folder (created if missing), synced, then renamed into place, so
/// an interrupted write never leaves a half-written file under `path`.
pub fn write_safetensors_atomic(path: &std::path::Path, named: &[(String, Tensor)]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        path.file_name()
            .map_or("tensors".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let cpu: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(n, t)| {
            (
                n.as_str(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    Tensor::write_safetensors(&cpu, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Copy `tensors` into the variables of `vs` with the same names. With `strict`, every variable
/// must be present and no extra name may appear; shapes must always match.
pub fn load_into(vs: &VarStore, tensors: &[(String, Tensor)], strict: bool) -> Result<()> {
    let vars = vs.variables();
    let given: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if strict {
        let missing: Vec<&String> = vars
            .keys()
            .filter(|k| !given.contains_key(k.as_str()))
            .collect();
        if !missing.is_empty() {
            bail!("missing variables: {missing:?}");
        }
        let extra: Vec<&&str> = given.keys().filter(|k| !vars.contains_key(**k)).collect();
        if !extra.is_empty() {
            bail!("unexpected variables: {extra:?}");
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vars.iter() {
            if let Some(src) = given.get(name.as_str()) {
                if var.size() != src.size() {
                    bail!(
                        "variable `{name}` has shape {:?} but the source has {:?}",
                        var.size(),
                        src.size()
                    );
                }
                let mut v = var.shallow_clone();
                v.f_copy_(src)
                    .with_context(|| format!("copying `{name}`"))?;
            }
        }
        Ok(())
    })
}

/// A scalar tensor's value as f64.
pub fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}
