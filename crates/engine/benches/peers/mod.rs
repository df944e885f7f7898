//! Shared fixtures for benchmarking peer feature-flag engines against Dimmer.
//!
//! Every peer adapter loads the same 1,000-flag configuration (one measured
//! flag named [`FLAG_KEY`] plus 999 enabled boolean filler flags) and evaluates
//! the measured flag for the same [`USERS`] precomputed users, rotating through
//! them so that no per-user caching can help.
//!
//! Each adapter exposes `new(Scenario)` (all setup, outside the timed loop) and
//! `eval(&self, user_index) -> bool`; [`verify`] checks an adapter's results and
//! is cheap enough to call before measuring.

#![allow(dead_code, reason = "each bench or test target that includes these fixtures uses only part of them")]
#![allow(clippy::expect_used, reason = "fixture setup that fails must abort the benchmark, saying why")]

pub mod launchdarkly;
pub mod yggdrasil;

/// Number of distinct users the benchmarks rotate through.
pub const USERS: usize = 1024;
/// Total number of flags loaded into each engine, the measured one included.
pub const FLAGS: usize = 1000;
/// Key of the flag whose evaluation is measured.
pub const FLAG_KEY: &str = "measured-flag";
/// Number of user keys ("user-0" .. "user-9999") in the segment of [`Scenario::Segment`].
pub const SEGMENT_SIZE: usize = 10_000;
/// Key (LaunchDarkly) of the segment of [`Scenario::Segment`].
pub const SEGMENT_KEY: &str = "big-segment";
/// Key numbers are spread over `0..KEY_SPACE`, so about half the users fall inside the segment.
const KEY_SPACE: usize = 2 * SEGMENT_SIZE;
/// Odd and not a multiple of 5, hence coprime with `KEY_SPACE`: keys are distinct and
/// segment members and non-members are interleaved irregularly.
const KEY_STRIDE: usize = 7919;

const COUNTRIES: [&str; 4] = ["us", "fr", "jp", "ca"];
const PLANS: [&str; 3] = ["free", "pro", "team"];

/// The measured flag's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Enabled boolean flag without rules.
    Simple,
    /// Three rules of two clauses each; the third serves true, otherwise false.
    Rules,
    /// `country in [us, ca, fr]` and a 50% rollout by user key.
    RolloutIn,
    /// Membership in a segment of [`SEGMENT_SIZE`] user keys.
    Segment,
}

impl Scenario {
    /// All scenarios, in benchmark order.
    pub const ALL: [Scenario; 4] = [Scenario::Simple, Scenario::Rules, Scenario::RolloutIn, Scenario::Segment];

    /// Short name used as the benchmark id.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Simple => "simple",
            Scenario::Rules => "rules",
            Scenario::RolloutIn => "rollout_in",
            Scenario::Segment => "segment",
        }
    }
}

/// The attributes of one benchmark user.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// User key / Unleash `userId`, "user-N".
    pub key: String,
    /// One of us, fr, jp, ca.
    pub country: &'static str,
    /// One of free, pro, team.
    pub plan: &'static str,
    /// Email address; every fifth one ends with "@example.com".
    pub email: String,
    /// Beta tester flag; true for every seventh user.
    pub beta: bool,
}

/// The `i`-th benchmark user (`i` is taken modulo [`USERS`]).
pub fn user(i: usize) -> UserSpec {
    let i = i % USERS;
    let n = (i * KEY_STRIDE) % KEY_SPACE;
    let domain = if i.is_multiple_of(5) { "example.com" } else { "mail.test" };
    UserSpec {
        key: format!("user-{n}"),
        country: COUNTRIES[i % COUNTRIES.len()],
        plan: PLANS[(i / COUNTRIES.len()) % PLANS.len()],
        email: format!("u{i}@{domain}"),
        beta: i.is_multiple_of(7),
    }
}

/// Key of the `i`-th filler flag.
pub fn filler_key(i: usize) -> String {
    format!("filler-{i}")
}

/// The keys held by the segment of [`Scenario::Segment`].
pub fn segment_keys() -> impl Iterator<Item = String> {
    (0..SEGMENT_SIZE).map(|n| format!("user-{n}"))
}

/// Whether `u` is one of the users the 50% rollout of [`Scenario::RolloutIn`] applies to.
fn rollout_eligible(u: &UserSpec) -> bool {
    matches!(u.country, "us" | "ca" | "fr")
}

/// The result every engine must give for `u`, or `None` where it depends on the
/// engine's own bucketing (eligible users of [`Scenario::RolloutIn`]).
pub fn expected(scenario: Scenario, u: &UserSpec) -> Option<bool> {
    match scenario {
        Scenario::Simple => Some(true),
        Scenario::Rules => {
            let rule1 = matches!(u.country, "fr" | "de") && u.plan == "enterprise";
            let rule2 = u.email.ends_with("@example.com") && u.beta;
            let rule3 = matches!(u.country, "us" | "ca") && matches!(u.plan, "pro" | "team");
            Some(rule1 || rule2 || rule3)
        }
        Scenario::RolloutIn => (!rollout_eligible(u)).then_some(false),
        Scenario::Segment => {
            let n: usize =
                u.key.strip_prefix("user-").and_then(|s| s.parse().ok()).expect("user keys are always \"user-N\"");
            Some(n < SEGMENT_SIZE)
        }
    }
}

/// Asserts that `eval` (an adapter's `eval`) gives the expected result for every
/// user, and that the 50% rollout serves true to 40-60% of its eligible users.
/// Cheap enough (`USERS` evaluations) to run before measuring.
pub fn verify(engine: &str, scenario: Scenario, eval: impl Fn(usize) -> bool) {
    let (mut eligible, mut on) = (0usize, 0usize);
    for i in 0..USERS {
        let u = user(i);
        let got = eval(i);
        if let Some(want) = expected(scenario, &u) {
            assert_eq!(got, want, "{engine}/{}: wrong result for {u:?}", scenario.name());
        } else {
            eligible += 1;
            on += usize::from(got);
        }
    }
    if scenario == Scenario::RolloutIn {
        // Integer form of 0.4 <= on / eligible <= 0.6.
        assert!(
            (4 * eligible..=6 * eligible).contains(&(10 * on)),
            "{engine}/rollout_in: {on} of {eligible} eligible users got true"
        );
    }
}
