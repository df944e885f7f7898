//! A server-sent events parser (the WHATWG event-stream format) over arbitrary byte chunks:
//! `event`, `id`, `data` (multi-line), `retry`, and comments, with LF, CRLF or CR line ends.
//!
//! It is fed whatever the network delivers, so a line, a field or even a CRLF pair may be split
//! across chunks; it keeps the unfinished line and the event being built between calls.

use std::time::Duration;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The event type (`message` when the stream names none).
    pub event: String,
    /// The data lines, joined by `\n`.
    pub data: String,
    /// The last event id seen on the stream so far (it persists across events).
    pub id: Option<String>,
}

/// What a chunk of input produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A complete event.
    Event(SseEvent),
    /// The server asked for this reconnection delay.
    Retry(Duration),
    /// A comment line (heartbeats): proof the connection is alive.
    Comment,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

/// The longest line kept; a longer one is a broken or hostile stream, and is cut.
const MAX_LINE: usize = 64 * 1024 * 1024;

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds bytes, returning what they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.process(&line, &mut out);
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        if self.line.len() + rest.len() <= MAX_LINE {
            self.line.extend_from_slice(rest);
        }
        out
    }

    /// The last event id the stream set, for `Last-Event-ID` on reconnection.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn process(&mut self, line: &[u8], out: &mut Vec<SseItem>) {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            // Blank line: dispatch, if anything was collected.
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if std::mem::take(&mut self.has_data) {
                let event = if event.is_empty() { "message".to_owned() } else { event };
                out.push(SseItem::Event(SseEvent { event, data, id: self.last_id.clone() }));
            }
            return;
        }
        if line.starts_with(':') {
            out.push(SseItem::Comment);
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // An id with a NUL is ignored, as the specification says.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    out.push(SseItem::Retry(Duration::from_millis(ms)));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(items: Vec<SseItem>) -> Vec<SseEvent> {
        items
            .into_iter()
            .filter_map(|i| match i {
                SseItem::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parses_named_events_with_ids_and_multi_line_data() {
        let mut p = SseParser::new();
        let got =
            events(p.feed(b"event: snapshot\nid: 7\ndata: {\"a\":\ndata: 1}\n\nevent: patch\nid: 8\ndata: x\n\n"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], SseEvent { event: "snapshot".into(), data: "{\"a\":\n1}".into(), id: Some("7".into()) });
        assert_eq!((got[1].event.as_str(), got[1].id.as_deref()), ("patch", Some("8")));
        assert_eq!(p.last_id(), Some("8"));
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_events() {
        let input = b"event: patch\r\nid: 12\r\ndata: one\r\ndata:two\r\n\r\n: heartbeat\r\n\rdata: three\r\r";
        let whole = events(SseParser::new().feed(input));
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].data, "one\ntwo");
        assert_eq!(whole[1], SseEvent { event: "message".into(), data: "three".into(), id: Some("12".into()) });
        for cut in 0..input.len() {
            let mut p = SseParser::new();
            let mut items = p.feed(&input[..cut]);
            items.extend(p.feed(&input[cut..]));
            assert_eq!(events(items), whole, "split at {cut}");
        }
        let mut p = SseParser::new();
        let items: Vec<SseItem> = input.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(events(items), whole, "byte by byte");
    }

    #[test]
    fn comments_retry_and_unknown_fields() {
        let mut p = SseParser::new();
        let items = p.feed(b": heartbeat\nretry: 2500\nretry: soon\nfoo: bar\ndata\n\n\n");
        assert_eq!(
            items,
            [
                SseItem::Comment,
                SseItem::Retry(Duration::from_millis(2500)),
                SseItem::Event(SseEvent { event: "message".into(), data: String::new(), id: None }),
            ]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_its_type_does_not_leak() {
        let mut p = SseParser::new();
        let got = events(p.feed(b"event: lonely\nid: 3\n\ndata: d\n\n"));
        assert_eq!(got, [SseEvent { event: "message".into(), data: "d".into(), id: Some("3".into()) }]);
    }
}
