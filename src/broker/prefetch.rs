//! Asking the CPU for memory a publish is about to touch, so that the miss
//! overlaps other work: at full ingress rate the dedup tables and the
//! replay rings are out of cache, and their misses were most of what the
//! log's lock was held for.

/// Starts loading the cache lines that hold `value`. A hint only: it
/// reads nothing and cannot fault; elsewhere than on x86-64 it does
/// nothing.
pub(super) fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        let first = std::ptr::from_ref(value).cast::<i8>();
        // From the line holding the first byte to the one holding the last.
        let misalignment = first.addr() % LINE;
        let line = first.wrapping_sub(misalignment);
        let end = misalignment + std::mem::size_of_val(value).max(1);
        let mut offset = 0;
        while offset < end {
            // SAFETY: SSE is in every x86-64 target's baseline, and a
            // prefetch of any address is a hint that cannot fault; the
            // wrapping arithmetic only names addresses, reading none.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(offset)) };
            offset += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
