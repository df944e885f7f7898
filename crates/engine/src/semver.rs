//! Semantic versions (semver 2.0.0), parsed without allocating so that comparing a context's
//! version on the evaluation path costs no heap.
//!
//! Clients send versions loosely (`2`, `2.1`, `v1.2.3`), and LaunchDarkly and flagd match them,
//! so the operators read both sides with [`Version::parse_loose`]: a leading `v` is dropped and
//! a missing minor or patch is 0. [`Version::parse`] stays strict semver 2.0.0.

use std::cmp::Ordering;

/// A parsed version borrowing its pre-release identifiers from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    major: u64,
    minor: u64,
    patch: u64,
    /// The pre-release part without the `-`, or empty.
    pre: &'a str,
}

impl<'a> Version<'a> {
    /// Parses a strict semver 2.0.0 version (`1.2.3`, `2.0.0-rc.1+build.5`); no `v` prefix.
    pub fn parse(text: &'a str) -> Option<Self> {
        Self::parse_with(text, false)
    }

    /// Parses a strict version, or a loose one as clients send it: a leading `v` (`v1.2.3`),
    /// and a missing minor or patch taken as 0 (`2` is `2.0.0`, `2.1-rc.1` is `2.1.0-rc.1`).
    /// Everything else is as strict as [`Version::parse`]: no leading zeros, no whitespace, no
    /// fourth number, valid pre-release and build identifiers.
    pub fn parse_loose(text: &'a str) -> Option<Self> {
        Self::parse_with(text.strip_prefix('v').unwrap_or(text), true)
    }

    fn parse_with(text: &'a str, loose: bool) -> Option<Self> {
        let (core_pre, build) = match text.split_once('+') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        if let Some(build) = build
            && (build.is_empty() || !build.split('.').all(valid_build_ident))
        {
            return None;
        }
        let (core, pre) = match core_pre.split_once('-') {
            Some((c, p)) => {
                if p.is_empty() || !p.split('.').all(valid_pre_ident) {
                    return None;
                }
                (c, p)
            }
            None => (core_pre, ""),
        };
        let mut parts = core.split('.');
        let major = numeric(parts.next()?)?;
        let mut next = || match parts.next() {
            Some(part) => numeric(part),
            None if loose => Some(0),
            None => None,
        };
        let minor = next()?;
        let patch = next()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { major, minor, patch, pre })
    }
}

fn numeric(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn valid_pre_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !(s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_build_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Version<'_> {
    /// An owned copy, for compiled clauses.
    pub fn to_owned_version(&self) -> OwnedVersion {
        OwnedVersion { major: self.major, minor: self.minor, patch: self.patch, pre: self.pre.into() }
    }
}

/// A version that owns its pre-release text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedVersion {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Box<str>,
}

impl OwnedVersion {
    /// A borrowed view, for comparisons.
    pub fn view(&self) -> Version<'_> {
        Version { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(self.pre, other.pre))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Pre-release precedence: a release outranks any pre-release; identifiers compare one by one,
/// numbers numerically and below alphanumerics; a shorter list that is a prefix ranks lower.
fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>().ok(), y.parse::<u64>().ok()) {
                    (Some(m), Some(n)) => m.cmp(&n),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version<'_> {
        Version::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn precedence_follows_the_semver_spec_example_chain() {
        // The chain given in semver 2.0.0 §11.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for pair in chain.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0.0+build.1").cmp(&v("1.0.0+other")), Ordering::Equal);
    }

    #[test]
    fn invalid_versions_are_rejected() {
        for bad in ["v1.2.3", "1.2", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3+", "a.b.c", "", " 1.2.3"] {
            assert!(Version::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn loose_versions_drop_the_v_and_fill_missing_numbers_with_zero() {
        let loose = |s| Version::parse_loose(s).unwrap_or_else(|| panic!("{s} should parse loosely"));
        for (text, same_as) in [
            ("2", "2.0.0"),
            ("2.1", "2.1.0"),
            ("v1.2.3", "1.2.3"),
            ("v2", "2.0.0"),
            ("v2.1", "2.1.0"),
            ("2-rc.1", "2.0.0-rc.1"),
            ("v2.1-beta+build.7", "2.1.0-beta"),
            ("1.2.3-rc.1+b", "1.2.3-rc.1"),
            ("0", "0.0.0"),
        ] {
            assert_eq!(loose(text), v(same_as), "{text} = {same_as}");
        }
        assert!(loose("2") < v("2.0.1") && loose("2.1") > v("2.0.9"));
        assert!(loose("2-rc.1") < loose("2"), "a pre-release still ranks below its release");
    }

    #[test]
    fn loose_parsing_is_strict_about_everything_else() {
        for bad in [
            "", "v", "V1.2.3", "vv1", " 2", "2 ", "2.", "2..1", "1.2.3.4", "02", "1.02", "v01.2.3", "1.2.3-", "2-01",
            "2+", "a", "1.x", "-1", "v-1", "1e3", "+1",
        ] {
            assert!(Version::parse_loose(bad).is_none(), "{bad:?} should not parse, even loosely");
        }
    }

    #[test]
    fn strict_versions_parse_the_same_either_way() {
        for text in ["1.2.3", "0.0.0", "2.0.0-rc.1+build.5", "1.0.0-alpha.beta", "10.20.30"] {
            assert_eq!(Version::parse(text), Version::parse_loose(text), "{text}");
            assert!(Version::parse(text).is_some(), "{text}");
        }
    }
}
