//! pgquorum: the engine's queues start small and grow when needed (README-pgquorum.md, 4).

use crate::engine::Command;
use crate::engine::Engine;
use crate::engine::engine_output::COMMAND_QUEUE_CAPACITY;
use crate::engine::testing::UTConfig;

#[test]
fn command_queues_start_small_and_grow_when_needed() {
    let mut eng = Engine::<UTConfig>::testing_default(0);
    let out = &mut eng.output;
    // At most 128 slots (VecDeque may round up): upstream's 4096 must not come back.
    assert!(out.commands.capacity() <= 128, "{}", out.commands.capacity());
    let p = &out.pending_responds;
    for cap in [p.on_log_io.capacity(), p.on_log_flush.capacity(), p.on_apply.capacity(), p.on_snapshot.capacity()] {
        assert!(cap <= 128, "{cap}");
    }
    for _ in 0..3 * COMMAND_QUEUE_CAPACITY {
        out.push_command(Command::CloseReplicationStreams);
    }
    assert_eq!(out.len(), 3 * COMMAND_QUEUE_CAPACITY, "the queue grows past its first capacity");
}
