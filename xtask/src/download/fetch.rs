//! HTTP downloads with resume (Range requests into a `.part` file), bounded retries, URL
//! fallback and streaming checksums.

use super::{Checksum, FileEntry, Options, Progress};
use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Streaming hash of the expected algorithm (sha256 when the checksum is unknown).
enum Hasher {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(c: &Checksum) -> Hasher {
        use sha2::Digest;
        match c {
            Checksum::Md5(_) => Hasher::Md5(md5::Md5::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }
    fn hex(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// Hash the first `len` bytes of `file` (from its start) into `h`.
fn hash_prefix(file: &mut File, len: u64, h: &mut Hasher) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Check a complete file on disk against `want` (and nothing for `Unknown`).
pub(super) fn verify_file(path: &Path, want: &Checksum) -> Result<()> {
    if *want == Checksum::Unknown {
        return Ok(());
    }
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut h = Hasher::new(want);
    hash_prefix(&mut file, len, &mut h)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let got = h.hex();
    match want {
        Checksum::Md5(w) | Checksum::Sha256(w) if *w != got => bail!(
            "{} fails its checksum: expected {want}, got {got}",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Why one attempt at one URL stopped.
enum Attempt {
    /// Worth retrying (cut connection, timeout, 5xx, ...).
    Transient(anyhow::Error),
    /// Not worth retrying this URL (404, 403, ...): go to the next one.
    Fatal(anyhow::Error),
}

/// Download `f` into `target` (through `target.part`) from the first URL that works, verifying
/// its size and checksum. Returns the number of bytes transferred.
pub(super) fn fetch(
    agent: &ureq::Agent,
    urls: &[String],
    f: &FileEntry,
    target: &Path,
    opts: &Options,
    bar: &Progress,
) -> Result<u64> {
    let part = PathBuf::from(format!("{}.part", target.display()));
    let bar_base = bar.position();
    let mut errors = Vec::new();
    let mut transferred = 0u64;
    for url in urls {
        match fetch_url(agent, url, f, &part, opts, bar, bar_base, &mut transferred) {
            Ok(got) => {
                let size = fs::metadata(&part)
                    .with_context(|| format!("cannot stat {}", part.display()))?
                    .len();
                match judge(f, url, size, &got) {
                    Ok(warnings) => {
                        for w in warnings {
                            bar.suspend(|| eprintln!("{w}"));
                        }
                        fs::rename(&part, target).with_context(|| {
                            format!("cannot rename {} to {}", part.display(), target.display())
                        })?;
                        return Ok(transferred);
                    }
                    Err(why) => {
                        remove_quietly(&part);
                        errors.push(why);
                        bar.set_position(bar_base);
                    }
                }
            }
            Err(e) => {
                errors.push(format!("{url}: {e:#}"));
            }
        }
        if urls.last() != Some(url) {
            let why = errors.last().cloned().unwrap_or_default();
            bar.suspend(|| eprintln!("{}: {why}; trying the next URL", f.path));
        }
    }
    bail!(
        "could not fetch `{}` from any of its {} URL(s):\n  {}",
        f.path,
        urls.len(),
        errors.join("\n  ")
    )
}

/// Judge a complete download of `f` (`size` bytes, digest `got`) from `url`: `Ok(warnings)` to
/// accept it, `Err(reason)` to reject it. The checksum decides; the size decides only when no
/// checksum is known.
pub(super) fn judge(
    f: &FileEntry,
    url: &str,
    size: u64,
    got: &str,
) -> std::result::Result<Vec<String>, String> {
    let want = f.checksum();
    let wrong_size = f.size.filter(|s| *s != size);
    match &want {
        Checksum::Md5(w) | Checksum::Sha256(w) => {
            let algo = if matches!(want, Checksum::Md5(_)) {
                "md5"
            } else {
                "sha256"
            };
            let size_note = wrong_size
                .map(|e| format!(" ({size} bytes; the manifest says {e})"))
                .unwrap_or_default();
            if w != got {
                return Err(format!(
                    "checksum mismatch for `{}` from {url}: expected {want}, got {algo} {got}\
                     {size_note}; the downloaded file was deleted",
                    f.path
                ));
            }
            Ok(wrong_size
                .map(|_| {
                    format!(
                        "{}: warning: checksum verified, but the size in the manifest is \
                         wrong{size_note}; fix the manifest",
                        f.path
                    )
                })
                .into_iter()
                .collect())
        }
        Checksum::Unknown => {
            if let Some(expected) = wrong_size {
                return Err(format!(
                    "`{}` from {url} has {size} bytes, the manifest says {expected} (and knows \
                     no checksum); the downloaded file was deleted",
                    f.path
                ));
            }
            Ok(vec![format!(
                "\n*** WARNING: `{}` has NO known checksum in the manifest: it was NOT \
                 verified. ***\n*** sha256 of what {url} sent: {got} ({size} bytes); record it \
                 in the manifest. ***\n",
                f.path
            )])
        }
    }
}

/// Fetch one URL into `part` with resume and bounded retries; returns the hex digest.
#[allow(clippy::too_many_arguments)]
fn fetch_url(
    agent: &ureq::Agent,
    url: &str,
    f: &FileEntry,
    part: &Path,
    opts: &Options,
    bar: &Progress,
    bar_base: u64,
    transferred: &mut u64,
) -> Result<String> {
    let want = f.checksum();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(part)
        .with_context(|| format!("cannot open {}", part.display()))?;
    // Bytes already on disk (an earlier run or URL) are hashed first, so the hash can then
    // follow the stream.
    let mut have = file.metadata()?.len();
    let mut hasher = Hasher::new(&want);
    hash_prefix(&mut file, have, &mut hasher)
        .with_context(|| format!("cannot read {}", part.display()))?;
    if have > 0 {
        bar.suspend(|| println!("{}: resuming at byte {have}", f.path));
    }
    let mut retries = 0u32;
    loop {
        bar.set_position(bar_base + have);
        let result = attempt(
            agent,
            url,
            &mut file,
            &mut have,
            &mut hasher,
            bar,
            bar_base,
            f,
            transferred,
        );
        match result {
            Ok(()) => return Ok(hasher.hex()),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Transient(e)) => {
                if retries >= opts.retries {
                    let kept = if have > 0 {
                        format!(
                            "; {have} bytes kept in {} for a later resume",
                            part.display()
                        )
                    } else {
                        drop(file);
                        remove_quietly(part);
                        String::new()
                    };
                    return Err(e.context(format!("gave up after {} attempts{kept}", retries + 1)));
                }
                retries += 1;
                bar.suspend(|| {
                    eprintln!(
                        "{}: {e:#}; retry {retries}/{} from byte {have}",
                        f.path, opts.retries
                    )
                });
                std::thread::sleep(opts.retry_delay * retries);
            }
        }
    }
}

/// One HTTP request: ask for the bytes after `have`, append them to `file` and the hash.
#[allow(clippy::too_many_arguments)]
fn attempt(
    agent: &ureq::Agent,
    url: &str,
    file: &mut File,
    have: &mut u64,
    hasher: &mut Hasher,
    bar: &Progress,
    bar_base: u64,
    f: &FileEntry,
    transferred: &mut u64,
) -> std::result::Result<(), Attempt> {
    let io_err =
        |e: io::Error, what: &str| Attempt::Fatal(anyhow::Error::new(e).context(what.to_string()));
    let mut req = agent.get(url);
    if *have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if *have > 0 && f.size == Some(*have) => {
            return Ok(()); // we already hold every byte
        }
        Err(ureq::Error::Status(416, _)) if *have > 0 => {
            // The server cannot serve that range: start over.
            restart(file, have, hasher, f)
                .map_err(|e| io_err(e, "cannot truncate the partial file"))?;
            return Err(Attempt::Transient(anyhow::anyhow!(
                "HTTP 416 for a resume request; restarting from zero"
            )));
        }
        Err(ureq::Error::Status(code, _)) if code >= 500 || code == 408 || code == 429 => {
            return Err(Attempt::Transient(anyhow::anyhow!("HTTP {code}")));
        }
        Err(ureq::Error::Status(code, r)) => {
            return Err(Attempt::Fatal(anyhow::anyhow!(
                "HTTP {code} {}",
                r.status_text()
            )))
        }
        Err(ureq::Error::Transport(t)) => {
            // Display of a transport error repeats the URL; the caller names it already.
            let mut msg = t.kind().to_string();
            if let Some(m) = t.message() {
                msg.push_str(&format!(": {m}"));
            }
            return Err(Attempt::Transient(anyhow::anyhow!(msg)));
        }
    };
    let status = resp.status();
    let offset = match status {
        206 => {
            let start = resp
                .header("Content-Range")
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(*have) {
                restart(file, have, hasher, f)
                    .map_err(|e| io_err(e, "cannot truncate the partial file"))?;
                return Err(Attempt::Transient(anyhow::anyhow!(
                    "the server answered a resume request with an unexpected Content-Range {:?}; \
                     restarting from zero",
                    resp.header("Content-Range")
                )));
            }
            *have
        }
        200 => {
            if *have > 0 {
                bar.suspend(|| {
                    println!(
                        "{}: the server does not support resuming (Range ignored); restarting from zero",
                        f.path
                    )
                });
                restart(file, have, hasher, f)
                    .map_err(|e| io_err(e, "cannot truncate the partial file"))?;
            }
            0
        }
        other => {
            return Err(Attempt::Fatal(anyhow::anyhow!(
                "unexpected HTTP status {other} {}",
                resp.status_text()
            )))
        }
    };
    let expected_end = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| n + offset);
    if let (Some(end), Some(size)) = (expected_end, f.size) {
        if end != size {
            // The checksum decides; a size copied wrongly into a manifest must not block.
            bar.suspend(|| {
                eprintln!(
                    "{}: warning: the server announces {end} bytes, the manifest says {size}",
                    f.path
                )
            });
        }
    }
    file.seek(SeekFrom::Start(*have))
        .map_err(|e| io_err(e, "cannot seek in the partial file"))?;
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Attempt::Transient(
                    anyhow::Error::new(e).context(format!("transfer cut at byte {have}")),
                ))
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| io_err(e, "cannot write the partial file (disk full?)"))?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        *transferred += n as u64;
        bar.set_position(bar_base + *have);
    }
    file.flush()
        .map_err(|e| io_err(e, "cannot flush the partial file"))?;
    match expected_end {
        Some(end) if *have < end => Err(Attempt::Transient(anyhow::anyhow!(
            "transfer cut at byte {have} of {end}"
        ))),
        _ => Ok(()),
    }
}

fn restart(file: &mut File, have: &mut u64, hasher: &mut Hasher, f: &FileEntry) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    *have = 0;
    *hasher = Hasher::new(&f.checksum());
    Ok(())
}

fn remove_quietly(p: &Path) {
    let _ = fs::remove_file(p);
}
