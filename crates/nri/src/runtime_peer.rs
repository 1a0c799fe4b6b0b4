//! A runtime-side NRI peer speaking the real wire protocol, for tests and the load-test harness.
//!
//! It behaves like containerd's NRI adaptation towards one external plugin: listens on a unix
//! socket, serves `Runtime.RegisterPlugin` on conn 2, then drives the plugin on conn 1 as a ttrpc
//! client — `Configure` (rejecting invalid event masks), `Synchronize` (optionally split, checking
//! the `more` echo), and on demand `CreateContainer`, `RemovePodSandbox` and `StateChange`.
//!
//! Like containerd it enforces the Go reader's frame rule on everything the plugin sends (a
//! frame the Go mux/bufio pair could not read ends the connection with a protocol error), and on
//! a request timeout or a transport error it closes the plugin connection (containerd then
//! creates the container without the plugin's adjustment). Unlike containerd it does not
//! serialize requests: callers may issue them concurrently.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::{Client, Server, TtrpcContext};
use ttrpc::Code;

use super::error::NriError;
use super::mux::{ConnId, Mux, MuxConfig, MuxEnd, MuxHandle, MAX_FRAME_PAYLOAD};
use super::proto::{api, api_ttrpc};
use super::types::{ContainerInfo, EnvAdjustment, EventMask, PodSandboxInfo, RuntimeInfo};

/// Events a runtime on NRI v0.10+ accepts in a subscription (`ValidEvents`, 0x3FFF).
pub const VALID_EVENTS: EventMask = EventMask((1 << 14) - 1);

/// Fully qualified name of the Plugin service.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";

/// How the peer behaves.
#[derive(Clone, Debug)]
pub struct RuntimePeerConfig {
    /// Socket to listen on (stale sockets are removed, the parent is created with mode 0700).
    pub socket_path: PathBuf,
    /// What `Configure` tells the plugin; `request_timeout` is also the per-request deadline and
    /// `registration_timeout` the wait for `RegisterPlugin` (defaults 2 s and 5 s).
    pub runtime: RuntimeInfo,
    /// Pods sent in `Synchronize`.
    pub pods: Vec<PodSandboxInfo>,
    /// Containers sent in `Synchronize`.
    pub containers: Vec<ContainerInfo>,
    /// Objects (pods + containers) per `Synchronize` message; `None` sends one message.
    pub sync_chunk: Option<usize>,
    /// Largest frame payload the peer sends (the Go writer sends up to 10 + 4 MiB).
    pub max_outgoing_payload: usize,
}

impl RuntimePeerConfig {
    /// containerd-like defaults on the given socket.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            runtime: RuntimeInfo {
                runtime_name: "nri-runtime-peer".into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                nri_version: String::new(),
                request_timeout: Some(Duration::from_secs(2)),
                registration_timeout: Some(Duration::from_secs(5)),
                config: String::new(),
            },
            pods: Vec::new(),
            containers: Vec::new(),
            sync_chunk: None,
            max_outgoing_payload: MAX_FRAME_PAYLOAD,
        }
    }

    fn request_timeout(&self) -> Duration {
        self.runtime
            .request_timeout
            .unwrap_or(Duration::from_secs(2))
    }

    fn registration_timeout(&self) -> Duration {
        self.runtime
            .registration_timeout
            .unwrap_or(Duration::from_secs(5))
    }
}

/// Identity a plugin registered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// `RegisterPluginRequest.plugin_name`.
    pub plugin_name: String,
    /// `RegisterPluginRequest.plugin_idx`.
    pub plugin_idx: String,
    /// `RegisterPluginRequest.NRI_version`.
    pub nri_version: String,
}

/// A listening runtime-side peer.
pub struct RuntimePeer {
    listener: UnixListener,
    config: RuntimePeerConfig,
}

impl RuntimePeer {
    /// Listens on `config.socket_path`. Must be called inside a tokio runtime.
    pub fn bind(config: RuntimePeerConfig) -> Result<Self, NriError> {
        let path = &config.socket_path;
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let listener = UnixListener::bind(path)?;
        Ok(Self { listener, config })
    }

