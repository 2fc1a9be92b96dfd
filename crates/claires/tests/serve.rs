//! The web GUI on 127.0.0.1 (random port) over a tiny synthetic index: pages, JSON API, image
//! serving only from the indexed set (path traversal attempts get 404), query length limit with
//! a readable error, a bounded concurrent load test (latency percentiles), and a real headless
//! Chromium: loading a results page by URL, and a user's path driven over the DevTools protocol
//! (focus the search box, type the query key by key, press Enter) — screenshots decoded and
//! checked: size, not blank, the fixture's image colours visible = result images loaded. The
//! hardening: methods, request-target and body limits, the in-flight bound and the time limit
//! (503), security headers on every answer, and script and attribute injection payloads in a
//! real browser (no script runs). Skips visibly without the MiniLM wheel or without chromium.

mod common;

use claires::index::Index;
use claires::loadtest::{http_get, load_test};
use claires::method::retrieval_eval;
use claires::model::Claires;
use claires::records::load_manifest;
use claires::serve::{check_bind, url_encode, AppState, ServeConfig, CONTENT_SECURITY_POLICY};
use claires::text::minilm_dir;
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
    S.get_or_init(|| start(ServeConfig::default())).as_ref()
}

/// A server over the 8-record fixture index on 127.0.0.1 (random port) with `cfg`; `None`
/// (with a line saying so) without the MiniLM wheel.
fn start(cfg_serve: ServeConfig) -> Option<Server> {
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
    let results = retrieval_eval(&t, &index.embeddings, &fields, &[1, 3, 5], &[0, 4], 0).unwrap();
    let report = serde_json::json!({
        "results": results, "data": "synthetic fixture (8 records)",
        "model": "untrained tiny", "paper": {"hit3": 0.96, "mrr": 0.82}
    });
    let state = Arc::new(AppState::new(model, index, Some(report), cfg_serve));
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
}

