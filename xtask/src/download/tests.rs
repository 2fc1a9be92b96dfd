//! Tests of `cargo xtask download` against a tiny HTTP/1.1 server on 127.0.0.1
//! (`crate::test_server`, started by each test) serving archives the tests generate. The server
//! stops when the test drops it, or after a deadline.

use super::*;
use crate::test_server::{percent_decode, Behaviour, Server};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Deterministic, poorly compressible bytes (so that archives are big enough to cut).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("tar append");
    }
    b.into_inner().expect("tar").finish().expect("gz")
}

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip").into_inner()
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn quiet() -> Options {
    Options {
        retries: 3,
        retry_delay: Duration::ZERO,
        keep_archives: false,
        mirror: None,
        progress: false,
        force: false,
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A manifest for one archive served by `server` at `path`.
fn one_file_manifest(
    name: &str,
    server: &Server,
    path: &str,
    checksum: &str,
    size: usize,
    extract: &str,
    layout: &[&str],
) -> Manifest {
    let text = format!(
        r#"
name = "{name}"
title = "test data"
homepage = "http://127.0.0.1/"
license = "test"
citation = "none"

[[files]]
path = "{path}"
urls = ["{url}"]
size = {size}
{checksum}
extract = "{extract}"

[layout]
paths = {layout:?}
"#,
        url = server.url(path),
    );
    Manifest::parse(&text).expect("test manifest")
}

/// A single-file data set (`payload.tar.gz`, 400 KB of noise in `d/blob.bin`) and its server.
fn blob_fixture(behaviour: Behaviour) -> (Server, Manifest, Vec<u8>) {
    let blob = noise(400_000, 7);
    let archive = tar_gz(&[("d/blob.bin", &blob)]);
    let files = HashMap::from([("payload.tar.gz".to_string(), archive.clone())]);
    let server = Server::start(files, behaviour);
    let m = one_file_manifest(
        "blob",
        &server,
        "payload.tar.gz",
        &format!("md5 = \"{}\"", md5_hex(&archive)),
        archive.len(),
        "tar.gz",
        &["d/blob.bin"],
    );
    (server, m, blob)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn tar_gz_zip_and_plain_file_download_verify_extract_then_second_run_is_a_noop() {
    let a = noise(50_000, 1);
    let b = b"hello from the tar".to_vec();
    let c = noise(30_000, 2);
    let list = b"CASE_A\nCASE_B\n".to_vec();
    let tgz = tar_gz(&[("set/a.bin", &a), ("set/sub/b.txt", &b)]);
    let zip = zip_bytes(&[("zipped/c.bin", &c), ("zipped/empty/", b"")]);
    let files = HashMap::from([
        ("dl/set.tar.gz".to_string(), tgz.clone()),
        ("dl/zipped.zip".to_string(), zip.clone()),
        ("raw/Training Set/train.list".to_string(), list.clone()),
    ]);
    let server = Server::start(
        files,
        Behaviour {
            ranges: true,
            ..Default::default()
        },
    );
    let text = format!(
        r#"
name = "mixed"
title = "mixed test set"
homepage = "http://127.0.0.1/"
license = "test"
citation = "none"
base_urls = ["{base}/raw/"]

[[files]]
path = "set.tar.gz"
urls = ["{tgz_url}"]
size = {tgz_len}
md5 = "{tgz_md5}"
extract = "tar.gz"

[[files]]
path = "zipped.zip"
urls = ["{zip_url}"]
sha256 = "{zip_sha}"
extract = "zip"

[[files]]
path = "Training Set/train.list"
sha256 = "{list_sha}"

[layout]
paths = ["set/a.bin", "set/sub/b.txt", "zipped/c.bin", "zipped/empty/"]
"#,
        base = server.base,
        tgz_url = server.url("dl/set.tar.gz"),
        tgz_len = tgz.len(),
        tgz_md5 = md5_hex(&tgz),
        zip_url = server.url("dl/zipped.zip"),
        zip_sha = sha256_hex(&zip),
        list_sha = sha256_hex(&list),
    );
    let m = Manifest::parse(&text).expect("manifest");
    let root = tempdir();
    let out = ensure(&m, root.path(), &quiet()).expect("first run");
    assert_eq!(
        out,
        Outcome::Downloaded {
            fetched: 3,
            bytes: (tgz.len() + zip.len() + list.len()) as u64
        }
    );
    let dir = root.path().join("mixed");
    assert_eq!(fs::read(dir.join("set/a.bin")).unwrap(), a);
    assert_eq!(fs::read(dir.join("set/sub/b.txt")).unwrap(), b);
    assert_eq!(fs::read(dir.join("zipped/c.bin")).unwrap(), c);
    assert!(dir.join("zipped/empty").is_dir());
    assert_eq!(fs::read(dir.join("Training Set/train.list")).unwrap(), list);
    assert_eq!(
        fs::read_to_string(dir.join(VERIFIED_MARKER))
            .unwrap()
            .trim(),
        m.fingerprint()
    );
    // Archives, partial files and per-file markers are gone after success.
    assert!(!dir.join(STAGING_DIR).exists());
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.status == 200 && r.range.is_none()));
    // The plain file came from base_urls with its space percent-encoded.
    assert!(reqs.iter().any(|r| r.path == "raw/Training Set/train.list"));

    // Second run: the marker matches and the layout check passes: no request at all.
    let again = ensure(&m, root.path(), &quiet()).expect("second run");
    assert_eq!(again, Outcome::AlreadyVerified);
    assert_eq!(server.requests().len(), 3);
    assert!(is_verified(&m, &dir));

    // A deleted file is noticed: the layout check fails, so the marker no longer counts, and
    // the next run fetches the archives again (their content cannot be checked in place) but
    // keeps the plain file, whose checksum is verified where it lies.
    fs::remove_file(dir.join("set/a.bin")).unwrap();
    assert!(!is_verified(&m, &dir));
    let repaired = ensure(&m, root.path(), &quiet()).expect("repair run");
    assert_eq!(
        repaired,
        Outcome::Downloaded {
            fetched: 2,
            bytes: (tgz.len() + zip.len()) as u64
        }
    );
    assert_eq!(fs::read(dir.join("set/a.bin")).unwrap(), a);
    assert_eq!(server.requests().len(), 5);
}

#[test]
fn plain_files_already_in_place_are_verified_not_fetched_again() {
    let one = noise(3_000, 21);
    let two = noise(4_000, 22);
    let server = Server::start(
        HashMap::from([
            ("case 1/img.h5".to_string(), one.clone()),
            ("case 2/img.h5".to_string(), two.clone()),
        ]),
        Behaviour::default(),
    );
    let text = format!(
        r#"
name = "cases"
title = "t"
homepage = "http://127.0.0.1/"
license = "l"
citation = "c"
base_urls = ["{base}/"]

[[files]]
path = "case 1/img.h5"
size = {n1}
sha256 = "{s1}"

[[files]]
path = "case 2/img.h5"
size = {n2}
sha256 = "{s2}"

[layout]
paths = ["case 1/", "case 2/"]
"#,
        base = server.base,
        n1 = one.len(),
        s1 = sha256_hex(&one),
        n2 = two.len(),
        s2 = sha256_hex(&two),
    );
    let m = Manifest::parse(&text).unwrap();
    let root = tempdir();
    ensure(&m, root.path(), &quiet()).expect("first run");
    assert_eq!(server.requests().len(), 2);
    let dir = root.path().join("cases");
    // --force re-checks everything: the plain files are re-hashed where they lie, not fetched.
    let forced = Options {
        force: true,
        ..quiet()
    };
    assert_eq!(
        ensure(&m, root.path(), &forced).unwrap(),
        Outcome::Downloaded {
            fetched: 0,
            bytes: 0
        }
    );
    assert_eq!(server.requests().len(), 2);
    // One case removed, the other corrupted: both are fetched again, nothing else.
    fs::remove_file(dir.join("case 1/img.h5")).unwrap();
    let out = ensure(&m, root.path(), &quiet()).expect("second run");
    assert_eq!(
        out,
        Outcome::Downloaded {
            fetched: 1,
            bytes: one.len() as u64
        }
    );
    let mut bad = two.clone();
    bad[100] ^= 1;
    fs::write(dir.join("case 2/img.h5"), &bad).unwrap();
    fs::remove_file(dir.join(VERIFIED_MARKER)).unwrap();
    let out = ensure(&m, root.path(), &quiet()).expect("third run");
    assert_eq!(
        out,
        Outcome::Downloaded {
            fetched: 1,
            bytes: two.len() as u64
        }
    );
    assert_eq!(fs::read(dir.join("case 2/img.h5")).unwrap(), two);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "case 1/img.h5",
            "case 2/img.h5",
            "case 1/img.h5",
            "case 2/img.h5"
        ]
    );
}

