//! `cargo xtask official fetch <method>`: the official code of a paper at its pinned commit, in
//! the git-ignored `.official/<method>/`, from the manifest `official/<method>.toml`. The source
//! is never committed (licences such as CC BY-NC forbid relicensing it); our adapters
//! (`official/<method>.py`) import it from there.

use crate::util::{repo_root, run_output, run_status, step};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `official/<method>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub method: String,
    pub repository: String,
    pub commit: String,
    pub licence: String,
    /// The files the adapter imports (checked after a fetch, copied into GPU bundles).
    pub files: Vec<String>,
    /// Python packages the official code needs beyond torch / torchvision.
    #[serde(default)]
    pub python: Vec<String>,
    /// Our adapter, relative to the repository root.
    pub adapter: String,
    /// The tests that compare ours with this code, as `package/test-target`
    /// (`crates/<package>/tests/<test-target>.rs`); `cargo xtask official compare` runs them.
    #[serde(default)]
    pub tests: Vec<String>,
    /// Methods without official code of their own whose baseline or blocks this code checks
    /// (e.g. SPPS's MoCo-v2 baseline): `compare <method>` runs these manifests' tests too.
    #[serde(default)]
    pub covers: Vec<String>,
}

impl Manifest {
    pub fn load(method: &str) -> Result<Self> {
        let path = repo_root().join("official").join(format!("{method}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no official-code manifest for `{method}` ({}); known: {}",
                path.display(),
                known().join(", ")
            )
        })?;
        let m: Manifest =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        if m.method != method {
            bail!(
                "{} names method `{}`, not `{method}`",
                path.display(),
                m.method
            );
        }
        if m.commit.len() != 40 || !m.commit.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "{}: commit `{}` is not a full 40-digit hash",
                path.display(),
                m.commit
            );
        }
        Ok(m)
    }

    /// Where the checkout lives: `.official/<method>/` (git-ignored).
    pub fn checkout_dir(&self) -> PathBuf {
        repo_root().join(".official").join(&self.method)
    }

    /// The checkout, when it is complete (every listed file present at the pinned commit).
    pub fn checkout(&self) -> Option<PathBuf> {
        let d = self.checkout_dir();
        let stamp = std::fs::read_to_string(d.join(".contrast-commit")).ok()?;
        (stamp.trim() == self.commit && self.files.iter().all(|f| d.join(f).is_file())).then_some(d)
    }
}

/// Methods with a manifest.
pub fn known() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo_root().join("official"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Args, Debug)]
pub struct OfficialArgs {
    #[command(subcommand)]
    pub command: OfficialCmd,
}

#[derive(Subcommand, Debug)]
pub enum OfficialCmd {
    /// Check out the official code at the manifest's commit into `.official/<method>/`.
    Fetch {
        /// Method name (`official/<method>.toml`).
        method: String,
        /// Fetch from this git repository (a local clone or mirror) instead of the manifest's URL.
        #[arg(long)]
        from: Option<String>,
    },
    /// List the manifests and whether each checkout is present.
    List,
    /// Run the step comparison of ours against the official code (fetching it first when a
    /// `--from` clone is given): the method's `official_step` test, with its numbers printed.
    Compare {
        /// Method name (`official/<method>.toml`).
        method: String,
        /// Fetch from this local clone when `.official/<method>` is missing.
        #[arg(long)]
        from: Option<String>,
        /// Steps of the N-step comparisons (each test's default otherwise; the committed
        /// fixtures hold that default, so other values need the official checkout).
        #[arg(long)]
        steps: Option<usize>,
    },
}

/// The step comparisons of `name` as (package, test target): the tests of its own manifest and
/// of every manifest that `covers` it.
pub fn step_tests(name: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for k in known() {
        let m = Manifest::load(&k)?;
        if m.method == name || m.covers.iter().any(|c| c == name) {
            for t in &m.tests {
                let Some((package, test)) = t.split_once('/') else {
                    bail!("official/{k}.toml: test `{t}` is not `package/test-target`");
                };
                out.push((package.to_string(), test.to_string()));
            }
        }
    }
    Ok(out)
}

pub fn official(args: &OfficialArgs) -> Result<()> {
    match &args.command {
        OfficialCmd::Fetch { method, from } => {
            let m = Manifest::load(method)?;
            let d = fetch(&m, from.as_deref())?;
            println!("official {method}: {} at {}", d.display(), m.commit);
            Ok(())
        }
        OfficialCmd::Compare {
            method,
            from,
            steps,
        } => {
            let tests = step_tests(method)?;
            if tests.is_empty() {
                bail!(
                    "no step comparison for `{method}` (no manifest in official/ names it in `method` or `covers`)"
                );
            }
            if let Ok(m) = Manifest::load(method) {
                if m.checkout().is_none() {
                    if let Err(e) = fetch(&m, from.as_deref()) {
                        println!(
                            "official {method}: not fetched ({e:#}); comparing with the committed fixture instead"
                        );
                    }
                }
            }
            if let Some(n) = steps {
                // read by `contrast_core::testing::official::official_steps`
                std::env::set_var("CONTRAST_OFFICIAL_STEPS", n.to_string());
            }
            // the N-step comparisons record their agreement here for the results page
            let out = std::env::var_os("CONTRAST_RUNS")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("runs"))
                .join("official")
                .join(method);
            if out.exists() {
                // a test that fails this time must not leave an older agreement behind
                std::fs::remove_dir_all(&out)
                    .with_context(|| format!("removing {}", out.display()))?;
            }
            std::env::set_var("CONTRAST_OFFICIAL_OUT", &out);
            for (package, test) in &tests {
                step(&format!(
                    "official compare {method}: {package} --test {test}"
                ));
                crate::util::cargo(&["test", "-p", package, "--test", test, "--", "--nocapture"])?;
            }
            Ok(())
        }
        OfficialCmd::List => {
            for name in known() {
                let m = Manifest::load(&name)?;
                let state = match m.checkout() {
                    Some(d) => format!("checked out in {}", d.display()),
                    None => "not fetched".into(),
                };
                println!(
                    "{name:10} {} @ {} ({}; needs {}): {state}",
                    m.repository,
                    &m.commit[..10],
                    m.licence,
                    m.python.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// Fetch the pinned commit (a no-op when the checkout is complete) and check the listed files.
pub fn fetch(m: &Manifest, from: Option<&str>) -> Result<PathBuf> {
    if let Some(d) = m.checkout() {
        println!("official {}: already at {}", m.method, m.commit);
        return Ok(d);
    }
    let dest = m.checkout_dir();
    let source = from.unwrap_or(&m.repository);
    step(&format!(
        "official fetch {}: {source} @ {}",
        m.method, m.commit
    ));
    // a fresh work tree: a half-written one from an interrupted fetch is discarded
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let r = fetch_into(m, source, &tmp, &dest);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // a failed fetch leaves nothing behind
    }
    r
}

fn fetch_into(m: &Manifest, source: &str, tmp: &Path, dest: &Path) -> Result<PathBuf> {
    let git = |args: &[&str]| -> Result<()> {
        run_status(Command::new("git").arg("-C").arg(tmp).args(args))
    };
    git(&["init", "-q"])?;
    // a remote serves the pinned commit alone; a local clone or mirror may not serve a commit
    // that is not a branch tip, so all its refs are fetched
    let (spec, rev) = if Path::new(source).exists() {
        ("+refs/*:refs/source/*", m.commit.as_str())
    } else {
        (m.commit.as_str(), "FETCH_HEAD")
    };
    let mut fetch_args = vec!["fetch", "-q"];
    if !Path::new(source).exists() {
        fetch_args.extend(["--depth", "1"]);
    }
    fetch_args.extend([source, spec]);
    git(&fetch_args).with_context(|| {
        format!(
            "could not fetch {} from {source} (no network? pass --from <local clone>)",
            m.commit
        )
    })?;
    git(&["-c", "advice.detachedHead=false", "checkout", "-q", rev])?;
    let head = run_output(
        Command::new("git")
            .arg("-C")
            .arg(tmp)
            .args(["rev-parse", "HEAD"]),
    )?;
    if head != m.commit {
        bail!("fetched {head}, expected {}", m.commit);
    }
    let missing: Vec<&String> = m.files.iter().filter(|f| !tmp.join(f).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "the official {} checkout lacks {missing:?} (the manifest's `files`)",
            m.method
        );
    }
    std::fs::write(tmp.join(".contrast-commit"), format!("{}\n", m.commit))?;
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(tmp, dest)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    Ok(dest.to_path_buf())
}

/// Copy the manifest's files from the checkout into `dest` (same relative paths).
pub fn copy_files(m: &Manifest, checkout: &Path, dest: &Path) -> Result<u64> {
    let mut bytes = 0;
    for f in &m.files {
        let to = dest.join(f);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        bytes += std::fs::copy(checkout.join(f), &to)
            .with_context(|| format!("copying official file {f}"))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_comparison_names_a_manifest_and_a_test_file() {
        for name in known() {
            for (package, test) in step_tests(&name).unwrap() {
                assert!(
                    repo_root()
                        .join(format!("crates/{package}/tests/{test}.rs"))
                        .is_file(),
                    "{name}: {package}/{test}"
                );
            }
        }
        for m in ["patchmix", "fba-net", "multinet", "grass", "spps"] {
            assert!(!step_tests(m).unwrap().is_empty(), "{m}");
        }
    }

    #[test]
    fn every_manifest_parses_and_names_its_adapter() {
        let names = known();
        assert!(names.contains(&"patchmix".to_string()), "{names:?}");
        for name in names {
            let m = Manifest::load(&name).unwrap();
            assert!(m.repository.starts_with("https://github.com/"), "{name}");
            assert!(!m.files.is_empty() && !m.licence.is_empty(), "{name}");
            assert!(repo_root().join(&m.adapter).is_file(), "{name}: adapter");
        }
    }

    #[test]
    fn fetch_from_a_local_repository_checks_commit_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("module")).unwrap();
        std::fs::write(src.join("module/mix.py"), "x = 1\n").unwrap();
        let git = |args: &[&str]| {
            run_output(
                Command::new("git")
                    .arg("-C")
                    .arg(&src)
                    .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                    .args(args),
            )
            .unwrap()
        };
        git(&["init", "-q"]);
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "one"]);
        let commit = git(&["rev-parse", "HEAD"]);
        // a manifest pointing into a scratch repository root
        let m = Manifest {
            method: format!("test-{}", std::process::id()),
            repository: "https://github.com/example/none".into(),
            commit,
            licence: "test".into(),
            files: vec!["module/mix.py".into()],
            python: vec![],
            adapter: "official/patchmix.py".into(),
            tests: vec![],
            covers: vec![],
        };
        let d = fetch(&m, Some(src.to_str().unwrap())).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("module/mix.py")).unwrap(),
            "x = 1\n"
        );
        assert_eq!(m.checkout().as_deref(), Some(d.as_path()));
        // a file the manifest lists but the commit lacks is an error naming it
        let mut bad = m.clone();
        bad.method = format!("{}-bad", m.method);
        bad.files.push("module/absent.py".into());
        let e = fetch(&bad, Some(src.to_str().unwrap())).unwrap_err();
        assert!(format!("{e:#}").contains("module/absent.py"), "{e:#}");
        assert!(
            !bad.checkout_dir().with_extension("partial").exists(),
            "a failed fetch leaves nothing behind"
        );
        let _ = std::fs::remove_dir_all(d);
        let _ = std::fs::remove_dir_all(bad.checkout_dir().with_extension("partial"));
    }
}
