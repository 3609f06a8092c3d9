//! The client against a real local server that speaks both wire formats and injects the
//! failures model servers really show: 429 with Retry-After, 500, a reset connection, a
//! slow first byte, a stall mid-stream, a stream cut before its end marker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What the server does with one request.
#[derive(Debug, Clone)]
enum Step {
    Status {
        code: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
    /// Read the request, then close the connection without a word.
    Reset,
    /// Wait before the response head.
    Slow(Duration, Vec<String>),
    /// A 200 event stream: the events, then (if set) silence for this long before closing.
    Stream(Vec<String>, Option<Duration>),
}

struct Server {
    url: String,
    /// Every request body received, as JSON, and its headers.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn server(steps: Vec<Step>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let steps = Arc::new(Mutex::new(steps.into_iter()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (steps, log) = (Arc::clone(&steps), Arc::clone(&log));
            tokio::spawn(async move { serve(socket, steps, log).await });
        }
    });
    Server { url, seen }
}

async fn serve(
    mut socket: TcpStream,
    steps: Arc<Mutex<std::vec::IntoIter<Step>>>,
    log: Arc<Mutex<Vec<(String, Value)>>>,
) {
    loop {
        // Read one request: the head, then Content-Length bytes of body.
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
        log.lock().unwrap().push((head, body));
        let step = steps.lock().unwrap().next().expect("the test scripted this request");
        let events = match step {
            Step::Reset => return,
            Step::Status { code, retry_after, body } => {
                let extra =
                    retry_after.map(|r| format!("retry-after: {r}\r\n")).unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                continue;
            }
            Step::Slow(wait, events) => {
                tokio::time::sleep(wait).await;
                (events, None)
            }
            Step::Stream(events, silence) => (events, silence),
        };
        let (events, silence) = events;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for e in events {
            let frame = format!("{:x}\r\n{e}\r\n", e.len());
            if socket.write_all(frame.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(silence) = silence {
            // A stall (or a stream cut before its end): hang, then close.
            tokio::time::sleep(silence).await;
            return;
        }
        if socket.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

fn oa(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"delta": {"content": text}, "finish_reason": null}]})
    )
}

fn oa_end(reason: &str) -> Vec<String> {
    vec![
        format!("data: {}\n\n", json!({"choices": [{"delta": {}, "finish_reason": reason}]})),
        format!(
            "data: {}\n\n",
            json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
        ),
        "data: [DONE]\n\n".into(),
    ]
}

fn ok_stream(parts: &[&str]) -> Vec<String> {
    let mut events: Vec<String> = parts.iter().map(|p| oa(p)).collect();
    events.extend(oa_end("stop"));
    events
}

fn provider(url: &str, kind: Kind) -> Provider {
    Provider {
        name: "test-server".into(),
        kind,
        base_url: url.into(),
        model: "tiny-1".into(),
        api_key: Some("sk-secret-value".into()),
        headers: [("x-extra".to_owned(), "1".to_owned())].into(),
        json: JsonMode::Schema,
        degrade_json: true,
    }
}

/// Short enough for fault tests, long enough that a busy 2-core machine does not
/// make a good stream look stalled (client and server share one thread).
fn fast() -> Deadlines {
    Deadlines {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(1),
        stall: Duration::from_secs(1),
        total: Duration::from_secs(20),
    }
}

fn request() -> Request {
    Request { max_tokens: 64, ..Request::new("You write HTML.", "A bakery.") }
}

#[tokio::test]
async fn a_stream_is_assembled_with_its_usage() {
    let s = server(vec![Step::Stream(ok_stream(&["<h1>", "Rosie", "</h1>"]), None)]).await;
    let client = Client::new(fast()).unwrap();
    let mut streamed = Vec::new();
    let reply = client
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |t| streamed.push(t.to_owned()))
        .await
        .unwrap();
    assert_eq!(reply.text, "<h1>Rosie</h1>");
    assert_eq!(streamed, ["<h1>", "Rosie", "</h1>"]);
    assert_eq!(
        (reply.finish, reply.tokens_in, reply.tokens_out, reply.attempts),
        (Finish::Stop, 11, 3, 1)
    );
    let seen = s.seen.lock().unwrap();
    let (head, body) = &seen[0];
    assert!(head.starts_with("post /v1/chat/completions "), "{head}");
    assert!(head.contains("authorization: bearer sk-secret-value") && head.contains("x-extra: 1"));
    assert_eq!(body["model"], "tiny-1");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][1]["content"], "A bakery.");
}

