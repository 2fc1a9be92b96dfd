//! `claires serve`: an axum web app over an index.
//!
//! * `GET /` (`?q=<query>&k=<n>`): search box; results as an image grid with score and fields;
//! * `GET /item/{i}`: detail view (image, fields, sentence, similar images);
//! * `GET /eval`: the evaluation metrics of the run (`report.json`), with mode and pool;
//! * `GET /img/{i}`: the bytes of indexed image `i` — images are served **only** by their
//!   position in the index, never by a path, so nothing outside the indexed set is reachable;
//! * JSON API: `GET /api/search?q=&k=`, `GET /api/similar/{i}?k=`, `GET /api/item/{i}`,
//!   `GET /api/eval`.
//!
//! Queries are limited to [`ServeConfig::max_query_chars`] characters and `k` to
//! [`ServeConfig::max_k`]; errors come back as a readable message (HTML page or
//! `{"error": …}`), never as a stack trace. The tch model is not `Sync`: it sits behind a
//! `Mutex`, and the searches run on tokio's blocking pool.
//!
//! Every request passes [`guard`] first: only `GET` / `HEAD` (else 405), a request line of at
//! most [`ServeConfig::max_uri_bytes`] (else 414), no request body beyond
//! [`ServeConfig::max_body_bytes`] (else 413), at most [`ServeConfig::max_in_flight`] requests
//! at once (else 503 with `Retry-After`), and an answer within
//! [`ServeConfig::request_timeout`] (else 503). Every response carries a Content-Security-Policy
//! that allows no script at all (the pages have none; the style sheet is `/style.css`, not
//! inline), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer`. `claires serve` binds 127.0.0.1 unless `--public` allows
//! another address ([`check_bind`]).

use crate::index::{Hit, Index, IndexMeta};
use crate::model::Claires;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub max_query_chars: usize,
    pub max_k: usize,
    pub default_k: usize,
    /// Longest request target (path and query) in bytes.
    pub max_uri_bytes: usize,
    /// Largest request body (every route is a `GET`: none is read).
    pub max_body_bytes: u64,
    /// Requests handled at once; more are answered 503 at once.
    pub max_in_flight: usize,
    /// Longest time a request may take (a search left running when it passes finishes in the
    /// background, holding the engine, so the next one waits for it).
    pub request_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_query_chars: 200,
            max_k: 50,
            default_k: 12,
            max_uri_bytes: 2048,
            max_body_bytes: 1024,
            max_in_flight: 64,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The policy of every response: nothing but this server's images, style sheet and form
/// target; no script, no plugin, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; img-src 'self'; style-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Refuse to listen anywhere but on the loopback interface unless `public` (the search server
/// has no authentication: on another interface anyone who reaches it can search the index).
pub fn check_bind(addr: std::net::SocketAddr, public: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || public {
        return Ok(());
    }
    anyhow::bail!(
        "{addr} is not a loopback address: the server has no authentication, so anyone who \
         can reach {} could search the index and read its images. Pass --public to serve there \
         anyway, or use 127.0.0.1",
        addr.ip()
    )
}

/// The tch side (not `Sync`): used under the state's mutex.
pub struct Engine {
    pub model: Claires,
    pub index: Index,
}

