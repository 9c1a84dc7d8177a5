//! Logs as JSON lines on stdout, where Greengrass files them
//! (`/greengrass/v2/logs/<component>.log`): one object per line, with a UTC
//! timestamp, a level, a message and the event's own fields.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Writes one log line. `fields` are added as they are.
pub fn emit(level: Level, msg: &str, fields: Value) {
    let mut line = Map::new();
    line.insert("ts".into(), Value::String(timestamp(SystemTime::now())));
    let level = match level {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    line.insert("level".into(), level.into());
    line.insert("msg".into(), msg.into());
    if let Value::Object(fields) = fields {
        line.extend(fields);
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the daemon down.
    let _ = writeln!(out, "{}", Value::Object(line));
    let _ = out.flush();
}

pub fn info(msg: &str, fields: Value) {
    emit(Level::Info, msg, fields);
}

pub fn warn(msg: &str, fields: Value) {
    emit(Level::Warn, msg, fields);
}

pub fn error(msg: &str, fields: Value) {
    emit(Level::Error, msg, fields);
}

/// RFC 3339 in UTC with milliseconds, without a date library.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = super::UNIX_EPOCH + Duration::from_millis(1_795_786_496_789);
        assert_eq!(super::timestamp(t), "2026-11-27T13:34:56.789Z");
        assert_eq!(
            super::timestamp(super::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = super::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(super::timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
