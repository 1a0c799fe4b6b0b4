//! The NRI connection multiplexer: two logical byte streams over one unix socket.
//!
//! Every chunk of a logical connection travels as one frame
//! `[conn_id u32 BE][payload_len u32 BE][payload]` (layout of `pkg/net/multiplex` in
//! containerd/nri). Conn 1 carries the `Plugin` service (runtime = ttrpc client), conn 2 the
//! `Runtime` service (plugin = ttrpc client). Opening a connection is purely local: there is no
//! signalling, frames for connections nobody opened are dropped, so every connection must be
//! opened before the trunk starts reading.
//!
//! Design: a reader task demultiplexes incoming frames into one bounded queue per connection, a
//! writer task owns the write half and writes each frame with one `write_all`, so frames of the
//! two connections never interleave inside a frame. A [`MuxConn`] is a tokio
//! `AsyncRead + AsyncWrite` that ttrpc uses through `ttrpc::r#async::transport::Socket::new`.
//!
//! Frame size: every `poll_write` sends at most [`MuxConfig::max_outgoing_payload`] bytes as one
//! frame. The plugin side keeps the default of [`SAFE_FRAME_PAYLOAD`] (4096) because the Go reader
//! fails on larger frames that start a message (see `go_read_rule`).
//!
//! Lifetime: EOF or an error on the trunk, a protocol violation, [`MuxHandle::close`] or both
//! connections being dropped ends the mux. Both logical connections then read EOF and refuse
//! writes, and [`MuxHandle::closed`] resolves with the reason.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, PollSender};

use super::error::NriError;
use super::go_read_rule::GoReadModel;

/// Length of the mux frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest frame payload that a Go NRI peer can always read (see `go_read_rule`).
pub const SAFE_FRAME_PAYLOAD: usize = 4096;
/// Largest frame payload the Go mux accepts: ttrpc header (10) + ttrpc message maximum (4 MiB).
pub const MAX_FRAME_PAYLOAD: usize = 10 + (4 << 20);

/// A logical connection id inside the mux (0 is reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u32);

impl ConnId {
    /// Conn 1: the `Plugin` service. The runtime is the ttrpc client, the plugin the server.
    pub const PLUGIN_SERVICE: ConnId = ConnId(1);
    /// Conn 2: the `Runtime` service. The plugin is the ttrpc client, the runtime the server.
    pub const RUNTIME_SERVICE: ConnId = ConnId(2);
}

/// Tunables of a [`Mux`].
#[derive(Clone, Debug)]
pub struct MuxConfig {
    /// Largest payload of a frame this side sends. Default [`SAFE_FRAME_PAYLOAD`].
    pub max_outgoing_payload: usize,
    /// Largest payload of a frame this side accepts. Default [`MAX_FRAME_PAYLOAD`].
    pub max_incoming_payload: usize,
    /// Queue length (in frames) of each logical connection. Default 256, as in Go.
    pub read_queue_frames: usize,
    /// Reject incoming frames the Go reader of a real runtime could not read (the runtime-side
    /// test peer turns this on to hold the plugin to containerd's rules). Default off.
    pub enforce_go_read_rule: bool,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            max_outgoing_payload: SAFE_FRAME_PAYLOAD,
            max_incoming_payload: MAX_FRAME_PAYLOAD,
            read_queue_frames: 256,
            enforce_go_read_rule: false,
        }
    }
}

/// Why a mux ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxEnd {
    /// The peer closed the trunk.
    Eof,
    /// Closed on this side ([`MuxHandle::close`] or both connections dropped).
    Closed,
    /// Reading or writing the trunk failed.
    Io(String),
    /// The peer sent something this side refuses (oversized frame, Go-unreadable frame, ...).
    Protocol(String),
}

impl From<MuxEnd> for NriError {
    fn from(end: MuxEnd) -> Self {
        match end {
            MuxEnd::Eof => NriError::Closed("peer closed the connection".into()),
            MuxEnd::Closed => NriError::Closed("closed locally".into()),
            MuxEnd::Io(e) => NriError::Closed(format!("I/O error: {e}")),
            MuxEnd::Protocol(e) => NriError::Protocol(e),
        }
    }
}

/// One outgoing frame.
#[derive(Debug)]
struct Frame {
    conn: ConnId,
    payload: Bytes,
}

