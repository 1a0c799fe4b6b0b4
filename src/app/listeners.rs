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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    fn config(mode: Mode) -> Config {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Config {
            mode,
            metrics_listen: any,
            health_listen: any,
            webhook_listen: any,
            ..Config::default()
        }
    }

    /// The sockets stay bound from start to serve: the address reported is taken, not free.
    #[test]
    fn sockets_are_bound_once_and_held() {
        let l = Listeners::bind(&config(Mode::All)).unwrap();
        let webhook = l.webhook.as_ref().expect("all runs the injector");
        for addr in [l.metrics.addr, l.health.addr, webhook.addr] {
            assert_ne!(addr.port(), 0);
            assert!(TcpListener::bind(addr).is_err(), "{addr} is free");
        }
        let held = l.metrics.addr;
        let listener = l.metrics.into_listener();
        assert_eq!(listener.local_addr().unwrap(), held);
    }

    #[test]
    fn only_the_injector_binds_the_webhook() {
        for (mode, webhook) in [
            (Mode::Injector, true),
            (Mode::All, true),
            (Mode::Renewer, false),
            (Mode::Revoker, false),
            (Mode::Nri, false),
        ] {
            let l = Listeners::bind(&config(mode)).unwrap();
            assert_eq!(l.webhook.is_some(), webhook, "{mode:?}");
        }
    }

    /// A port in use fails the start at once, before anything else is started.
    #[test]
    fn a_port_in_use_fails_the_bind() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Config {
            health_listen: taken.local_addr().unwrap(),
            ..config(Mode::Renewer)
        };
        let err = Listeners::bind(&c).err().expect("bind must fail");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
