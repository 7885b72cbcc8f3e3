//! Memory advice for the dataplane's large tables.

/// Asks the kernel to back `[addr, addr + len)` with transparent huge pages, before the range is
/// first written. A 1M-flow table spans ~100 MiB: with 4 KiB pages nearly every lookup misses
/// the TLB; with 2 MiB pages it mostly does not. Best effort: errors are ignored (THP disabled,
/// or `never`), the table works the same.
pub fn advise_hugepages(addr: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = (addr + PAGE - 1) & !(PAGE - 1);
    let end = (addr + len) & !(PAGE - 1);
    if end <= start {
        return;
    }
    // SAFETY: MADV_HUGEPAGE only changes how the kernel backs pages of a range that lies inside
    // an allocation the caller owns (page-aligned inward above); it never unmaps or changes the
    // contents of memory, so no Rust reference is invalidated.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}
