//! Optional Sentry error reporting (`sentry: true`), as vault-db-injector 3.2.x does it: error and
//! critical log records become Sentry events with the record's fields as tags, a panic becomes a
//! `fatal` event sent before the panic goes on (bounded by 2 s), and an orderly shutdown gives
//! queued events 2 s to leave.
//!
//! This is a small client of Sentry's envelope endpoint over the reqwest/rustls stack vdbi already
//! has, not the `sentry` crates (a second HTTP/TLS stack). The log drain builds the event on the
//! logging caller's thread and hands it to a bounded queue without waiting (queue full: the event
//! is dropped and counted); one background thread posts the envelopes, each with a 2 s timeout.
//! Nothing is sampled: `sentrySampleRate` is accepted and unused, as in the Go version. The DSN's
//! keys travel only in the `X-Sentry-Auth` header, and error messages show the DSN masked.

use super::metrics::SentryEvents;
pub use crate::config::sentry_dsn::{mask_dsn, Dsn, DsnError};
use crate::config::Config;
use serde_json::{json, Map, Value};
use slog::{Drain, Level, Never, OwnedKVList, Record, KV};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout of one envelope POST.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// What a panic report and the shutdown flush wait at most (the Go version's `Flush(2s)`).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Events waiting to be posted; beyond this, new events are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 100;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const CLIENT: &str = concat!("vdbi/", env!("CARGO_PKG_VERSION"));
const RELEASE: &str = concat!("vdbi@", env!("CARGO_PKG_VERSION"));
/// Sentry refuses longer tag values; the full value then goes to `extra`.
const TAG_VALUE_MAX: usize = 200;

/// Sentry cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum SentryError {
    #[error(transparent)]
    Dsn(#[from] DsnError),
    #[error("Sentry client: {0}")]
    Client(String),
}

/// What the events carry besides the log record.
#[derive(Clone, Debug)]
pub struct SentrySettings {
    pub dsn: String,
    pub environment: String,
    /// `server_name` of the events (the pod name); omitted when empty.
    pub server_name: String,
    /// The `mode` tag of every event.
    pub mode: String,
}

impl SentrySettings {
    /// `sentryDsn`, `sentryEnvironment`, the pod name (`POD_NAME`, else the host name, which is the
    /// pod name in Kubernetes) and the mode.
    pub fn from_config(c: &Config) -> SentrySettings {
        let server_name = if c.pod_name.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            c.pod_name.clone()
        };
        SentrySettings {
            dsn: c.sentry_dsn.clone(),
            environment: c.sentry_environment.clone(),
            server_name,
            mode: c.mode.as_str().to_string(),
        }
    }
}

/// State shared by the reporters and the sender thread.
struct Shared {
    endpoint: String,
    auth: String,
    client: reqwest::Client,
    settings: SentrySettings,
    /// `vdbi_sentry_events_total{result}`.
    events: SentryEvents,
    /// Events queued or being posted (what [`Sentry::flush`] waits for).
    pending: AtomicUsize,
}

impl Shared {
    fn count(&self, result: &str) {
        self.events.count(result);
    }

    /// Posts one envelope; counts it `sent` (2xx) or `failed`.
    async fn post(&self, body: Vec<u8>) -> bool {
        let res = self
            .client
            .post(&self.endpoint)
            .header("X-Sentry-Auth", &self.auth)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-sentry-envelope",
            )
            .body(body)
            .send()
            .await;
        let ok = matches!(&res, Ok(r) if r.status().is_success());
        self.count(if ok { "sent" } else { "failed" });
        ok
    }

    /// The event JSON (without its envelope) and its id.
    fn event(&self, level: Level, message: &str, fields: BTreeMap<String, String>) -> Event {
        let event_id = uuid::Uuid::new_v4().simple().to_string();
        let mut tags = Map::new();
        let mut extra = Map::new();
        for (k, v) in fields {
            let tag: String = v
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
                .take(TAG_VALUE_MAX)
                .collect();
            if tag.len() < v.len() {
                extra.insert(k.clone(), Value::String(v));
            }
            tags.insert(k, Value::String(tag));
        }
        tags.entry("mode")
            .or_insert_with(|| Value::String(self.settings.mode.clone()));
        let logger = tags
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or("vdbi")
            .to_string();
        let mut event = json!({
            "event_id": event_id,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "level": if level == Level::Critical { "fatal" } else { "error" },
            "logger": logger,
            "platform": "other",
            "message": message,
            "logentry": { "formatted": message },
            "environment": self.settings.environment,
            "release": RELEASE,
            "sdk": { "name": "vdbi", "version": VERSION },
            "tags": tags,
        });
        if !self.settings.server_name.is_empty() {
            event["server_name"] = Value::String(self.settings.server_name.clone());
        }
        if !extra.is_empty() {
            event["extra"] = Value::Object(extra);
        }
        Event { event_id, event }
    }
}

