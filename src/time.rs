//! Time as residents read it: Asia/Tokyo (UTC+9, no daylight saving).

use chrono::{FixedOffset, TimeZone, Utc};

/// Japan Standard Time. Japan has kept UTC+9 without daylight saving since 1951, so a fixed
/// offset is exact for every time Noroshi handles.
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("valid offset")
}

/// Milliseconds since the epoch as RFC 3339 in Asia/Tokyo: `2026-12-01T09:00:00+09:00`.
pub fn rfc3339_jst(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&jst())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_in_tokyo_time() {
        assert_eq!(super::rfc3339_jst(0), "1970-01-01T09:00:00+09:00");
    }
}
