//! Metrics: one JSON object per line in `metrics.jsonl`, and a live progress bar.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Append-only JSONL log. Every record carries `step`; on resume, records past the checkpoint's
/// step are dropped so the log matches an uninterrupted run.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Open (create or append) `path`. With `resume_step = Some(s)`, drop records with step > s.
    pub fn open(path: impl Into<PathBuf>, resume_step: Option<u64>) -> Result<Self> {
        let path = path.into();
        if let Some(s) = resume_step {
            truncate_after(&path, s)?;
        } else if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot reset {}", path.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one record: `{"step": step, ...fields}`.
    pub fn log(&mut self, step: u64, fields: &[(&str, Value)]) -> Result<()> {
        let mut m = Map::new();
        m.insert("step".into(), Value::from(step));
        for (k, v) in fields {
            m.insert((*k).to_string(), v.clone());
        }
        let line = serde_json::to_string(&Value::Object(m))? + "\n";
        if let Err(e) = super::fault::fail_write_of(super::fault::Written::Metrics) {
            // a torn line, as a disk that fills in the middle of the write leaves
            let _ = self.file.write_all(&line.as_bytes()[..line.len() / 2]);
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    /// All records of a metrics file.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<Value>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
            })
            .collect()
    }
}

/// Keep the records up to `step` (a resume). A last line that was cut off mid-write (a process
/// killed or a disk full while logging: no newline at its end and not JSON) is dropped with a
/// note; a bad line anywhere else is an error.
fn truncate_after(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // the last line, when the file does not end with a newline
    let start = text.rfind('\n').map_or(0, |i| i + 1);
    let last = &text[start..];
    let whole = if !last.is_empty() && serde_json::from_str::<Value>(last).is_err() {
        eprintln!(
            "note: dropping the last line of {}, cut off mid-write: {:?}",
            path.display(),
            last.chars().take(60).collect::<String>()
        );
        &text[..start]
    } else {
        &text[..]
    };
    let records: Vec<Value> = whole
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    let kept: Vec<String> = records
        .into_iter()
        .filter(|r| {
            r.get("step")
                .and_then(Value::as_u64)
                .is_some_and(|s| s <= step)
        })
        .map(|r| r.to_string())
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::train::checkpoint::write_atomic(path, text.as_bytes())
}

/// A progress bar with rate and ETA (drawn only on a terminal; in logs, a plain line every
/// `plain_every` steps instead).
pub struct Progress {
    bar: ProgressBar,
    tty: bool,
    plain_every: u64,
}

impl Progress {
    pub fn new(total: u64, start: u64, what: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(what.to_string());
        bar.set_position(start);
        bar.reset_eta();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            bar,
            tty,
            plain_every: (total / 20).max(1),
        }
    }

    /// A progress bar that shows nothing (the ranks other than 0 of a distributed run).
    pub fn hidden(total: u64) -> Self {
        Self {
            bar: ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden()),
            tty: true,
            plain_every: u64::MAX,
        }
    }

    /// Advance to `pos` and show `msg` (e.g. the current loss).
    pub fn update(&self, pos: u64, msg: &str) {
        self.bar.set_position(pos);
        self.bar.set_message(msg.to_string());
        if !self.tty && (pos.is_multiple_of(self.plain_every) || Some(pos) == self.bar.length()) {
            eprintln!(
                "{} {pos}/{} {msg}",
                self.bar.prefix(),
                self.bar.length().unwrap_or(0)
            );
        }
    }

    /// Print a line without breaking the bar.
    pub fn println(&self, line: &str) {
        self.bar.println(line);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn log_and_truncate_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut m = MetricsLog::open(&p, None).unwrap();
        for s in 1..=5 {
            m.log(s, &[("loss", Value::from(s as f64 / 2.0))]).unwrap();
        }
        drop(m);
        let mut m = MetricsLog::open(&p, Some(3)).unwrap();
        m.log(4, &[("loss", Value::from(9.0))]).unwrap();
        let recs = MetricsLog::read(&p).unwrap();
        let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        assert_eq!(recs[1]["loss"], 1.0);
        assert_eq!(recs[3]["loss"], 9.0);
    }

    #[test]
    fn a_torn_last_line_is_dropped_on_resume_and_a_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, "{\"step\":1}\n{\"step\":2}\n{\"st").unwrap();
        MetricsLog::open(&p, Some(5)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\":1}\n{\"step\":2}\n"
        );
        std::fs::write(&p, "{\"st").unwrap();
        MetricsLog::open(&p, Some(5)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        // a whole last line without its newline is kept
        std::fs::write(&p, "{\"step\":1}\n{\"step\":2}").unwrap();
        MetricsLog::open(&p, Some(5)).unwrap();
        assert_eq!(MetricsLog::read(&p).unwrap().len(), 2);
        std::fs::write(&p, "{\"step\":1}\nnot json\n{\"step\":3}\n").unwrap();
        let e = format!("{:#}", MetricsLog::open(&p, Some(5)).err().unwrap());
        assert!(e.contains("line 2: not JSON"), "{e}");
    }
}
