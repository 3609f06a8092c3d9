//! An incremental parser of server-sent events, as both chat APIs stream them.
//!
//! Bytes go in as they arrive, split anywhere (even inside a UTF-8 character or a CRLF);
//! complete events come out. Only `event:` and `data:` matter here; comments (`:` lines, the
//! keep-alives some servers send) and other fields are ignored.
//!
//! Invariant: the events are the same however the input is split, and a line longer than
//! [`MAX_LINE`] is an error instead of unbounded memory.

/// Longest line accepted (a whole JSON chunk fits on one line).
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty for the default ("message").
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("a server-sent event line is longer than {MAX_LINE} bytes; the stream is not SSE")]
    LineTooLong,
}

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous byte was a CR, so a following LF ends nothing.
    after_cr: bool,
    name: String,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Feed bytes; the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(events)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            // A blank line dispatches.
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            return std::mem::take(&mut self.has_data).then_some(Event { name, data });
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.name = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STREAM: &str = concat!(
        ": keep-alive\r\n\r\n",
        "data: {\"a\":1}\n\n",
        "event: message_start\ndata: {\"b\":\"é\"}\n\n",
        "data: line one\ndata: line two\r\n\r\n",
        "data: [DONE]\n\n",
    );

    fn all(parts: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        parts.iter().flat_map(|b| p.push(b).unwrap()).collect()
    }

    #[test]
    fn events_fields_and_comments() {
        let events = all(&[STREAM.as_bytes()]);
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["{\"a\":1}", "{\"b\":\"é\"}", "line one\nline two", "[DONE]"]);
        assert_eq!(events[1].name, "message_start");
        assert_eq!(events[2].name, "", "the event name does not carry over");
    }

    #[test]
    fn an_endless_line_is_an_error() {
        let mut p = Parser::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let result = (0..5).try_for_each(|_| p.push(&chunk).map(drop));
        assert_eq!(result, Err(SseError::LineTooLong));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(cuts in prop::collection::vec(0..STREAM.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = STREAM.as_bytes();
            let mut parts = Vec::new();
            let mut at = 0;
            for c in cuts {
                parts.push(&bytes[at..c]);
                at = c;
            }
            parts.push(&bytes[at..]);
            prop_assert_eq!(all(&parts), all(&[bytes]));
        }
    }
}