pub struct AppState {
    /// The indexed records (a copy of the index's metadata, readable without the lock).
    pub meta: IndexMeta,
    pub engine: Mutex<Engine>,
    /// The run's `report.json`, if any.
    pub report: Option<serde_json::Value>,
    pub cfg: ServeConfig,
    /// One permit per request in flight ([`ServeConfig::max_in_flight`]).
    slots: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(
        model: Claires,
        index: Index,
        report: Option<serde_json::Value>,
        cfg: ServeConfig,
    ) -> Self {
        Self {
            meta: index.meta.clone(),
            engine: Mutex::new(Engine { model, index }),
            report,
            slots: tokio::sync::Semaphore::new(cfg.max_in_flight),
            cfg,
        }
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Engine>> {
        self.engine.lock().map_err(|_| {
            anyhow::anyhow!("the search engine is unavailable (a previous search failed)")
        })
    }
}

/// A user-facing error: status + message.
#[derive(Debug)]
pub struct AppError(StatusCode, String);

fn bad(msg: impl Into<String>) -> AppError {
    AppError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> AppError {
    AppError(StatusCode::NOT_FOUND, msg.into())
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        // the chain of contexts, one line, no backtrace
        AppError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

/// JSON errors for the API.
struct ApiError(AppError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0 .0, Json(serde_json::json!({"error": self.0 .1}))).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = page(
            "Error",
            "",
            &format!(
                "<div class=\"error\"><b>Error {}</b>: {}</div><p><a href=\"/\">back to search</a></p>",
                self.0.as_u16(),
                esc(&self.1)
            ),
        );
        (self.0, Html(body)).into_response()
    }
}

/// HTML-escape.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Percent-encode a query-string value (spaces as `+`).
pub fn url_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;background:#fafafa;color:#222}\
header a{margin-right:1em}form{margin:1em 0}input[type=text]{width:32em;font-size:1.1em;padding:.3em}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}\
.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:6px;font-size:.85em}\
.card img{width:100%;height:170px;object-fit:contain;background:#000}\
.score{font-weight:bold;color:#064}.error{background:#fee;border:1px solid #c33;padding:.8em;color:#900}\
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}\
.detail img{max-width:480px;max-height:480px;background:#000}";

fn page(title: &str, query: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>CLAIRES – {t}</title>\
         <link rel=\"stylesheet\" href=\"/style.css\"></head><body><header><b>CLAIRES</b> contrastive language–image \
         retrieval · <a href=\"/\">search</a><a href=\"/eval\">evaluation</a></header>\
         <form action=\"/\" method=\"get\"><input type=\"text\" id=\"q\" name=\"q\" value=\"{q}\" \
         maxlength=\"{max}\" placeholder=\"e.g. MRI of the head, findings: mass\" autofocus> \
         <button type=\"submit\" id=\"go\">Search</button></form>{body}</body></html>",
        t = esc(title),
        q = esc(query),
        max = ServeConfig::default().max_query_chars,
    )
}

fn fields_html(st: &AppState, i: usize) -> String {
    let r = &st.meta.records[i];
    let mut s = String::new();
    for (n, v) in r.fields.present() {
        s.push_str(&format!("<div>{}: {}</div>", esc(n), esc(v)));
    }
    s
}

fn grid(st: &AppState, hits: &[Hit]) -> String {
    let mut s = String::from("<div class=\"grid\" id=\"results\">");
    for (rank, h) in hits.iter().enumerate() {
        let r = &st.meta.records[h.index];
        s.push_str(&format!(
            "<div class=\"card\"><a href=\"/item/{i}\"><img class=\"result\" src=\"/img/{i}\" \
             alt=\"{id}\"></a><div>#{rank} <span class=\"score\">{score:.3}</span> {id}</div>{f}</div>",
            i = h.index,
            id = esc(&r.id),
            rank = rank + 1,
            score = h.score,
            f = fields_html(st, h.index)
        ));
    }
    s.push_str("</div>");
    s
}

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    pub q: Option<String>,
    pub k: Option<usize>,
}

fn check_query(st: &AppState, p: &SearchParams) -> Result<(String, usize), AppError> {
    let q = p.q.clone().unwrap_or_default();
    let q = q.trim().to_string();
    if q.is_empty() {
        return Err(bad(
            "empty query: type a description, e.g. \"CT of the abdomen\"",
        ));
    }
    let n = q.chars().count();
    if n > st.cfg.max_query_chars {
        return Err(bad(format!(
            "query too long: {n} characters (at most {})",
            st.cfg.max_query_chars
        )));
    }
    let k = p.k.unwrap_or(st.cfg.default_k);
    if k == 0 || k > st.cfg.max_k {
        return Err(bad(format!("k must be between 1 and {}", st.cfg.max_k)));
    }
    Ok((q, k))
}

async fn run_search(st: Arc<AppState>, q: String, k: usize) -> Result<Vec<Hit>, AppError> {
    tokio::task::spawn_blocking(move || {
        let e = st.lock()?;
        e.index.search_text(&e.model, &q, k)
    })
    .await
    .map_err(|e| {
        AppError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("search task failed: {e}"),
        )
    })?
    .map_err(AppError::from)
}

async fn home(
    State(st): State<Arc<AppState>>,
    Query(p): Query<SearchParams>,
) -> Result<Html<String>, AppError> {
    if p.q.is_none() {
        return Ok(Html(page(
            "search",
            "",
            &format!(
                "<p>{} indexed images. Type a description of the image you want.</p>",
                st.meta.records.len()
            ),
        )));
    }
    let (q, k) = check_query(&st, &p)?;
    let hits = run_search(Arc::clone(&st), q.clone(), k).await?;
    let body = format!(
        "<p id=\"summary\">{} results for <i>{}</i> (cosine similarity)</p>{}",
        hits.len(),
        esc(&q),
        grid(&st, &hits)
    );
    Ok(Html(page(&q, &q, &body)))
}

