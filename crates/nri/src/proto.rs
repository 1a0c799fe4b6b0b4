//! Generated NRI protobuf messages (`api`) and ttrpc bindings (`api_ttrpc`).
//!
//! Built from `proto/nri/api.proto` by `build.rs`. Only the protocol layer uses these types; the
//! crate's public API shows the plain types of [`super::types`].

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

include!(concat!(env!("OUT_DIR"), "/nri/modules.rs"));
