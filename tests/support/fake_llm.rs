//! A local model server for tests and benchmarks: it speaks the OpenAI
//! (`/v1/chat/completions`) or the Anthropic (`/v1/messages`) streaming format
//! over real HTTP (hyper), replays scripted replies per stage and injects the
//! failures real servers show: 429 with Retry-After, 500, a reset
//! connection, a slow first byte, a stall mid-stream, a reply cut at
//! `max_tokens`.
//!
//! The stage of a request is read from its system message ("You are the css
//! stage"). Each stage has a queue of replies; when it is empty the stage's
//! default reply repeats.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A streamed reply; `finish` is the OpenAI finish reason ("stop", "length").
    Text {
        text: String,
        finish: &'static str,
    },
    Status {
        code: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
    /// Close the connection without an answer.
    Reset,
    /// Wait this long before the response head, then answer `text`.
    SlowHead(Duration, String),
    /// Stream `text`, then stay silent for this long and close without an end marker.
    Stall(String, Duration),
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Text { text: text.into(), finish: "stop" }
    }
    pub fn cut(text: impl Into<String>) -> Reply {
        Reply::Text { text: text.into(), finish: "length" }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub stage: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub started: Instant,
    pub finished: Instant,
}

impl Seen {
    /// Every message's text, the system prompt included.
    pub fn prompt(&self) -> String {
        let mut out = self.body["system"].as_str().unwrap_or("").to_owned();
        for m in self.body["messages"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(m["content"].as_str().unwrap_or(""));
        }
        out
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

pub struct FakeLlm {
    pub url: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How the server streams: characters per event, and the wait per event.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub chars_per_token: usize,
    pub per_token: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { chars_per_token: 64, per_token: Duration::ZERO }
    }
}

impl FakeLlm {
    pub fn start(format: Format, pace: Pace) -> FakeLlm {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                url_tx
                    .send(format!("http://{}/v1", listener.local_addr().expect("address")))
                    .expect("the test waits for the address");
                let mut rx = rx;
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            // Real servers flush each event; without this, Nagle's algorithm
                            // and delayed ACKs add 40 ms stalls the benchmark would count.
                            let _ = socket.set_nodelay(true);
                            let state = Arc::clone(&shared);
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    handle(req, Arc::clone(&state), format, pace)
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let url = url_rx.recv().expect("the server starts");
        FakeLlm { url, state, shutdown: Some(tx), thread: Some(thread) }
    }

    /// The reply `stage` gets once its queue is empty.
    pub fn default_reply(&self, stage: &str, reply: Reply) -> &Self {
        self.state.lock().unwrap().defaults.insert(stage.into(), reply);
        self
    }

    /// Replies `stage` gets first, in order.
    pub fn script(&self, stage: &str, replies: Vec<Reply>) -> &Self {
        self.state.lock().unwrap().queues.entry(stage.into()).or_default().extend(replies);
        self
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn seen_for(&self, stage: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.stage == stage).collect()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A body fed by a channel: each message is one chunk on the wire.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type Resp = hyper::Response<ChannelBody>;

async fn handle(
    req: hyper::Request<Incoming>,
    state: Arc<Mutex<State>>,
    format: Format,
    pace: Pace,
) -> Result<Resp, std::io::Error> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if path.ends_with("/audio/transcriptions") {
        return transcription(&bytes, &state, path, headers, started).await;
    }
    let system = match format {
        Format::OpenAi => body["messages"][0]["content"].as_str().unwrap_or(""),
        Format::Anthropic => body["system"].as_str().unwrap_or(""),
    };
    let stage = system
        .split("You are the ")
        .nth(1)
        .and_then(|r| r.split(" stage").next())
        .unwrap_or("unknown")
        .to_owned();
    let prompt_tokens = (bytes.len() / 4) as u64;
    let reply = {
        let mut s = state.lock().unwrap();
        let next = s.queues.get_mut(&stage).and_then(VecDeque::pop_front);
        next.or_else(|| s.defaults.get(&stage).cloned()).unwrap_or(Reply::Status {
            code: 500,
            retry_after: None,
            body: "no reply scripted",
        })
    };
    // Logged on arrival, so a request whose client gave up still counts; `finished` is
    // set when the answer is complete.
    let index = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen { stage, path, headers, body, started, finished: started });
        s.seen.len() - 1
    };
    let log = Logger { state: Arc::clone(&state), index };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let response = |status: u16| {
        hyper::Response::builder().status(status).header("content-type", "text/event-stream")
    };
    match reply {
        Reply::Status { code, retry_after, body } => {
            log.done();
            let mut r =
                hyper::Response::builder().status(code).header("content-type", "application/json");
            if let Some(after) = retry_after {
                r = r.header("retry-after", after);
            }
            let _ = tx.send(Bytes::from_static(body.as_bytes())).await;
            Ok(r.body(ChannelBody(rx)).expect("a response"))
        }
        Reply::Reset => {
            log.done();
            Err(std::io::Error::other("reset by the test server"))
        }
        Reply::SlowHead(wait, text) => {
            tokio::time::sleep(wait).await;
            tokio::spawn(stream(tx, format, text, "stop", prompt_tokens, pace, None, log));
            Ok(response(200).body(ChannelBody(rx)).expect("a response"))
        }
        Reply::Stall(text, silence) => {
            tokio::spawn(stream(tx, format, text, "stop", prompt_tokens, pace, Some(silence), log));
            Ok(response(200).body(ChannelBody(rx)).expect("a response"))
        }
        Reply::Text { text, finish } => {
            tokio::spawn(stream(tx, format, text, finish, prompt_tokens, pace, None, log));
            Ok(response(200).body(ChannelBody(rx)).expect("a response"))
        }
    }
}

