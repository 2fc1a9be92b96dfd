//! Fuzz checks for `cargo xtask download`: manifest parsing and archive extraction (tar,
//! tar.gz, zip). Shared by the cargo-fuzz targets and `xtask/src/fuzz.rs` (which includes this
//! file with `#[path]`); the includer provides `super::download` (the xtask module or the fuzz
//! crate's copy of it) and `super::harness`.
//!
//! Contract of extraction: whatever the archive, nothing is written outside the data set's
//! folder, no symbolic or hard link is created, at most `extract_budget(archive size)` bytes
//! land in the folder, and an error names the archive.

#![allow(dead_code)]

use super::download::{extract, extract_budget, Extract, Manifest};
use super::harness::{assert_names, Scratch};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn with_scratch<R>(f: impl FnOnce(&Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.get_or_insert_with(|| Scratch::new("download"));
        f(s)
    })
}

/// A data set manifest (`datasets/<name>.toml`): parse + validate. A manifest that validates
/// only names relative paths without `..` (what extraction and the layout check rely on), and
/// its fingerprint and URLs can be computed.
pub fn check_manifest(data: &[u8]) {
    with_scratch(|s| {
        let p = s.file("datasets/fuzz.toml", data);
        match Manifest::load(&p) {
            Ok(m) => {
                for f in &m.files {
                    assert_relative(&f.path);
                    for u in m.urls_for(f, Some("https://mirror.example/base")) {
                        assert!(u.starts_with("http://") || u.starts_with("https://"), "{u}");
                    }
                }
                for l in &m.layout.paths {
                    assert_relative(l.trim_end_matches('/'));
                }
                let _ = (m.fingerprint(), m.total_size(), m.required_paths());
            }
            Err(e) => assert_names(&e, &p),
        }
    })
}

fn assert_relative(p: &str) {
    let path = Path::new(p);
    assert!(
        !p.is_empty()
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
        "the manifest validated the unsafe path `{p}`"
    );
}

/// Extract `data` as an archive of `kind` into a data set folder that has a sibling folder
/// (with a canary file) and a parent holding the archive; then check the contract.
pub fn check_archive(kind: Extract, data: &[u8]) {
    with_scratch(|s| {
        let root = s.fresh_dir("x");
        let archive = root.join("archive.bin");
        std::fs::write(&archive, data).unwrap();
        let other = root.join("data/other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("canary"), b"canary").unwrap();
        let ds = root.join("data/ds");
        std::fs::create_dir_all(&ds).unwrap();
        let result = extract(&archive, kind, &ds);
        // nothing outside `ds` changed
        assert_eq!(
            std::fs::read(&archive).unwrap(),
            data,
            "the archive changed"
        );
        assert_eq!(std::fs::read(other.join("canary")).unwrap(), b"canary");
        let outside: Vec<PathBuf> = walk(&root)
            .into_iter()
            .filter(|p| !p.starts_with(&ds))
            .filter(|p| {
                ![
                    archive.clone(),
                    root.join("data"),
                    other.clone(),
                    other.join("canary"),
                ]
                .contains(p)
            })
            .collect();
        assert!(
            outside.is_empty(),
            "written outside the data set folder: {outside:?}"
        );
        // no links, and the stated size bound
        let mut bytes = 0u64;
        for p in walk(&ds) {
            let md = p.symlink_metadata().unwrap();
            assert!(
                !md.file_type().is_symlink(),
                "a symbolic link was extracted: {p:?}"
            );
            if md.is_file() {
                use std::os::unix::fs::MetadataExt;
                assert_eq!(md.nlink(), 1, "a hard link was extracted: {p:?}");
                bytes += md.len();
            }
        }
        let budget = extract_budget(data.len() as u64);
        assert!(bytes <= budget, "{bytes} bytes extracted, bound {budget}");
        if let Err(e) = result {
            assert_names(&e, &archive);
        }
    })
}

/// Every path under `dir` (not following links), `dir` excluded.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

pub fn check_tar(data: &[u8]) {
    check_archive(Extract::Tar, data)
}

/// The input is gzip-compressed here first, so that mutations reach the tar reader behind the
/// decompressor; a first byte of `0xff` passes the rest as is (the decompressor itself).
pub fn check_tar_gz(data: &[u8]) {
    if let Some((&0xff, raw)) = data.split_first() {
        return check_archive(Extract::TarGz, raw);
    }
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    check_archive(Extract::TarGz, &gz.finish().unwrap())
}

pub fn check_zip(data: &[u8]) {
    check_archive(Extract::Zip, data)
}