    /// The socket path plugins connect to.
    pub fn socket_path(&self) -> &Path {
        &self.config.socket_path
    }

    /// The configuration in use.
    pub fn config(&self) -> &RuntimePeerConfig {
        &self.config
    }

    /// Accepts the next plugin and runs registration, `Configure` and `Synchronize`.
    pub async fn accept(&self) -> Result<PluginConnection, NriError> {
        let (stream, _) = self.listener.accept().await?;
        let mut mux = Mux::new(
            stream,
            MuxConfig {
                max_outgoing_payload: self.config.max_outgoing_payload,
                enforce_go_read_rule: true,
                ..MuxConfig::default()
            },
        );
        let plugin_conn = mux.open(ConnId::PLUGIN_SERVICE)?;
        let runtime_conn = mux.open(ConnId::RUNTIME_SERVICE)?;

        let (registered_tx, registered_rx) = oneshot::channel();
        let service = RuntimeService {
            registered: Mutex::new(Some(registered_tx)),
        };
        let mut server = Server::new()
            .register_service(api_ttrpc::create_runtime(Arc::new(service)))
            .add_listener(runtime_conn.into_ttrpc_listener());
        let client = Client::new(Socket::new(plugin_conn));
        let mux = mux.start();
        // `start` only fails without a listener; we always added one.
        server.start().await.map_err(|e| NriError::Transport {
            method: "serve Runtime",
            message: e.to_string(),
        })?;

        let connection = PluginConnection {
            registration: Registration {
                plugin_name: String::new(),
                plugin_idx: String::new(),
                nri_version: String::new(),
            },
            events: EventMask(0),
            plugin: api_ttrpc::PluginClient::new(client.clone()),
            client,
            mux,
            request_timeout: self.config.request_timeout(),
            dedicated_pod_rpcs: AtomicBool::new(true),
            _server: std::sync::Mutex::new(server),
        };
        connection.handshake(&self.config, registered_rx).await
    }
}

fn create_private_dir(dir: &Path) -> Result<(), NriError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The Runtime service served on conn 2.
struct RuntimeService {
    registered: Mutex<Option<oneshot::Sender<Result<Registration, String>>>>,
}

impl RuntimeService {
    fn signal(&self, result: Result<Registration, String>) {
        let sender = self
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }
}

#[async_trait]
impl api_ttrpc::Runtime for RuntimeService {
    async fn register_plugin(
        &self,
        _ctx: &TtrpcContext,
        req: api::RegisterPluginRequest,
    ) -> ttrpc::Result<api::Empty> {
        let name_ok = !req.plugin_name.is_empty()
            && req
                .plugin_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        let idx_ok =
            req.plugin_idx.len() == 2 && req.plugin_idx.bytes().all(|b| b.is_ascii_digit());
        let result = match (name_ok, idx_ok) {
            (false, _) => Err(format!("invalid plugin name {:?}", req.plugin_name)),
            (_, false) => Err(format!("invalid plugin index {:?}", req.plugin_idx)),
            _ => Ok(Registration {
                plugin_name: req.plugin_name,
                plugin_idx: req.plugin_idx,
                nri_version: req.NRI_version,
            }),
        };
        // Like containerd: signal "registered" before replying, so Configure may overtake the
        // reply on the wire.
        self.signal(result.clone());
        match result {
            Ok(_) => Ok(api::Empty::default()),
            Err(e) => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::INVALID_ARGUMENT,
                e,
            ))),
        }
    }

    async fn update_containers(
        &self,
        _ctx: &TtrpcContext,
        _req: api::UpdateContainersRequest,
    ) -> ttrpc::Result<api::UpdateContainersResponse> {
        Ok(api::UpdateContainersResponse::default())
    }
}

/// A registered, configured and synchronized plugin connection.
pub struct PluginConnection {
    /// Identity the plugin registered with.
    pub registration: Registration,
    /// Event subscription after `Configure` (0 from the plugin is widened to all valid events).
    pub events: EventMask,
    plugin: api_ttrpc::PluginClient,
    client: Client,
    mux: MuxHandle,
    request_timeout: Duration,
    /// NRI v0.12 behaviour: use dedicated pod RPCs until the plugin answers UNIMPLEMENTED once.
    dedicated_pod_rpcs: AtomicBool,
    // In a mutex only to make the holder `Sync` (ttrpc's `Server` is `Send` but not `Sync`).
    _server: std::sync::Mutex<Server>,
}

