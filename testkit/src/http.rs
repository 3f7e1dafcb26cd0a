//! A real local HTTP server that plays an outside service in tests (CKAN, Mixpanel, GA, a file
//! host, a webhook): it records every request and answers as the test scripts it (a status, a
//! body, headers, a delay, a slow trickle), per path.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as a form (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Vec<(String, String)> {
        parse_pairs(&self.text())
    }
}

/// How the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    trickle: Option<(usize, Duration)>,
    declared_length: Option<usize>,
    chunked: bool,
}

impl Reply {
    /// A reply with a status and an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            trickle: None,
            declared_length: None,
            chunked: false,
        }
    }

    /// 200 with a JSON body.
    pub fn json(value: Value) -> Self {
        Reply::status(200)
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    /// 200 with bytes.
    pub fn bytes(body: impl Into<Vec<u8>>) -> Self {
        Reply::status(200).body(body.into())
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Waits this long before answering (a stalled service).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sends the body `chunk` bytes at a time, pausing `pause` between chunks (a slow download).
    pub fn trickle(mut self, chunk: usize, pause: Duration) -> Self {
        self.trickle = Some((chunk.max(1), pause));
        self
    }

    /// Announces this Content-Length whatever the body is (a lying or huge server).
    pub fn declared_length(mut self, length: usize) -> Self {
        self.declared_length = Some(length);
        self
    }

    /// Sends the body chunked, without a Content-Length (a stream of unknown size).
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

#[derive(Default)]
struct Script {
    once: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
}

/// A running fake service on 127.0.0.1.
pub struct FakeServer {
    addr: std::net::SocketAddr,
    server: Arc<tiny_http::Server>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server on a free port. Unscripted paths answer 200 `{"success": true}`.
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind fake server"));
        let addr = server.server_addr().to_ip().expect("ip address");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, recorded, script, stopping) = (
                server.clone(),
                recorded.clone(),
                script.clone(),
                stopping.clone(),
            );
            std::thread::spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                        continue;
                    };
                    let (recorded, script) = (recorded.clone(), script.clone());
                    std::thread::spawn(move || handle(request, &recorded, &script));
                }
            })
        };
        FakeServer {
            addr,
            server,
            recorded,
            script,
            stopping,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers every request to `path` with `reply` (after any one-shot replies).
    pub fn reply(&self, path: &str, reply: Reply) {
        self.script
            .lock()
            .expect("script")
            .always
            .insert(path.to_string(), reply);
    }

    /// Answers the next request to `path` with `reply`; several calls queue up in order.
    pub fn reply_once(&self, path: &str, reply: Reply) {
        self.script
            .lock()
            .expect("script")
            .once
            .entry(path.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }

    /// Requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `path` got at least `n` requests; returns them.
    pub fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Recorded> {
        crate::eventually(&format!("{n} requests to {path}"), timeout, || {
            let got = self.requests_to(path);
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn handle(
    mut request: tiny_http::Request,
    recorded: &Mutex<Vec<Recorded>>,
    script: &Mutex<Script>,
) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let url = request.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_pairs(q)),
        None => (url.clone(), Vec::new()),
    };
    let headers = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    recorded.lock().expect("recorded").push(Recorded {
        method: request.method().as_str().to_string(),
        path: path.clone(),
        query,
        headers,
        body,
    });
    let reply = {
        let mut script = script.lock().expect("script");
        script
            .once
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| script.always.get(&path).cloned())
            .unwrap_or_else(|| Reply::json(serde_json::json!({"success": true})))
    };
    if !reply.delay.is_zero() {
        std::thread::sleep(reply.delay);
    }
    let headers: Vec<tiny_http::Header> = reply
        .headers
        .iter()
        .filter_map(|(k, v)| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok())
        .collect();
    let length = if reply.chunked {
        None
    } else {
        reply.declared_length.or(Some(reply.body.len()))
    };
    let reader: Box<dyn Read + Send> = match reply.trickle {
        Some((chunk, pause)) => Box::new(Trickle {
            data: reply.body,
            pos: 0,
            chunk,
            pause,
        }),
        None => Box::new(std::io::Cursor::new(reply.body)),
    };
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(reply.status),
        headers,
        reader,
        length,
        None,
    );
    // tiny_http switches to chunked encoding (dropping Content-Length) from 32 KB on; keep the
    // length the reply announces unless it asked for chunks.
    let response = if reply.chunked {
        response
    } else {
        response.with_chunked_threshold(usize::MAX)
    };
    let _ = request.respond(response);
}

struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    pause: Duration,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        if self.pos > 0 {
            std::thread::sleep(self.pause);
        }
        let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Parses `a=1&b=two%20words` (also `+` for spaces).
pub fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_pairs() {
        assert_eq!(
            parse_pairs("a=1&b=two%20words&c=x+y&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two words".into()),
                ("c".into(), "x y".into()),
                ("d".into(), "".into())
            ]
        );
    }
}
