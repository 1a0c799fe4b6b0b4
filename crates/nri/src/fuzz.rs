//! Property-based fuzzing of everything that decodes bytes from the runtime: the mux frame
//! reader, the ttrpc message framing inside a logical connection, the protobuf messages and
//! their conversion to the crate's types. Arbitrary bytes, cut at arbitrary points, must never
//! panic, and no length field may make the decoder allocate more than the protocol's limit.
//!
//! Runs in `cargo test` with a fixed seed and case budget (deterministic, a few seconds);
//! `PROPTEST_CASES=100000 cargo test -p nri fuzz` runs a longer campaign.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::go_read_rule::GoReadModel;
use crate::mux::{ConnId, Mux, MuxConfig, MuxEnd, MAX_FRAME_PAYLOAD};
use crate::proto::api;
use crate::types::{ContainerInfo, EnvAdjustment, PodSandboxInfo, RuntimeInfo};

/// Counts the largest single allocation made by the current thread (tests run on a
/// current-thread runtime, so the mux tasks allocate on the test's thread).
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// rust-protobuf reserves room for a length-delimited field from its declared length, up to this
/// cap (`READ_RAW_BYTES_MAX_ALLOC`), before the bytes are there: a 5-byte message can cost
/// 10 MB for as long as it is decoded. Bounded, and the runtime is the only peer.
const PROTOBUF_PREALLOC_MAX: usize = 10_000_000;

/// Headroom over the protocol limit for bookkeeping allocations (queues, buffers).
const SLACK: usize = 1 << 20;

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x6e72_6920_6675_7a7a),
        failure_persistence: None,
        ..Config::default()
    }
}

/// One mux frame: a connection id (mostly 1 and 2), a declared length (mostly honest, sometimes
/// any u32, up to 4 GiB) and payload bytes.
fn frame() -> impl Strategy<Value = (u32, Option<u32>, Vec<u8>)> {
    (
        prop_oneof![3 => Just(1u32), 3 => Just(2u32), 1 => any::<u32>()],
        prop_oneof![6 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..300),
    )
}

/// A trunk byte stream: frames, optionally followed by garbage, and the points to cut it at.
fn trunk() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (
        prop::collection::vec(frame(), 0..12),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(1usize..200, 0..30),
    )
        .prop_map(|(frames, garbage, cuts)| {
            let mut bytes = Vec::new();
            for (conn, len, payload) in frames {
                bytes.extend_from_slice(&conn.to_be_bytes());
                let len = len.unwrap_or(payload.len() as u32);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&payload);
            }
            bytes.extend_from_slice(&garbage);
            (bytes, cuts)
        })
}

/// What the mux must deliver for `bytes`: the payloads of complete frames on conns 1 and 2, in
/// order, up to the first frame that is oversized or cut short.
fn expected(bytes: &[u8], max: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut one, mut two) = (Vec::new(), Vec::new());
    let mut rest = bytes;
    while rest.len() >= 8 {
        let conn = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let len = u32::from_be_bytes(rest[4..8].try_into().unwrap()) as usize;
        if len > max || rest.len() - 8 < len {
            break;
        }
        match conn {
            1 => one.extend_from_slice(&rest[8..8 + len]),
            2 => two.extend_from_slice(&rest[8..8 + len]),
            _ => {}
        }
        rest = &rest[8 + len..];
    }
    (one, two)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Feeds `bytes` to a mux in writes cut at `cuts`, then closes the trunk; returns what each