/// One Sentry event.
pub struct Event {
    event_id: String,
    event: Value,
}

impl Event {
    /// The envelope: its header line, the item header line, the event JSON. The envelope header
    /// carries no `dsn`: the keys are sent in `X-Sentry-Auth` only.
    pub fn envelope(&self) -> Vec<u8> {
        let payload = self.event.to_string();
        let header = json!({
            "event_id": self.event_id,
            "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let item = json!({
            "type": "event",
            "length": payload.len(),
            "content_type": "application/json",
        });
        format!("{header}\n{item}\n{payload}\n").into_bytes()
    }

    pub fn json(&self) -> &Value {
        &self.event
    }
}

/// A running Sentry reporter. Cheap to clone; the sender thread stops when the last clone goes.
#[derive(Clone)]
pub struct Sentry {
    shared: Arc<Shared>,
    queue: SyncSender<Vec<u8>>,
}

impl Sentry {
    /// Parses the DSN, builds the HTTP client and starts the sender thread. `events` is
    /// `vdbi_sentry_events_total`. Any error is fatal at startup, as `sentry.Init` is in Go.
    pub fn start(settings: SentrySettings, events: SentryEvents) -> Result<Sentry, SentryError> {
        let dsn = Dsn::parse(&settings.dsn)?;
        crate::tls::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .tls_backend_rustls()
            .timeout(SEND_TIMEOUT)
            .connect_timeout(SEND_TIMEOUT)
            // The panic report posts from its own runtime: no connection outlives its request.
            .pool_max_idle_per_host(0)
            // Never forward X-Sentry-Auth elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(CLIENT);
        if dsn.scheme() == "http" {
            b = b.tls_certs_only(Vec::new());
        }
        let client = b.build().map_err(|e| SentryError::Client(e.to_string()))?;
        let runtime = current_thread_runtime()?;
        events.init();
        let shared = Arc::new(Shared {
            endpoint: dsn.envelope_url(),
            auth: dsn.auth_header(),
            client,
            settings,
            events,
            pending: AtomicUsize::new(0),
        });
        let (queue, rx) = sync_channel(QUEUE_CAPACITY);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("vdbi-sentry".into())
            .spawn(move || send_loop(&s, &runtime, rx))
            .map_err(|e| SentryError::Client(format!("starting the sender thread: {e}")))?;
        Ok(Sentry { shared, queue })
    }

    /// The envelope endpoint (no key in it).
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// The slog drain that reports Error and Critical records.
    pub fn drain(&self) -> SentryDrain {
        SentryDrain(AssertUnwindSafe(self.clone()))
    }

