//! Our own restatement (no official code covers the kNN evaluation here): weighted kNN against
//! DINO's / solo-learn's formula restated in tests/py/knn.py, and feature extraction.

use contrast_core::eval::features::{extract_features_from_tensors, extract_with};
use contrast_core::eval::knn::{knn_evaluate, KnnClassifier, KnnConfig, KnnMetric};
use contrast_core::nn::resnet::{resnet18, ResNet, ResNetConfig, Stem};
use contrast_core::tensors::named_variables;
use contrast_core::testing::{assert_close, get, run_reference};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// `n` points per class around `c` well-separated centres in `d` dimensions.
fn blobs(n: i64, c: i64, d: i64, spread: f64) -> (Tensor, Tensor) {
    let centres = Tensor::eye(d, (Kind::Float, CPU)).narrow(0, 0, c) * 10.0; // [C, D]
    let y = Tensor::arange(c, (Kind::Int64, CPU)).repeat([n]); // [n·C]
    let x = centres.index_select(0, &y) + Tensor::randn([n * c, d], (Kind::Float, CPU)) * spread;
    (x, y)
}

#[test]
fn separable_data_scores_100_percent() {
    tch::manual_seed(0);
    let (train_x, train_y) = blobs(100, 5, 16, 1.0);
    let (test_x, test_y) = blobs(40, 5, 16, 1.0);
    for metric in [KnnMetric::Cosine, KnnMetric::Euclidean] {
        for base in [KnnConfig::dino(), KnnConfig::instdisc()] {
            let cfg = KnnConfig {
                ks: vec![1, 20, 200],
                metric,
                ..base
            };
            let acc = knn_evaluate(&train_x, &train_y, &test_x, &test_y, None, cfg).unwrap();
            assert_eq!(acc.len(), 3);
            for a in &acc {
                assert_eq!(a.top1, 100.0, "{metric:?} k={}: {a:?}", a.k);
                assert_eq!(a.top5, 100.0, "{metric:?} k={}: {a:?}", a.k);
            }
        }
    }
}

#[test]
fn random_labels_score_near_chance() {
    tch::manual_seed(1);
    let train_x = Tensor::randn([4000, 32], (Kind::Float, CPU));
    let train_y = Tensor::randint(10, [4000], (Kind::Int64, CPU));
    let test_x = Tensor::randn([2000, 32], (Kind::Float, CPU));
    let test_y = Tensor::randint(10, [2000], (Kind::Int64, CPU));
    let cfg = KnnConfig {
        ks: vec![20, 200],
        ..KnnConfig::dino()
    };
    let acc = knn_evaluate(&train_x, &train_y, &test_x, &test_y, Some(10), cfg).unwrap();
    for a in acc {
        // Chance is 10 % (top-5: 50 %); the binomial sd over 2000 queries is 0.67 % (1.1 %).
        assert!((a.top1 - 10.0).abs() < 3.0, "k={} top1 {}", a.k, a.top1);
        assert!((a.top5 - 50.0).abs() < 5.0, "k={} top5 {}", a.k, a.top5);
    }
}

