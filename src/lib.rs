//! Tollgate: a userspace firewall and SNAT router for cloud egress behind a user-defined route.
//!
//! Layers, lowest first (a layer never imports one above it):
//! - [`time`] and [`wire::proto`]: the clock type and IP protocol numbers every layer shares.
//! - [`wire`]: zero-copy packet views and checksum arithmetic; never allocates, never panics.
//! - [`conntrack`] and [`nat`]: the flow table, TCP tracking, timeouts, the SNAT port allocator.
//! - [`policy`]: the compiled rule classifier and FQDN matcher, built off the packet path.
//! - [`datapath`]: `Worker::process(now, packet) -> Verdict`, the whole per-packet decision.
//! - [`io`]: packet I/O backends (AF_PACKET rings, in-memory, pcap). The only layer with `unsafe`.
//! - [`config`]: the TOML schema, validation with file:line:col, compilation into the layers above.
//! - [`control`]: daemon, reload, metrics, lab; never on the packet path.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod datapath;
pub mod io;
pub mod nat;
pub mod policy;
pub mod time;
pub mod wire;