#[tokio::test]
async fn what_may_pass_is_retried_until_it_does() {
    let s = server(vec![
        Step::Status {
            code: 429,
            retry_after: Some("0"),
            body: r#"{"error":{"message":"slow down"}}"#,
        },
        Step::Status { code: 503, retry_after: Some("0"), body: "busy" },
        Step::Reset,
        Step::Stream(ok_stream(&["ok"]), None),
    ])
    .await;
    let reply = Client::new(fast())
        .unwrap()
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |_| {})
        .await
        .unwrap();
    assert_eq!((reply.text.as_str(), reply.attempts), ("ok", 4));
    assert_eq!(s.seen.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn retries_are_bounded() {
    let fail = Step::Status { code: 500, retry_after: Some("0"), body: "{}" };
    let s = server(vec![fail; 10]).await;
    let err = Client::new(fast())
        .unwrap()
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Exhausted { attempts: 4, .. }), "{err}");
    assert_eq!(s.seen.lock().unwrap().len(), 1 + retry::MAX_RETRIES as usize);
}

#[tokio::test]
async fn a_refusal_is_not_retried_and_says_what_to_check() {
    let body = r#"{"error":{"message":"Incorrect API key provided"}}"#;
    let s = server(vec![Step::Status { code: 401, retry_after: None, body }]).await;
    let err = Client::new(fast())
        .unwrap()
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |_| {})
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("test-server (tiny-1)") && message.contains("HTTP 401"), "{message}");
    assert!(message.contains("Incorrect API key") && message.contains("api_key_env"), "{message}");
    assert!(!message.contains("sk-secret-value"));
    assert!(!format!("{:?}", provider(&s.url, Kind::OpenAi)).contains("sk-secret-value"));
    assert_eq!(s.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_first_byte_a_stall_and_a_cut_stream_are_retried() {
    let stalled = vec![oa("half")];
    let s = server(vec![
        Step::Slow(Duration::from_millis(2500), ok_stream(&["late"])),
        Step::Stream(stalled, Some(Duration::from_secs(3))),
        Step::Stream(vec![oa("cut")], Some(Duration::ZERO)),
        Step::Stream(ok_stream(&["whole"]), None),
    ])
    .await;
    let mut streamed = String::new();
    let reply = Client::new(fast())
        .unwrap()
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |t| streamed.push_str(t))
        .await
        .unwrap();
    assert_eq!((reply.text.as_str(), reply.attempts), ("whole", 4));
    // What streamed before a failure was shown, but is not part of the reply.
    assert!(streamed.ends_with("whole"), "{streamed}");
}

#[tokio::test]
async fn a_reply_cut_at_max_tokens_says_so() {
    let mut events = vec![oa("<main>")];
    events.extend(oa_end("length"));
    let s = server(vec![Step::Stream(events, None)]).await;
    let reply = Client::new(fast())
        .unwrap()
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |_| {})
        .await
        .unwrap();
    assert_eq!(reply.finish, Finish::Length);
}

#[tokio::test]
async fn the_anthropic_format() {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let events = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 21}}}),
        ),
        ": ping\n\n".into(),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hallo "}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Welt"}}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let s = server(vec![Step::Stream(events, None)]).await;
    let reply = Client::new(fast())
        .unwrap()
        .chat(&provider(&s.url, Kind::Anthropic), &request(), |_| {})
        .await
        .unwrap();
    assert_eq!(reply.text, "Hallo Welt");
    assert_eq!((reply.finish, reply.tokens_in, reply.tokens_out), (Finish::Stop, 21, 4));
    let seen = s.seen.lock().unwrap();
    let (head, body) = &seen[0];
    assert!(head.starts_with("post /v1/messages ") && head.contains("x-api-key: sk-secret-value"));
    assert!(head.contains("anthropic-version: 2023-06-01"), "{head}");
    assert_eq!(body["system"], "You write HTML.");
}

