//! Supervision of vdbi's actors.
//!
//! actix's own `Supervisor` restarts an actor that *stops*, but a panic in a handler kills the
//! actor's task without a restart. vdbi's supervisor covers both: every supervised actor holds a
//! [`RestartGuard`]; when the actor is dropped — normal stop or panic unwinding — the guard wakes
//! the supervisor, which counts the restart (`vdbi_actor_restarts_total{actor}`), logs it, waits
//! with exponential backoff and starts a fresh instance from the factory. Other actors keep
//! serving meanwhile. Callers reach the current instance through an [`ActorHandle`], which is
//! `Send + Sync` and survives restarts.

use super::error::ActorError;
use crate::telemetry::Metrics;
use actix::{Actor, Addr, Context, Handler, MailboxError, Message};
use arc_swap::ArcSwap;
use slog::{error, info, Logger};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Held by a supervised actor; wakes the supervisor when the actor goes away.
pub struct RestartGuard {
    tx: Option<oneshot::Sender<()>>,
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
    }
}

impl RestartGuard {
    /// A guard tied to nothing (actors started outside a supervisor, e.g. in unit tests).
    pub fn detached() -> RestartGuard {
        RestartGuard { tx: None }
    }
}

/// A notification target (see [`ActorHandle::subscriber`]).
pub type Subscriber<M> = Arc<dyn Fn(M) + Send + Sync>;

/// Exponential backoff between restarts; reset after the actor has lived `stable_after`.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before restart number `attempt` (1-based) of a run of quick failures.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The restarts of one supervised actor or task: each is counted
/// (`vdbi_actor_restarts_total{actor}`) and waits the backoff of its run of quick failures.
struct Restarts {
    backoff: Backoff,
    counter: prometheus::Counter,
    quick_failures: u32,
}

impl Restarts {
    fn new(backoff: Backoff, counter: prometheus::Counter) -> Restarts {
        Restarts {
            backoff,
            counter,
            quick_failures: 0,
        }
    }

    /// Counts the end of an instance that ran since `started`; returns the delay before the
    /// next one and how many quick failures in a row that makes.
    fn record(&mut self, started: Instant) -> (Duration, u32) {
        if started.elapsed() >= self.backoff.stable_after {
            self.quick_failures = 0;
        }
        self.quick_failures += 1;
        self.counter.inc();
        (self.backoff.delay(self.quick_failures), self.quick_failures)
    }
}

struct Shared<A: Actor> {
    addr: ArcSwap<Addr<A>>,
    restarts: AtomicU64,
    shutdown: AtomicBool,
}

/// The address of a supervised actor, valid across restarts.
pub struct ActorHandle<A: Actor> {
    shared: Arc<Shared<A>>,
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> ActorHandle<A> {
    /// The current instance's address.
    pub fn addr(&self) -> Addr<A> {
        (**self.shared.addr.load()).clone()
    }

    /// Sends a message to the current instance.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
    {
        self.addr().send(msg).await
    }

    /// Sends a request whose reply is a `Result<T, ActorError>` and flattens a mailbox failure
    /// into the same error, so callers write `handle.call(msg).await?`.
    pub async fn call<M, T>(&self, msg: M) -> Result<T, ActorError>
    where
        M: Message<Result = Result<T, ActorError>> + Send + 'static,
        T: Send + 'static,
        A: Handler<M>,
    {
        self.addr().send(msg).await?
    }

    /// Fire-and-forget send (no backpressure; use for notifications only).
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
    {
        self.addr().do_send(msg)
    }

    /// A subscription callback that always reaches the current instance (survives restarts,
    /// unlike an `actix::Recipient` of one instance).
    pub fn subscriber<M>(&self) -> Subscriber<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
    {
        let h = self.clone();
        Arc::new(move |m| h.do_send(m))
    }

    /// How many times the actor was restarted.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Stops supervising: the next exit of the actor is final.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
    }
}

