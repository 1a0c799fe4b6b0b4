//! The process's listening sockets, bound once when it starts and handed to the servers as they
//! are: a port already in use fails the start before any actor runs, and the address reported
//! (port 0 in tests) is the one served, with no window where another process could take it.

use crate::config::Config;
use std::net::{SocketAddr, TcpListener};

/// One bound socket and its actual address.
pub(super) struct Bound {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Bound {
    fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Bound { listener, addr })
    }

    /// The socket, for the server that serves it.
    pub fn into_listener(self) -> TcpListener {
        self.listener
    }
}

/// Every socket of a process: one metrics and one probe server whatever the mode (no port clash
/// in `all`), the webhook's when the mode runs the injector.
pub(super) struct Listeners {
    pub metrics: Bound,
    pub health: Bound,
    pub webhook: Option<Bound>,
}

impl Listeners {
    pub fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            metrics: Bound::bind(config.metrics_listen)?,
            health: Bound::bind(config.health_listen)?,
            webhook: if config.mode.runs_injector() {
                Some(Bound::bind(config.webhook_listen)?)
            } else {
                None
            },
        })
    }
}