/// A multiplexer that is being set up: open connections, then [`Mux::start`].
pub struct Mux<S> {
    io: S,
    config: MuxConfig,
    routes: HashMap<u32, mpsc::Sender<Bytes>>,
    out_tx: mpsc::Sender<Frame>,
    out_rx: mpsc::Receiver<Frame>,
}

impl<S> Mux<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// Wraps a trunk connection. Nothing is read or written before [`Mux::start`].
    pub fn new(io: S, config: MuxConfig) -> Self {
        let (out_tx, out_rx) = mpsc::channel(config.read_queue_frames.max(1));
        Self {
            io,
            config,
            routes: HashMap::new(),
            out_tx,
            out_rx,
        }
    }

    /// Opens logical connection `id`.
    pub fn open(&mut self, id: ConnId) -> Result<MuxConn, NriError> {
        if id.0 == 0 {
            return Err(NriError::Protocol("mux connection id 0 is reserved".into()));
        }
        if self.routes.contains_key(&id.0) {
            return Err(NriError::Protocol(format!(
                "mux connection {} is already open",
                id.0
            )));
        }
        let (tx, rx) = mpsc::channel(self.config.read_queue_frames.max(1));
        self.routes.insert(id.0, tx);
        Ok(MuxConn {
            id,
            incoming: rx,
            pending: Bytes::new(),
            outgoing: PollSender::new(self.out_tx.clone()),
            max_payload: self.config.max_outgoing_payload.max(1),
        })
    }

    /// Starts the reader and writer tasks. Must be called inside a tokio runtime.
    pub fn start(self) -> MuxHandle {
        let Mux {
            io,
            config,
            routes,
            out_tx,
            out_rx,
        } = self;
        // Only the connections hold senders now: when both are dropped the writer sees the end.
        drop(out_tx);
        let (read_half, write_half) = tokio::io::split(io);
        let cancel = CancellationToken::new();
        let (end_tx, end_rx) = watch::channel(None);
        let end_tx = Arc::new(end_tx);
        let dropped = Arc::new(AtomicU64::new(0));

        let reader = read_loop(read_half, routes, config, dropped.clone());
        tokio::spawn(run_until_cancelled(cancel.clone(), end_tx.clone(), reader));
        let writer = write_loop(write_half, out_rx);
        tokio::spawn(run_until_cancelled(cancel.clone(), end_tx, writer));

        MuxHandle {
            cancel,
            end: end_rx,
            dropped,
        }
    }
}

