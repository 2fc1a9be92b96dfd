//! The streaming image folder: same batches as the in-memory path (bit for bit), the file-list
//! cache and its invalidation, and the size-based choice between the two paths.

use contrast_core::data::folder::load_image_folder;
use contrast_core::data::stream::{
    estimate_decoded_bytes, open_image_folder, scan_cached, ListSource, StreamMode, StreamPolicy,
    StreamingFolder,
};
use contrast_core::data::{Dataset, Loader, LoaderConfig, Recipe};
use std::path::Path;
use std::sync::Arc;

/// `<dir>/train/<class>/*.jpg`: 3 classes, JPEGs of different sizes with smooth content (as
/// photographs) encoded by the `image` crate at quality 90.
fn jpeg_folder(dir: &Path, per_class: usize) -> std::path::PathBuf {
    let root = dir.join("train");
    for (c, name) in ["cat", "dog", "eel"].iter().enumerate() {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..per_class {
            let (w, h) = (40 + 7 * k as u32 + 3 * c as u32, 30 + 5 * k as u32);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = |a: u32| ((a * 255) / (w + h)) as u8;
                image::Rgb([
                    v(x + y),
                    v(x * 2 % (w + h) + c as u32),
                    v((w - x) + k as u32),
                ])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                .encode_image(&img)
                .unwrap();
            std::fs::write(d.join(format!("img{k:02}.jpg")), bytes).unwrap();
        }
    }
    root
}

fn assert_same_batches(a: &Loader, b: &Loader, epochs: u64) {
    for e in 0..epochs {
        let (mut na, mut nb) = (0, 0);
        for (x, y) in a.epoch(e).zip(b.epoch(e)) {
            let (x, y) = (x.unwrap(), y.unwrap());
            assert_eq!(x.views.len(), y.views.len());
            for (u, v) in x.views.iter().zip(&y.views) {
                assert_eq!(u.size(), v.size());
                // bit-identical, not merely close
                assert!(
                    u.equal(v),
                    "epoch {e}: a view differs between the two paths"
                );
            }
            assert!(x.labels.equal(&y.labels) && x.indices.equal(&y.indices));
            na += 1;
            nb += 1;
        }
        assert_eq!((na, nb), (a.batches_per_epoch(), b.batches_per_epoch()));
        assert!(na > 0);
    }
}

#[test]
fn streaming_batches_are_bit_identical_to_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = jpeg_folder(dir.path(), 5);
    let mem = Arc::new(load_image_folder(&root).unwrap());
    let st = Arc::new(StreamingFolder::open(&root).unwrap());
    assert_eq!(mem.len(), 15);
    assert_eq!(st.len(), 15);
    assert_eq!(mem.classes(), st.classes());
    for i in 0..15 {
        let (x, lx) = mem.get(i).unwrap();
        let (y, ly) = st.get(i).unwrap();
        assert_eq!(st.label(i).unwrap(), ly);
        assert_eq!((lx, x.height, x.width), (ly, y.height, y.width));
        assert_eq!(x.pixels, y.pixels, "sample {i}");
    }
    // a class-balanced subset picks the same samples on both paths (labels read without decoding)
    use contrast_core::data::subset::Subset;
    let sm = Subset::balanced(mem.clone(), 6, 5).unwrap();
    let ss = Subset::balanced(st.clone(), 6, 5).unwrap();
    for i in 0..6 {
        assert_eq!(sm.get(i).unwrap().0.pixels, ss.get(i).unwrap().0.pixels);
        assert_eq!(sm.label(i).unwrap(), ss.label(i).unwrap());
        assert_eq!(ss.label(i).unwrap(), ss.get(i).unwrap().1);
    }
    // two-view BYOL with random resized crops, shuffled, two epochs, two threads
    let cfg = LoaderConfig {
        batch_size: 4,
        seed: 11,
        threads: 2,
        prefetch: 2,
        ..LoaderConfig::default()
    };
    let a = Loader::new(mem, Recipe::byol(32, 0.08).unwrap(), cfg.clone()).unwrap();
    let b = Loader::new(st, Recipe::byol(32, 0.08).unwrap(), cfg).unwrap();
    assert_same_batches(&a, &b, 2);
}

