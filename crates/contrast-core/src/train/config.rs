//! Configuration: serde structs filled from defaults, a TOML file, then `key.path=value`
//! command-line overrides.
//!
//! Every config struct of this workspace is `#[serde(default, deny_unknown_fields)]` and
//! implements `Default`, so a preset file lists only what differs from the defaults. An unknown
//! key or a value of the wrong type is an error that names the key and where it came from (the
//! file or the command line).
//!
//! ```
//! use contrast_core::train::config::{load_config, ConfigSource};
//! #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Optim { lr: f64, momentum: f64 }
//! #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Cfg { epochs: u32, optim: Optim }
//!
//! let src = ConfigSource::text("epochs = 3\n[optim]\nlr = 0.5", "preset.toml");
//! let cfg: Cfg = load_config(Some(src), &["optim.momentum=0.9".into()]).unwrap();
//! assert_eq!((cfg.epochs, cfg.optim.lr, cfg.optim.momentum), (3, 0.5, 0.9));
//!
//! let bad = ConfigSource::text("[optim]\nlrr = 0.5", "preset.toml");
//! let err = load_config::<Cfg>(Some(bad), &[]).unwrap_err().to_string();
//! assert!(err.contains("optim.lrr") && err.contains("preset.toml"), "{err}");
//! ```

use anyhow::{anyhow, bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Where the file part of a configuration comes from.
pub struct ConfigSource {
    text: String,
    name: String,
}

impl ConfigSource {
    /// Read a TOML file (the error names the file).
    pub fn file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Ok(Self {
            text,
            name: path.display().to_string(),
        })
    }
    /// TOML text with a name used in error messages (e.g. an embedded preset).
    pub fn text(text: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            name: name.into(),
        }
    }
}

/// Build a `C` from its defaults, the optional file, then the overrides (`a.b.c=value`, the value
/// in TOML syntax; bare words are taken as strings).
pub fn load_config<C>(file: Option<ConfigSource>, overrides: &[String]) -> Result<C>
where
    C: Serialize + DeserializeOwned + Default,
{
    let mut merged = match Value::try_from(C::default()).context("serialising the defaults")? {
        Value::Table(t) => t,
        _ => bail!("a config must serialise to a TOML table"),
    };
    let file_name = file.as_ref().map(|f| f.name.clone());
    let mut from_file: Vec<String> = Vec::new();
    if let Some(src) = &file {
        let table: Table = toml::from_str(&src.text)
            .with_context(|| format!("config file {} is not valid TOML", src.name))?;
        collect_paths(&table, "", &mut from_file);
        merge(&mut merged, table);
    }
    let mut from_cli: Vec<String> = Vec::new();
    for ov in overrides {
        let (key, raw) = ov
            .split_once('=')
            .ok_or_else(|| anyhow!("override `{ov}` is not of the form key.path=value"))?;
        let key = key.trim();
        // bare TOML keys only: every config field is one, and a name holding a backtick (or any
        // other character) cannot be traced back to the command line in serde's error
        let bare = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !key.split('.').all(bare) {
            bail!(
                "override `{ov}`: bad key `{key}` (names of letters, digits, `_` and `-`, \
                 joined by `.`)"
            );
        }
        set_path(&mut merged, key, parse_value(raw.trim()))
            .with_context(|| format!("override `{ov}`"))?;
        from_cli.push(key.to_string());
    }
    let de = Value::Table(merged);
    serde_path_to_error::deserialize::<_, C>(de).map_err(|e| {
        let path = e.path().to_string();
        // the toml deserializer appends "\nin `table`" context: keep the first line
        let inner = e
            .inner()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        // For an unknown field the path may name the containing table only; append the field.
        let key = match unknown_field(&inner) {
            Some(field) if path == "." || path.is_empty() => field,
            Some(field) if path == field || path.ends_with(&format!(".{field}")) => path,
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        // an override names the key, lies inside it, or created it as a table on its way
        // (`--set optim.lrr=0.1` where the config has no `optim`)
        let cli = from_cli.iter().find(|k| {
            *k == &key || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}."))
        });
        let origin = if let Some(k) = cli {
            if *k == key {
                "on the command line".to_string()
            } else {
                format!("on the command line (`--set {k}=…`)")
            }
        } else if let Some(name) = &file_name {
            if from_file.iter().any(|k| k == &key) || unknown_field(&inner).is_some() {
                format!("in {name}")
            } else {
                format!("(defaults, {name})")
            }
        } else {
            "in the defaults".to_string()
        };
        if unknown_field(&inner).is_some() {
            anyhow!("unknown config key `{key}` {origin}: {inner}")
        } else {
            anyhow!("config key `{key}` {origin}: {inner}")
        }
    })
}