#[test]
fn wrong_checksum_names_file_url_and_both_sums_and_leaves_no_partial_file() {
    let archive = tar_gz(&[("x/y.bin", &noise(20_000, 3))]);
    let actual = md5_hex(&archive);
    let wrong = "0123456789abcdef0123456789abcdef";
    let server = Server::start(
        HashMap::from([("bad.tar.gz".to_string(), archive.clone())]),
        Behaviour {
            ranges: true,
            ..Default::default()
        },
    );
    let m = one_file_manifest(
        "bad",
        &server,
        "bad.tar.gz",
        &format!("md5 = \"{wrong}\""),
        archive.len(),
        "tar.gz",
        &["x/y.bin"],
    );
    let root = tempdir();
    let err = format!("{:#}", ensure(&m, root.path(), &quiet()).unwrap_err());
    assert!(err.contains("bad.tar.gz"), "{err}");
    assert!(err.contains(&server.url("bad.tar.gz")), "{err}");
    assert!(err.contains(&format!("expected md5 {wrong}")), "{err}");
    assert!(err.contains(&format!("got md5 {actual}")), "{err}");
    let dir = root.path().join("bad");
    let staging = dir.join(STAGING_DIR);
    let names: Vec<String> = fs::read_dir(&staging)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "staging should be empty: {names:?}");
    assert!(!dir.join("x").exists(), "nothing may be extracted");
    assert!(!dir.join(VERIFIED_MARKER).exists());
}

