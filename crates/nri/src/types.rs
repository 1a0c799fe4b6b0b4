//! Plain Rust views of the NRI messages the handler sees, and their conversion from and to the
//! generated protobuf types.
//!
//! Environment values can hold credentials, so the `Debug` impls here print environment *keys*
//! only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use super::proto::api;

/// What the runtime told the plugin in `Configure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// Runtime name, e.g. `containerd`.
    pub runtime_name: String,
    /// Runtime version, e.g. `v2.1.4`.
    pub runtime_version: String,
    /// NRI module version of the runtime (NRI v0.12+ only; empty otherwise).
    pub nri_version: String,
    /// The runtime's per-request timeout (`plugin_request_timeout`); `None` when the runtime does
    /// not say (NRI before v0.7), in which case the NRI default of 2 s applies.
    pub request_timeout: Option<Duration>,
    /// The runtime's registration timeout; `None` when not sent.
    pub registration_timeout: Option<Duration>,
    /// Plugin-specific configuration text (only for runtime-launched plugins).
    pub config: String,
}

/// A pod sandbox as NRI describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSandboxInfo {
    /// CRI sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A container as NRI describes it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// CRI container id.
    pub id: String,
    /// CRI sandbox id of the container's pod.
    pub pod_sandbox_id: String,
    /// Kubernetes container name.
    pub name: String,
    /// OCI process environment, each entry `KEY=VALUE` (`$(VAR)` already expanded by the kubelet).
    pub env: Vec<String>,
    /// OCI process arguments.
    pub args: Vec<String>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Container annotations.
    pub annotations: BTreeMap<String, String>,
}

impl ContainerInfo {
    /// Environment keys, in order (for logging: never log the values).
    pub fn env_keys(&self) -> impl Iterator<Item = &str> {
        self.env
            .iter()
            .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
    }
}

impl fmt::Debug for ContainerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerInfo")
            .field("id", &self.id)
            .field("pod_sandbox_id", &self.pod_sandbox_id)
            .field("name", &self.name)
            .field("env_keys", &self.env_keys().collect::<Vec<_>>())
            .field("args", &format_args!("[{} args]", self.args.len()))
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .finish()
    }
}

/// Environment (and argument) changes the plugin asks for on a container being created.
///
/// Each entry sets (or replaces in place) one variable. Only emit variables whose value really
/// changes: the runtime records the plugin as owner of every key it sets, and two owners of one
/// key (another plugin, or a stale connection of this one) make container creation fail.
///
/// `args`, when set, replaces the whole process argument list (`ContainerAdjustment.args`,
/// NRI v0.10+; older runtimes silently ignore it, so only send it to runtimes known to apply it).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvAdjustment {
    /// `(key, value)` pairs to set.
    pub set: Vec<(String, String)>,
    /// Replacement process arguments (`None`: leave them alone).
    pub args: Option<Vec<String>>,
}

impl EnvAdjustment {
    /// No adjustment.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds one variable to set.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.set.push((key.into(), value.into()));
    }

    /// True when nothing is to be changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.args.is_none()
    }

    /// Keys that are set (for logging: never log the values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|(k, _)| k.as_str())
    }

    /// Checks that every key is something the runtime will treat as "set this variable".
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (key, _) in &self.set {
            if key.is_empty() || key.starts_with('-') || key.contains('=') || key.contains('\0') {
                return Err(format!("invalid environment key {key:?} in adjustment"));
            }
        }
        match &self.args {
            Some(args) if args.is_empty() || args[0].is_empty() => {
                Err("replacement args must be non-empty and start with the program".into())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for EnvAdjustment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvAdjustment")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .field(
                "args",
                &self.args.as_ref().map(|a| format!("[{} args]", a.len())),
            )
            .finish()
    }
}

/// Event subscription mask as sent in `ConfigureResponse.events`: bit `event - 1` per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventMask(pub i32);

impl EventMask {
    /// `STOP_POD_SANDBOX` (event 2).
    pub const STOP_POD_SANDBOX: EventMask = EventMask(1 << 1);
    /// `REMOVE_POD_SANDBOX` (event 3).
    pub const REMOVE_POD_SANDBOX: EventMask = EventMask(1 << 2);
    /// `CREATE_CONTAINER` (event 4).
    pub const CREATE_CONTAINER: EventMask = EventMask(1 << 3);
    /// What a [`crate::Stub`] subscribes to: the events [`crate::NriHandler`] has methods for,
    /// `CREATE_CONTAINER | REMOVE_POD_SANDBOX` (0xC). Never 0, which the runtime would read as
    /// "every event".
    pub const HANDLED: EventMask = EventMask(Self::CREATE_CONTAINER.0 | Self::REMOVE_POD_SANDBOX.0);

    /// True when every bit of `other` is set here.
    pub fn contains(self, other: EventMask) -> bool {
        self.0 & other.0 == other.0
    }
}

fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn unsorted(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn millis(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

impl From<api::ConfigureRequest> for RuntimeInfo {
    fn from(req: api::ConfigureRequest) -> Self {
        Self {
            runtime_name: req.runtime_name,
            runtime_version: req.runtime_version,
            nri_version: req.NRI_version,
            request_timeout: millis(req.request_timeout),
            registration_timeout: millis(req.registration_timeout),
            config: req.config,
        }
    }
}

impl From<&RuntimeInfo> for api::ConfigureRequest {
    fn from(info: &RuntimeInfo) -> Self {
        let ms =
            |d: Option<Duration>| d.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            config: info.config.clone(),
            runtime_name: info.runtime_name.clone(),
            runtime_version: info.runtime_version.clone(),
            registration_timeout: ms(info.registration_timeout),
            request_timeout: ms(info.request_timeout),
            NRI_version: info.nri_version.clone(),
            ..Default::default()
        }
    }
}

impl From<api::PodSandbox> for PodSandboxInfo {
    fn from(pod: api::PodSandbox) -> Self {
        Self {
            id: pod.id,
            name: pod.name,
            uid: pod.uid,
            namespace: pod.namespace,
            labels: sorted(pod.labels),
            annotations: sorted(pod.annotations),
        }
    }
}

impl From<&PodSandboxInfo> for api::PodSandbox {
    fn from(pod: &PodSandboxInfo) -> Self {
        Self {
            id: pod.id.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            labels: unsorted(&pod.labels),
            annotations: unsorted(&pod.annotations),
            ..Default::default()
        }
    }
}

impl From<api::Container> for ContainerInfo {
    fn from(c: api::Container) -> Self {
        Self {
            id: c.id,
            pod_sandbox_id: c.pod_sandbox_id,
            name: c.name,
            env: c.env,
            args: c.args,
            labels: sorted(c.labels),
            annotations: sorted(c.annotations),
        }
    }
}

impl From<&ContainerInfo> for api::Container {
    fn from(c: &ContainerInfo) -> Self {
        Self {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_sandbox_id.clone(),
            name: c.name.clone(),
            env: c.env.clone(),
            args: c.args.clone(),
            labels: unsorted(&c.labels),
            annotations: unsorted(&c.annotations),
            ..Default::default()
        }
    }
}

impl From<&EnvAdjustment> for api::ContainerAdjustment {
    fn from(adj: &EnvAdjustment) -> Self {
        Self {
            env: adj
                .set
                .iter()
                .map(|(key, value)| api::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                })
                .collect(),
            args: adj.args.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

impl From<api::ContainerAdjustment> for EnvAdjustment {
    fn from(adj: api::ContainerAdjustment) -> Self {
        Self {
            set: adj.env.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            args: (!adj.args.is_empty()).then_some(adj.args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_env_values() {
        let container = ContainerInfo {
            env: vec!["DB_PASSWORD=hunter2".into(), "EMPTY".into()],
            args: vec!["--password=hunter2".into()],
            ..Default::default()
        };
        let mut adj = EnvAdjustment::none();
        adj.push("DB_PASSWORD", "hunter2");
        adj.args = Some(vec!["/app".into(), "--password=hunter2".into()]);
        let text = format!("{container:?} {adj:?}");
        assert!(text.contains("DB_PASSWORD"), "{text}");
        assert!(text.contains("EMPTY"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn event_mask_bits_follow_the_nri_enum() {
        assert_eq!(EventMask::HANDLED.0, 0xC);
        assert_eq!(EventMask::STOP_POD_SANDBOX.0, 0x2);
        assert!(EventMask::HANDLED.contains(EventMask::CREATE_CONTAINER));
        assert!(!EventMask::HANDLED.contains(EventMask::STOP_POD_SANDBOX));
    }

    #[test]
    fn adjustment_keys_are_validated() {
        let ok = EnvAdjustment {
            set: vec![("A".into(), "x=y".into())],
            args: Some(vec!["/bin/app".into(), String::new()]),
        };
        assert!(ok.validate().is_ok());
        for bad in ["", "-A", "A=B", "A\0"] {
            let adj = EnvAdjustment {
                set: vec![(bad.into(), "v".into())],
                args: None,
            };
            assert!(adj.validate().is_err(), "{bad:?} accepted");
        }
        for bad_args in [vec![], vec![String::new(), "x".into()]] {
            let adj = EnvAdjustment {
                set: vec![],
                args: Some(bad_args),
            };
            assert!(adj.validate().is_err());
        }
    }

    #[test]
    fn zero_timeouts_mean_not_sent() {
        let info = RuntimeInfo::from(api::ConfigureRequest {
            request_timeout: 0,
            registration_timeout: 5000,
            ..Default::default()
        });
        assert_eq!(info.request_timeout, None);
        assert_eq!(info.registration_timeout, Some(Duration::from_secs(5)));
    }
}