fn item_index(st: &AppState, i: &str) -> Result<usize, AppError> {
    let n: usize = i
        .parse()
        .map_err(|_| not_found(format!("no indexed image `{i}`")))?;
    if n >= st.meta.records.len() {
        return Err(not_found(format!("no indexed image {n}")));
    }
    Ok(n)
}

async fn item(
    State(st): State<Arc<AppState>>,
    UrlPath(i): UrlPath<String>,
) -> Result<Html<String>, AppError> {
    let i = item_index(&st, &i)?;
    let r = &st.meta.records[i];
    let similar = st.lock()?.index.search_similar(i, 8)?;
    let body = format!(
        "<div class=\"detail\"><h2>{id}</h2><img src=\"/img/{i}\" alt=\"{id}\">\
         <p><b>sentence:</b> {text}</p>{f}</div><h3>Similar images</h3>{g}",
        id = esc(&r.id),
        text = esc(&r.text()),
        f = fields_html(&st, i),
        g = grid(&st, &similar)
    );
    Ok(Html(page(&r.id, "", &body)))
}

async fn image(
    State(st): State<Arc<AppState>>,
    UrlPath(i): UrlPath<String>,
) -> Result<Response, AppError> {
    let i = item_index(&st, &i)?;
    let path = st.meta.records[i].image.clone();
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| not_found(format!("image {i} cannot be read: {e}")))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    let mime = match ext.as_str() {
        "png" => "image/png",
        _ => "image/jpeg",
    };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

fn eval_html(report: &serde_json::Value) -> String {
    let mut s = String::new();
    if let Some(rs) = report.get("results").and_then(|v| v.as_array()) {
        s.push_str("<table id=\"metrics\"><tr><th>mode</th><th>pool</th>");
        let ks: Vec<u64> = rs
            .first()
            .and_then(|r| r["metrics"]["hits"].as_array())
            .map(|h| h.iter().filter_map(|p| p[0].as_u64()).collect())
            .unwrap_or_default();
        for k in &ks {
            s.push_str(&format!("<th>hit@{k}</th>"));
        }
        s.push_str("<th>MRR</th><th>mean rank</th><th>median rank</th><th>queries</th></tr>");
        for r in rs {
            let pool = match r["pool"].as_u64() {
                Some(0) | None => format!("all {}", r["gallery"]),
                Some(p) => format!("{p} of {}", r["gallery"]),
            };
            s.push_str(&format!(
                "<tr><td>{}</td><td>{}</td>",
                esc(r["mode"].as_str().unwrap_or("?")),
                esc(&pool)
            ));
            for h in r["metrics"]["hits"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "<td>{:.3}</td>",
                    h[1].as_f64().unwrap_or(f64::NAN)
                ));
            }
            let m = &r["metrics"];
            s.push_str(&format!(
                "<td>{:.3}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
                m["mrr"].as_f64().unwrap_or(f64::NAN),
                m["mean_rank"].as_f64().unwrap_or(f64::NAN),
                m["median_rank"],
                m["queries"]
            ));
        }
        s.push_str("</table>");
    }
    s.push_str(&format!(
        "<p>data: {}<br>model: {}<br>paper (reference only, different private data): hit@3 {}, MRR {}</p>",
        esc(report["data"].as_str().unwrap_or("?")),
        esc(report["model"].as_str().unwrap_or("?")),
        report["paper"]["hit3"],
        report["paper"]["mrr"]
    ));
    s
}

async fn eval_page(State(st): State<Arc<AppState>>) -> Result<Html<String>, AppError> {
    let body = match &st.report {
        Some(r) => format!(
            "<h2>Evaluation (text → image, held-out records)</h2>\
             <p>paired: the relevant image is the query's own; label-match: any image whose \
             fields equal the query's. pool: candidates per query.</p>{}",
            eval_html(r)
        ),
        None => "<p>No evaluation report for this run (report.json missing).</p>".into(),
    };
    Ok(Html(page("evaluation", "", &body)))
}

#[derive(Serialize)]
struct ApiHit {
    rank: usize,
    index: usize,
    id: String,
    score: f32,
    sentence: String,
    fields: crate::records::Fields,
    image_url: String,
}

