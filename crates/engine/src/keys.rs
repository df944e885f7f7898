//! The one rule for flag and segment keys: ASCII letters, digits, `-`, `_` and `.`, 1 to 256
//! bytes, not starting or ending with `.`.
//!
//! Keys travel in URLs (OFREP's `/ofrep/v1/evaluate/flags/{key}`, the API's paths), in code, in
//! shells and in terminals. A `?`, `#`, `%` or `/` changes what a URL means, `.` and `..` are
//! path steps that clients and proxies normalize away, and bidirectional, zero-width and control
//! characters make a terminal show something other than the key. The set is what LaunchDarkly
//! allows in flag keys (letters, digits, `.`, `_`, `-`) and inside Unleash's "URL-friendly" names,
//! so keys move between the tools unchanged. flagd allows any non-empty string; its keys outside
//! the set are the ones this rule exists for.

use std::fmt;

/// The longest key, in bytes (every allowed character is one byte).
pub const MAX_KEY_LEN: usize = 256;

/// The rule as a regular expression (ECMA-262 and Rust's `regex` alike), for the JSON Schema of
/// a flags file, so that editors flag a key as it is typed. [`check_key`] is the authority; a
/// test keeps the two in agreement.
pub const KEY_PATTERN: &str = "^[A-Za-z0-9_-]([A-Za-z0-9._-]{0,254}[A-Za-z0-9_-])?$";

/// Why a key breaks the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyError {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The key holds a character outside the set.
    Character {
        /// The first such character.
        ch: char,
        /// Its position, counting characters from 1.
        position: usize,
    },
    /// The key starts or ends with `.` (which covers `.` and `..`).
    DotAtEdge,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "a key cannot be empty"),
            KeyError::TooLong { len } => write!(f, "a key is at most {MAX_KEY_LEN} bytes; this one has {len}"),
            KeyError::Character { ch, position } => write!(
                f,
                "{} at position {position} is not allowed ({}): keys are ASCII letters, digits, '-', '_' and '.'",
                show_char(*ch),
                why_not(*ch)
            ),
            KeyError::DotAtEdge => {
                write!(f, "a key cannot start or end with '.' (URLs treat \".\" and \"..\" as path steps)")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks a flag or segment key against the rule.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if let Some((i, ch)) = key.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(KeyError::Character { ch, position: i + 1 });
    }
    // Only ASCII is left, so bytes are characters.
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if key.starts_with('.') || key.ends_with('.') {
        return Err(KeyError::DotAtEdge);
    }
    Ok(())
}

