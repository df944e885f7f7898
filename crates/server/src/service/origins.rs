//! Web origins: the one normalisation of `scheme://host[:port]` (for the server-wide CORS
//! setting and for tokens' own lists) and the bounds of a token's list.
//!
//! Origins are compared as browsers send them in `Origin`: lowercase scheme and host, the
//! scheme's default port left out, no path. Normalising what people type to that form once
//! means matching is a plain string comparison.

/// At most this many origins on one token: a token serves a few apps, not a directory of sites.
pub const MAX_TOKEN_ORIGINS: usize = 20;
/// At most this many bytes in one origin (a host name is at most 253).
pub const MAX_ORIGIN_BYTES: usize = 300;

/// `https://App.example.com:443` → `https://app.example.com`: the form browsers send.
pub fn normalize(text: &str) -> Result<String, String> {
    let bad = |why: &str| format!("\"{text}\" is not an origin such as https://app.example.com ({why})");
    if text.len() > MAX_ORIGIN_BYTES {
        let head: String = text.chars().take(40).collect();
        return Err(format!("\"{head}…\" is longer than {MAX_ORIGIN_BYTES} bytes"));
    }
    let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme is http or https"));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
        return Err(bad("scheme, host and port only: no path, no trailing slash"));
    }
    if rest.chars().any(char::is_control) {
        return Err(bad("no control characters"));
    }
    let host = rest.to_ascii_lowercase();
    // A bracketed IPv6 host has colons of its own: the port follows the closing bracket.
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name.to_owned(), Some(port.to_owned())),
        _ => (host.clone(), None),
    };
    if name.is_empty() {
        return Err(bad("no host"));
    }
    match port {
        None => Ok(format!("{scheme}://{name}")),
        Some(port) => {
            let number: u16 = port.parse().map_err(|_| bad("the port is a number"))?;
            let default = if scheme == "https" { 443 } else { 80 };
            Ok(if number == default { format!("{scheme}://{name}") } else { format!("{scheme}://{name}:{number}") })
        }
    }
}

/// One problem with a token's origins: the entry at fault (`None`: the list as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginProblem {
    /// The index of the entry in the list as sent.
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// A token's origins, normalised and without duplicates, or every problem found (each entry is
/// checked, so one answer names them all). `*` is refused: a token lists exact origins, and
/// "every origin" is a server-wide decision.
pub fn token_origins(entries: &[String]) -> Result<Vec<String>, Vec<OriginProblem>> {
    let mut problems = Vec::new();
    if entries.len() > MAX_TOKEN_ORIGINS {
        problems.push(OriginProblem {
            index: None,
            message: format!("at most {MAX_TOKEN_ORIGINS} origins per token, got {}", entries.len()),
        });
        return Err(problems);
    }
    let mut origins = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.trim() == "*" {
            problems.push(OriginProblem {
                index: Some(index),
                message: "a token lists exact origins; \"*\" (every origin) is the server's cors_origins setting"
                    .into(),
            });
            continue;
        }
        match normalize(entry.trim()) {
            Ok(origin) if !origins.contains(&origin) => origins.push(origin),
            Ok(_) => {}
            Err(message) => problems.push(OriginProblem { index: Some(index), message }),
        }
    }
    if problems.is_empty() { Ok(origins) } else { Err(problems) }
}

/// Whether `origin` (an `Origin` header) names the server that `host` (the `Host` header the
/// browser sent) addresses: a same-origin request, which CORS does not concern.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let host = host.trim().to_ascii_lowercase();
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    authority == host || host.strip_suffix(default).is_some_and(|bare| bare == authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_to_what_browsers_send() {
        assert_eq!(normalize("HTTPS://App.Example.com:443").unwrap(), "https://app.example.com");
        assert_eq!(normalize("http://127.0.0.1:5173").unwrap(), "http://127.0.0.1:5173");
        assert_eq!(normalize("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(normalize("http://[::1]").unwrap(), "http://[::1]");
        for bad in
            ["app.example.com", "ftp://x", "https://x/", "https://x/path", "https://", "https://x:port", "https://u@x"]
        {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(normalize(&format!("https://{}.example", "a".repeat(400))).unwrap_err().contains("longer than"));
    }

    #[test]
    fn a_tokens_list_is_bounded_deduplicated_and_every_bad_entry_named() {
        let list = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            token_origins(&list(&["https://a.example", "HTTPS://A.example:443", "http://b.example:8080"])).unwrap(),
            ["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(token_origins(&[]).unwrap(), Vec::<String>::new());
        let problems = token_origins(&list(&["https://a.example", "*", "https://a.example/app"])).unwrap_err();
        assert_eq!(problems.iter().map(|p| p.index).collect::<Vec<_>>(), [Some(1), Some(2)]);
        let many: Vec<String> = (0..=MAX_TOKEN_ORIGINS).map(|i| format!("https://a{i}.example")).collect();
        assert_eq!(token_origins(&many).unwrap_err()[0].index, None);
    }

    #[test]
    fn same_origin_compares_the_authority_with_the_host_header() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin("https://flags.example", "flags.example"));
        assert!(same_origin("https://flags.example", "Flags.Example:443"));
        assert!(!same_origin("http://127.0.0.1:5173", "127.0.0.1:8080"));
        assert!(!same_origin("https://evil.example", "flags.example"));
        assert!(!same_origin("null", "flags.example"));
    }
}
