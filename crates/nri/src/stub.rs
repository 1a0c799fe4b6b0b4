//! The plugin side of an NRI connection: connect, serve the Plugin service, register, and report
//! when the connection ends.
//!
//! Order matters on the wire: the runtime may send `Configure` on conn 1 before the
//! `RegisterPlugin` reply arrives on conn 2, and the Go mux drops frames of connections that are
//! not open. So both connections are opened and the Plugin service is serving before the
//! registration request goes out.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc;
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::{Client, Server};

use log::{info, warn};

use super::backoff::ReconnectBackoff;
use super::error::NriError;
use super::handler::NriHandler;
use super::mux::{ConnId, Mux, MuxConfig, MuxEnd, MuxHandle};
use super::plugin_service::{PluginService, ServiceSignal};
use super::proto::{api, api_ttrpc};
use super::types::EventMask;

/// Where containerd and CRI-O listen for external NRI plugins by default.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/nri/nri.sock";

/// How the stub connects and identifies itself.
#[derive(Clone, Debug)]
pub struct StubConfig {
    /// NRI socket of the runtime.
    pub socket_path: PathBuf,
    /// Plugin name (`[a-zA-Z0-9_.+-]+`), e.g. `my-plugin`.
    pub plugin_name: String,
    /// Plugin index: exactly two digits; plugins are called in ascending order.
    pub plugin_idx: String,
    /// How long to wait for the `RegisterPlugin` reply.
    pub registration_timeout: Duration,
    /// Share of the runtime's request timeout a handler call may take before the stub answers
    /// with an error itself (0 < f ≤ 1; default 0.75, i.e. 1.5 s of containerd's 2 s).
    pub deadline_fraction: f64,
    /// Sent as `RegisterPluginRequest.NRI_version` (informational for the runtime).
    pub nri_version: String,
}

impl StubConfig {
    /// Defaults for everything but the identity.
    pub fn new(plugin_name: impl Into<String>, plugin_idx: impl Into<String>) -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            plugin_name: plugin_name.into(),
            plugin_idx: plugin_idx.into(),
            registration_timeout: Duration::from_secs(5),
            deadline_fraction: 0.75,
            nri_version: String::new(),
        }
    }

    /// Checks what the runtime would reject, and our own tunables.
    pub fn validate(&self) -> Result<(), NriError> {
        let name_ok = !self.plugin_name.is_empty()
            && self
                .plugin_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        if !name_ok {
            return Err(NriError::InvalidIdentity(format!(
                "plugin name {:?} must be non-empty and use only [a-zA-Z0-9_.+-]",
                self.plugin_name
            )));
        }
        let idx_ok =
            self.plugin_idx.len() == 2 && self.plugin_idx.bytes().all(|b| b.is_ascii_digit());
        if !idx_ok {
            return Err(NriError::InvalidIdentity(format!(
                "plugin index {:?} must be exactly two digits",
                self.plugin_idx
            )));
        }
        if !(self.deadline_fraction > 0.0 && self.deadline_fraction <= 1.0) {
            return Err(NriError::InvalidIdentity(format!(
                "deadline fraction {} must be in (0, 1]",
                self.deadline_fraction
            )));
        }
        Ok(())
    }
}

/// Connects a [`NriHandler`] to the runtime. Cheap to keep; each [`Stub::connect`] makes a new
/// connection and registration.
pub struct Stub {
    config: StubConfig,
    handler: Arc<dyn NriHandler>,
    /// `IDX-NAME`, the `plugin` field of every log record.
    id: String,
}

