//! Loaders: synthetic CIFAR-10/100 and STL-10 binaries and PNG folders read back exactly,
//! truncated / corrupt files rejected with the file and record named, and the real CIFAR-10 JPEG
//! tree from `../shared/data` (skipped when absent).

use contrast_core::data::cifar::{load_cifar10, load_cifar100, Cifar100Label, CIFAR10_CLASSES};
use contrast_core::data::folder::load_image_folder;
use contrast_core::data::stl10::{load_stl10, Stl10Split};
use contrast_core::data::{Dataset, InMemoryDataset};
use contrast_core::testing::tempdir;
use std::path::PathBuf;

/// Pixel value of synthetic image `n` at channel `c`, row `y`, column `x`.
fn px(n: usize, c: usize, y: usize, x: usize) -> u8 {
    ((n * 31 + c * 101 + y * 7 + x * 13) % 256) as u8
}

/// CIFAR records: `labels` bytes then the CHW planes of image `first + k`.
fn cifar_records(first: usize, labels: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, l) in labels.iter().enumerate() {
        out.extend_from_slice(l);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(px(first + k, c, y, x));
                }
            }
        }
    }
    out
}

fn check_pixels(ds: &InMemoryDataset, side: usize) {
    for n in 0..ds.len() {
        let (img, _) = ds.get(n).unwrap();
        assert_eq!((img.height, img.width, img.channels), (side, side, 3));
        for y in 0..side {
            for x in 0..side {
                for c in 0..3 {
                    assert_eq!(
                        img.at(y, x, c),
                        px(n, c, y, x),
                        "image {n} pixel ({y},{x},{c})"
                    );
                }
            }
        }
    }
}

