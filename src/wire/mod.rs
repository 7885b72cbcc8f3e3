//! Zero-copy packet views over `&[u8]` / `&mut [u8]`.
//!
//! Contract: every constructor is checked (`new_checked` returns an error for any input that is
//! too short or inconsistent), and after a successful check no accessor can panic. Nothing here
//! allocates. Checksums are updated incrementally (RFC 1624) on every rewrite.

pub mod checksum;
pub mod dns;
pub mod emit;
mod error;
pub mod ethernet;
pub mod gso;
pub mod host;
pub mod ipv4;
pub mod l4;
pub mod peek;
pub mod proto;
pub mod quic;
pub mod quoted;
pub mod sni;

pub use error::WireError;