impl Stub {
    /// Checks the configuration and prepares a stub.
    pub fn new(config: StubConfig, handler: Arc<dyn NriHandler>) -> Result<Self, NriError> {
        config.validate()?;
        let id = format!("{}-{}", config.plugin_idx, config.plugin_name);
        Ok(Self {
            config,
            handler,
            id,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &StubConfig {
        &self.config
    }

    /// Connects to the runtime and registers. Returns once the runtime accepted the
    /// registration; `Configure` and `Synchronize` may still be in flight (they reach the handler
    /// as usual). Must be called inside a tokio runtime.
    pub async fn connect(&self) -> Result<Session, NriError> {
        let path = &self.config.socket_path;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| NriError::Connect {
                path: path.clone(),
                source,
            })?;

        let mut mux = Mux::new(stream, MuxConfig::default());
        let plugin_conn = mux.open(ConnId::PLUGIN_SERVICE)?;
        let runtime_conn = mux.open(ConnId::RUNTIME_SERVICE)?;
        let mux = mux.start();

        let (signals_tx, signals) = mpsc::unbounded_channel();
        let service = PluginService::new(
            self.handler.clone(),
            EventMask::HANDLED,
            self.config.deadline_fraction,
            signals_tx,
            self.id.clone(),
        );
        let mut server = Server::new()
            .register_service(api_ttrpc::create_plugin(Arc::new(service)))
            .add_listener(plugin_conn.into_ttrpc_listener());
        if let Err(e) = server.start().await {
            mux.close();
            return Err(NriError::Transport {
                method: "serve Plugin",
                message: e.to_string(),
            });
        }

        let runtime = api_ttrpc::RuntimeClient::new(Client::new(Socket::new(runtime_conn)));
        let request = api::RegisterPluginRequest {
            plugin_name: self.config.plugin_name.clone(),
            plugin_idx: self.config.plugin_idx.clone(),
            NRI_version: self.config.nri_version.clone(),
            ..Default::default()
        };
        let timeout = self.config.registration_timeout;
        let ctx = ttrpc::context::with_duration(timeout);
        let registered =
            tokio::time::timeout(timeout, runtime.register_plugin(ctx, &request)).await;
        let failure = match registered {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(NriError::from_ttrpc("RegisterPlugin", e)),
            Err(_) => Some(NriError::Timeout {
                what: "RegisterPlugin",
                after: timeout,
            }),
        };
        if let Some(e) = failure {
            mux.close();
            // If the trunk died meanwhile, that is the more useful reason.
            return Err(match mux.end() {
                Some(end @ (MuxEnd::Eof | MuxEnd::Io(_) | MuxEnd::Protocol(_))) => end.into(),
                _ => e,
            });
        }
        info!(plugin = self.id.as_str(), socket:% = path.display();
            "NRI plugin {} registered with the runtime at {}", self.id, path.display());
        Ok(Session {
            mux,
            signals,
            _server: std::sync::Mutex::new(server),
            _runtime: runtime,
        })
    }

    /// Keeps the plugin connected until `shutdown` resolves: connect, wait for the session to
    /// end, wait out the backoff, reconnect. The backoff is reset after every successful
    /// registration. Returns `Ok` on shutdown and [`NriError::ReconnectExhausted`] when
    /// consecutive failures use up the schedule.
    pub async fn run(
        &self,
        backoff: &mut ReconnectBackoff,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NriError> {
        tokio::pin!(shutdown);
        loop {
            let attempt = async {
                match self.connect().await {
                    Ok(mut session) => {
                        backoff.reset();
                        let end = session.closed().await;
                        warn!(plugin = self.id.as_str(), reason:? = end;
                            "NRI connection of {} ended: {end:?}", self.id);
                    }
                    Err(e) => {
                        warn!(plugin = self.id.as_str(), error:% = e;
                            "NRI connection attempt of {} failed: {e}", self.id)
                    }
                }
                backoff.next_delay()
            };
            let delay = tokio::select! {
                () = &mut shutdown => return Ok(()),
                delay = attempt => delay,
            };
            let Some(delay) = delay else {
                return Err(NriError::ReconnectExhausted {
                    attempts: backoff.attempts(),
                });
            };
            info!(
                plugin = self.id.as_str(),
                in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                attempt = backoff.attempts();
                "NRI plugin {} reconnecting in {delay:?} (attempt {})", self.id, backoff.attempts()
            );
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// How a [`Session`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The connection went away (runtime restart, NRI reload, I/O or protocol error).
    Disconnected(MuxEnd),
    /// The runtime called `Shutdown`.
    Shutdown,
}

/// One registered connection to the runtime. Dropping it closes the connection.
pub struct Session {
    mux: MuxHandle,
    signals: mpsc::UnboundedReceiver<ServiceSignal>,
    // Held for their lifetime: dropping the server stops serving the Plugin service.
    // In a mutex only to make the holder `Sync` (ttrpc's `Server` is `Send` but not `Sync`).
    _server: std::sync::Mutex<Server>,
    _runtime: api_ttrpc::RuntimeClient,
}

impl Session {
    /// Resolves when the connection ends.
    pub async fn closed(&mut self) -> SessionEnd {
        tokio::select! {
            end = self.mux.closed() => SessionEnd::Disconnected(end),
            Some(ServiceSignal::Shutdown) = self.signals.recv() => {
                // Give the Shutdown reply a moment to leave before the trunk closes.
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.mux.close();
                SessionEnd::Shutdown
            }
        }
    }

    /// Closes the connection (the runtime sees EOF).
    pub fn close(&self) {
        self.mux.close();
    }

    /// The connection's mux handle, to watch or close the connection from elsewhere (e.g. a
    /// supervising actor).
    pub fn mux(&self) -> &MuxHandle {
        &self.mux
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.mux.close();
    }
}
