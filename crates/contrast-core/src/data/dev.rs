//! The development data copy beside a checkout (`../shared/data` next to the repository), an
//! optional speed-up for the project's own machines: users never have it, and nothing may need
//! it. Tests that read it skip with one line when it is absent, and `CONTRAST_DEV_DATA` makes
//! it absent on purpose (CI runs the suite a second time that way).
//!
//! `CONTRAST_DEV_DATA`: unset → `../shared/data` beside the repository when that folder exists;
//! empty, `0`, `none` or `off` → no development data; any other value → that folder.

use std::path::{Path, PathBuf};

/// The development data folder, or `None` (a user's checkout, or hidden by `CONTRAST_DEV_DATA`).
pub fn dev_data_root() -> Option<PathBuf> {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    resolve(std::env::var_os("CONTRAST_DEV_DATA").as_deref(), &beside)
}

/// [`dev_data_root`]'s rule with the environment value and the default folder given.
pub fn resolve(env: Option<&std::ffi::OsStr>, beside: &Path) -> Option<PathBuf> {
    let d = match env.and_then(|v| v.to_str()).map(str::trim) {
        Some("" | "0" | "none" | "off") => return None,
        Some(v) => PathBuf::from(v),
        None if env.is_some() => return None,
        None => beside.to_path_buf(),
    };
    if !d.is_dir() {
        return None;
    }
    Some(std::fs::canonicalize(&d).unwrap_or(d))
}

/// `sub` inside the development data, for a test: `None` with one visible line naming the
/// test and the data it missed when the copy (or that part of it) is absent. The line goes
/// straight to the process's stderr, past the test harness's capture, so a passing test that
/// skipped still shows it.
pub fn dev_data(test: &str, sub: &str) -> Option<PathBuf> {
    use std::io::Write;
    let line = match dev_data_root() {
        Some(root) if root.join(sub).exists() => return Some(root.join(sub)),
        Some(root) => format!(
            "{test}: skipped (no development data `{sub}` in {})",
            root.display()
        ),
        None => format!(
            "{test}: skipped (no development data `{sub}`: no ../shared/data beside the checkout, or CONTRAST_DEV_DATA hides it)"
        ),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn env_hides_or_redirects_the_development_copy() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        for off in ["", "0", "none", "off", " none "] {
            assert_eq!(resolve(Some(OsStr::new(off)), here), None, "{off:?}");
        }
        let src = here.join("src");
        assert_eq!(
            resolve(Some(src.as_os_str()), here),
            Some(src.canonicalize().unwrap())
        );
        assert_eq!(resolve(Some(OsStr::new("/no/such/dir")), here), None);
        assert_eq!(resolve(None, &here.join("no-such-dir")), None);
        assert_eq!(resolve(None, here), Some(here.canonicalize().unwrap()));
    }
}
