//! The web GUI on 127.0.0.1 (random port) over a tiny synthetic index: pages, JSON API, image
//! serving only from the indexed set (path traversal attempts get 404), query length limit with
//! a readable error, a bounded concurrent load test (latency percentiles), and a real headless
//! Chromium loading a results page (screenshot decoded and checked: size, not blank, the
//! fixture's image colours visible = result images loaded). Skips visibly without the MiniLM
//! wheel or without chromium.

mod common;

use claires::index::Index;
use claires::loadtest::{http_get, load_test};
use claires::model::Claires;
use claires::records::load_manifest;
use claires::serve::{url_encode, AppState, ServeConfig};
use claires::text::minilm_dir;
use claires::train::retrieval_eval;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tch::Device;

struct Server {
    addr: SocketAddr,
    /// The image files of the index, in index order.
    images: Vec<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

fn server() -> Option<&'static Server> {
    static S: OnceLock<Option<Server>> = OnceLock::new();
    S.get_or_init(|| {
        if let Err(e) = minilm_dir() {
            eprintln!("skipped: claires server tests ({e:#})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let manifest = common::write_fixture(dir.path());
        let cfg = common::tiny_config(&manifest);
        let model = {
            let _g = contrast_core::testing::global_rng_lock();
            tch::manual_seed(5);
            Claires::new(&cfg, Device::Cpu).unwrap()
        };
        let records = load_manifest(&manifest).unwrap();
        let images = records.iter().map(|r| r.image.clone()).collect();
        let fields: Vec<_> = records.iter().map(|r| r.fields.clone()).collect();
        let texts: Vec<String> = records.iter().map(|r| r.text()).collect();
        let index = Index::build(&model, records, cfg.data.image_size).unwrap();
        // an evaluation report over the 8 records (untrained model: the page shows its numbers)
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let t = model.search_text(&refs).unwrap();
        let results =
            retrieval_eval(&t, &index.embeddings, &fields, &[1, 3, 5], &[0, 4], 0).unwrap();
        let report = serde_json::json!({
            "results": results, "data": "synthetic fixture (8 records)",
            "model": "untrained tiny", "paper": {"hit3": 0.96, "mrr": 0.82}
        });
        let state = Arc::new(AppState::new(
            model,
            index,
            Some(report),
            ServeConfig::default(),
        ));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
                claires::serve::serve(l, state).await.unwrap();
            });
        });
        Some(Server {
            addr,
            images,
            _dir: dir,
        })
    })
    .as_ref()
}

fn get(s: &Server, path: &str) -> claires::loadtest::HttpResponse {
    http_get(s.addr, path, Duration::from_secs(60)).unwrap()
}

#[test]
fn pages_api_and_safety() {
    let Some(s) = server() else { return };
    let home = get(s, "/");
    assert_eq!(home.status, 200);
    assert!(home.text().contains("id=\"q\""));
    assert!(home.text().contains("8 indexed images"));

    let res = get(s, &format!("/?q={}&k=5", url_encode("X-ray of the chest")));
    assert_eq!(res.status, 200);
    assert_eq!(res.text().matches("class=\"result\"").count(), 5);
    assert!(res.text().contains("value=\"X-ray of the chest\""));

    // images: only by index position
    let img = get(s, "/img/0");
    assert_eq!(img.status, 200);
    assert_eq!(img.header("content-type"), Some("image/png"));
    assert_eq!(img.body, std::fs::read(&s.images[0]).unwrap());
    for bad in [
        "/img/..%2F..%2F..%2Fetc%2Fpasswd",
        "/img/../../etc/passwd",
        "/img/%2Fetc%2Fpasswd",
        "/img/8",
        "/img/-1",
        "/img/0x1",
        "/img/img0.png",
        "/img/0/../../../etc/passwd",
        "/../../etc/passwd",
        "/img/99999999999999999999999",
    ] {
        let r = get(s, bad);
        assert!(
            r.status == 404 || r.status == 400,
            "{bad}: status {}",
            r.status
        );
        assert!(!r.text().contains("root:"), "{bad} leaked a file");
    }

    // query length: 200 ok, 201 refused with a readable message (no stack trace)
    let ok = get(s, &format!("/?q={}", "a".repeat(200)));
    assert_eq!(ok.status, 200);
    let long = get(s, &format!("/?q={}", "a".repeat(201)));
    assert_eq!(long.status, 400);
    let t = long.text();
    assert!(
        t.contains("query too long: 201 characters (at most 200)"),
        "{t}"
    );
    for leak in ["panicked", "backtrace", ".rs:", "RUST_"] {
        assert!(!t.contains(leak), "error page shows `{leak}`");
    }
    let empty = get(s, "/?q=%20%20");
    assert_eq!(empty.status, 400);
    assert!(empty.text().contains("empty query"));

    // JSON API
    let j: serde_json::Value =
        serde_json::from_slice(&get(s, "/api/search?q=chest&k=3").body).unwrap();
    let rs = j["results"].as_array().unwrap();
    assert_eq!(rs.len(), 3);
    let scores: Vec<f64> = rs.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(rs[0]["rank"], 1);
    assert_eq!(rs[0]["image_url"], format!("/img/{}", rs[0]["index"]));
    let e = get(s, "/api/search?q=chest&k=1000");
    assert_eq!(e.status, 400);
    let ej: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(ej["error"], "k must be between 1 and 50");
    let e = get(s, &format!("/api/search?q={}", "b".repeat(300)));
    assert_eq!(e.status, 400);
    let item: serde_json::Value = serde_json::from_slice(&get(s, "/api/item/3").body).unwrap();
    assert_eq!(item["fields"]["organ"], "chest");
    assert_eq!(item["sentence"], "image of the chest, findings: mass");
    let sim: serde_json::Value =
        serde_json::from_slice(&get(s, "/api/similar/3?k=2").body).unwrap();
    let sr = sim["results"].as_array().unwrap();
    assert_eq!(sr.len(), 2);
    assert!(sr.iter().all(|r| r["index"] != 3));
    assert_eq!(get(s, "/api/item/8").status, 404);

    // detail and evaluation pages
    let d = get(s, "/item/3");
    assert_eq!(d.status, 200);
    assert!(d.text().contains("Similar images"));
    assert!(d.text().contains("image of the chest, findings: mass"));
    let ev = get(s, "/eval").text();
    assert!(ev.contains("id=\"metrics\""));
    assert!(ev.contains("label-match") && ev.contains("paired"));
    assert!(ev.contains("4 of 8") && ev.contains("all 8"));
    let api_eval: serde_json::Value = serde_json::from_slice(&get(s, "/api/eval").body).unwrap();
    assert_eq!(api_eval["results"].as_array().unwrap().len(), 4);
    let nf = get(s, "/no/such/page");
    assert_eq!(nf.status, 404);
    assert!(nf.text().contains("no such page"));
}