/// `/v1/audio/transcriptions`: the multipart body is logged as text (the audio bytes
/// lossily), and the answer is the `transcription` stage's scripted reply, as JSON.
async fn transcription(
    bytes: &[u8],
    state: &Arc<Mutex<State>>,
    path: String,
    headers: HashMap<String, String>,
    started: Instant,
) -> Result<Resp, std::io::Error> {
    let reply = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            stage: "transcription".into(),
            path,
            headers,
            body: Value::String(String::from_utf8_lossy(bytes).into_owned()),
            started,
            finished: Instant::now(),
        });
        let next = s.queues.get_mut("transcription").and_then(VecDeque::pop_front);
        next.or_else(|| s.defaults.get("transcription").cloned())
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let (status, body) = match reply {
        Some(Reply::Text { text, .. }) => (200, json!({"text": text}).to_string()),
        Some(Reply::Status { code, body, .. }) => (code, body.to_owned()),
        _ => (500, "no transcription scripted".to_owned()),
    };
    let _ = tx.send(Bytes::from(body)).await;
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(ChannelBody(rx))
        .expect("a response"))
}

/// Marks a logged request finished.
struct Logger {
    state: Arc<Mutex<State>>,
    index: usize,
}

impl Logger {
    fn done(self) {
        self.state.lock().unwrap().seen[self.index].finished = Instant::now();
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    tx: tokio::sync::mpsc::Sender<Bytes>,
    format: Format,
    text: String,
    finish: &'static str,
    prompt_tokens: u64,
    pace: Pace,
    stall: Option<Duration>,
    log: Logger,
) {
    let chars: Vec<char> = text.chars().collect();
    let tokens: Vec<String> =
        chars.chunks(pace.chars_per_token.max(1)).map(|c| c.iter().collect()).collect();
    let event = |name: &str, v: Value| match format {
        Format::OpenAi => Bytes::from(format!("data: {v}\n\n")),
        Format::Anthropic => Bytes::from(format!("event: {name}\ndata: {v}\n\n")),
    };
    if format == Format::Anthropic {
        let start =
            json!({"type": "message_start", "message": {"usage": {"input_tokens": prompt_tokens}}});
        let _ = tx.send(event("message_start", start)).await;
    }
    let total = tokens.len();
    let sent_before_stall = if stall.is_some() { total / 2 } else { total };
    for token in tokens.iter().take(sent_before_stall) {
        if !pace.per_token.is_zero() {
            tokio::time::sleep(pace.per_token).await;
        }
        let e = match format {
            Format::OpenAi => event(
                "",
                json!({"choices": [{"index": 0, "delta": {"content": token}, "finish_reason": null}]}),
            ),
            Format::Anthropic => event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}),
            ),
        };
        if tx.send(e).await.is_err() {
            log.done();
            return;
        }
    }
    if let Some(silence) = stall {
        tokio::time::sleep(silence).await;
        log.done();
        return;
    }
    let ending = match format {
        Format::OpenAi => {
            let usage = json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": total}});
            vec![
                event("", json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})),
                event("", usage),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ]
        }
        Format::Anthropic => {
            let reason = if finish == "length" { "max_tokens" } else { "end_turn" };
            let delta = json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": total}});
            vec![
                event("message_delta", delta),
                event("message_stop", json!({"type": "message_stop"})),
            ]
        }
    };
    // Stamped before the end goes out: the client may ask its next question the
    // moment it reads the end, and that request must not look earlier than this.
    log.done();
    for chunk in ending {
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// The fixtures of a model that does everything right, for the bakery example.
pub fn good_replies(server: &FakeLlm, fixtures: &std::path::Path) {
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).expect("fixture");
    server
        .default_reply("analysis", Reply::text(format!("```json\n{}\n```", read("plan.json"))))
        .default_reply(
            "html",
            Reply::text(format!(
                "Here is the page:\n\n```html\n{}```\n\nIt uses semantic landmarks.",
                read("page.html")
            )),
        )
        .default_reply("css", Reply::text(format!("```css\n{}```", read("styles.css"))))
        .default_reply("js", Reply::text(format!("```javascript\n{}```", read("script.js"))))
        .default_reply("content", Reply::text(read("polished.html")));
}
