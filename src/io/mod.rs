//! Packet I/O backends. The only layer allowed `unsafe`, each block with a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod mem;