/// Runs one side of the mux; whichever side ends first records the reason and stops the other.
async fn run_until_cancelled(
    cancel: CancellationToken,
    end_tx: Arc<watch::Sender<Option<MuxEnd>>>,
    side: impl std::future::Future<Output = MuxEnd>,
) {
    let end = tokio::select! {
        end = side => end,
        () = cancel.cancelled() => MuxEnd::Closed,
    };
    end_tx.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(end);
            true
        } else {
            false
        }
    });
    cancel.cancel();
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut trunk: R,
    routes: HashMap<u32, mpsc::Sender<Bytes>>,
    config: MuxConfig,
    dropped: Arc<AtomicU64>,
) -> MuxEnd {
    let mut models: HashMap<u32, GoReadModel> = HashMap::new();
    loop {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match read_header(&mut trunk, &mut header).await {
            Ok(true) => {}
            Ok(false) => return MuxEnd::Eof,
            Err(e) => return MuxEnd::Io(format!("read frame header: {e}")),
        }
        let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > config.max_incoming_payload {
            return MuxEnd::Protocol(format!(
                "frame of {len} bytes on conn {conn} exceeds the {} byte limit",
                config.max_incoming_payload
            ));
        }
        let mut payload = BytesMut::zeroed(len);
        if let Err(e) = trunk.read_exact(&mut payload).await {
            return MuxEnd::Io(format!("read {len}-byte frame payload: {e}"));
        }
        let Some(route) = routes.get(&conn) else {
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if config.enforce_go_read_rule {
            if let Err(e) = models.entry(conn).or_default().on_frame(&payload) {
                return MuxEnd::Protocol(format!("conn {conn}: {e}"));
            }
        }
        if len > 0 && route.send(payload.freeze()).await.is_err() {
            // The consumer of this connection is gone; like Go, keep serving the other one.
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads a frame header; `Ok(false)` on a clean EOF before its first byte.
async fn read_header<R: AsyncRead + Unpin>(
    trunk: &mut R,
    header: &mut [u8; FRAME_HEADER_LEN],
) -> io::Result<bool> {
    let mut filled = 0;
    while filled < FRAME_HEADER_LEN {
        let n = trunk.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        filled += n;
    }
    Ok(true)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut trunk: W,
    mut frames: mpsc::Receiver<Frame>,
) -> MuxEnd {
    let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + SAFE_FRAME_PAYLOAD);
    while let Some(frame) = frames.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame.conn.0.to_be_bytes());
        // Payload length fits: MuxConn never hands over more than max_outgoing_payload (a usize
        // chosen by us, far below u32::MAX in practice); clamp defensively anyway.
        let len = u32::try_from(frame.payload.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&frame.payload);
        if let Err(e) = trunk.write_all(&buf).await {
            return MuxEnd::Io(format!("write frame: {e}"));
        }
    }
    let _ = trunk.shutdown().await;
    MuxEnd::Closed
}

/// Control and status of a running [`Mux`]. Dropping it does not close the mux.
#[derive(Clone, Debug)]
pub struct MuxHandle {
    cancel: CancellationToken,
    end: watch::Receiver<Option<MuxEnd>>,
    dropped: Arc<AtomicU64>,
}

impl MuxHandle {
    /// Closes the trunk and both logical connections.
    pub fn close(&self) {
        self.cancel.cancel();
    }

    /// Waits until the mux has ended and tells why.
    pub async fn closed(&self) -> MuxEnd {
        let mut end = self.end.clone();
        let result = match end.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(MuxEnd::Closed),
            Err(_) => MuxEnd::Closed,
        };
        result
    }

    /// The reason the mux ended, if it has.
    pub fn end(&self) -> Option<MuxEnd> {
        self.end.borrow().clone()
    }

    /// Frames dropped because nobody had opened their connection (or had stopped reading it).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One logical connection of a [`Mux`]: a byte stream for ttrpc.
pub struct MuxConn {
    id: ConnId,
    incoming: mpsc::Receiver<Bytes>,
    pending: Bytes,
    outgoing: PollSender<Frame>,
    max_payload: usize,
}

impl std::fmt::Debug for MuxConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxConn").field("id", &self.id).finish()
    }
}

impl MuxConn {
    /// The connection id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// A ttrpc server listener that accepts this one connection.
    ///
    /// The listener stream never ends by itself: if it did, ttrpc's accept task would exit and a
    /// later `Server::shutdown` would panic on its dead channel. The accept task ends when the
    /// `Server` is dropped; the connection's own task ends when the mux does.
    pub fn into_ttrpc_listener(self) -> ttrpc::r#async::transport::Listener {
        let first = futures::stream::once(async move { Ok::<_, io::Error>(self) });
        ttrpc::r#async::transport::Listener::new(futures::StreamExt::chain(
            first,
            futures::stream::pending(),
        ))
    }
}

impl AsyncRead for MuxConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.incoming.poll_recv(cx)) {
                Some(chunk) => this.pending = chunk,
                // Mux ended: EOF.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MuxConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        if ready!(this.outgoing.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(this.max_payload);
        let frame = Frame {
            conn: this.id,
            payload: Bytes::copy_from_slice(&buf[..n]),
        };
        match this.outgoing.send_item(frame) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are queued in order for the writer task; there is nothing to flush here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No close signalling exists on the wire; stop sending on this connection only.
        self.outgoing.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::UnixStream;

    use super::*;

    async fn raw_frame(raw: &mut UnixStream) -> (u32, Vec<u8>) {
        let mut header = [0u8; 8];
        raw.read_exact(&mut header).await.expect("frame header");
        let conn = u32::from_be_bytes(header[..4].try_into().unwrap());
        let len = u32::from_be_bytes(header[4..].try_into().unwrap()) as usize;
        let mut payload = vec![0; len];
        raw.read_exact(&mut payload).await.expect("frame payload");
        (conn, payload)
    }

    async fn send_raw(raw: &mut UnixStream, conn: u32, payload: &[u8]) {
        let mut frame = conn.to_be_bytes().to_vec();
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        raw.write_all(&frame).await.expect("write raw frame");
    }