impl PluginConnection {
    async fn handshake(
        mut self,
        config: &RuntimePeerConfig,
        registered: oneshot::Receiver<Result<Registration, String>>,
    ) -> Result<Self, NriError> {
        let wait = config.registration_timeout();
        let registration = tokio::select! {
            result = tokio::time::timeout(wait, registered) => match result {
                Ok(Ok(Ok(registration))) => registration,
                Ok(Ok(Err(e))) => return Err(self.fail(NriError::Protocol(e))),
                Ok(Err(_)) => return Err(self.fail(NriError::Closed("runtime service ended".into()))),
                Err(_) => return Err(self.fail(NriError::Timeout { what: "plugin registration", after: wait })),
            },
            end = self.mux.closed() => return Err(end.into()),
        };
        self.registration = registration;

        let request = api::ConfigureRequest::from(&config.runtime);
        let reply = self
            .request("Configure", |plugin, ctx| async move {
                plugin.configure(ctx, &request).await
            })
            .await?;
        let events = EventMask(reply.events);
        self.events = if events.0 == 0 {
            VALID_EVENTS
        } else if events.0 & !VALID_EVENTS.0 != 0 {
            return Err(self.fail(NriError::Protocol(format!(
                "invalid plugin events: {:#x}",
                events.0 & !VALID_EVENTS.0
            ))));
        } else {
            events
        };

        self.synchronize(config).await?;
        Ok(self)
    }

    async fn synchronize(&self, config: &RuntimePeerConfig) -> Result<(), NriError> {
        let pods: Vec<api::PodSandbox> = config.pods.iter().map(Into::into).collect();
        let containers: Vec<api::Container> = config.containers.iter().map(Into::into).collect();
        let chunk = config.sync_chunk.unwrap_or(usize::MAX).max(1);
        let (mut pods, mut containers) = (pods.as_slice(), containers.as_slice());
        loop {
            let take_pods = pods.len().min(chunk);
            let take_containers = containers.len().min(chunk - take_pods);
            let more = take_pods < pods.len() || take_containers < containers.len();
            let request = api::SynchronizeRequest {
                pods: pods[..take_pods].to_vec(),
                containers: containers[..take_containers].to_vec(),
                more,
                ..Default::default()
            };
            let reply = self
                .request("Synchronize", |plugin, ctx| async move {
                    plugin.synchronize(ctx, &request).await
                })
                .await?;
            if !more {
                return Ok(());
            }
            if !reply.update.is_empty() || !reply.more {
                return Err(self.fail(NriError::Protocol(
                    "plugin does not handle split sync requests".into(),
                )));
            }
            pods = &pods[take_pods..];
            containers = &containers[take_containers..];
        }
    }

    /// Sends `CreateContainer` and returns the plugin's environment adjustment. An error status
    /// from the plugin is returned as [`NriError::Status`] (containerd fails the creation); a
    /// timeout or transport failure closes the connection, as containerd does.
    pub async fn create_container(
        &self,
        pod: &PodSandboxInfo,
        container: &ContainerInfo,
    ) -> Result<EnvAdjustment, NriError> {
        let request = api::CreateContainerRequest {
            pod: Some(api::PodSandbox::from(pod)).into(),
            container: Some(api::Container::from(container)).into(),
            ..Default::default()
        };
        let reply = self
            .request("CreateContainer", |plugin, ctx| async move {
                plugin.create_container(ctx, &request).await
            })
            .await?;
        Ok(reply
            .adjust
            .into_option()
            .map(EnvAdjustment::from)
            .unwrap_or_default())
    }