#[test]
fn streaming_matches_in_memory_on_cifar_jpegs() {
    let Some(tar) = contrast_core::data::dev_data_root()
        .map(|r| r.join("cifar10-jpeg/CIFAR-10-images.tar"))
        .filter(|t| t.exists())
    else {
        eprintln!("skipped: the CIFAR-10 JPEG archive (dev data) is not present");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // the first 40 images of three test classes
    let mut files = Vec::new();
    for c in ["airplane", "bird", "truck"] {
        for k in 0..40 {
            files.push(format!("test/{c}/{k:04}.jpg"));
        }
    }
    let ok = std::process::Command::new("tar")
        .arg("xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .args(&files)
        .status()
        .is_ok_and(|s| s.success());
    let root = dir.path().join("test");
    if !ok {
        eprintln!(
            "skipped: could not extract CIFAR JPEGs from {}",
            tar.display()
        );
        return;
    }
    let mem = Arc::new(load_image_folder(&root).unwrap());
    let st = Arc::new(StreamingFolder::open(&root).unwrap());
    assert_eq!((mem.len(), st.len()), (120, 120));
    let cfg = LoaderConfig {
        batch_size: 32,
        seed: 3,
        threads: 2,
        ..LoaderConfig::default()
    };
    let a = Loader::new(mem, Recipe::byol(32, 0.08).unwrap(), cfg.clone()).unwrap();
    let b = Loader::new(st, Recipe::byol(32, 0.08).unwrap(), cfg).unwrap();
    assert_same_batches(&a, &b, 1);
}

#[test]
fn file_list_is_cached_and_refreshed_when_the_folder_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = jpeg_folder(dir.path(), 3);
    let (l1, s1) = scan_cached(&root).unwrap();
    assert_eq!(s1, ListSource::Scan);
    // next to the data, outside the folder itself
    assert!(dir.path().join(".train.contrast-files.json").exists());
    let (l2, s2) = scan_cached(&root).unwrap();
    assert_eq!(s2, ListSource::Cache);
    assert_eq!(l1.samples(), l2.samples());
    assert_eq!(l1.classes(), l2.classes());
    // a new file changes its class folder's mtime: rescanned, and the new file is listed
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(root.join("dog/img00.jpg"), root.join("dog/img00b.jpg")).unwrap();
    let (l3, s3) = scan_cached(&root).unwrap();
    assert_eq!(s3, ListSource::Scan);
    assert_eq!(l3.len(), 10);
    assert_eq!(l3.path(4), root.join("dog/img00b.jpg"));
    assert_eq!(l3.label(4), 1);
    assert_eq!(scan_cached(&root).unwrap().1, ListSource::Cache);
}

#[test]
fn unwritable_place_next_to_the_data_caches_in_the_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = jpeg_folder(dir.path(), 2);
    let cache = tempfile::tempdir().unwrap();
    // a directory where the cache file would go: not writable even as root (a read-only
    // parent would not stop root)
    std::fs::create_dir(dir.path().join(".train.contrast-files.json")).unwrap();
    std::env::set_var("CONTRAST_CACHE_DIR", cache.path());
    let (l, s) = scan_cached(&root).unwrap();
    assert_eq!((s, l.len()), (ListSource::Scan, 6));
    let n = std::fs::read_dir(cache.path().join("filelists"))
        .unwrap()
        .count();
    assert_eq!(n, 1, "one list in the cache dir");
    let (l2, s2) = scan_cached(&root).unwrap();
    assert_eq!(s2, ListSource::Cache);
    assert_eq!(l.samples(), l2.samples());
}

#[test]
fn small_folders_opened_for_training_leave_no_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = jpeg_folder(dir.path(), 4);
    let d = open_image_folder(&root, &StreamPolicy::new(StreamMode::Always, 0, false)).unwrap();
    assert!(d.is_streaming());
    assert!(
        !dir.path().join(".train.contrast-files.json").exists(),
        "fewer than CACHE_MIN_FILES files: listed again each run, no file beside the data"
    );
}