/// One raw HTTP/1.1 exchange (for what `http_get` cannot send): the status and the headers
/// and body as text.
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[test]
fn limits_methods_and_security_headers() {
    let Some(s) = server() else { return };
    // every answer, whatever its status, carries the headers
    for path in [
        "/",
        "/?q=chest",
        "/api/search?q=chest&k=2",
        "/img/0",
        "/style.css",
        "/nope",
        "/img/99",
    ] {
        let r = get(s, path);
        assert_eq!(
            r.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    // no script anywhere, and the style sheet is a file (the policy allows no inline style)
    let home = get(s, "/?q=chest").text();
    assert!(
        !home.contains("<script") && !home.contains("<style"),
        "{home}"
    );
    let css = get(s, "/style.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    // the request target: 2048 bytes at most
    let long = get(s, &format!("/?q={}", "a".repeat(2100)));
    assert_eq!(long.status, 414);
    assert!(long.text().contains("at most 2048"), "{}", long.text());
    let long = get(s, &format!("/api/search?q={}", "a".repeat(2100)));
    assert_eq!(long.status, 414);
    let j: serde_json::Value = serde_json::from_slice(&long.body).unwrap();
    assert!(
        j["error"].as_str().unwrap().contains("request target"),
        "{j}"
    );

    // methods other than GET / HEAD, and request bodies
    let host = s.addr;
    let (st, text) = raw(
        host,
        &format!("POST /api/search?q=chest HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"),
    );
    assert_eq!(st, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    for m in ["PUT", "DELETE", "OPTIONS", "TRACE"] {
        let (st, _) = raw(
            host,
            &format!("{m} / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(st, 405, "{m}");
    }
    let (st, text) = raw(
        host,
        &format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(st, 413, "{text}");
    let (st, _) = raw(
        host,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"),
    );
    assert_eq!(st, 413);
    let (st, _) = raw(
        host,
        &format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(st, 200);

    // binding: loopback only, unless asked
    assert!(check_bind("127.0.0.1:8080".parse().unwrap(), false).is_ok());
    assert!(check_bind("[::1]:8080".parse().unwrap(), false).is_ok());
    let e = check_bind("0.0.0.0:8080".parse().unwrap(), false).unwrap_err();
    assert!(format!("{e:#}").contains("--public"), "{e:#}");
    assert!(check_bind("0.0.0.0:8080".parse().unwrap(), true).is_ok());
}

#[test]
fn a_full_or_slow_server_answers_503() {
    // no slot free: every request is refused at once, with Retry-After
    let Some(busy) = start(ServeConfig {
        max_in_flight: 0,
        ..ServeConfig::default()
    }) else {
        return;
    };
    let r = get(&busy, "/?q=chest");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("the server is busy"), "{}", r.text());
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // no time at all: a search cannot finish in it
    let Some(slow) = start(ServeConfig {
        request_timeout: Duration::ZERO,
        ..ServeConfig::default()
    }) else {
        return;
    };
    let r = get(&slow, "/api/search?q=chest&k=2");
    assert_eq!(r.status, 503);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        j["error"].as_str().unwrap().contains("took longer than"),
        "{j}"
    );
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
    eprintln!("skipped: headless browser test (no chromium; `apt-get install -y chromium`)");
    None
}

/// Headless Chromium as root in a container: no sandbox, no GPU, no /dev/shm.
const CHROMIUM_FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

/// Run chromium headless with `args`, killing it after `secs`.
fn run_chromium(bin: &str, profile: &std::path::Path, args: &[String], secs: u64) -> Vec<u8> {
    let mut child = std::process::Command::new(bin)
        .args(CHROMIUM_FLAGS)
        .arg("--virtual-time-budget=10000")
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
    let Some(bin) = chromium() else { return };
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

/// A DevTools-protocol client over the browser's WebSocket, attached to one page (flat session).
struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
    session: Option<String>,
    child: std::process::Child,
}

impl Cdp {
    /// Start headless Chromium with remote debugging on a free port and open one blank page.
    fn start(bin: &str, profile: &std::path::Path, (w, h): (u32, u32)) -> Cdp {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(CHROMIUM_FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={w},{h}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed no DevTools address within 60 s");
        let (ws, _) = tungstenite::connect(url.as_str()).expect("connecting to DevTools");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        let mut cdp = Cdp {
            ws,
            next: 0,
            session: None,
            child,
        };
        let target = cdp.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let id = target["targetId"].as_str().unwrap().to_string();
        let att = cdp.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": id, "flatten": true}),
        );
        cdp.session = Some(att["sessionId"].as_str().unwrap().to_string());
        // the window includes browser chrome: fix the page's viewport itself
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false}),
        );
        cdp
    }

    /// Send a command (to the page session when attached) and wait for its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let mut msg = serde_json::json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = serde_json::json!(s);
        }
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("sending a DevTools command");
        loop {
            let m = self.ws.read().expect("reading from DevTools");
            let Ok(text) = m.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == self.next {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Poll `expr` until it is true (or panic after `secs`).
    fn wait_for(&mut self, expr: &str, secs: u64) {
        let start = std::time::Instant::now();
        while self.eval(expr) != serde_json::json!(true) {
            assert!(
                start.elapsed().as_secs() < secs,
                "`{expr}` not true after {secs} s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A key press through the browser's input pipeline (`text` inserts characters).
    fn key(&mut self, key: &str, text: Option<&str>, code: i64) {
        let mut down = serde_json::json!({"type": "keyDown", "key": key,
            "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code});
        if let Some(t) = text {
            down["text"] = serde_json::json!(t);
            down["unmodifiedText"] = serde_json::json!(t);
        }
        self.call("Input.dispatchKeyEvent", down);
        self.call(
            "Input.dispatchKeyEvent",
            serde_json::json!({"type": "keyUp", "key": key,
                "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code}),
        );
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user's path through the GUI in a real browser: open the start page, click into the search
/// box, type a query key by key, press Enter, and see result images (screenshot checked).
#[test]
fn chromium_user_types_a_query_and_sees_results() {
    let Some(s) = server() else { return };
    let Some(bin) = chromium() else { return };
    let profile = tempfile::tempdir().unwrap();
    let (w, h) = (1000u32, 800u32);
    let mut cdp = Cdp::start(&bin, profile.path(), (w, h));
    cdp.call(
        "Page.navigate",
        serde_json::json!({"url": format!("http://{}/", s.addr)}),
    );
    cdp.wait_for(
        "document.readyState === 'complete' && !!document.getElementById('q')",
        60,
    );
    assert_eq!(cdp.eval("document.querySelectorAll('.result').length"), 0);
    cdp.eval("document.getElementById('q').focus()");
    let query = "X-ray of the chest";
    for c in query.chars() {
        let t = c.to_string();
        cdp.key(&t, Some(&t), c.to_ascii_uppercase() as i64);
    }
    assert_eq!(cdp.eval("document.getElementById('q').value"), query);
    cdp.key("Enter", Some("\r"), 13);
    // the form submits: a results page for the typed query with images that finished loading
    cdp.wait_for(
        "location.search.includes('q=X-ray') && document.readyState === 'complete' && \
         document.querySelectorAll('.result').length > 0 && \
         [...document.images].every(i => i.complete && i.naturalWidth > 0)",
        60,
    );
    let n = cdp.eval("document.querySelectorAll('.result').length");
    assert!(n.as_u64().unwrap() >= 4, "{n} results");
    assert_eq!(cdp.eval("document.getElementById('q').value"), query);
    let shot = cdp.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
    );
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("claires-gui-typed.png");
    std::fs::write(&path, &png).unwrap();
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (w, h));
    let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 3);
    let seen = common::COLOURS
        .iter()
        .filter(|c| img.pixels().filter(|p| near(p.0, **c)).count() > 500)
        .count();
    eprintln!(
        "typed-query screenshot {}: {seen} of 8 fixture colours visible",
        path.display()
    );
    assert!(
        seen >= 4,
        "only {seen} result images visible after typing the query"
    );
}

/// Script and attribute injection through every place a user's string reaches a page (the
/// search box's value, the results summary, the title, error messages naming a path), loaded in
/// a real browser: no script runs, no element or handler is injected, and the search box shows
/// the payload as typed.
#[test]
fn chromium_runs_no_injected_script() {
    let Some(s) = server() else { return };
    let Some(bin) = chromium() else { return };
    let profile = tempfile::tempdir().unwrap();
    let mut cdp = Cdp::start(&bin, profile.path(), (800, 600));
    let queries = [
        "<script>window.__xss=1</script>",
        "\"><img src=x onerror=\"window.__xss=2\">",
        "' autofocus onfocus='window.__xss=3",
        "</title><script>window.__xss=4</script>",
        "\" style=\"background:url(javascript:window.__xss=5)",
        "<svg onload=window.__xss=6>",
    ];
    let mut urls: Vec<(String, Option<&str>)> = queries
        .iter()
        .map(|q| (format!("/?q={}", url_encode(q)), Some(*q)))
        .collect();
    for path in [
        "/item/%3Cscript%3Ewindow.__xss=7%3C%2Fscript%3E",
        "/%3Cimg%20src=x%20onerror=window.__xss=8%3E",
        "/api/item/%3Cscript%3Ewindow.__xss=9%3C%2Fscript%3E",
    ] {
        urls.push((path.to_string(), None));
    }
    for (path, query) in &urls {
        cdp.call(
            "Page.navigate",
            serde_json::json!({"url": format!("http://{}{path}", s.addr)}),
        );
        cdp.wait_for("document.readyState === 'complete'", 60);
        // give an injected handler (onerror of a broken image, autofocus) time to fire
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            cdp.eval("typeof window.__xss"),
            "undefined",
            "{path}: a script ran"
        );
        assert_eq!(cdp.eval("document.scripts.length"), 0, "{path}");
        let handlers = cdp.eval(
            "[...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => \
             a.name.startsWith('on') || a.name === 'style' || \
             (['href', 'src', 'action', 'formaction'].includes(a.name) && \
             /javascript:/i.test(a.value)))).length",
        );
        assert_eq!(
            handlers, 0,
            "{path}: an element carries an injected handler"
        );
        assert_eq!(
            cdp.eval("document.querySelectorAll('svg').length"),
            0,
            "{path}"
        );
        if let Some(q) = query {
            assert_eq!(cdp.eval("document.getElementById('q').value"), *q, "{path}");
        }
    }
}