    fn started(config: MuxConfig) -> (MuxConn, MuxConn, MuxHandle, UnixStream) {
        let (ours, raw) = UnixStream::pair().expect("socketpair");
        let mut mux = Mux::new(ours, config);
        let one = mux.open(ConnId::PLUGIN_SERVICE).expect("open 1");
        let two = mux.open(ConnId::RUNTIME_SERVICE).expect("open 2");
        (one, two, mux.start(), raw)
    }

    #[tokio::test]
    async fn writes_are_cut_into_frames_of_at_most_4096_bytes() {
        let (mut one, _two, _handle, mut raw) = started(MuxConfig::default());
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        one.write_all(&data).await.unwrap();

        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while got.len() < data.len() {
            let (conn, payload) = raw_frame(&mut raw).await;
            assert_eq!(conn, 1);
            sizes.push(payload.len());
            got.extend_from_slice(&payload);
        }
        assert_eq!(got, data);
        assert_eq!(sizes, vec![4096, 4096, 1808]);
    }

    #[tokio::test]
    async fn incoming_frames_are_routed_by_connection_and_unknown_ids_dropped() {
        let (mut one, mut two, handle, mut raw) = started(MuxConfig::default());
        send_raw(&mut raw, 2, b"for-two").await;
        send_raw(&mut raw, 7, b"nobody").await;
        send_raw(&mut raw, 1, b"for-").await;
        send_raw(&mut raw, 1, b"").await;
        send_raw(&mut raw, 1, b"one").await;

        let mut buf = [0u8; 7];
        one.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"for-one");
        two.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"for-two");
        assert_eq!(handle.dropped_frames(), 1);
    }

    #[tokio::test]
    async fn eof_on_the_trunk_closes_both_connections() {
        let (mut one, mut two, handle, raw) = started(MuxConfig::default());
        drop(raw);
        let mut buf = Vec::new();
        assert_eq!(one.read_to_end(&mut buf).await.unwrap(), 0);
        assert_eq!(two.read_to_end(&mut buf).await.unwrap(), 0);
        assert_eq!(handle.closed().await, MuxEnd::Eof);
        let err = two.write_all(b"late").await.expect_err("write after close");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn oversized_incoming_frame_is_a_protocol_error() {
        let config = MuxConfig {
            max_incoming_payload: 16,
            ..MuxConfig::default()
        };
        let (mut one, _two, handle, mut raw) = started(config);
        send_raw(&mut raw, 1, &[0u8; 17]).await;
        assert!(matches!(handle.closed().await, MuxEnd::Protocol(_)));
        let mut buf = Vec::new();
        assert_eq!(one.read_to_end(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn go_read_rule_rejects_a_large_message_start() {
        let config = MuxConfig {
            enforce_go_read_rule: true,
            ..MuxConfig::default()
        };
        let (_one, _two, handle, mut raw) = started(config);
        let mut message = 5000u32.to_be_bytes().to_vec();
        message.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        message.resize(10 + 5000, 7);
        send_raw(&mut raw, 2, &message).await;
        match handle.closed().await {
            MuxEnd::Protocol(e) => assert!(e.contains("ENOMEM"), "{e}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn local_close_ends_reads_and_the_peer_sees_eof() {
        let (mut one, _two, handle, mut raw) = started(MuxConfig::default());
        handle.close();
        assert_eq!(handle.closed().await, MuxEnd::Closed);
        let mut buf = Vec::new();
        assert_eq!(one.read_to_end(&mut buf).await.unwrap(), 0);
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut [0u8; 1]))
            .await
            .expect("peer notices the close")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn dropping_both_connections_closes_the_trunk() {
        let (one, two, handle, mut raw) = started(MuxConfig::default());
        drop(one);
        drop(two);
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut [0u8; 1]))
            .await
            .expect("peer notices the close")
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(handle.closed().await, MuxEnd::Closed);
    }

    #[tokio::test]
    async fn connection_ids_are_checked() {
        let (ours, _raw) = UnixStream::pair().unwrap();
        let mut mux = Mux::new(ours, MuxConfig::default());
        assert!(mux.open(ConnId(0)).is_err());
        mux.open(ConnId(1)).unwrap();
        assert!(mux.open(ConnId(1)).is_err());
    }

    #[test]
    fn mux_conn_is_usable_as_a_ttrpc_socket() {
        fn assert_socket<T: AsyncRead + AsyncWrite + Send + Sync + 'static>() {}
        assert_socket::<MuxConn>();
    }
}
