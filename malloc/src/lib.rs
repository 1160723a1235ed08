//! Keeps a long-running process's heap small under glibc's malloc.
//!
//! glibc gives every thread that allocates its own arena (up to eight per core), and after a
//! large block (over 128 KiB, normally its own mapping) is freed it raises its mmap and trim
//! thresholds to that block's size, so later blocks of that size come from an arena and stay
//! resident after they are freed. The agent's blocking pool compresses and checksums WAL
//! segments (a zstd context is about 4 MiB): each thread that did so left its arena holding
//! that much, and agents that had archived ten segments held 5.0-5.7 MiB of heap instead of
//! 2.1-2.2 (BENCHMARKS.md, issue 10, eleventh session). [`keep_heap_small`] fixes both: one
//! arena for all threads (the agent runs one runtime thread; blocking work is occasional), and
//! fixed thresholds, so a large block is always its own mapping, returned to the system when
//! freed, and the heap's free top is trimmed.
//!
//! Owns only those allocator settings; must be called before the process starts threads. On
//! other C libraries (musl returns freed memory by itself) it does nothing.

/// Blocks of at least this many bytes get their own mapping (glibc's initial default, kept
/// fixed), and a free top of the heap larger than this is returned.
pub const THRESHOLD: i32 = 128 * 1024;

/// Applies the settings; returns false where they do not apply (not glibc) or glibc refused one.
/// Call it first thing in `main`, before any thread exists.
pub fn keep_heap_small() -> bool {
    imp::apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::THRESHOLD;

    pub fn apply() -> bool {
        let settings = [
            (libc::M_ARENA_MAX, 1),
            (libc::M_MMAP_THRESHOLD, THRESHOLD),
            (libc::M_TRIM_THRESHOLD, THRESHOLD),
        ];
        settings.iter().all(|&(param, value)| {
            // SAFETY: mallopt only changes malloc's parameters; it takes no pointers and glibc
            // serialises it against allocations with the arena lock. It returns 1 on success.
            #[allow(unsafe_code)]
            let ok = unsafe { libc::mallopt(param, value) };
            ok == 1
        })
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn apply() -> bool {
        false
    }
}
