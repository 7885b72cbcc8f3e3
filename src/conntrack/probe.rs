//! Linear probing as the flow index and the EIM table both use it: a home slot by
//! multiply-shift (so a table's size follows its flow limit, not a power of two), a step that
//! wraps, and the test of a backward-shift delete.

/// The slot a 32-bit hash starts probing at in a table of `len` slots.
#[inline]
pub(crate) fn home(h: u32, len: usize) -> usize {
    ((u64::from(h) * len as u64) >> 32) as usize
}

/// The slot after `i`, wrapping at `len`.
#[inline]
pub(crate) fn next(i: usize, len: usize) -> usize {
    if i + 1 == len {
        0
    } else {
        i + 1
    }
}

/// Whether the entry at `j`, whose home slot is `home`, stays put when `hole` opens before it
/// in its cluster: it does when its home lies cyclically in (hole, j].
#[inline]
pub(crate) fn stays(hole: usize, home: usize, j: usize) -> bool {
    if hole <= j {
        hole < home && home <= j
    } else {
        hole < home || home <= j
    }
}
