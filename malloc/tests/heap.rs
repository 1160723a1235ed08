//! Large blocks freed on many threads leave nothing resident once `keep_heap_small` applied:
//! without it each thread's arena keeps its last 4 MiB block (tens of MiB for eight threads).
//! One test in this process on purpose: the settings are process-wide.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

/// Heap and stacks resident in this process, in KiB.
fn anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon line");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("RssAnon value")
}

#[test]
fn blocks_freed_on_many_threads_do_not_stay_resident() {
    assert!(pgquorum_malloc::keep_heap_small(), "glibc refused a malloc setting");
    const BLOCK: usize = 4 << 20;
    let before = anon_kib();
    // Eight threads alive at once, as in the blocking pool: without the settings each gets an arena.
    let all = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let all = all.clone();
            std::thread::spawn(move || {
                // The first block is glibc's own mapping either way; without the settings, freeing
                // it raises the threshold and the second comes from (and stays in) the thread's arena.
                for round in 0..2u8 {
                    all.wait();
                    let block = vec![round.wrapping_add(1); BLOCK];
                    assert_eq!(std::hint::black_box(&block)[BLOCK - 1], round + 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let grown = anon_kib().saturating_sub(before);
    assert!(grown < 2048, "the heap kept {grown} KiB of blocks freed by threads that have ended");
}