    /// Queues an event without waiting; `false` (and counted `dropped`) when the queue is full.
    pub fn capture(&self, level: Level, message: &str, fields: BTreeMap<String, String>) -> bool {
        let body = self.shared.event(level, message, fields).envelope();
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(body) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                self.shared.count("dropped");
                false
            }
        }
    }

    /// Sends a `fatal` event for a panic and waits for it at most [`FLUSH_TIMEOUT`] (what the
    /// panic hook calls). Independent of the queue: it posts from a thread of its own.
    pub fn report_panic(&self, message: &str, location: Option<&str>) -> bool {
        let mut fields = BTreeMap::new();
        if let Some(l) = location {
            fields.insert("location".to_string(), l.to_string());
        }
        if let Some(name) = std::thread::current().name() {
            fields.insert("thread".to_string(), name.to_string());
        }
        fields.insert("component".to_string(), "panic".to_string());
        let body = self
            .shared
            .event(Level::Critical, &format!("panic: {message}"), fields)
            .envelope();
        let shared = self.shared.clone();
        let (done, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("vdbi-sentry-panic".into())
            .spawn(move || {
                let ok = match current_thread_runtime() {
                    Ok(rt) => rt.block_on(shared.post(body)),
                    Err(_) => {
                        shared.count("failed");
                        false
                    }
                };
                let _ = done.send(ok);
            });
        if spawned.is_err() {
            self.shared.count("failed");
            return false;
        }
        wait.recv_timeout(FLUSH_TIMEOUT).unwrap_or(false)
    }

    /// Reports every panic (after the previous hook, which prints it, has run).
    pub fn install_panic_hook(&self) {
        let sentry = AssertUnwindSafe(self.clone());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(non-string panic payload)");
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            sentry.report_panic(message, location.as_deref());
        }));
    }

    /// Waits until every queued event has been posted (or failed), at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.shared.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, SentryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SentryError::Client(format!("starting the sender runtime: {e}")))
}