#[tokio::test]
async fn the_whole_call_has_a_deadline() {
    let slow = Step::Slow(Duration::from_secs(5), ok_stream(&["never"]));
    let s = server(vec![slow; 10]).await;
    let deadlines = Deadlines { total: Duration::from_millis(1500), ..fast() };
    let err = Client::new(deadlines)
        .unwrap()
        .chat(&provider(&s.url, Kind::OpenAi), &request(), |_| {})
        .await
        .unwrap_err();
    // Without the deadline, the server's answer after 5 s would be a valid reply.
    assert!(matches!(err, LlmError::Deadline { .. }), "{err}");
}

#[tokio::test]
async fn json_is_asked_for_in_the_providers_mode_and_a_refusal_is_reported_at_once() {
    let schema = json!({"type": "object", "required": ["name"]});
    let refuse = Step::Status { code: 500, retry_after: None, body: "unsupported response_format" };
    let s = server(vec![refuse, Step::Stream(ok_stream(&["{}"]), None)]).await;
    let client = Client::new(fast()).unwrap();
    let mut r = request();
    r.schema = Some(schema.clone());
    let err = client.chat(&provider(&s.url, Kind::OpenAi), &r, |_| {}).await.unwrap_err();
    assert!(matches!(err, LlmError::JsonRefused { status: 500, .. }), "{err}");
    assert_eq!(s.seen.lock().unwrap().len(), 1, "a refused format is not retried as is");
    let mut p = provider(&s.url, Kind::OpenAi);
    p.json = JsonMode::Object;
    client.chat(&p, &r, |_| {}).await.unwrap();
    let seen = s.seen.lock().unwrap();
    assert_eq!(seen[0].1["response_format"]["type"], "json_schema");
    assert_eq!(seen[0].1["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(seen[1].1["response_format"], json!({"type": "json_object", "schema": schema}));
}

#[tokio::test]
async fn a_conversation_is_sent_turn_by_turn() {
    let s = server(vec![
        Step::Stream(ok_stream(&["go on"]), None),
        Step::Stream(anthropic_ok("fine"), None),
    ])
    .await;
    let client = Client::new(fast()).unwrap();
    let mut r = request();
    r.messages.push(Message::assistant("<p>half"));
    r.messages.push(Message::user("continue"));
    r.schema = Some(json!({"type": "object"}));
    client.chat(&provider(&s.url, Kind::OpenAi), &r, |_| {}).await.unwrap();
    client.chat(&provider(&s.url, Kind::Anthropic), &r, |_| {}).await.unwrap();
    let seen = s.seen.lock().unwrap();
    let roles = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().into())
            .collect()
    };
    assert_eq!(roles(&seen[0].1), ["system", "user", "assistant", "user"]);
    assert_eq!(roles(&seen[1].1), ["user", "assistant", "user"]);
    assert_eq!(seen[1].1["system"], "You write HTML.");
    assert!(seen[1].1.get("response_format").is_none(), "Anthropic has no response_format");
}

fn anthropic_ok(text: &str) -> Vec<String> {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    vec![
        ev("content_block_delta", json!({"type": "content_block_delta", "delta": {"text": text}})),
        ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}})),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

fn chain(urls: &[&str]) -> Chain {
    let providers = urls
        .iter()
        .enumerate()
        .map(|(i, u)| Provider { name: format!("p{i}"), ..provider(u, Kind::OpenAi) })
        .collect();
    Chain::new(Client::new(fast()).unwrap(), providers, || {
        retry::Breaker::new(1, Duration::from_secs(60))
    })
}