/// Serialise a resolved config as TOML (what a run writes to `config.toml`).
pub fn to_toml<C: Serialize>(config: &C) -> Result<String> {
    toml::to_string_pretty(config).context("serialising the config as TOML")
}

/// `configs/<preset>.toml` next to a crate's manifest: the path a method binary resolves a
/// `--preset` name to (a value containing `/` or ending in `.toml` is taken as a path).
pub fn preset_path(crate_dir: &Path, preset: &str) -> PathBuf {
    if preset.contains('/') || preset.ends_with(".toml") {
        PathBuf::from(preset)
    } else {
        crate_dir.join("configs").join(format!("{preset}.toml"))
    }
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn parse_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.into())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(root: &mut Table, key: &str, value: Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut table = root;
    let mut walked = String::new();
    for p in parts {
        walked = if walked.is_empty() {
            p.to_string()
        } else {
            format!("{walked}.{p}")
        };
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| anyhow!("`{walked}` is a value, not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn collect_paths(t: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in t {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Table(sub) = v {
            collect_paths(sub, &p, out);
        }
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        lr: f64,
        name: String,
        steps: Vec<u32>,
    }
    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Outer {
        epochs: u32,
        flag: bool,
        optim: Inner,
    }

    #[test]
    fn defaults_file_overrides_in_order() {
        let src = ConfigSource::text("epochs = 5\n[optim]\nlr = 0.1\nname = 'sgd'", "p.toml");
        let c: Outer = load_config(
            Some(src),
            &[
                "optim.lr=0.25".into(),
                "flag=true".into(),
                "optim.steps=[1, 2]".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            c,
            Outer {
                epochs: 5,
                flag: true,
                optim: Inner {
                    lr: 0.25,
                    name: "sgd".into(),
                    steps: vec![1, 2]
                }
            }
        );
        // a bare word becomes a string
        let c: Outer = load_config(None, &["optim.name=adamw".into()]).unwrap();
        assert_eq!(c.optim.name, "adamw");
    }

    #[test]
    fn unknown_key_in_file_is_named_with_the_file() {
        let src = ConfigSource::text("[optim]\nmomentumm = 0.9", "configs/smoke.toml");
        let e = load_config::<Outer>(Some(src), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown config key `optim.momentumm`"), "{e}");
        assert!(e.contains("configs/smoke.toml"), "{e}");
        let src = ConfigSource::text("epochz = 1", "a.toml");
        let e = load_config::<Outer>(Some(src), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`epochz`") && e.contains("a.toml"), "{e}");
    }

    #[test]
    fn unknown_key_and_bad_type_on_command_line() {
        let e = load_config::<Outer>(None, &["optim.lrr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`optim.lrr`") && e.contains("command line"),
            "{e}"
        );
        let e = load_config::<Outer>(None, &["epochs=many".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`epochs`") && e.contains("command line"), "{e}");
        let e = load_config::<Outer>(None, &["epochs".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key.path=value"), "{e}");
        // an override that creates an unknown table is blamed, not the preset file (the toy
        // config has no `optim`: `--set optim.lrr=0.1` used to report "in configs/toy.toml")
        let src = ConfigSource::text("epochs = 2", "configs/toy.toml");
        let e = load_config::<Outer>(Some(src), &["nested.lrr=0.1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`nested`") && e.contains("command line") && e.contains("nested.lrr"),
            "{e}"
        );
        assert!(!e.contains("toy.toml"), "{e}");
    }

    #[test]
    fn wrong_type_in_file_names_key_and_file() {
        let src = ConfigSource::text("[optim]\nlr = 'fast'", "x.toml");
        let e = load_config::<Outer>(Some(src), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`optim.lr`") && e.contains("x.toml"), "{e}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c: Outer = load_config(None, &["optim.lr=0.5".into()]).unwrap();
        let text = to_toml(&c).unwrap();
        let back: Outer = load_config(Some(ConfigSource::text(text, "resolved")), &[]).unwrap();
        assert_eq!(c, back);
    }
}
