//! Time as every layer sees it: a number the caller passes in.
//!
//! Lives at the bottom so that `conntrack` and `nat`, which never read a clock, can name the
//! type without importing the `datapath` above them.

/// Monotonic time in nanoseconds, passed in by the caller (tests use a fake clock).
pub type Nanos = u64;
