//! Software prefetch, for the datapath's batched lookups ([`crate::datapath::Worker::warm_index`]):
//! the datapath says which lines it will read, this issues the hint (the one `unsafe` it
//! needs lives here, in `io`).

/// Asks the CPU to bring the cache line at `p` into all cache levels. A hint only: it never
/// faults, whatever the address, and changes no memory. A no-op off x86_64.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint with no architectural effect: it does not fault on any
    // address (mapped or not) and neither reads into a register nor writes memory, so no
    // Rust aliasing or validity rule is involved; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