    /// Delivers a pod removal the way an NRI v0.12+ runtime does: the dedicated
    /// `RemovePodSandbox` RPC, falling back to `StateChange` for good once the plugin answers
    /// UNIMPLEMENTED.
    pub async fn remove_pod_sandbox(&self, pod: &PodSandboxInfo) -> Result<(), NriError> {
        if self.dedicated_pod_rpcs.load(Ordering::Relaxed) {
            let request = api::RemovePodSandboxRequest {
                pod: Some(api::PodSandbox::from(pod)).into(),
                ..Default::default()
            };
            match self
                .request("RemovePodSandbox", |plugin, ctx| async move {
                    plugin.remove_pod_sandbox(ctx, &request).await
                })
                .await
            {
                Err(NriError::Status {
                    code: Code::UNIMPLEMENTED,
                    ..
                }) => self.dedicated_pod_rpcs.store(false, Ordering::Relaxed),
                other => return other.map(|_| ()),
            }
        }
        self.state_change(api::Event::REMOVE_POD_SANDBOX, pod).await
    }

    /// Delivers a pod removal the way runtimes before NRI v0.12 do: `StateChange` only.
    pub async fn remove_pod_sandbox_legacy(&self, pod: &PodSandboxInfo) -> Result<(), NriError> {
        self.state_change(api::Event::REMOVE_POD_SANDBOX, pod).await
    }

    async fn state_change(&self, event: api::Event, pod: &PodSandboxInfo) -> Result<(), NriError> {
        let request = api::StateChangeEvent {
            event: event.into(),
            pod: Some(api::PodSandbox::from(pod)).into(),
            ..Default::default()
        };
        self.request("StateChange", |plugin, ctx| async move {
            plugin.state_change(ctx, &request).await
        })
        .await
        .map(|_| ())
    }

    /// Calls any Plugin-service method by name with a raw protobuf payload (to probe methods
    /// the generated client does not know, e.g. `RunPodSandbox`). Returns the reply payload.
    pub async fn call_raw(&self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, NriError> {
        let mut request = ttrpc::Request::new();
        request.set_service(PLUGIN_SERVICE.to_string());
        request.set_method(method.to_string());
        request
            .set_timeout_nano(i64::try_from(self.request_timeout.as_nanos()).unwrap_or(i64::MAX));
        request.payload = payload;
        let client = self.client.clone();
        let reply = self
            .request("raw request", |_, _| async move {
                client.request(request).await
            })
            .await?;
        Ok(reply.payload)
    }

    /// Runs one request under the runtime's request timeout, with containerd's error handling.
    async fn request<T, F, Fut>(&self, method: &'static str, call: F) -> Result<T, NriError>
    where
        F: FnOnce(api_ttrpc::PluginClient, ttrpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = ttrpc::Result<T>>,
    {
        let timeout = self.request_timeout;
        let ctx = ttrpc::context::with_duration(timeout);
        let outcome = tokio::time::timeout(timeout, call(self.plugin.clone(), ctx)).await;
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(ttrpc::Error::RpcStatus(status))) => Err(NriError::Status {
                method,
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Ok(Err(e)) => {
                let deadline = matches!(&e, ttrpc::Error::Others(m) if m.contains("deadline"));
                let err = if deadline {
                    NriError::Timeout {
                        what: method,
                        after: timeout,
                    }
                } else {
                    // The mux reason (e.g. a Go-read-rule violation) explains more than ttrpc.
                    match self.mux.end() {
                        Some(end @ MuxEnd::Protocol(_)) => end.into(),
                        _ => NriError::from_ttrpc(method, e),
                    }
                };
                Err(self.fail(err))
            }
            Err(_) => Err(self.fail(NriError::Timeout {
                what: method,
                after: timeout,
            })),
        }
    }

    /// containerd's reaction to a fatal plugin error: drop the connection.
    fn fail(&self, err: NriError) -> NriError {
        self.mux.close();
        err
    }

    /// Closes the connection (the plugin sees EOF).
    pub fn close(&self) {
        self.mux.close();
    }

    /// Waits until the connection has ended and tells why.
    pub async fn closed(&self) -> MuxEnd {
        self.mux.closed().await
    }

    /// Why the connection ended, if it has (e.g. a protocol violation by the plugin).
    pub fn end(&self) -> Option<MuxEnd> {
        self.mux.end()
    }
}

impl Drop for PluginConnection {
    fn drop(&mut self) {
        self.mux.close();
    }
}
