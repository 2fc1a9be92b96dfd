//! Seeded mutation fuzzing of `cargo xtask download`'s parsers: data set manifests and archive
//! extraction (tar, tar.gz, zip: paths escaping the folder, links, absurd sizes). xtask is a
//! binary, so its `download/manifest.rs` and `download/extract.rs` are compiled here from their
//! sources (through `fuzz/src/download_shim.rs`, as in the cargo-fuzz crate). The checks are
//! `fuzz/src/download.rs`; the runner is `fuzz/src/runner.rs` (replay of the seeds and
//! regression inputs, then 300 mutated inputs; see `budget` in `fuzz/src/harness.rs`).

#[path = "../../fuzz/src/download_shim.rs"]
#[allow(dead_code)]
mod download;
#[path = "../../fuzz/src/download.rs"]
mod download_checks;
#[path = "../../fuzz/src/harness.rs"]
mod harness;
#[path = "../../fuzz/src/runner.rs"]
mod runner;

#[global_allocator]
static A: runner::Counting = runner::Counting;

const MIB: usize = 1 << 20;

fn run(target: &str, check: fn(&[u8]), seed: u64, max_len: usize, heap_bound: usize) {
    runner::run(
        env!("CARGO_MANIFEST_DIR"),
        target,
        check,
        seed,
        max_len,
        heap_bound,
    );
}

#[test]
fn fuzz_manifest() {
    run(
        "manifest",
        download_checks::check_manifest,
        11,
        16 << 10,
        16 * MIB,
    );
}

#[test]
fn fuzz_tar() {
    run("tar", download_checks::check_tar, 12, 64 << 10, 16 * MIB);
}

#[test]
fn fuzz_tar_gz() {
    run(
        "tar_gz",
        download_checks::check_tar_gz,
        13,
        64 << 10,
        16 * MIB,
    );
}

#[test]
fn fuzz_zip() {
    run("zip", download_checks::check_zip, 14, 64 << 10, 16 * MIB);
}

// ---- regression tests: one per bug the fuzzing found (the inputs are also replayed above)

use download::{extract, extract_budget, Extract};
use std::path::Path;

fn regression(name: &str) -> std::path::PathBuf {
    runner::repo(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/tar")
        .join(name)
}

/// A tar entry `link -> /etc` (or `up -> ../other`) was extracted as a symbolic link pointing
/// outside the data set (the tar crate refuses only what is written *through* a link): every
/// loader reading the data set would then follow it. Links are refused now, naming the archive.
#[test]
fn regression_tar_links_are_refused() {
    for name in ["symlink-to-etc.tar", "symlink-to-sibling.tar"] {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("ds");
        std::fs::create_dir_all(&ds).unwrap();
        let archive = regression(name);
        let e = extract(&archive, Extract::Tar, &ds).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("symbolic link") && msg.contains(name), "{msg}");
        assert_eq!(
            std::fs::read_dir(&ds).unwrap().count(),
            0,
            "{name}: something was extracted"
        );
    }
}

/// Hard links and zip symbolic links are refused the same way.
#[test]
fn hard_links_and_zip_symlinks_are_refused() {
    let seeds = runner::repo(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    let msg = format!(
        "{:#}",
        extract(&seeds.join("tar/hardlink-out.tar"), Extract::Tar, &ds).unwrap_err()
    );
    assert!(
        msg.contains("hard link") && msg.contains("hardlink-out.tar"),
        "{msg}"
    );
    let msg = format!(
        "{:#}",
        extract(&seeds.join("zip/symlink.zip"), Extract::Zip, &ds).unwrap_err()
    );
    assert!(
        msg.contains("symbolic link") && msg.contains("symlink.zip"),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(&ds).unwrap().count(), 0);
}

/// A decompression bomb (a zip entry of 200 MiB of zeros, 200 KiB compressed; gzip likewise) was
/// extracted whole: extraction had no bound. It stops at `extract_budget` now.
#[test]
fn decompression_bombs_stop_at_the_budget() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 1 << 20];
    // zip
    let zip_path = dir.path().join("bomb.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        z.start_file("zeros.bin", opts).unwrap();
        for _ in 0..200 {
            z.write_all(&zeros).unwrap();
        }
        z.finish().unwrap();
    }
    // tar.gz
    let gz_path = dir.path().join("bomb.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz_path).unwrap(),
            flate2::Compression::best(),
        );
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(200 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "zeros.bin", std::io::repeat(0).take(200 << 20))
            .unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    for (archive, kind) in [(&zip_path, Extract::Zip), (&gz_path, Extract::TarGz)] {
        let size = std::fs::metadata(archive).unwrap().len();
        assert!(size < 1 << 20, "{}: {size} bytes", archive.display());
        let ds = dir.path().join("ds");
        let _ = std::fs::remove_dir_all(&ds);
        std::fs::create_dir_all(&ds).unwrap();
        let msg = format!("{:#}", extract(archive, kind, &ds).unwrap_err());
        assert!(
            msg.contains("decompression bomb") && msg.contains("bomb."),
            "{msg}"
        );
        let written: u64 = walk_bytes(&ds);
        assert!(written <= extract_budget(size), "{written} bytes written");
    }
}

fn walk_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                walk_bytes(&e.path())
            } else {
                md.len()
            }
        })
        .sum()
}

/// Errors of `extract` name the archive themselves (they relied on the caller before).
#[test]
fn extraction_errors_name_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a.zip");
    std::fs::write(&bad, b"PK\x05\x06 no").unwrap();
    let ds = dir.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    for kind in [Extract::Zip, Extract::Tar, Extract::TarGz] {
        let msg = format!("{:#}", extract(&bad, kind, &ds).unwrap_err());
        assert!(msg.contains("not-a.zip"), "{msg}");
    }
}
