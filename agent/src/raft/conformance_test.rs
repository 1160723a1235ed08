//! openraft's storage conformance suite against our log store and state machine, plus crash
//! scenarios on the log file itself.

use openraft::StorageError;
use openraft::storage::RaftLogStorage;
use openraft::testing::log::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = LogStore::open(dir.path()).expect("open log");
        let sm = StateMachine::open(dir.path()).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_passes_openraft_conformance_suite() {
    Suite::test_all(Builder).await.expect("conformance suite");
}

mod crash {
    use openraft::storage::{IOFlushed, RaftLogReader};
    use openraft::{EntryPayload, LogId, Vote};
    use pgquorum_core::UnixMillis;
    use pgquorum_core::state::{Command, DynamicConfig};

    use super::*;
    use crate::raft::types::Entry;

    fn entry(index: u64) -> Entry {
        let cmd = Command::InitCluster {
            cluster_id: format!("c{index}"),
            config: DynamicConfig::default(),
            at: UnixMillis(0),
        };
        let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig> { term: 1 };
        Entry { log_id: LogId::new(leader, index), payload: EntryPayload::Normal(cmd) }
    }

    async fn write_entries(dir: &std::path::Path, upto: u64, committed: Option<u64>) {
        let (mut log, _) = LogStore::open(dir).expect("open");
        log.save_vote(&Vote::new_committed(1, 7)).await.expect("vote");
        // Committed marker first, then the rest: the file ends with the newest entry, as it
        // does on a follower that appended entries not yet known to be committed.
        let c = committed.unwrap_or(0);
        log.append((1..=c).map(entry), IOFlushed::noop()).await.expect("append");
        if committed.is_some() {
            log.save_committed(Some(entry(c).log_id)).await.expect("committed");
        }
        log.append((c + 1..=upto).map(entry), IOFlushed::noop()).await.expect("append");
    }

    async fn entries(log: &mut LogStore) -> Vec<u64> {
        log.try_get_log_entries(0..).await.expect("read").iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn reopened_log_holds_everything_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_entries(dir.path(), 5, Some(5)).await;
        let (mut log, repaired) = LogStore::open(dir.path()).expect("reopen");
        assert!(repaired.is_none());
        assert_eq!(entries(&mut log).await, vec![1, 2, 3, 4, 5]);
        assert_eq!(log.read_committed().await.expect("c").map(|l| l.index), Some(5));
        assert_eq!(log.read_vote().await.expect("v"), Some(Vote::new_committed(1, 7)));
    }

    #[tokio::test]
    async fn torn_tail_beyond_the_committed_index_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_entries(dir.path(), 5, Some(3)).await;
        let path = dir.path().join("log");
        let len = std::fs::metadata(&path).expect("meta").len();
        // The last record (entry 5) was only half written when the machine died.
        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 10).expect("truncate");
        let (mut log, repaired) = LogStore::open(dir.path()).expect("a torn tail is repaired");
        assert!(repaired.expect("repair reported").contains("nothing committed was lost"));
        assert_eq!(entries(&mut log).await, vec![1, 2, 3, 4]);
        // The repaired file is clean: a second open reports nothing.
        drop(log);
        assert!(LogStore::open(dir.path()).expect("reopen").1.is_none());
    }

    #[tokio::test]
    async fn damaged_last_record_with_nothing_committed_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_entries(dir.path(), 5, None).await;
        let path = dir.path().join("log");
        let mut buf = std::fs::read(&path).expect("read");
        let at = buf.len() - 20; // inside entry 5's payload
        buf[at] ^= 0x40;
        std::fs::write(&path, &buf).expect("write");
        let (mut log, repaired) =
            LogStore::open(dir.path()).expect("tail damage above the committed index is cut");
        assert!(repaired.expect("reported").contains("checksum mismatch"));
        assert_eq!(entries(&mut log).await, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn corruption_in_the_middle_refuses_to_start_and_says_how_to_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_entries(dir.path(), 5, Some(5)).await;
        let path = dir.path().join("log");
        let mut buf = std::fs::read(&path).expect("read");
        let at = buf.len() / 2;
        buf[at] ^= 0x40;
        std::fs::write(&path, &buf).expect("write");
        let err = LogStore::open(dir.path()).err().expect("corruption in the middle is refused").to_string();
        assert!(err.contains("intact records follow"), "{err}");
        assert!(err.contains("move") && err.contains("aside"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), buf, "a refused log is left untouched");
    }

    #[tokio::test]
    async fn torn_tail_that_may_hold_a_committed_entry_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // Entry 5 is known committed, but its record is the one the crash tore.
            let (mut log, _) = LogStore::open(dir.path()).expect("open");
            log.append((1..=4).map(entry), IOFlushed::noop()).await.expect("append");
            log.save_committed(Some(entry(5).log_id)).await.expect("committed");
            log.append([entry(5)], IOFlushed::noop()).await.expect("append");
        }
        let path = dir.path().join("log");
        let len = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(len - 5).expect("cut");
        let err = LogStore::open(dir.path()).err().expect("refused").to_string();
        assert!(
            err.contains("may hold committed entries (committed up to index 5, only up to 4 readable)"),
            "{err}"
        );
    }
}
