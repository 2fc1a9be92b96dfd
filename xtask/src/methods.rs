//! The methods that `reproduce`, `doctor` and the data planner know. There is no list to edit:
//! a crate under `crates/` whose `Cargo.toml` has a `[package.metadata.contrast]` table is a
//! method (its name, binary, default preset, one-line summary and the run-name suffixes of its
//! method / baseline pair). Adding a method is adding its crate.

use crate::util::repo_root;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::sync::OnceLock;

/// A method that `reproduce` knows: name, package, binary, default preset.
#[derive(Debug, Clone)]
pub struct Method {
    pub name: String,
    pub package: String,
    pub binary: String,
    pub default_preset: String,
    pub what: String,
    /// The run-name suffixes of the method's run and of its baseline run in one `reproduce`
    /// (for `--seeds`); `None` where `reproduce` has no single baseline.
    pub pair: Option<(String, String)>,
    /// What kind of data the data planner prepares (`natural-images`, `la-heart`, `vqa-rad`,
    /// `aerial`); `None`: the method needs none.
    pub data: Option<String>,
    /// The preset table that holds `format` and `root` (`data`, or e.g. `finetune.data`).
    pub data_table: String,
}

#[derive(Deserialize)]
struct CargoToml {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    contrast: Option<Registration>,
}

/// `[package.metadata.contrast]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Registration {
    method: String,
    binary: Option<String>,
    #[serde(default = "smoke")]
    default_preset: String,
    summary: String,
    pair: Option<(String, String)>,
    data: Option<String>,
    #[serde(default = "data_table")]
    data_table: String,
}

fn data_table() -> String {
    "data".into()
}

fn smoke() -> String {
    "smoke".into()
}

/// Every method of the workspace, by name.
pub fn methods() -> &'static [Method] {
    static M: OnceLock<Vec<Method>> = OnceLock::new();
    M.get_or_init(|| scan().unwrap_or_else(|e| panic!("reading the method registrations: {e:#}")))
}

/// The method called `name`, or an error listing the known ones.
pub fn find(name: &str) -> Result<&'static Method> {
    match methods().iter().find(|m| m.name == name) {
        Some(m) => Ok(m),
        None => bail!(
            "unknown method `{name}`; known: {}",
            methods()
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn scan() -> Result<Vec<Method>> {
    let crates = repo_root().join("crates");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&crates).with_context(|| format!("listing {}", crates.display()))? {
        let p = e?.path().join("Cargo.toml");
        if !p.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let c: CargoToml = toml::from_str(&text).with_context(|| format!("{}", p.display()))?;
        let Some(r) = c.package.metadata.and_then(|m| m.contrast) else {
            continue;
        };
        out.push(Method {
            binary: r.binary.unwrap_or_else(|| c.package.name.clone()),
            name: r.method,
            package: c.package.name,
            default_preset: r.default_preset,
            what: r.summary,
            pair: r.pair,
            data: r.data,
            data_table: r.data_table,
        });
    }
    // the papers first, the core example last
    out.sort_by(|a, b| {
        (a.package == "contrast-core", &a.name).cmp(&(b.package == "contrast-core", &b.name))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_crate_registers_itself_and_its_preset_exists() {
        let names: Vec<&str> = methods().iter().map(|m| m.name.as_str()).collect();
        for m in [
            "claires", "fba-net", "grass", "multinet", "patchmix", "spade", "spps", "toy",
        ] {
            assert!(names.contains(&m), "{m} not registered: {names:?}");
        }
        for m in methods() {
            let dir = repo_root()
                .join("crates")
                .join(if m.package == "contrast-core" {
                    "contrast-core"
                } else {
                    &m.package
                });
            assert!(
                dir.join("configs")
                    .join(format!("{}.toml", m.default_preset))
                    .is_file(),
                "{}: no preset {}",
                m.name,
                m.default_preset
            );
        }
        assert!(find("nope").is_err());
        assert_eq!(find("toy").unwrap().binary, "contrast-toy");
    }
}