#[test]
fn cifar10_and_100_binaries_read_back_exactly() {
    let dir = tempdir().unwrap();
    // 5 train files with 2, 3, 1, 2, 2 records; labels 0..9 in turn.
    let counts = [2usize, 3, 1, 2, 2];
    let mut first = 0;
    for (f, &n) in counts.iter().enumerate() {
        let labels: Vec<Vec<u8>> = (0..n).map(|k| vec![((first + k) % 10) as u8]).collect();
        std::fs::write(
            dir.join(format!("data_batch_{}.bin", f + 1)),
            cifar_records(first, &labels),
        )
        .unwrap();
        first += n;
    }
    std::fs::write(
        dir.join("test_batch.bin"),
        cifar_records(0, &[vec![9], vec![3]]),
    )
    .unwrap();
    let train = load_cifar10(&dir, true).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels(), &(0..10).collect::<Vec<i64>>()[..]);
    assert_eq!(train.classes()[0], "airplane");
    check_pixels(&train, 32);
    let t = train.to_tensor().unwrap();
    assert_eq!(t.size(), vec![10, 32, 32, 3]);
    assert_eq!(t.int64_value(&[3, 5, 7, 2]), px(3, 2, 5, 7) as i64);
    let test = load_cifar10(&dir, false).unwrap();
    assert_eq!(test.labels(), &[9, 3]);
    check_pixels(&test, 32);

    // CIFAR-100: coarse, fine label bytes.
    let labels = vec![vec![19u8, 99], vec![0, 42], vec![7, 0]];
    std::fs::write(dir.join("train.bin"), cifar_records(0, &labels)).unwrap();
    let fine = load_cifar100(&dir, true, Cifar100Label::Fine).unwrap();
    assert_eq!(fine.labels(), &[99, 42, 0]);
    assert_eq!(fine.classes().len(), 100);
    check_pixels(&fine, 32);
    let coarse = load_cifar100(&dir, true, Cifar100Label::Coarse).unwrap();
    assert_eq!(coarse.labels(), &[19, 0, 7]);
    std::fs::write(
        dir.join("test.bin"),
        cifar_records(0, &[vec![3, 3], vec![25, 1]]),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        load_cifar100(&dir, false, Cifar100Label::Fine).unwrap_err()
    );
    assert!(
        e.contains("test.bin") && e.contains("record 1: coarse label 25"),
        "{e}"
    );

    // Truncated: the last record of test_batch.bin is cut short.
    let f = dir.join("test_batch.bin");
    let mut raw = std::fs::read(&f).unwrap();
    raw.truncate(3073 + 1000);
    std::fs::write(&f, &raw).unwrap();
    let e = format!("{:#}", load_cifar10(&dir, false).unwrap_err());
    assert!(
        e.contains("test_batch.bin") && e.contains("record 1 has 1000 of 3073 bytes"),
        "{e}"
    );
    // Corrupt label in record 2 of data_batch_2.bin.
    let f = dir.join("data_batch_2.bin");
    let mut raw = std::fs::read(&f).unwrap();
    raw[2 * 3073] = 10;
    std::fs::write(&f, &raw).unwrap();
    let e = format!("{:#}", load_cifar10(&dir, true).unwrap_err());
    assert!(
        e.contains("data_batch_2.bin") && e.contains("record 2: label 10"),
        "{e}"
    );
    // Missing file (after repairing the label).
    raw[2 * 3073] = 3;
    std::fs::write(&f, &raw).unwrap();
    std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
    let e = format!("{:#}", load_cifar10(&dir, true).unwrap_err());
    assert!(e.contains("data_batch_5.bin"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stl10_binaries_are_column_major_and_read_back_exactly() {
    let dir = tempdir().unwrap();
    let n = 3;
    let mut x = Vec::new();
    for k in 0..n {
        // Official layout: channel, then column (x), then row (y) fastest.
        for c in 0..3 {
            for xx in 0..96 {
                for y in 0..96 {
                    x.push(px(k, c, y, xx));
                }
            }
        }
    }
    std::fs::write(dir.join("train_X.bin"), &x).unwrap();
    std::fs::write(dir.join("train_y.bin"), [1u8, 10, 4]).unwrap();
    std::fs::write(dir.join("unlabeled_X.bin"), &x).unwrap();
    let train = load_stl10(&dir, Stl10Split::Train).unwrap();
    assert_eq!(train.labels(), &[0, 9, 3]);
    // as `data.format = "stl10"`: labelled train split and test split
    std::fs::write(dir.join("test_X.bin"), &x).unwrap();
    std::fs::write(dir.join("test_y.bin"), [2u8, 2, 3]).unwrap();
    let root = dir.display().to_string();
    let (tr, te) =
        contrast_core::data::splits::load_splits(&contrast_core::data::splits::SplitSpec {
            format: "stl10",
            root: &root,
            test_split: "test",
            train_subset: 0,
            test_subset: 0,
            seed: 0,
            method: "test",
            stream: Default::default(),
        })
        .unwrap();
    assert_eq!((tr.len(), te.len()), (3, 3));
    assert_eq!(te.get(1).unwrap().1, 1);
    assert_eq!(train.classes()[2], "car");
    check_pixels(&train, 96);
    let unl = load_stl10(&dir, Stl10Split::Unlabeled).unwrap();
    assert_eq!(unl.labels(), &[-1, -1, -1]);
    check_pixels(&unl, 96);
    // Label count mismatch, bad label, truncated images.
    std::fs::write(dir.join("train_y.bin"), [1u8, 10]).unwrap();
    let e = format!("{:#}", load_stl10(&dir, Stl10Split::Train).unwrap_err());
    assert!(e.contains("train_y.bin") && e.contains("2 labels"), "{e}");
    std::fs::write(dir.join("train_y.bin"), [1u8, 0, 2]).unwrap();
    let e = format!("{:#}", load_stl10(&dir, Stl10Split::Train).unwrap_err());
    assert!(
        e.contains("train_y.bin") && e.contains("record 1: label 0"),
        "{e}"
    );
    std::fs::write(dir.join("train_X.bin"), &x[..2 * 27648 + 5]).unwrap();
    let e = format!("{:#}", load_stl10(&dir, Stl10Split::Train).unwrap_err());
    assert!(
        e.contains("train_X.bin") && e.contains("record 2 has 5 of 27648 bytes"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_folder_reads_pngs_exactly_and_names_a_corrupt_file() {
    let dir = tempdir().unwrap();
    // Classes created out of order: index = sorted position (b_cls → 0, z_cls → 1).
    let layout = [("z_cls", 2usize), ("b_cls", 3)];
    let mut n = 0;
    let mut expect = Vec::new();
    for (cls, count) in layout {
        std::fs::create_dir_all(dir.join(cls)).unwrap();
        for k in 0..count {
            let img = image::RgbImage::from_fn(8, 6, |x, y| {
                image::Rgb([0, 1, 2].map(|c| px(n, c, y as usize, x as usize)))
            });
            img.save(dir.join(cls).join(format!("{k:03}.png"))).unwrap();
            expect.push((cls, n));
            n += 1;
        }
    }
    std::fs::write(dir.join("b_cls").join("notes.txt"), "not an image").unwrap();
    let ds = load_image_folder(&dir).unwrap();
    assert_eq!(ds.classes(), &["b_cls".to_string(), "z_cls".to_string()]);
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.uniform_shape(), Some((6, 8, 3)));
    // Sample order: class b_cls (images 2, 3, 4 as written), then z_cls (0, 1).
    let written: Vec<usize> = vec![2, 3, 4, 0, 1];
    for (i, &src) in written.iter().enumerate() {
        let (img, label) = ds.get(i).unwrap();
        assert_eq!(label, if i < 3 { 0 } else { 1 });
        for y in 0..6 {
            for x in 0..8 {
                for c in 0..3 {
                    assert_eq!(img.at(y, x, c), px(src, c, y, x));
                }
            }
        }
    }
    // A truncated PNG is an error naming the file.
    let bad = dir.join("z_cls").join("001.png");
    let raw = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &raw[..raw.len() / 2]).unwrap();
    let e = format!("{:#}", load_image_folder(&dir).unwrap_err());
    assert!(e.contains("001.png") && e.contains("sample 4"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Extract the CIFAR-10 JPEG tar once into a per-user cache folder outside the repository.
fn cifar10_jpeg_tree() -> Option<PathBuf> {
    let tar = contrast_core::data::dev_data(
        "real_cifar10_jpeg_tree",
        "cifar10-jpeg/CIFAR-10-images.tar",
    )?;
    let dest = std::env::temp_dir().join("contrast-cache/cifar10-jpeg-78a12bf9");
    let done = dest.join(".extracted");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest).unwrap();
        let st = std::process::Command::new("tar")
            .arg("xf")
            .arg(&tar)
            .arg("-C")
            .arg(&dest)
            .status()
            .expect("running tar");
        assert!(st.success(), "extracting {}", tar.display());
        std::fs::write(&done, "").unwrap();
    }
    Some(dest)
}

#[test]
fn real_cifar10_jpeg_tree() {
    let Some(root) = cifar10_jpeg_tree() else {
        return;
    };
    let t0 = std::time::Instant::now();
    let train = load_image_folder(root.join("train")).unwrap();
    let test = load_image_folder(root.join("test")).unwrap();
    println!(
        "decoded 60,000 JPEGs in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let names: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    assert_eq!(train.classes(), &names[..]);
    assert_eq!(test.classes(), &names[..]);
    assert_eq!(train.len(), 50_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.class_counts(10), vec![5000; 10]);
    assert_eq!(test.class_counts(10), vec![1000; 10]);
    assert_eq!(train.uniform_shape(), Some((32, 32, 3)));
    assert_eq!(train.pixels().len(), 50_000 * 32 * 32 * 3);
    // Not a blank decode: the mean pixel of natural images is mid-grey-ish.
    let mean = train.pixels().iter().map(|&v| v as f64).sum::<f64>() / train.pixels().len() as f64;
    assert!((100.0..150.0).contains(&mean), "mean pixel {mean}");
}