#[test]
fn knn_matches_the_dino_and_solo_learn_formula() {
    tch::manual_seed(2);
    let (c, ks, t, eps) = (7i64, [1i64, 5, 20, 300], 0.07, 1e-5);
    // Informative but noisy features so that accuracies are neither 0 nor 100.
    let (train_f, train_y) = blobs(30, c, 12, 6.0);
    let (test_f, test_y) = blobs(9, c, 12, 6.0);
    let ks_arg = ks.map(|k| k.to_string()).join(",");
    let Some(out) = run_reference(
        script("knn.py"),
        &[
            ("train_f", &train_f),
            ("train_y", &train_y),
            ("test_f", &test_f),
            ("test_y", &test_y),
        ],
        &[&ks_arg, &t.to_string(), &c.to_string(), &eps.to_string()],
    )
    .unwrap() else {
        return;
    };
    for (metric, name) in [
        (KnnMetric::Cosine, "cosine"),
        (KnnMetric::Euclidean, "euclidean"),
    ] {
        let cfg = KnnConfig {
            ks: ks.to_vec(),
            temperature: t,
            metric,
            epsilon: eps,
            query_batch: 16, // 63 queries: 4 batches, the last one partial
        };
        let knn = KnnClassifier::new(&train_f, &train_y, c, cfg).unwrap();
        let scores = knn.class_scores(&test_f).unwrap();
        let acc = knn.evaluate(&test_f, &test_y).unwrap();
        for ((k, s), a) in ks.iter().zip(&scores).zip(&acc) {
            assert_eq!(a.k, (*k).min(210));
            let r = get(&out, &format!("{name}_scores_k{k}"));
            assert_close(s, r, 1e-5, 1e-4, &format!("{name} k={k} class scores"));
            let top1 = get(&out, &format!("{name}_top1_k{k}")).double_value(&[]);
            let top5 = get(&out, &format!("{name}_top5_k{k}")).double_value(&[]);
            assert!(
                (a.top1 - top1).abs() < 1e-9,
                "{name} k={k}: top1 {} vs {top1}",
                a.top1
            );
            assert!(
                (a.top5 - top5).abs() < 1e-9,
                "{name} k={k}: top5 {} vs {top5}",
                a.top5
            );
            if *k <= 20 {
                assert!(
                    a.top1 > 20.0 && a.top1 < 100.0,
                    "{name} k={k}: top1 {}",
                    a.top1
                );
            }
        }
        // Predictions equal the argmax of the scores, whatever the query batch.
        let preds = knn.predict(&test_f).unwrap();
        for (p, s) in preds.iter().zip(&scores) {
            assert_eq!(p.size(), [63]);
            assert!(p.equal(&s.argmax(1, false)));
        }
    }
}

#[test]
fn knn_rejects_bad_settings_with_numbers() {
    let f = Tensor::zeros([4, 3], (Kind::Float, CPU));
    let y = Tensor::zeros([4], (Kind::Int64, CPU));
    let bad_t = KnnConfig {
        temperature: 0.0,
        ..KnnConfig::dino()
    };
    let e = KnnClassifier::new(&f, &y, 2, bad_t).unwrap_err();
    assert_eq!(e.to_string(), "Illegal temperature 0");
    let knn = KnnClassifier::new(&f, &y, 2, KnnConfig::dino()).unwrap();
    let e = knn
        .class_scores(&Tensor::zeros([2, 5], (Kind::Float, CPU)))
        .unwrap_err();
    assert_eq!(e.to_string(), "query width 5 differs from the bank's 3");
    let e = KnnClassifier::new(&f, &(y + 2), 2, KnnConfig::dino()).unwrap_err();
    assert_eq!(e.to_string(), "bank labels span 2..=2, outside 0..2");
}

#[test]
fn feature_extraction_runs_in_eval_mode_without_gradients() {
    tch::manual_seed(4);
    let vs = VarStore::new(CPU);
    let cfg = ResNetConfig {
        stem: Stem::cifar(),
        layers: [1, 1, 1, 1],
        ..resnet18()
    };
    let model = ResNet::new(vs.root(), &cfg).unwrap();
    let before: Vec<Tensor> = named_variables(&vs)
        .into_iter()
        .map(|(_, t)| t.copy())
        .collect();
    let x = Tensor::randn([10, 3, 16, 16], (Kind::Float, CPU));
    let y = Tensor::arange(10, (Kind::Int64, CPU));
    let f = extract_features_from_tensors(&model, &x, &y, 4, CPU).unwrap();
    assert_eq!(f.features.size(), [10, 512]);
    assert!(!f.features.requires_grad());
    assert!(f.labels.equal(&y));
    // Eval mode: the running statistics did not move, and the features are the eval forward.
    for ((n, t), b) in named_variables(&vs).into_iter().zip(&before) {
        assert!(t.equal(b), "{n} changed during feature extraction");
    }
    let direct = tch::no_grad(|| model.forward_t(&x, false));
    assert_close(
        &f.features,
        &direct,
        1e-5,
        1e-5,
        "batched vs direct eval forward",
    );

    // A closure path (e.g. the layer-4 map, flattened) and a failing loader.
    let g = extract_with(
        [Ok((x.narrow(0, 0, 3), y.narrow(0, 0, 3)))],
        CPU,
        CPU,
        |xs| Ok(model.forward_features(xs, false)?.layer4),
    )
    .unwrap();
    assert_eq!(g.features.size(), [3, 512 * 2 * 2]);
    let e = extract_with([Err(anyhow::anyhow!("disk on fire"))], CPU, CPU, |xs| {
        Ok(xs.shallow_clone())
    })
    .unwrap_err();
    assert_eq!(format!("{e:#}"), "loading batch 0: disk on fire");
}