/// connection read and why the mux ended.
async fn demux(bytes: Vec<u8>, cuts: Vec<usize>) -> (Vec<u8>, Vec<u8>, MuxEnd) {
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let mut mux = Mux::new(ours, MuxConfig::default());
    let mut one = mux.open(ConnId::PLUGIN_SERVICE).unwrap();
    let mut two = mux.open(ConnId::RUNTIME_SERVICE).unwrap();
    let handle = mux.start();
    let writer = async move {
        let mut rest = bytes.as_slice();
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*cut).min(rest.len());
            if theirs.write_all(&rest[..n]).await.is_err() {
                return;
            }
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            let _ = theirs.write_all(rest).await;
        }
        // Keep our end open until the mux has read everything; dropping it is the EOF.
        let _ = theirs.shutdown().await;
        let mut sink = Vec::new();
        let _ = theirs.read_to_end(&mut sink).await;
    };
    let (mut got_one, mut got_two) = (Vec::new(), Vec::new());
    let readers = async {
        let (a, b) = tokio::join!(one.read_to_end(&mut got_one), two.read_to_end(&mut got_two));
        a.unwrap();
        b.unwrap();
    };
    let ((), ()) = tokio::join!(writer, async {
        readers.await;
        handle.close();
    });
    let end = handle.closed().await;
    (got_one, got_two, end)
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary trunk bytes: no panic, exactly the complete frames' payloads reach their
    /// connections, the mux ends cleanly or with a protocol error, allocation stays bounded.
    #[test]
    fn mux_frame_decoder((bytes, cuts) in trunk()) {
        let (want_one, want_two) = expected(&bytes, MAX_FRAME_PAYLOAD);
        let ((one, two, end), largest) =
            largest_allocation(|| runtime().block_on(demux(bytes, cuts)));
        prop_assert_eq!(one, want_one);
        prop_assert_eq!(two, want_two);
        prop_assert!(
            matches!(end, MuxEnd::Eof | MuxEnd::Protocol(_) | MuxEnd::Io(_) | MuxEnd::Closed),
            "{:?}", end
        );
        prop_assert!(largest <= MAX_FRAME_PAYLOAD + SLACK, "allocated {} bytes", largest);
    }

    /// Arbitrary bytes inside a logical connection, cut anywhere: ttrpc's message framing (as
    /// the ttrpc server reads it) and the protobuf decoding of every NRI message the crate
    /// accepts, then the conversion to the crate's types. No panic; the framing allocates at
    /// most ttrpc's 4 MiB message limit, decoding at most protobuf's preallocation cap.
    #[test]
    fn ttrpc_and_message_decoding(
        (bytes, cuts) in (
            prop::collection::vec(any::<u8>(), 0..600),
            prop::collection::vec(1usize..64, 0..20),
        ),
        header_len in prop_oneof![Just(None), any::<u32>().prop_map(Some)],
    ) {
        // Half the cases start with a plausible header so that the payload is decoded too.
        let mut stream = Vec::new();
        if let Some(len) = header_len {
            let len = if len % 2 == 0 { (bytes.len() as u32).min(len) } else { len };
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend_from_slice(&1u32.to_be_bytes());
            stream.extend_from_slice(&[1, 0]);
        }
        stream.extend_from_slice(&bytes);
        let (payloads, framing) = largest_allocation(|| {
            runtime().block_on(async {
                let (mut w, mut r) = tokio::io::duplex(256);
                let writer = async move {
                    let mut rest = stream.as_slice();
                    for cut in cuts.iter().cycle() {
                        if rest.is_empty() { break; }
                        let n = (*cut).min(rest.len());
                        if w.write_all(&rest[..n]).await.is_err() { return; }
                        rest = &rest[n..];
                    }
                    let _ = w.write_all(rest).await;
                };
                let reader = async {
                    let mut payloads = Vec::new();
                    while let Ok(msg) = ttrpc::proto::GenMessage::read_from(&mut r).await {
                        payloads.push(msg.payload);
                    }
                    payloads
                };
                tokio::join!(writer, reader).1
            })
        });
        prop_assert!(
            framing <= ttrpc::proto::MESSAGE_LENGTH_MAX + SLACK,
            "ttrpc framing allocated {} bytes", framing
        );
        let ((), decoding) = largest_allocation(|| {
            payloads.iter().for_each(|p| decode_everything(p));
            decode_everything(&bytes);
        });
        prop_assert!(
            decoding <= PROTOBUF_PREALLOC_MAX + SLACK,
            "protobuf decoding allocated {} bytes", decoding
        );
    }

    /// The Go reader model (the runtime-side peer's frame check) on arbitrary frames.
    #[test]
    fn go_read_model(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5000), 0..8)) {
        let mut model = GoReadModel::default();
        for frame in &frames {
            if model.on_frame(frame).is_err() {
                break;
            }
        }
    }
}

/// Decodes `payload` as the ttrpc envelope and as every NRI message the crate receives, and
/// converts what decodes to the crate's types.
fn decode_everything(payload: &[u8]) {
    if let Ok(request) = ttrpc::Request::parse_from_bytes(payload) {
        decode_nri(&request.payload);
    }
    let _ = ttrpc::Response::parse_from_bytes(payload);
    decode_nri(payload);
}

fn decode_nri(payload: &[u8]) {
    if let Ok(m) = api::ConfigureRequest::parse_from_bytes(payload) {
        let _ = RuntimeInfo::from(m);
    }
    if let Ok(m) = api::SynchronizeRequest::parse_from_bytes(payload) {
        let _: Vec<PodSandboxInfo> = m.pods.into_iter().map(Into::into).collect();
        let _: Vec<ContainerInfo> = m.containers.into_iter().map(Into::into).collect();
    }
    if let Ok(m) = api::CreateContainerRequest::parse_from_bytes(payload) {
        let _ = PodSandboxInfo::from(m.pod.into_option().unwrap_or_default());
        let _ = ContainerInfo::from(m.container.into_option().unwrap_or_default());
    }
    if let Ok(m) = api::CreateContainerResponse::parse_from_bytes(payload) {
        let _ = m.adjust.into_option().map(EnvAdjustment::from);
    }
    if let Ok(m) = api::StateChangeEvent::parse_from_bytes(payload) {
        let _ = m.event.value();
        let _ = PodSandboxInfo::from(m.pod.into_option().unwrap_or_default());
    }
    if let Ok(m) = api::RemovePodSandboxRequest::parse_from_bytes(payload) {
        let _ = PodSandboxInfo::from(m.pod.into_option().unwrap_or_default());
    }
    let _ = api::RegisterPluginRequest::parse_from_bytes(payload);
    let _ = Bytes::copy_from_slice(payload);
}

/// A frame header claiming 4 GiB is refused before anything is allocated for it.
#[test]
fn a_four_gigabyte_length_field_allocates_nothing_for_it() {
    let mut bytes = 1u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0; 64]);
    let ((one, _, end), largest) =
        largest_allocation(|| runtime().block_on(demux(bytes, vec![3, 5])));
    assert!(one.is_empty());
    assert!(
        matches!(end, MuxEnd::Protocol(ref e) if e.contains("exceeds")),
        "{end:?}"
    );
    assert!(largest < SLACK, "allocated {largest} bytes");
}