/// Starts `factory`'s actor on the current arbiter under supervision. The factory receives the
/// guard the actor must keep (as a field) for its whole life.
pub fn supervise<A, F>(
    name: &'static str,
    log: &Logger,
    metrics: &Metrics,
    backoff: Backoff,
    factory: F,
) -> ActorHandle<A>
where
    A: Actor<Context = Context<A>>,
    F: Fn(RestartGuard) -> A + 'static,
{
    let (tx, mut rx) = oneshot::channel();
    let first = factory(RestartGuard { tx: Some(tx) }).start();
    let shared = Arc::new(Shared {
        addr: ArcSwap::from_pointee(first),
        restarts: AtomicU64::new(0),
        shutdown: AtomicBool::new(false),
    });
    let handle = ActorHandle {
        shared: shared.clone(),
    };
    let log = log.new(slog::o!("actor" => name));
    let mut restarts = Restarts::new(backoff, metrics.process.restarts_of(name));
    actix::spawn(async move {
        let mut started = Instant::now();
        loop {
            let _ = (&mut rx).await;
            if shared.shutdown.load(Ordering::SeqCst) || actix::System::try_current().is_none() {
                info!(log, "actor stopped");
                return;
            }
            let (delay, consecutive) = restarts.record(started);
            shared.restarts.fetch_add(1, Ordering::Relaxed);
            error!(log, "actor died; restarting"; "delay_ms" => delay.as_millis() as u64, "consecutive" => consecutive);
            actix::clock::sleep(delay).await;
            if shared.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let (tx, new_rx) = oneshot::channel();
            rx = new_rx;
            started = Instant::now();
            shared
                .addr
                .store(Arc::new(factory(RestartGuard { tx: Some(tx) }).start()));
        }
    });
    handle
}

/// A background task run by [`supervise_task`]; dropping the handle leaves it running,
/// [`TaskHandle::stop`] ends it.
pub struct TaskHandle {
    name: &'static str,
    join: tokio::task::JoinHandle<()>,
}

impl TaskHandle {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Ends the task (and its supervision) at its next await point.
    pub fn stop(&self) {
        self.join.abort();
    }

    /// Waits until the task has ended (after [`TaskHandle::stop`]).
    pub async fn stopped(self) {
        let _ = self.join.await;
    }
}

/// Runs the task `factory` makes on the current arbiter under supervision, as [`supervise`]
/// does for actors: when it panics or returns, the supervisor counts a restart
/// (`vdbi_actor_restarts_total{actor=name}`), logs it and starts a fresh one from the factory
/// after the backoff. The tasks it is meant for (certificate reloaders, the readiness probe)
/// loop forever, so an end is always a failure.
pub fn supervise_task<F, Fut>(
    name: &'static str,
    log: &Logger,
    metrics: &Metrics,
    backoff: Backoff,
    factory: F,
) -> TaskHandle
where
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    use futures::FutureExt;
    let log = log.new(slog::o!("task" => name));
    let mut restarts = Restarts::new(backoff, metrics.process.restarts_of(name));
    let join = actix::spawn(async move {
        loop {
            let started = Instant::now();
            let ended = std::panic::AssertUnwindSafe(factory()).catch_unwind().await;
            if actix::System::try_current().is_none() {
                return;
            }
            let (delay, consecutive) = restarts.record(started);
            let how = if ended.is_err() {
                "panicked"
            } else {
                "returned"
            };
            error!(log, "task ended; restarting"; "how" => how,
                "delay_ms" => delay.as_millis() as u64, "consecutive" => consecutive);
            actix::clock::sleep(delay).await;
        }
    });
    TaskHandle { name, join }
}