fn api_hits(st: &AppState, hits: &[Hit]) -> Vec<ApiHit> {
    hits.iter()
        .enumerate()
        .map(|(rank, h)| {
            let r = &st.meta.records[h.index];
            ApiHit {
                rank: rank + 1,
                index: h.index,
                id: r.id.clone(),
                score: h.score,
                sentence: r.text(),
                fields: r.fields.clone(),
                image_url: format!("/img/{}", h.index),
            }
        })
        .collect()
}

async fn api_search(
    State(st): State<Arc<AppState>>,
    Query(p): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (q, k) = check_query(&st, &p)?;
    let hits = run_search(Arc::clone(&st), q.clone(), k).await?;
    Ok(Json(
        serde_json::json!({"query": q, "k": k, "results": api_hits(&st, &hits)}),
    ))
}

async fn api_similar(
    State(st): State<Arc<AppState>>,
    UrlPath(i): UrlPath<String>,
    Query(p): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let i = item_index(&st, &i)?;
    let k = p.k.unwrap_or(st.cfg.default_k);
    if k == 0 || k > st.cfg.max_k {
        return Err(bad(format!("k must be between 1 and {}", st.cfg.max_k)).into());
    }
    let hits = st
        .lock()
        .and_then(|e| e.index.search_similar(i, k))
        .map_err(AppError::from)?;
    Ok(Json(
        serde_json::json!({"item": i, "results": api_hits(&st, &hits)}),
    ))
}

async fn api_item(
    State(st): State<Arc<AppState>>,
    UrlPath(i): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let i = item_index(&st, &i)?;
    let r = &st.meta.records[i];
    Ok(Json(serde_json::json!({
        "index": i, "id": r.id, "sentence": r.text(), "fields": r.fields, "image_url": format!("/img/{i}")
    })))
}

async fn api_eval(State(st): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    match &st.report {
        Some(r) => Ok(Json(r.clone())),
        None => Err(not_found("no evaluation report for this run").into()),
    }
}

async fn fallback() -> AppError {
    not_found("no such page")
}

/// The pages' style sheet (a file, so that the policy needs no inline style).
async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// The limits every request passes before its route (see the module docs), and the security
/// headers of every response.
pub async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let answer = |e: AppError| match api {
        true => ApiError(e).into_response(),
        false => e.into_response(),
    };
    let mut res = match admit(&st.cfg, &req) {
        Err(e) => {
            let allow = e.0 == StatusCode::METHOD_NOT_ALLOWED;
            let mut r = answer(e);
            if allow {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            r
        }
        Ok(()) => match st.slots.try_acquire() {
            Err(_) => {
                let mut r = answer(AppError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server is busy ({} requests in flight): try again",
                        st.cfg.max_in_flight
                    ),
                ));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Ok(_permit) => {
                match tokio::time::timeout(st.cfg.request_timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => answer(AppError(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the request took longer than {:.1} s",
                            st.cfg.request_timeout.as_secs_f64()
                        ),
                    )),
                }
            }
        },
    };
    security_headers(res.headers_mut());
    res
}

/// Method, request-line length and body size (from the headers: no body is ever read).
fn admit(cfg: &ServeConfig, req: &Request) -> Result<(), AppError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(AppError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} not allowed: this server only answers GET",
                req.method()
            ),
        ));
    }
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > cfg.max_uri_bytes {
        return Err(AppError(
            StatusCode::URI_TOO_LONG,
            format!(
                "request target of {target} bytes (at most {})",
                cfg.max_uri_bytes
            ),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().unwrap_or(u64::MAX));
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if chunked || declared.is_some_and(|n| n > cfg.max_body_bytes) {
        return Err(AppError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body too large (at most {} bytes)",
                cfg.max_body_bytes
            ),
        ));
    }
    Ok(())
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The router over a shared state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/item/{i}", get(item))
        .route("/img/{i}", get(image))
        .route("/eval", get(eval_page))
        .route("/api/search", get(api_search))
        .route("/api/similar/{i}", get(api_similar))
        .route("/api/item/{i}", get(api_item))
        .route("/api/eval", get(api_eval))
        .route("/style.css", get(style))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard,
        ))
        .with_state(state)
}

/// Serve on an already bound listener until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .await
        .map_err(|e| anyhow::anyhow!("server error: {e}"))
}
