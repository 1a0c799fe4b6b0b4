//! Checks of vdbi's JSON log lines, as a strict consumer would read them: each line one JSON
//! object whose keys are all distinct (jq and Loki keep the last of two equal keys, strict parsers
//! refuse the line). Used by [`checked_logger`] (every record the
//! in-process tests log) and by the tests that run the `vdbi` binary (every stdout line).

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use slog::{Drain, Logger};
use std::collections::HashSet;
use std::fmt;
use vdbi::telemetry::logging::json_drain;

/// A JSON value read with a duplicate-key check at every level.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<Strict>()?;
        }
        Ok(Strict)
    }
}

/// `Ok` when `line` is one JSON object with distinct keys at every level.
pub fn check_json_line(line: &str) -> Result<(), String> {
    if !line.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_str::<Strict>(line)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks every JSON line of a captured stdout/stderr; lines that are not JSON objects (a
/// message printed before the logger exists, e.g. a refused configuration) are skipped.
/// Returns the offending lines with their error.
pub fn bad_json_lines(captured: &str) -> Vec<String> {
    captured
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| check_json_line(l).err().map(|e| format!("{e}: {l}")))
        .collect()
}

/// Buffers what the JSON drain writes and checks each complete line as a strict consumer would
/// (one object, no duplicate key). A bad line ends the test process with the line printed: a
/// panic inside a drain could be swallowed by the actor or task that logged.
struct LineChecker {
    buf: Vec<u8>,
    echo: bool,
}

impl std::io::Write for LineChecker {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if let Err(e) = check_json_line(&line) {
                eprintln!("vdbi logged a line a strict JSON consumer refuses ({e}):\n{line}");
                std::process::abort();
            }
            if self.echo {
                eprintln!("{line}");
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logger of the in-process tests: every record, at every level, goes through the daemon's
/// JSON format and is checked line by line (see [`LineChecker`]); `VDBI_TEST_LOG=1` also prints
/// the lines on stderr.
pub fn checked_logger() -> Logger {
    let checker = LineChecker {
        buf: Vec::new(),
        echo: std::env::var("VDBI_TEST_LOG").is_ok(),
    };
    let drain = std::sync::Mutex::new(json_drain(checker)).fuse();
    Logger::root(drain, slog::o!("app" => "vdbi"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        assert!(check_json_line(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        let e = check_json_line(r#"{"message":"pod denied","message":"x"}"#).unwrap_err();
        assert!(e.contains("duplicate key \"message\""), "{e}");
        assert!(check_json_line(r#"{"a":{"m":1,"m":2}}"#).is_err());
        assert!(check_json_line(r#"{"a":[{"m":1,"m":2}]}"#).is_err());
        assert!(check_json_line("plain text").is_err());
        assert!(check_json_line(r#"{"a":1"#).is_err());
    }

    #[test]
    fn captured_output_is_checked_line_by_line() {
        let out = "config refused\n{\"a\":1}\n{\"mode\":\"x\",\"mode\":\"y\"}\n";
        let bad = bad_json_lines(out);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("\"mode\""));
    }

    /// The daemon's JSON format with the record keys main used to log ("pod denied" with its
    /// own `message`; "pod admitted" with `mode` under a `mode` logger): the check catches both.
    #[test]
    fn the_daemon_format_with_a_repeated_key_is_caught() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(d);
                Ok(d.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let drain = std::sync::Mutex::new(json_drain(buf.clone())).fuse();
        let log = Logger::root(drain, slog::o!("app" => "vdbi", "mode" => "injector"));
        slog::warn!(log, "pod denied"; "reason" => "sa_denied", "message" => "no");
        slog::info!(log, "pod admitted"; "mode" => "legacy");
        slog::info!(log, "pod admitted"; "auth_mode" => "legacy", "detail" => "ok");
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let bad = bad_json_lines(&out);
        assert_eq!(bad.len(), 2, "{out}");
        assert!(bad[0].contains("duplicate key \"message\""), "{bad:?}");
        assert!(bad[1].contains("duplicate key \"mode\""), "{bad:?}");
    }
}