/// Runs a one-shot task (one revocation, one undo, one revoke of a superseded token) detached
/// from its caller. There is nothing to restart — the work is done once — but a panic must not
/// pass unnoticed or leave state behind: it is caught, logged at ERROR, counted in
/// `vdbi_task_panics_total{task=name}`, and `on_panic` runs to release what the task held (an
/// in-flight mark, a retry to schedule).
pub fn spawn_detached<Fut>(
    name: &'static str,
    log: &Logger,
    metrics: &Metrics,
    task: Fut,
    on_panic: impl FnOnce() + Send + 'static,
) where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::FutureExt;
    let (log, metrics) = (log.clone(), metrics.clone());
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(task)
            .catch_unwind()
            .await
            .is_err()
        {
            metrics.process.task_panicked(name);
            error!(log, "background task panicked"; "task" => name);
            on_panic();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logging::discard;

    struct Counter {
        _guard: RestartGuard,
        n: u32,
    }
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Bump;
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Explode;
    impl Handler<Bump> for Counter {
        type Result = u32;
        fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> u32 {
            self.n += 1;
            self.n
        }
    }
    impl Handler<Explode> for Counter {
        type Result = ();
        fn handle(&mut self, _: Explode, _: &mut Context<Self>) {
            panic!("injected failure");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(30), Duration::from_secs(30));
    }

    #[actix::test]
    async fn panicking_actor_is_restarted_with_fresh_state() {
        let metrics = Metrics::new(true);
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            ..Backoff::default()
        };
        let h = supervise("counter", &discard(), &metrics, backoff, |g| Counter {
            _guard: g,
            n: 0,
        });
        assert_eq!(h.send(Bump).await.unwrap(), 1);
        assert_eq!(h.send(Bump).await.unwrap(), 2);
        // The panic kills the instance: the caller sees the mailbox closed, not a hang.
        assert!(h.send(Explode).await.is_err());
        let mut after = None;
        for _ in 0..100 {
            if let Ok(n) = h.send(Bump).await {
                after = Some(n);
                break;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(after, Some(1), "restarted instance starts from fresh state");
        assert_eq!(h.restarts(), 1);
        assert_eq!(
            metrics.count("vdbi_actor_restarts_total", &[("actor", "counter")]),
            1.0
        );
    }

    #[actix::test]
    async fn a_panicking_task_is_restarted_and_counted_until_stopped() {
        let metrics = Metrics::new(true);
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            ..Backoff::default()
        };
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let task = supervise_task("flaky", &discard(), &metrics, backoff, move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("injected failure");
                }
                std::future::pending::<()>().await
            }
        });
        let restarts = || metrics.count("vdbi_actor_restarts_total", &[("actor", "flaky")]);
        for _ in 0..200 {
            if runs.load(Ordering::SeqCst) == 3 {
                break;
            }
            actix::clock::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3, "restarted after each panic");
        assert_eq!(restarts(), 2.0);
        assert_eq!(task.name(), "flaky");
        task.stop();
        task.stopped().await;
        assert_eq!(restarts(), 2.0, "a stopped task is not restarted");
    }

    #[actix::test]
    async fn a_panicking_one_shot_task_is_counted_and_releases_what_it_held() {
        let metrics = Metrics::new(true);
        let (tx, rx) = oneshot::channel();
        spawn_detached(
            "one-shot",
            &discard(),
            &metrics,
            async { panic!("injected failure") },
            move || {
                let _ = tx.send(());
            },
        );
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("on_panic ran")
            .unwrap();
        let panics = metrics.count("vdbi_task_panics_total", &[("task", "one-shot")]);
        assert_eq!(panics, 1.0);

        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        spawn_detached(
            "one-shot",
            &discard(),
            &metrics,
            async move {
                let _ = done_tx.send(());
            },
            move || drop(tx),
        );
        done_rx.await.unwrap();
        // A task that ends normally neither counts nor runs `on_panic` (whose sender is then
        // dropped with the closure, unsent).
        assert!(rx.await.is_err());
        let panics = metrics.count("vdbi_task_panics_total", &[("task", "one-shot")]);
        assert_eq!(panics, 1.0);
    }
}
