//! The typed `report.json` ([`RunReport`], defined in `contrast-report`, which reads it) and
//! what only a libtorch process knows about a run: the device's name and the commit.

pub use contrast_report::run_report::{table, Headline, RunReport};
use tch::Device;

/// `cpu` / `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The source commit of a run: `CONTRAST_COMMIT` when set (the GPU bundles set it to the commit
/// they were built from), else `git rev-parse --short HEAD` in the crate's checkout at run time.
pub fn commit() -> Option<String> {
    if let Ok(c) = std::env::var("CONTRAST_COMMIT") {
        if !c.is_empty() {
            return Some(c);
        }
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_plainly() {
        assert_eq!(device_name(Device::Cpu), "cpu");
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
    }
}
