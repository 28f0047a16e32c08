//! Dates as VCL stores them: `YYYY-MM-DD HH:MM:SS` in the database's local time. The
//! database's clock is the authority (`Db::now`); these helpers only parse, format and
//! add durations.

use chrono::NaiveDateTime;

use crate::db::error::DbError;

/// Parse `YYYY-MM-DD HH:MM:SS` (VCL's datetime format), also with `T` or without seconds.
pub fn parse_datetime(s: &str) -> Result<NaiveDateTime, DbError> {
    let s = s.trim();
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .ok_or_else(|| {
        DbError::Invalid(format!(
            "{s:?} is not a date and time (expected YYYY-MM-DD HH:MM[:SS])"
        ))
    })
}

/// Format as VCL stores datetimes.
pub fn format_datetime(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Parse a request time given on the command line: `now`, `+30m` / `+2h` / `+1d` (from
/// `now`), or an absolute `YYYY-MM-DD HH:MM[:SS]`.
pub fn parse_when(s: &str, now: NaiveDateTime) -> Result<NaiveDateTime, DbError> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('+') {
        let bad = || DbError::Invalid(format!("{s:?} is not a time: {WHEN_FORMS}"));
        let (num, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: i64 = num.parse().map_err(|_| bad())?;
        let minutes = match unit {
            "m" | "min" => n,
            "h" => n.checked_mul(60).ok_or_else(bad)?,
            "d" => n.checked_mul(1440).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        return now
            .checked_add_signed(chrono::Duration::minutes(minutes))
            .ok_or_else(bad);
    }
    parse_datetime(s).map_err(|_| DbError::Invalid(format!("{s:?} is not a time: {WHEN_FORMS}")))
}

/// The forms [`parse_when`] accepts, as error messages list them.
pub const WHEN_FORMS: &str =
    "use now, +N with m, h or d (+30m, +2h, +1d; from now for a start, from the start for an end), or YYYY-MM-DD HH:MM[:SS]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_times() {
        let now = parse_datetime("2026-11-27 06:30:00").expect("now");
        assert_eq!(
            format_datetime(parse_when("+90m", now).expect("rel")),
            "2026-11-27 08:00:00"
        );
        assert_eq!(
            format_datetime(parse_when("+1d", now).expect("rel")),
            "2026-11-28 06:30:00"
        );
        assert_eq!(
            format_datetime(parse_when("2026-12-01 10:00", now).expect("abs")),
            "2026-12-01 10:00:00"
        );
        let err = parse_when("tomorrow", now)
            .expect_err("not a time")
            .to_string();
        assert!(
            err.contains("now") && err.contains("+30m") && err.contains("YYYY-MM-DD"),
            "{err}"
        );
        assert!(parse_when("+5y", now).is_err());
    }
}