#[test]
fn concurrent_load_latency_percentiles() {
    let Some(s) = server() else { return };
    let queries = [
        "X-ray of the chest",
        "MRI of the head, findings: mass",
        "CT of the abdomen",
        "image of the chest",
    ];
    let paths: Vec<String> = queries
        .iter()
        .map(|q| format!("/api/search?q={}&k=5", url_encode(q)))
        .collect();
    let r = load_test(s.addr, &paths, 200, 8).unwrap();
    eprintln!(
        "load test: {} requests, {} threads, {} ok, {:.1} req/s; latency ms p50 {:.1} p90 {:.1} \
         p99 {:.1} max {:.1}",
        r.requests, r.concurrency, r.ok, r.requests_per_s, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("claires-load-test.json");
    std::fs::write(&out, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    assert_eq!(r.requests, 200);
    assert_eq!(r.ok, 200, "failed requests: {}", r.failed);
    assert!(r.p50_ms <= r.p90_ms && r.p90_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
    assert!(r.p50_ms > 0.0);
}

fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(c.to_string());
        }
    }
    None
}

/// Run chromium headless with `args`, killing it after `secs`.
fn run_chromium(bin: &str, profile: &std::path::Path, args: &[String], secs: u64) -> Vec<u8> {
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed().as_secs() > secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn chromium_renders_results() {
    let Some(s) = server() else { return };
    let Some(bin) = chromium() else {
        eprintln!("skipped: headless browser test (no chromium; `apt-get install -y chromium`)");
        return;
    };
    let url = format!(
        "http://{}/?q={}&k=8",
        s.addr,
        url_encode("X-ray of the chest")
    );
    let profile = tempfile::tempdir().unwrap();
    // the DOM after load: the query is in the box, 8 result images
    let dom = String::from_utf8_lossy(&run_chromium(
        &bin,
        profile.path(),
        &["--dump-dom".into(), url.clone()],
        90,
    ))
    .into_owned();
    assert_eq!(dom.matches("class=\"result\"").count(), 8, "{dom}");
    assert!(dom.contains("value=\"X-ray of the chest\""));

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("claires-gui-test.png");
    let _ = std::fs::remove_file(&shot);
    let (w, h) = (1000u32, 800u32);
    run_chromium(
        &bin,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={w},{h}"),
            url,
        ],
        90,
    );
    let img = image::open(&shot)
        .unwrap_or_else(|e| panic!("screenshot {} does not decode: {e}", shot.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (w, h));
    // not blank: many distinct colours
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 20,
        "blank screenshot ({} colours)",
        distinct.len()
    );
    // the result images were loaded and drawn: the fixture's solid colours cover many pixels
    let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 3);
    let mut seen = 0;
    for c in common::COLOURS {
        let n = img.pixels().filter(|p| near(p.0, c)).count();
        if n > 500 {
            seen += 1;
        }
    }
    eprintln!(
        "screenshot {}: {seen} of 8 fixture colours visible",
        shot.display()
    );
    assert!(
        seen >= 4,
        "only {seen} result images visible in the screenshot"
    );
}
