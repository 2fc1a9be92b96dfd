//! `cargo xtask download` as a user runs it: the built binary against a local 127.0.0.1 server,
//! checking exit codes, messages and where the data lands (flag, `CONTRAST_DATA`).

#[path = "../src/test_server.rs"]
mod test_server;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use test_server::{Behaviour, Server};

fn xtask(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .env_remove("CONTRAST_DATA")
        .env_remove("CONTRAST_MIRROR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the xtask binary")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tar_gz(name: &str, data: &[u8]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).expect("tar");
    b.into_inner().expect("tar").finish().expect("gz")
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

/// A manifest for `cli-demo` (one tar.gz holding `demo/data.bin`) served by `server`.
fn write_manifest(dir: &Path, server: &Server, archive: &[u8], md5: &str) -> String {
    let path = dir.join("cli-demo.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "cli-demo"
title = "CLI demo"
homepage = "http://127.0.0.1/"
license = "test"
citation = "none"

[[files]]
path = "demo.tar.gz"
urls = ["{url}"]
size = {size}
md5 = "{md5}"
extract = "tar.gz"

[layout]
paths = ["demo/data.bin"]
"#,
            url = server.url("demo.tar.gz"),
            size = archive.len(),
        ),
    )
    .expect("write manifest");
    path.to_string_lossy().into_owned()
}

fn demo_server() -> (Server, Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let archive = tar_gz("demo/data.bin", &data);
    let server = Server::start(
        HashMap::from([("demo.tar.gz".to_string(), archive.clone())]),
        Behaviour {
            ranges: true,
            ..Default::default()
        },
    );
    (server, archive, data)
}

#[test]
fn download_then_a_second_run_says_there_is_nothing_to_do() {
    let (server, archive, data) = demo_server();
    let tmp = tempfile::tempdir().unwrap();
    let manifest = write_manifest(tmp.path(), &server, &archive, &md5_hex(&archive));
    let root = tmp.path().join("data");
    let root_s = root.to_string_lossy().into_owned();

    let first = xtask(
        &["download", "--manifest", &manifest, "--dir", &root_s],
        &[],
    );
    let (out, err) = text(&first);
    assert!(first.status.success(), "{out}\n{err}");
    assert!(
        out.contains("fetched 1 file(s)") && out.contains("layout ok"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(root.join("cli-demo/demo/data.bin")).unwrap(),
        data
    );

    let second = xtask(
        &["download", "--manifest", &manifest, "--data-dir", &root_s],
        &[],
    );
    let (out, err) = text(&second);
    assert!(second.status.success(), "{out}\n{err}");
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(server.requests().len(), 1, "the second run made no request");
}

#[test]
fn the_data_root_comes_from_the_flag_else_contrast_data() {
    let (server, archive, data) = demo_server();
    let tmp = tempfile::tempdir().unwrap();
    let manifest = write_manifest(tmp.path(), &server, &archive, &md5_hex(&archive));
    let env_root = tmp.path().join("from-env");
    let flag_root = tmp.path().join("from-flag");

    let o = xtask(
        &["download", "--manifest", &manifest],
        &[("CONTRAST_DATA", &env_root)],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        std::fs::read(env_root.join("cli-demo/demo/data.bin")).unwrap(),
        data
    );

    let o = xtask(
        &[
            "download",
            "--manifest",
            &manifest,
            "--dir",
            &flag_root.to_string_lossy(),
        ],
        &[("CONTRAST_DATA", &env_root)],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(flag_root.join("cli-demo/demo/data.bin").exists());
}

#[test]
fn a_checksum_mismatch_fails_with_both_sums() {
    let (server, archive, _) = demo_server();
    let tmp = tempfile::tempdir().unwrap();
    let wrong = "ffffffffffffffffffffffffffffffff";
    let manifest = write_manifest(tmp.path(), &server, &archive, wrong);
    let root = tmp.path().join("data");
    let o = xtask(
        &[
            "download",
            "--manifest",
            &manifest,
            "--dir",
            &root.to_string_lossy(),
        ],
        &[],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("expected md5 {wrong}")), "{err}");
    assert!(
        err.contains(&format!("got md5 {}", md5_hex(&archive))),
        "{err}"
    );
    assert!(err.contains(&server.url("demo.tar.gz")), "{err}");
}

#[test]
fn list_shows_every_shipped_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let o = xtask(
        &["download", "--list", "--dir", &tmp.path().to_string_lossy()],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for name in [
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
            out.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from:\n{out}"
        );
    }
    assert!(out.contains("absent"), "{out}");
}

#[test]
fn a_manual_data_set_prints_instructions_and_fails_until_its_layout_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_string_lossy().into_owned();
    let o = xtask(&["download", "potsdam", "--dir", &root], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("unzip 4_Ortho_RGBIR.zip"), "{out}");
    assert!(err.contains("must be obtained by hand"), "{err}");

    for p in [
        "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif",
        "4_Ortho_RGBIR/top_potsdam_7_13_RGBIR.tif",
        "5_Labels_all/top_potsdam_2_10_label.tif",
        "5_Labels_all/top_potsdam_7_13_label.tif",
    ] {
        let f = tmp.path().join("potsdam").join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"tile").unwrap();
    }
    let o = xtask(&["download", "potsdam", "--dir", &root], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("layout ok"), "{out}");
}

#[test]
fn contrast_mirror_is_tried_before_the_manifest_urls() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let archive = tar_gz("demo/data.bin", &data);
    // The manifest's own URL (`demo.tar.gz` at the server root) is not served; the mirror is.
    let server = Server::start(
        HashMap::from([("mirror/cli-demo/demo.tar.gz".to_string(), archive.clone())]),
        Behaviour::default(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let manifest = write_manifest(tmp.path(), &server, &archive, &md5_hex(&archive));
    let root = tmp.path().join("data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    let o = cmd
        .args([
            "download",
            "--manifest",
            &manifest,
            "--dir",
            &root.to_string_lossy(),
        ])
        .env_remove("CONTRAST_DATA")
        .env("CONTRAST_MIRROR", format!("{}/mirror", server.base))
        .output()
        .expect("run xtask");
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        std::fs::read(root.join("cli-demo/demo/data.bin")).unwrap(),
        data
    );
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["mirror/cli-demo/demo.tar.gz"]);
}