#[test]
fn a_transfer_cut_mid_way_resumes_with_a_range_request() {
    let (server, m, blob) = blob_fixture(Behaviour {
        ranges: true,
        cut_first: true,
        ..Default::default()
    });
    let root = tempdir();
    let out = ensure(&m, root.path(), &quiet()).expect("resumed download");
    let total = m.files[0].size.unwrap();
    assert_eq!(
        out,
        Outcome::Downloaded {
            fetched: 1,
            bytes: total
        },
        "every byte is transferred exactly once"
    );
    assert_eq!(fs::read(root.path().join("blob/d/blob.bin")).unwrap(), blob);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let cut_at = reqs[0].sent;
    assert!(cut_at > 0 && (cut_at as u64) < total);
    assert_eq!(reqs[0].range, None);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={cut_at}-").as_str())
    );
    assert_eq!(reqs[1].status, 206);
    assert_eq!((reqs[0].sent + reqs[1].sent) as u64, total);
}

#[test]
fn a_server_without_range_support_restarts_from_zero() {
    let (server, m, blob) = blob_fixture(Behaviour {
        ranges: false,
        cut_first: true,
        ..Default::default()
    });
    let root = tempdir();
    ensure(&m, root.path(), &quiet()).expect("restarted download");
    assert_eq!(fs::read(root.path().join("blob/d/blob.bin")).unwrap(), blob);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let total = m.files[0].size.unwrap() as usize;
    assert!(reqs[0].sent < total);
    assert!(reqs[1].range.is_some(), "the second request asks to resume");
    assert_eq!(reqs[1].status, 200, "the server ignores Range");
    assert_eq!(reqs[1].sent, total, "the whole file came again");
}

#[test]
fn retries_are_bounded_and_a_later_run_resumes_the_kept_partial_file() {
    let (server, m, blob) = blob_fixture(Behaviour {
        ranges: true,
        cut_always: true,
        ..Default::default()
    });
    let root = tempdir();
    let opts = Options {
        retries: 2,
        ..quiet()
    };
    let err = format!("{:#}", ensure(&m, root.path(), &opts).unwrap_err());
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    assert_eq!(server.requests().len(), 3, "1 try + 2 retries");
    let part = root
        .path()
        .join("blob")
        .join(STAGING_DIR)
        .join("payload.tar.gz.part");
    let kept = fs::metadata(&part).expect("partial file kept").len();
    assert!(kept > 0);
    drop(server);

    // A new run against a healthy server continues from the kept bytes.
    let archive_len = m.files[0].size.unwrap();
    let good = Server::start(
        HashMap::from([(
            "payload.tar.gz".to_string(),
            tar_gz(&[("d/blob.bin", &blob)]),
        )]),
        Behaviour {
            ranges: true,
            ..Default::default()
        },
    );
    let m2 = one_file_manifest(
        "blob",
        &good,
        "payload.tar.gz",
        &format!("md5 = \"{}\"", md5_hex(&tar_gz(&[("d/blob.bin", &blob)]))),
        archive_len as usize,
        "tar.gz",
        &["d/blob.bin"],
    );
    let out = ensure(&m2, root.path(), &opts).expect("resumed in a new run");
    assert_eq!(
        out,
        Outcome::Downloaded {
            fetched: 1,
            bytes: archive_len - kept
        }
    );
    let reqs = good.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    assert_eq!(fs::read(root.path().join("blob/d/blob.bin")).unwrap(), blob);
}

