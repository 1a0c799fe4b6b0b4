//! Generated NRI protobuf messages (`api`) and ttrpc bindings (`api_ttrpc`).
//!
//! Built from `src/nri/proto/nri/api.proto` by `build.rs`. Only the protocol layer uses these
//! types; everything outside `crate::nri` sees the plain domain types of [`super::types`].

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

include!(concat!(env!("OUT_DIR"), "/nri/modules.rs"));
