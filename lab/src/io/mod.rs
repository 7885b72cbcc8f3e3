//! System calls of the rig: the only module of this crate allowed `unsafe`, each block with a
//! `// SAFETY:` comment.
#![allow(unsafe_code)]

pub mod tcpprobe;