#[test]
fn mirror_is_tried_first_and_a_missing_url_falls_back_to_the_next() {
    let data = noise(10_000, 9);
    let server = Server::start(
        HashMap::from([
            ("mirror/one/f.bin".to_string(), data.clone()),
            ("second/f.bin".to_string(), data.clone()),
        ]),
        Behaviour::default(),
    );
    let text = format!(
        r#"
name = "one"
title = "t"
homepage = "http://127.0.0.1/"
license = "l"
citation = "c"

[[files]]
path = "f.bin"
urls = ["{first}", "{second}"]
sha256 = "{sha}"

[layout]
paths = ["f.bin"]
"#,
        first = server.url("missing/f.bin"),
        second = server.url("second/f.bin"),
        sha = sha256_hex(&data),
    );
    let m = Manifest::parse(&text).unwrap();

    // Without a mirror: the first URL answers 404, the second one serves the file.
    let root = tempdir();
    ensure(&m, root.path(), &quiet()).expect("fallback");
    let paths: Vec<(String, u16)> = server
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("missing/f.bin".to_string(), 404),
            ("second/f.bin".to_string(), 200)
        ]
    );
    assert_eq!(fs::read(root.path().join("one/f.bin")).unwrap(), data);

    // With a mirror: only the mirror is asked.
    let root2 = tempdir();
    let opts = Options {
        mirror: Some(format!("{}/mirror/", server.base)),
        ..quiet()
    };
    ensure(&m, root2.path(), &opts).expect("mirror");
    let last = server.requests().last().cloned().unwrap();
    assert_eq!(server.requests().len(), 3);
    assert_eq!((last.path.as_str(), last.status), ("mirror/one/f.bin", 200));
}

#[test]
fn unknown_checksum_downloads_with_a_warning_and_no_verification() {
    let data = noise(5_000, 11);
    let server = Server::start(
        HashMap::from([("u.bin".to_string(), data.clone())]),
        Behaviour::default(),
    );
    let m = one_file_manifest(
        "unk",
        &server,
        "u.bin",
        "sha256 = \"unknown\"",
        data.len(),
        "none",
        &["u.bin"],
    );
    assert_eq!(m.files[0].checksum(), Checksum::Unknown);
    let root = tempdir();
    let out = ensure(&m, root.path(), &quiet()).expect("unverified download");
    assert_eq!(
        out,
        Outcome::Downloaded {
            fetched: 1,
            bytes: data.len() as u64
        }
    );
    assert_eq!(fs::read(root.path().join("unk/u.bin")).unwrap(), data);
}

