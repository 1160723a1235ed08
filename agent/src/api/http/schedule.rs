//! `scheduled_at` of `POST /switchover`: an ISO 8601 / RFC 3339 time with a time zone, as
//! Patroni takes it (`2026-11-21T15:00:00+01:00`, `2026-11-21 14:00:00Z`).

use axum::http::StatusCode;

/// Milliseconds since the Unix epoch for `s`, which must name its time zone and lie in the
/// future of `now_ms`; errors carry Patroni's status codes (400 no zone, 422 unparsable or past).
pub fn parse(s: &str, now_ms: u64) -> Result<u64, (StatusCode, String)> {
    let s = s.trim();
    let unparsable = || {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot parse scheduled_at {s:?}: write an ISO 8601 time like 2026-11-21T15:00:00+01:00"),
        )
    };
    let (local, offset_s): (&str, i64) = if let Some(l) = s.strip_suffix(['Z', 'z']) {
        (l, 0)
    } else {
        let b = s.as_bytes();
        let n = b.len();
        if n > 6 && (b[n - 6] == b'+' || b[n - 6] == b'-') && b[n - 3] == b':' {
            let h: i64 = s[n - 5..n - 3].parse().map_err(|_| unparsable())?;
            let m: i64 = s[n - 2..].parse().map_err(|_| unparsable())?;
            let sign = if b[n - 6] == b'-' { -1 } else { 1 };
            (&s[..n - 6], sign * (h * 3600 + m * 60))
        } else {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("scheduled_at {s:?} has no time zone: add one, like 2026-11-21T15:00:00Z or +01:00"),
            ));
        }
    };
    let t = humantime::parse_rfc3339_weak(local).map_err(|_| unparsable())?;
    let local_ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| unparsable())?.as_millis() as i64;
    let at = local_ms - offset_s * 1000;
    if at <= now_ms as i64 {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot schedule a switchover in the past ({s})"),
        ));
    }
    Ok(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    #[test]
    fn zones_are_required_and_applied() {
        assert_eq!(parse("2023-11-14T23:00:00Z", NOW), Ok(1_700_002_800_000));
        assert_eq!(parse("2023-11-15T00:00:00+01:00", NOW), Ok(1_700_002_800_000));
        assert_eq!(parse("2023-11-14 22:00:00-01:00", NOW), Ok(1_700_002_800_000));
        assert_eq!(parse("2023-11-14T23:00:00", NOW).map_err(|e| e.0), Err(StatusCode::BAD_REQUEST));
        assert_eq!(parse("tomorrow+01:00", NOW).map_err(|e| e.0), Err(StatusCode::UNPROCESSABLE_ENTITY));
        let past = parse("2020-01-01T00:00:00Z", NOW).expect_err("past");
        assert_eq!(past.0, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(past.1.contains("in the past"), "{}", past.1);
    }
}