#[test]
fn the_size_threshold_and_overrides_choose_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = jpeg_folder(dir.path(), 4);
    let (list, _) = scan_cached(&root).unwrap();
    // exact decoded size: Σ w·h·3 over the 12 files (every file is probed: 12 < SIZE_PROBES)
    let exact: u64 = (0..list.len())
        .map(|i| {
            let (w, h) = image::image_dimensions(list.path(i)).unwrap();
            w as u64 * h as u64 * 3
        })
        .sum();
    assert_eq!(estimate_decoded_bytes(&list).unwrap(), exact);
    let by_size = |mib| StreamPolicy::new(StreamMode::Auto, mib, false);
    assert!(open_image_folder(&root, &by_size(0))
        .unwrap()
        .is_streaming());
    assert!(!open_image_folder(&root, &by_size(4096))
        .unwrap()
        .is_streaming());
    let forced = |s| {
        let mode = if s {
            StreamMode::Always
        } else {
            StreamMode::Never
        };
        StreamPolicy::new(mode, 0, false)
    };
    assert!(open_image_folder(&root, &forced(true))
        .unwrap()
        .is_streaming());
    assert!(!open_image_folder(&root, &forced(false))
        .unwrap()
        .is_streaming());
    // the default threshold keeps small folders in memory
    assert!(!open_image_folder(&root, &StreamPolicy::default())
        .unwrap()
        .is_streaming());
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn a_large_folder_streams_with_bounded_memory() {
    // 2,000 files of 400×350 px (hard links to 8 encoded JPEGs): ≈ 840 MB once decoded
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for k in 0..8u32 {
        let img = image::RgbImage::from_fn(400, 350, |x, y| {
            image::Rgb([(x / 2 + k * 9) as u8, (y / 2) as u8, ((x + y) / 4) as u8])
        });
        img.save(src.join(format!("{k}.jpg"))).unwrap();
    }
    let root = dir.path().join("train");
    for c in 0..4 {
        let d = root.join(format!("c{c}"));
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..500 {
            std::fs::hard_link(
                src.join(format!("{}.jpg", k % 8)),
                d.join(format!("{k:04}.jpg")),
            )
            .unwrap();
        }
    }
    let Some(before) = rss_bytes() else {
        eprintln!("skipped: no /proc/self/status");
        return;
    };
    // what the in-memory path would hold
    let (list, _) = scan_cached(&root).unwrap();
    assert_eq!(estimate_decoded_bytes(&list).unwrap(), 2000 * 400 * 350 * 3);
    let st = open_image_folder(&root, &StreamPolicy::new(StreamMode::Always, 0, false)).unwrap();
    assert!(st.is_streaming());
    let cfg = LoaderConfig {
        batch_size: 50,
        seed: 1,
        threads: 2,
        prefetch: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(st.into_dataset(), Recipe::byol(32, 0.08).unwrap(), cfg).unwrap();
    let mut peak = 0u64;
    let mut n = 0;
    for b in loader.epoch(0) {
        n += b.unwrap().labels.size()[0];
        peak = peak.max(rss_bytes().unwrap());
    }
    assert_eq!(n, 2000);
    // bound: (prefetch + 2) · 50 · 2 views · 3·32²·4 B ≈ 2.5 MB of batches + 2 decoded images
    // (0.4 MB each); allow 120 MB for allocator slack and the other tests of this binary —
    // decoding into memory would take 840 MB.
    let grown = peak.saturating_sub(before);
    eprintln!(
        "streamed 2,000 images: RSS grew by {:.1} MB",
        grown as f64 / 1e6
    );
    assert!(grown < 120_000_000, "RSS grew by {grown} bytes");
}

/// Two of the 15 files corrupted: one truncated in its entropy-coded data, one replaced by
/// bytes that are no image at all.
fn with_two_corrupt(root: &Path) -> [String; 2] {
    let a = root.join("cat/img01.jpg");
    let bytes = std::fs::read(&a).unwrap();
    std::fs::write(&a, &bytes[..bytes.len() / 3]).unwrap();
    let b = root.join("eel/img03.jpg");
    std::fs::write(&b, b"this is not a JPEG at all").unwrap();
    [a.display().to_string(), b.display().to_string()]
}

fn all_batches(loader: &Loader, epochs: u64) -> anyhow::Result<Vec<Vec<tch::Tensor>>> {
    let mut out = Vec::new();
    for e in 0..epochs {
        for b in loader.epoch(e) {
            let b = b?;
            let mut v = b.views;
            v.push(b.labels);
            out.push(v);
        }
    }
    Ok(out)
}

#[test]
fn corrupt_files_stop_the_run_naming_them_or_are_skipped_and_counted() {
    use contrast_core::data::OnCorrupt;
    let dir = tempfile::tempdir().unwrap();
    let root = jpeg_folder(dir.path(), 5);
    let bad = with_two_corrupt(&root);
    let recipe = || Recipe::byol(16, 0.5).unwrap();
    let cfg = LoaderConfig {
        batch_size: 4,
        seed: 3,
        threads: 2,
        ..LoaderConfig::default()
    };
    let policy = |mode, on| StreamPolicy::new(mode, 0, false).with_on_corrupt(on);

    // the default stops, naming the file: in memory at load time, streamed when reached
    let e = open_image_folder(&root, &policy(StreamMode::Never, OnCorrupt::Stop)).unwrap_err();
    let e = format!("{e:#}");
    assert!(bad.iter().any(|b| e.contains(b.as_str())), "{e}");
    let st = open_image_folder(&root, &policy(StreamMode::Always, OnCorrupt::Stop)).unwrap();
    let loader = Loader::new(st.into_dataset(), recipe(), cfg.clone()).unwrap();
    assert!(loader.skipped().is_none());
    let e = format!("{:#}", all_batches(&loader, 1).unwrap_err());
    assert!(bad.iter().any(|b| e.contains(b.as_str())), "{e}");

    // skipped: in memory the two files are left out at load time
    let mem = open_image_folder(&root, &policy(StreamMode::Never, OnCorrupt::Skip))
        .unwrap()
        .into_dataset();
    assert_eq!(mem.len(), 13);
    assert_eq!(mem.skipped().unwrap().files(), bad.to_vec());
    // streamed: the list keeps 15 entries, the next file that decodes stands in, and the
    // skipped list fills as the loader meets them
    let st = open_image_folder(&root, &policy(StreamMode::Always, OnCorrupt::Skip))
        .unwrap()
        .into_dataset();
    assert_eq!(st.len(), 15);
    let loader = Loader::new(Arc::clone(&st), recipe(), cfg.clone()).unwrap();
    let skipped = loader.skipped().unwrap();
    assert!(skipped.is_empty());
    let first = all_batches(&loader, 2).unwrap();
    assert_eq!(
        first.len(),
        2 * 3,
        "15 samples, batches of 4, the last one dropped"
    );
    assert_eq!(skipped.files(), bad.to_vec());
    // deterministic: a second data set over the same files gives the same batches
    let st2 = open_image_folder(&root, &policy(StreamMode::Always, OnCorrupt::Skip))
        .unwrap()
        .into_dataset();
    let again = all_batches(&Loader::new(st2, recipe(), cfg).unwrap(), 2).unwrap();
    for (a, b) in first.iter().zip(&again) {
        for (x, y) in a.iter().zip(b) {
            assert!(x.equal(y));
        }
    }
    // the stand-in for the truncated cat/img01 is cat/img02, with its label
    let (img, label) = st.get(1).unwrap();
    let (next, next_label) = st.get(2).unwrap();
    assert_eq!((img.pixels, label), (next.pixels, next_label));
    // nothing decodes: an error, not a loop
    for i in 0..5 {
        for c in ["cat", "dog", "eel"] {
            std::fs::write(root.join(format!("{c}/img{i:02}.jpg")), b"junk").unwrap();
        }
    }
    let st = open_image_folder(&root, &policy(StreamMode::Always, OnCorrupt::Skip))
        .unwrap()
        .into_dataset();
    let e = format!("{:#}", st.get(0).unwrap_err());
    assert!(
        e.contains("every one of its 15 files failed to decode"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        open_image_folder(&root, &policy(StreamMode::Never, OnCorrupt::Skip)).unwrap_err()
    );
    assert!(
        e.contains("every one of its 15 files failed to decode"),
        "{e}"
    );
}