fn send_loop(shared: &Shared, runtime: &tokio::runtime::Runtime, rx: Receiver<Vec<u8>>) {
    while let Ok(body) = rx.recv() {
        runtime.block_on(shared.post(body));
        shared.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reports Error and Critical records to Sentry: message, level, and the logger's and the
/// record's key/values (stringified) as tags. Other levels cost one comparison.
pub struct SentryDrain(AssertUnwindSafe<Sentry>);

impl Drain for SentryDrain {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        if record.level().is_at_least(Level::Error) {
            self.0.capture(
                record.level(),
                &record.msg().to_string(),
                fields(record, values),
            );
        }
        Ok(())
    }
}

/// The logger's values then the record's key/values, stringified (a later key wins).
pub fn fields(record: &Record<'_>, values: &OwnedKVList) -> BTreeMap<String, String> {
    let mut s = Stringify(BTreeMap::new());
    let _ = values.serialize(record, &mut s);
    let _ = record.kv().serialize(record, &mut s);
    s.0
}

struct Stringify(BTreeMap<String, String>);

impl slog::Serializer for Stringify {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        self.0.insert(key.to_string(), val.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Dsn {
        Dsn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn dsn_plain() {
        let d = parse("https://abc123@o1.ingest.sentry.io/42");
        assert_eq!(
            d.envelope_url(),
            "https://o1.ingest.sentry.io/api/42/envelope/"
        );
        assert_eq!(
            d.auth_header(),
            format!("Sentry sentry_version=7, sentry_client=vdbi/{VERSION}, sentry_key=abc123")
        );
    }

    #[test]
    fn dsn_with_port_path_prefix_and_secret() {
        let d = parse("http://pub:sec@127.0.0.1:9000/sentry/relay/7");
        assert_eq!(
            d.envelope_url(),
            "http://127.0.0.1:9000/sentry/relay/api/7/envelope/"
        );
        assert!(d
            .auth_header()
            .ends_with("sentry_key=pub, sentry_secret=sec"));
        // The scheme's default port is not repeated; IPv6 keeps its brackets.
        assert_eq!(
            parse("https://k@sentry.example:443/1").envelope_url(),
            "https://sentry.example/api/1/envelope/"
        );
        assert_eq!(
            parse("http://k@[::1]:8000/3").envelope_url(),
            "http://[::1]:8000/api/3/envelope/"
        );
    }

    #[test]
    fn bad_dsns_are_refused_masked() {
        for (dsn, problem) in [
            ("not a dsn", "not a URL"),
            ("ftp://key@sentry.example/1", "scheme"),
            ("https://sentry.example/1", "no public key"),
            ("https://key@sentry.example", "no project id"),
            ("https://key@sentry.example/", "no project id"),
            ("https://key@sentry.example/1/", "no project id"),
        ] {
            let e = Dsn::parse(dsn).expect_err(dsn).to_string();
            assert!(e.contains(problem), "{dsn}: {e}");
            assert!(!e.contains("key@"), "{dsn}: key shown in {e}");
        }
        let e = Dsn::parse("https://topsecret@sentry.example/").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid sentryDsn https://****@sentry.example/: no project id (want scheme://KEY@host/PROJECT)"
        );
        assert_eq!(mask_dsn("topsecret"), "********");
        assert!(!format!("{:?}", parse("https://topsecret@s/1")).contains("topsecret"));
    }

    fn shared() -> Shared {
        Shared {
            endpoint: String::new(),
            auth: String::new(),
            client: reqwest::Client::new(),
            settings: SentrySettings {
                dsn: String::new(),
                environment: "staging".into(),
                server_name: "vdbi-0".into(),
                mode: "injector".into(),
            },
            events: crate::telemetry::Metrics::new(false)
                .process
                .sentry_events(),
            pending: AtomicUsize::new(0),
        }
    }

    #[test]
    fn envelope_is_header_item_event() {
        crate::tls::install_crypto_provider();
        let fields = BTreeMap::from([
            ("component".to_string(), "renewer".to_string()),
            ("error".to_string(), format!("line1\n{}", "x".repeat(300))),
        ]);
        let ev = shared().event(Level::Error, "renew failed", fields);
        let body = String::from_utf8(ev.envelope()).unwrap();
        let lines: Vec<&str> = body.trim_end().split('\n').collect();
        assert_eq!(lines.len(), 3, "{body}");
        let header: Value = serde_json::from_str(lines[0]).unwrap();
        let item: Value = serde_json::from_str(lines[1]).unwrap();
        let event: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(header["event_id"], event["event_id"]);
        assert_eq!(event["event_id"].as_str().unwrap().len(), 32);
        assert!(header.get("dsn").is_none());
        assert!(chrono::DateTime::parse_from_rfc3339(header["sent_at"].as_str().unwrap()).is_ok());
        assert_eq!(item["type"], "event");
        assert_eq!(item["length"], lines[2].len());
        assert_eq!(event["level"], "error");
        assert_eq!(event["logger"], "renewer");
        assert_eq!(event["platform"], "other");
        assert_eq!(event["message"], "renew failed");
        assert_eq!(event["logentry"]["formatted"], "renew failed");
        assert_eq!(event["environment"], "staging");
        assert_eq!(event["release"], RELEASE);
        assert_eq!(event["server_name"], "vdbi-0");
        assert_eq!(event["tags"]["mode"], "injector");
        let tag = event["tags"]["error"].as_str().unwrap();
        assert_eq!(tag.chars().count(), TAG_VALUE_MAX);
        assert!(tag.starts_with("line1 x"));
        assert!(event["extra"]["error"].as_str().unwrap().len() > 300);
        let fatal = shared().event(Level::Critical, "m", BTreeMap::new());
        assert_eq!(fatal.json()["level"], "fatal");
        assert_eq!(fatal.json()["logger"], "vdbi");
    }

    #[test]
    fn fields_are_logger_values_then_record_kvs() {
        struct Capture(std::sync::Mutex<Vec<BTreeMap<String, String>>>);
        impl Drain for Capture {
            type Ok = ();
            type Err = Never;
            fn log(&self, r: &Record<'_>, v: &OwnedKVList) -> Result<(), Never> {
                self.0.lock().unwrap().push(fields(r, v));
                Ok(())
            }
        }
        let cap = Arc::new(Capture(Default::default()));
        let log = slog::Logger::root(cap.clone(), slog::o!("app" => "vdbi", "where" => "root"));
        let log = log.new(slog::o!("component" => "revoker", "where" => "child"));
        slog::error!(log, "boom"; "uuid" => "u-1", "count" => 3, "where" => "record");
        let got = cap.0.lock().unwrap().pop().unwrap();
        assert_eq!(got["app"], "vdbi");
        assert_eq!(got["component"], "revoker");
        assert_eq!(got["uuid"], "u-1");
        assert_eq!(got["count"], "3");
        assert_eq!(got["where"], "record");
    }
}
