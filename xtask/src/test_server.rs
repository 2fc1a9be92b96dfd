//! A tiny HTTP/1.1 server on 127.0.0.1 for the download tests (unit tests in
//! `download_tests.rs` and the CLI tests in `tests/download_cli.rs`). It serves files from a map,
//! optionally honours `Range: bytes=N-`, can cut transfers half-way, and logs every request. It
//! accepts connections until its owner drops it or a 60 s deadline passes: it always stops by
//! itself.
#![allow(dead_code)] // each test crate uses a different part of it

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Honour `Range: bytes=N-` with 206 responses; otherwise always answer 200 with everything.
    pub ranges: bool,
    /// Cut the connection half-way through the body of the first response for each path.
    pub cut_first: bool,
    /// Cut every response half-way (a link that never completes a transfer).
    pub cut_always: bool,
    /// Pause this long after every 64 KiB of body (a slow link; zero: none).
    pub chunk_delay: Duration,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes actually sent.
    pub sent: usize,
}

pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(files: HashMap<String, Vec<u8>>, behaviour: Behaviour) -> Server {
        Self::start_for(files, behaviour, Duration::from_secs(60))
    }

    /// [`Server::start`] with another deadline (the fresh-clone check builds for minutes
    /// before its first download).
    pub fn start_for(
        files: HashMap<String, Vec<u8>>,
        behaviour: Behaviour,
        deadline: Duration,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + deadline;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &files, behaviour, &log2),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            base,
            log,
            stop,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, encode(path))
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(
    stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    behaviour: Behaviour,
    log: &Mutex<Vec<Request>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut range = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = percent_decode(
        first
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/'),
    );
    let mut out = stream;
    let previous = log
        .lock()
        .expect("log")
        .iter()
        .filter(|r| r.path == path)
        .count();
    let Some(body) = files.get(&path) else {
        // Logged before answering: a client that has its answer must find its request logged.
        log.lock().expect("log").push(Request {
            path,
            range,
            status: 404,
            sent: 0,
        });
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let start = range
        .as_deref()
        .filter(|_| behaviour.ranges)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let (status, head, slice) = match start {
        Some(s) if s < body.len() => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{}\r\nConnection: close\r\n\r\n",
                body.len() - s,
                body.len() - 1,
                body.len()
            ),
            &body[s..],
        ),
        Some(_) => (
            416,
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body[..0],
        ),
        None => (
            200,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body[..],
        ),
    };
    let cut = behaviour.cut_always || (behaviour.cut_first && previous == 0);
    let send = if cut { slice.len() / 2 } else { slice.len() };
    // Logged before answering (see the 404 case).
    log.lock().expect("log").push(Request {
        path,
        range,
        status,
        sent: send,
    });
    let _ = out.write_all(head.as_bytes());
    if behaviour.chunk_delay.is_zero() {
        let _ = out.write_all(&slice[..send]);
    } else {
        for chunk in slice[..send].chunks(64 << 10) {
            if out.write_all(chunk).is_err() {
                break;
            }
            std::thread::sleep(behaviour.chunk_delay);
        }
    }
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}

/// Percent-encode a path like the downloader does (kept separate so the server does not depend
/// on the code under test).
pub fn encode(p: &str) -> String {
    p.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
