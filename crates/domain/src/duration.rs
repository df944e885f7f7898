//! Durations as people write them in plans, guards and windows: a number and a unit.

/// Parses a duration: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`), in milliseconds;
/// `None` for anything else, including an overflow.
pub fn parse(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok()?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}