#[tokio::test]
async fn the_chain_falls_back_before_output_and_skips_a_failing_provider() {
    let bad = server(vec![Step::Status { code: 401, retry_after: None, body: "{}" }; 3]).await;
    let good = server(vec![Step::Stream(ok_stream(&["ok"]), None); 3]).await;
    let c = chain(&[&bad.url, &good.url]);
    let a = c.chat(&request(), |_| {}).await.unwrap();
    assert_eq!((a.provider.as_str(), a.reply.text.as_str()), ("p1", "ok"));
    assert_eq!(a.skipped.len(), 1);
    assert!(
        a.skipped[0].contains("p0 (tiny-1)") && a.skipped[0].contains("401"),
        "{:?}",
        a.skipped
    );
    // The breaker (threshold 1) now skips p0 without a request.
    let a = c.chat(&request(), |_| {}).await.unwrap();
    assert!(a.skipped.is_empty());
    assert_eq!(bad.seen.lock().unwrap().len(), 1);
    assert_eq!(good.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_chain_never_switches_after_text_streamed() {
    let mut cut = ok_stream(&["<h1>half"]);
    cut.truncate(1);
    let broken = server(vec![Step::Stream(cut, None); 4]).await;
    let good = server(vec![Step::Stream(ok_stream(&["ok"]), None)]).await;
    let c = chain(&[&broken.url, &good.url]);
    let err = c.chat(&request(), |_| {}).await.unwrap_err();
    assert!(matches!(err, ChainError::Broken { .. }), "{err}");
    assert!(good.seen.lock().unwrap().is_empty());
    // Both cooling down now? p0 is; p1 was never asked, so it answers the next call.
    let a = c.chat(&request(), |_| {}).await.unwrap();
    assert_eq!(a.provider, "p1");
}

/// Two requests with a schema through a one-provider chain answering `steps`: the
/// `response_format.type` of each request the server saw, and the provider's JSON mode after.
async fn two_schema_requests(steps: Vec<Step>) -> (Vec<Value>, JsonMode) {
    let s = server(steps).await;
    let c = chain(&[&s.url]);
    let mut r = request();
    r.schema = Some(json!({"type": "object"}));
    c.chat(&r, |_| {}).await.unwrap();
    c.chat(&r, |_| {}).await.unwrap();
    let kinds =
        s.seen.lock().unwrap().iter().map(|(_, b)| b["response_format"]["type"].clone()).collect();
    (kinds, c.providers()[0].json)
}

#[tokio::test]
async fn an_unreachable_provider_hands_over_at_once_when_another_follows() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let good = server(vec![Step::Stream(ok_stream(&["ok"]), None)]).await;
    let c = chain(&[&closed, &good.url]);
    let a = c.chat(&request(), |_| {}).await.unwrap();
    assert_eq!(a.provider, "p1");
    assert!(a.skipped[0].contains("failed 1 times"), "no retries first: {:?}", a.skipped);
    // Alone, it is retried as any network error is.
    let alone = chain(&[&closed]);
    let err = alone.chat(&request(), |_| {}).await.unwrap_err().to_string();
    assert!(err.contains("failed 4 times"), "{err}");
}

#[tokio::test]
async fn the_chain_degrades_json_once_per_provider() {
    let refuse = Step::Status { code: 500, retry_after: None, body: "json_schema not supported" };
    let (kinds, mode) = two_schema_requests(vec![
        refuse.clone(),
        refuse,
        Step::Stream(ok_stream(&["{}"]), None),
        Step::Stream(ok_stream(&["{}"]), None),
    ])
    .await;
    assert_eq!(kinds, [json!("json_schema"), json!("json_object"), Value::Null, Value::Null]);
    assert_eq!(mode, JsonMode::Off);
}

#[tokio::test]
async fn a_passing_server_error_keeps_the_json_schema() {
    // A 500 that does not name the format is retried as it is; the schema stays.
    let (kinds, mode) = two_schema_requests(vec![
        Step::Status { code: 500, retry_after: Some("0"), body: "overloaded" },
        Step::Stream(ok_stream(&["{}"]), None),
        Step::Stream(ok_stream(&["{}"]), None),
    ])
    .await;
    assert_eq!(kinds, vec![json!("json_schema"); 3]);
    assert_eq!(mode, JsonMode::Schema);
}

#[test]
fn a_missing_key_names_the_variable() {
    let config = crate::config::LlmConfig {
        providers: vec![crate::config::ProviderConfig {
            base_url: "https://api.example/v1".into(),
            model: "m".into(),
            api_key_env: "EXAMPLE_KEY".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = Chain::from_config(&config, |_| None).unwrap_err().to_string();
    assert!(err.contains("llm.providers[0].api_key_env") && err.contains("EXAMPLE_KEY"), "{err}");
    let chain = Chain::from_config(&config, |_| Some("k".into())).unwrap().unwrap();
    assert_eq!(chain.names(), ["m"]);
    assert!(Chain::from_config(&Default::default(), |_| None).unwrap().is_none());
}
