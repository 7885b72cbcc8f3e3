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
//! - [`tools`]: offline tools over a configuration (`explain`); no daemon, no packets.
//! - [`control`]: the daemon's services (serving the workers, reload, resolver, host policy,
//!   management and admin endpoints, logs); never on the packet path.
//! - [`cli`]: argument parsing only.
//!
//! The namespace lab and the benchmarks are another crate, `tollgate-lab` (`lab/`), so the
//! appliance binary carries neither them nor their dependencies.
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
pub mod tools;
pub mod wire;