/// Whether a character may appear in a key.
#[inline]
pub fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A stored key that breaks the rule, from [`bad_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    /// `flag` or `segment`.
    pub kind: &'static str,
    /// The key as stored.
    pub key: String,
    /// Why it breaks the rule.
    pub error: KeyError,
}

impl fmt::Display for BadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key {} breaks the key rule: {}. It still evaluates, but OFREP clients and URLs may not \
             reach it: create a {} with a conforming key and move its callers over",
            self.kind,
            quote(&self.key),
            self.error,
            self.kind
        )
    }
}

/// The keys of one kind (`flag`, `segment`) that break the rule, in the order given: what a server
/// checks its stored data with at start, since data written before the rule may hold such keys.
pub fn bad_keys<'a>(kind: &'static str, keys: impl IntoIterator<Item = &'a str>) -> Vec<BadKey> {
    keys.into_iter()
        .filter_map(|key| check_key(key).err().map(|error| BadKey { kind, key: key.to_owned(), error }))
        .collect()
}

/// `s` as a JSON string literal that is pure printable ASCII: everything else is a `\uXXXX`
/// escape (surrogate pairs beyond the BMP). Keys are shown this way in messages and diagnostic
/// paths, so that a bidirectional or invisible character cannot disguise what is printed.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// A character as a message shows it: printable ASCII quoted, anything else by code point.
fn show_char(c: char) -> String {
    match c {
        '\'' => "\"'\"".to_owned(),
        '!'..='~' => format!("'{c}'"),
        _ => format!("U+{:04X}", u32::from(c)),
    }
}

/// Why a character outside the set is refused, in words.
fn why_not(c: char) -> &'static str {
    match c {
        '?' => "it starts a URL's query",
        '#' => "it starts a URL's fragment",
        '%' => "URLs read it as the start of an escape",
        '/' | '\\' => "it splits a URL path",
        c if c.is_whitespace() => "whitespace",
        c if c.is_control() => "a control character",
        // Bidirectional formatting characters reorder what a terminal or a review shows.
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            "a bidirectional-text control"
        }
        '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' => {
            "an invisible character"
        }
        c if !c.is_ascii() => "not ASCII",
        _ => "a URL or shell special character",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_keys_pass() {
        let longest = "a".repeat(MAX_KEY_LEN);
        for key in ["checkout", "new-checkout", "new_checkout", "checkout.v2", "A1", "9", "-x", "a..b", &longest] {
            assert_eq!(check_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn keys_that_break_urls_or_terminals_are_refused_with_the_reason() {
        let cases: &[(&str, KeyError, &str)] = &[
            ("", KeyError::Empty, "cannot be empty"),
            (
                "a?b",
                KeyError::Character { ch: '?', position: 2 },
                "'?' at position 2 is not allowed (it starts a URL's query)",
            ),
            ("a#b", KeyError::Character { ch: '#', position: 2 }, "fragment"),
            ("a%2Fb", KeyError::Character { ch: '%', position: 2 }, "escape"),
            ("a/b", KeyError::Character { ch: '/', position: 2 }, "splits a URL path"),
            ("a b", KeyError::Character { ch: ' ', position: 2 }, "U+0020 at position 2 is not allowed (whitespace)"),
            ("a:b", KeyError::Character { ch: ':', position: 2 }, "special character"),
            (".", KeyError::DotAtEdge, "start or end with '.'"),
            ("..", KeyError::DotAtEdge, "path steps"),
            (".hidden", KeyError::DotAtEdge, "start or end"),
            ("trailing.", KeyError::DotAtEdge, "start or end"),
            (
                "a\u{202E}b",
                KeyError::Character { ch: '\u{202E}', position: 2 },
                "U+202E at position 2 is not allowed (a bidirectional-text control)",
            ),
            ("a\u{200B}b", KeyError::Character { ch: '\u{200B}', position: 2 }, "(an invisible character)"),
            ("a\u{7}b", KeyError::Character { ch: '\u{7}', position: 2 }, "(a control character)"),
            (
                "caf\u{E9}",
                KeyError::Character { ch: '\u{E9}', position: 4 },
                "U+00E9 at position 4 is not allowed (not ASCII)",
            ),
        ];
        for (key, error, words) in cases {
            let got = check_key(key).expect_err(key);
            assert_eq!(&got, error, "{key:?}");
            assert!(got.to_string().contains(words), "{key:?}: {got}");
        }
        let long = "a".repeat(MAX_KEY_LEN + 1);
        assert_eq!(check_key(&long), Err(KeyError::TooLong { len: MAX_KEY_LEN + 1 }));
    }

    #[test]
    fn bad_keys_lists_offenders_with_a_message_that_shows_no_raw_control_characters() {
        let found = bad_keys("flag", ["ok", "a?b", "evil\u{202E}gnp.exe", "fine.too"]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].key, "a?b");
        let message = found[1].to_string();
        assert!(message.starts_with("flag key \"evil\\u202egnp.exe\" breaks the key rule: U+202E"), "{message}");
        assert!(message.is_ascii(), "{message}");
    }

    #[test]
    fn the_schema_pattern_agrees_with_check_key() {
        let pattern = regex::Regex::new(KEY_PATTERN).unwrap_or_else(|e| panic!("{e}"));
        let mut keys: Vec<String> = [
            "",
            "a",
            "-",
            "_",
            ".",
            "..",
            "a.",
            ".a",
            "a.b",
            "a..b",
            "-a-",
            "a?b",
            "a b",
            "é",
            "a\nb",
            "a:b",
            "a/b",
            "x\u{202E}",
            "9.9.9",
        ]
        .iter()
        .map(|k| (*k).to_owned())
        .collect();
        for len in [255, 256, 257] {
            keys.push("k".repeat(len));
            keys.push(format!("{}.", "k".repeat(len - 1)));
            keys.push(format!("k{}k", ".".repeat(len - 2)));
        }
        for key in &keys {
            assert_eq!(pattern.is_match(key), check_key(key).is_ok(), "{key:?}");
        }
    }

    #[test]
    fn quote_is_printable_ascii_json() {
        let s = "a\"b\\c é 😊 \u{202E}";
        let quoted = quote(s);
        assert!(quoted.bytes().all(|b| (b' '..=b'~').contains(&b)), "{quoted}");
        let back: String = serde_json::from_str(&quoted).unwrap_or_else(|e| panic!("{quoted}: {e}"));
        assert_eq!(back, s);
    }
}