#[test]
fn a_failed_layout_check_is_an_error_naming_the_missing_paths() {
    let archive = tar_gz(&[("present.txt", b"x")]);
    let server = Server::start(
        HashMap::from([("a.tar.gz".to_string(), archive.clone())]),
        Behaviour::default(),
    );
    let m = one_file_manifest(
        "lay",
        &server,
        "a.tar.gz",
        &format!("md5 = \"{}\"", md5_hex(&archive)),
        archive.len(),
        "tar.gz",
        &["present.txt", "absent/"],
    );
    let root = tempdir();
    let err = format!("{:#}", ensure(&m, root.path(), &quiet()).unwrap_err());
    assert!(err.contains("layout check failed"), "{err}");
    assert!(err.contains("`absent/`"), "{err}");
    assert!(!err.contains("`present.txt`"), "{err}");
    assert!(!root.path().join("lay").join(VERIFIED_MARKER).exists());
    // No marker claims the archive is done: a second run fetches it again.
    let again = format!("{:#}", ensure(&m, root.path(), &quiet()).unwrap_err());
    assert!(again.contains("layout check failed"), "{again}");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn archive_entries_escaping_the_data_folder_are_refused() {
    // A tar whose entry name is `../evil.txt` (written into the header by hand: the builder
    // itself refuses such names).
    let mut h = tar::Header::new_old();
    let name = b"../evil.txt";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    let mut raw = Vec::new();
    raw.extend_from_slice(h.as_bytes());
    raw.extend_from_slice(b"evil");
    raw.resize(512 * 2, 0);
    raw.resize(raw.len() + 1024, 0);
    let root = tempdir();
    let inner = root.path().join("inner");
    fs::create_dir_all(&inner).unwrap();
    let tar_path = root.path().join("evil.tar");
    fs::write(&tar_path, &raw).unwrap();
    let err = format!(
        "{:#}",
        extract(&tar_path, Extract::Tar, &inner).unwrap_err()
    );
    assert!(err.contains("../evil.txt"), "{err}");
    assert!(!root.path().join("evil.txt").exists());

    let zip_path = root.path().join("evil.zip");
    fs::write(&zip_path, zip_bytes(&[("../evil2.txt", b"evil")])).unwrap();
    let err = format!(
        "{:#}",
        extract(&zip_path, Extract::Zip, &inner).unwrap_err()
    );
    assert!(err.contains("evil2.txt"), "{err}");
    assert!(!root.path().join("evil2.txt").exists());
}

#[test]
fn manual_data_sets_check_the_layout_only() {
    let m = Manifest::parse(
        r#"
name = "by-hand"
title = "A registered data set"
homepage = "https://example.org/"
license = "research only"
citation = "someone"
manual = true
instructions = "Register, download, unpack."

[layout]
paths = ["train/", "val/"]
"#,
    )
    .unwrap();
    let root = tempdir();
    let err = format!("{:#}", ensure(&m, root.path(), &quiet()).unwrap_err());
    assert!(err.contains("must be obtained by hand"), "{err}");
    assert!(err.contains("`train/`") && err.contains("`val/`"), "{err}");
    fs::create_dir_all(root.path().join("by-hand/train")).unwrap();
    fs::create_dir_all(root.path().join("by-hand/val")).unwrap();
    assert_eq!(
        ensure(&m, root.path(), &quiet()).unwrap(),
        Outcome::ManualPresent
    );
}

#[test]
fn manifest_validation_rejects_bad_fields() {
    let base = |file: &str| {
        format!(
            "name = \"x\"\ntitle = \"t\"\nhomepage = \"h\"\nlicense = \"l\"\ncitation = \"c\"\n{file}\n[layout]\npaths = [\"a\"]\n"
        )
    };
    let cases = [
        ("[[files]]\npath = \"../a\"\nurls = [\"http://127.0.0.1/a\"]\nmd5 = \"unknown\"", "relative path"),
        ("[[files]]\npath = \"/a\"\nurls = [\"http://127.0.0.1/a\"]\nmd5 = \"unknown\"", "relative path"),
        ("[[files]]\npath = \"a\"\nurls = [\"http://127.0.0.1/a\"]", "no checksum"),
        ("[[files]]\npath = \"a\"\nurls = [\"http://127.0.0.1/a\"]\nmd5 = \"abc\"", "32 hex digits"),
        ("[[files]]\npath = \"a\"\nurls = [\"http://127.0.0.1/a\"]\nmd5 = \"unknown\"\nsha256 = \"unknown\"", "both md5 and sha256"),
        ("[[files]]\npath = \"a\"\nurls = [\"ftp://127.0.0.1/a\"]\nmd5 = \"unknown\"", "not an http(s) URL"),
        ("[[files]]\npath = \"a\"\nmd5 = \"unknown\"", "no `urls`"),
        ("[[files]]\npath = \"a\"\nurls = [\"http://127.0.0.1/a\"]\nmd5 = \"unknown\"\nextract = \"rar\"", "not a valid data set manifest"),
        ("", "no `files`"),
    ];
    for (file, want) in cases {
        let err = format!("{:#}", Manifest::parse(&base(file)).unwrap_err());
        assert!(err.contains(want), "{file:?}: {err}");
    }
}

#[test]
fn paths_are_percent_encoded_for_urls() {
    assert_eq!(
        encode_path("2018LA_Seg_Training Set/0RZ/mri_norm2.h5"),
        "2018LA_Seg_Training%20Set/0RZ/mri_norm2.h5"
    );
    assert_eq!(encode_path("a+b&c"), "a%2Bb%26c");
    assert_eq!(percent_decode("a%20b%2Bc"), "a b+c");
}

#[test]
fn data_root_prefers_the_flag() {
    assert_eq!(
        data_root(Some(Path::new("/some/where"))),
        PathBuf::from("/some/where")
    );
}

#[test]
fn ensure_named_checks_a_manual_set_in_the_given_root() {
    let root = tempdir();
    let err = format!(
        "{:#}",
        ensure_named("imagenet", Some(root.path()), &quiet()).unwrap_err()
    );
    assert!(err.contains("must be obtained by hand"), "{err}");
    for p in [
        "train/n01440764",
        "train/n15075141",
        "val/n01440764",
        "val/n15075141",
    ] {
        fs::create_dir_all(root.path().join("imagenet").join(p)).unwrap();
    }
    assert_eq!(
        ensure_named("imagenet", Some(root.path()), &quiet()).unwrap(),
        root.path().join("imagenet")
    );
    let err = format!(
        "{:#}",
        ensure_named("no-such-set", None, &quiet()).unwrap_err()
    );
    assert!(
        err.contains("known data sets: ") && err.contains("cifar10") && err.contains("la-heart"),
        "{err}"
    );
}

/// The shipped manifests in `datasets/`: all parse, names match file names, every data set the
/// project needs is there, and the downloadable ones carry real checksums.
#[test]
fn every_shipped_manifest_parses_and_has_the_required_fields() {
    let dir = manifest_dir();
    let paths = manifest_paths(&dir).expect("datasets/ lists");
    let mut names = Vec::new();
    for p in &paths {
        let m = Manifest::load(p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        let stem = p.file_stem().unwrap().to_string_lossy();
        assert_eq!(
            m.name,
            stem,
            "{}: name must equal the file name",
            p.display()
        );
        assert!(m.homepage.starts_with("http"), "{}: homepage", m.name);
        for f in &m.files {
            assert!(
                f.checksum() != Checksum::Unknown,
                "{}: `{}` has no known checksum",
                m.name,
                f.path
            );
            for u in m.urls_for(f, None) {
                assert!(u.starts_with("https://") || u.starts_with("http://"), "{u}");
            }
        }
        names.push(m.name.clone());
    }
    for want in [
        "cifar10",
        "cifar100",
        "stl10",
        "tiny-imagenet",
        "imagenet",
        "la-heart",
        "msd-heart",
        "loveda",
        "potsdam",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing manifest {want}.toml"
        );
    }
    let la = Manifest::load(&dir.join("la-heart.toml")).unwrap();
    let h5 = la
        .files
        .iter()
        .filter(|f| f.path.ends_with("/mri_norm2.h5"))
        .count();
    assert_eq!(h5, 100, "the LA set has 100 cases");
    assert!(la.files.iter().any(|f| f.path == "train.list"));
    assert!(la.files.iter().any(|f| f.path == "test.list"));
    assert!(la
        .files
        .iter()
        .all(|f| f.size.is_some() && matches!(f.checksum(), Checksum::Sha256(_))));
    for manual in ["imagenet", "potsdam"] {
        let m = Manifest::load(&dir.join(format!("{manual}.toml"))).unwrap();
        assert!(m.manual && m.files.is_empty(), "{manual} is manual");
    }
}

/// The LA manifest agrees with the 16 cases in the shared development data (sha256 sums there),
/// when that folder is present.
#[test]
fn la_manifest_matches_the_shared_development_copy() {
    let Some(sums) = crate::data::shared_data().map(|d| d.join("la-heart/SHA256SUMS")) else {
        println!("la_manifest_matches_the_shared_development_copy: skipped (no development data)");
        return;
    };
    let Ok(text) = fs::read_to_string(&sums) else {
        println!(
            "la_manifest_matches_the_shared_development_copy: skipped ({} not present)",
            sums.display()
        );
        return;
    };
    let la = Manifest::load(&manifest_dir().join("la-heart.toml")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let Some((sum, path)) = line.split_once("  ") else {
            continue;
        };
        let path = path.trim_start_matches("./");
        if !path.ends_with(".h5") {
            continue; // the shared lists are 12/4-id subsets, not the full lists
        }
        let f = la
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not in la-heart.toml"));
        assert_eq!(f.checksum(), Checksum::Sha256(sum.to_string()), "{path}");
        checked += 1;
    }
    assert_eq!(checked, 16);
}

#[test]
fn a_wrong_size_in_the_manifest_defers_to_the_checksum() {
    let data = noise(8_000, 31);
    let server = Server::start(
        HashMap::from([("s.bin".to_string(), data.clone())]),
        Behaviour::default(),
    );
    // Right checksum, wrong size: accepted (with a warning), the checksum is authoritative.
    let m = one_file_manifest(
        "sized",
        &server,
        "s.bin",
        &format!("sha256 = \"{}\"", sha256_hex(&data)),
        data.len() + 1,
        "none",
        &["s.bin"],
    );
    let root = tempdir();
    ensure(&m, root.path(), &quiet()).expect("checksum decides");
    assert_eq!(fs::read(root.path().join("sized/s.bin")).unwrap(), data);

    // No checksum and a wrong size: the size is the only check, so it fails.
    let m = one_file_manifest(
        "unsized",
        &server,
        "s.bin",
        "sha256 = \"unknown\"",
        data.len() + 1,
        "none",
        &["s.bin"],
    );
    let err = format!("{:#}", ensure(&m, root.path(), &quiet()).unwrap_err());
    assert!(
        err.contains(&format!(
            "has {} bytes, the manifest says {}",
            data.len(),
            data.len() + 1
        )),
        "{err}"
    );
    assert!(!root.path().join("unsized/s.bin").exists());
    assert!(!root
        .path()
        .join("unsized")
        .join(STAGING_DIR)
        .join("s.bin.part")
        .exists());
}

#[test]
fn a_running_download_of_the_same_set_is_locked_out_and_a_stale_lock_taken_over() {
    let (server, m, blob) = blob_fixture(Behaviour::default());
    let root = tempdir();
    let staging = root.path().join("blob").join(STAGING_DIR);
    fs::create_dir_all(&staging).unwrap();
    // Held by a live process (this test's own): refused, nothing fetched.
    fs::write(staging.join("lock"), std::process::id().to_string()).unwrap();
    let err = format!("{:#}", ensure(&m, root.path(), &quiet()).unwrap_err());
    assert!(err.contains("another download of blob is running"), "{err}");
    assert!(server.requests().is_empty());
    // Left by a process that no longer exists (pid beyond the kernel's pid_max): taken over.
    fs::write(staging.join("lock"), "4294967295").unwrap();
    ensure(&m, root.path(), &quiet()).expect("stale lock taken over");
    assert_eq!(fs::read(root.path().join("blob/d/blob.bin")).unwrap(), blob);
    assert!(!staging.exists(), "lock released and staging removed");
}

#[test]
fn judge_lets_the_checksum_decide_and_the_size_only_without_one() {
    let entry = |size: Option<u64>, sum: &str| FileEntry {
        path: "f.bin".into(),
        urls: vec![],
        size,
        md5: None,
        sha256: Some(sum.into()),
        extract: Extract::None,
    };
    let good = "ab".repeat(32);
    let bad = "cd".repeat(32);
    let u = "http://127.0.0.1/f.bin";
    assert_eq!(judge(&entry(Some(10), &good), u, 10, &good), Ok(vec![]));
    let w = judge(&entry(Some(11), &good), u, 10, &good).unwrap();
    assert!(
        w.len() == 1 && w[0].contains("the manifest says 11"),
        "{w:?}"
    );
    let e = judge(&entry(Some(10), &good), u, 10, &bad).unwrap_err();
    assert!(
        e.contains(&format!("expected sha256 {good}, got sha256 {bad}")) && e.contains(u),
        "{e}"
    );
    let w = judge(&entry(None, "unknown"), u, 10, &bad).unwrap();
    assert!(
        w[0].contains("NOT verified") && w[0].contains(&bad),
        "{w:?}"
    );
    let e = judge(&entry(Some(11), "unknown"), u, 10, &bad).unwrap_err();
    assert!(e.contains("has 10 bytes, the manifest says 11"), "{e}");
}
