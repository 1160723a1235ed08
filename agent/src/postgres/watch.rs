//! Tells the HA loop when a file appears in or leaves the top of the data directory (inotify),
//! so a quiet member, which reads its Postgres's status only every `ha.status_interval`, reads
//! it at once when something outside the agent acts on its Postgres: `pg_ctl promote` and
//! `pg_promote()` create `promote` there, and a promotion removes `standby.signal` just before
//! the server becomes writable. An idle data directory's top level does not change (a
//! `logging_collector` rotating its log rewrites `current_logfiles`: a second of status reads),
//! so the watch costs no wake-up while nothing happens.
//!
//! Owns only the noticing: what a change means is read from Postgres itself.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

/// A watch on the entries of one data directory.
pub struct DataDirWatch {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<MaybeUninit<u8>>,
}

/// What [`DataDirWatch::changed`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Entries were created, removed or renamed (their names; the kernel's queue overflowed
    /// when empty).
    Entries(Vec<String>),
    /// The directory itself went away (removed or renamed): the watch has ended.
    Gone,
}

impl DataDirWatch {
    /// Watches the entries of `data`.
    pub fn new(data: &Path) -> io::Result<DataDirWatch> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let what = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, data, what)?;
        // `AsyncFd::new` is deprecated because for an arbitrary `T` the descriptor might change
        // or close while registered; an `OwnedFd` it owns cannot, and its safe replacement
        // (`register`) is an `unsafe fn`, which this crate forbids.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(DataDirWatch { fd, buf: vec![MaybeUninit::uninit(); 4096] })
    }

    /// Waits for the next change (everything the kernel queued by then, as one).
    pub async fn changed(&mut self) -> io::Result<Change> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut names = Vec::new();
            let (mut seen, mut drained) = (false, false);
            let mut reader = inotify::Reader::new(ready.get_inner(), &mut self.buf);
            while !drained {
                match reader.next() {
                    Ok(ev) => {
                        seen = true;
                        let flags = ev.events();
                        if flags
                            .intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED)
                        {
                            return Ok(Change::Gone);
                        }
                        names.extend(ev.file_name().map(|n| n.to_string_lossy().into_owned()));
                    }
                    Err(rustix::io::Errno::AGAIN) => drained = true,
                    Err(e) => return Err(e.into()),
                }
            }
            ready.clear_ready();
            if seen {
                return Ok(Change::Entries(names));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next(w: &mut DataDirWatch) -> Option<Change> {
        tokio::time::timeout(Duration::from_secs(5), w.changed()).await.ok().map(|r| r.expect("read"))
    }

    #[tokio::test]
    async fn a_promote_file_and_a_removed_signal_file_are_seen_and_file_contents_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("standby.signal"), "").expect("write");
        std::fs::write(dir.path().join("postgresql.conf"), "a").expect("write");
        let mut w = DataDirWatch::new(dir.path()).expect("watch");
        // Writing into a file that exists, or below the top level, is not a change here.
        std::fs::write(dir.path().join("postgresql.conf"), "b").expect("write");
        std::fs::create_dir(dir.path().join("base")).expect("mkdir");
        assert_eq!(next(&mut w).await, Some(Change::Entries(vec!["base".into()])));
        std::fs::write(dir.path().join("base").join("1"), "x").expect("write");
        std::fs::write(dir.path().join("promote"), "").expect("write");
        assert_eq!(next(&mut w).await, Some(Change::Entries(vec!["promote".into()])));
        std::fs::remove_file(dir.path().join("standby.signal")).expect("rm");
        assert_eq!(next(&mut w).await, Some(Change::Entries(vec!["standby.signal".into()])));
        // Nothing more is queued.
        let quiet = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
        assert!(quiet.is_err(), "{quiet:?}");
    }

    #[tokio::test]
    async fn a_removed_data_directory_ends_the_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let mut w = DataDirWatch::new(&data).expect("watch");
        std::fs::remove_dir(&data).expect("rmdir");
        // The removal of the directory itself comes last; entries before it are reported first.
        let mut got = next(&mut w).await;
        while matches!(got, Some(Change::Entries(_))) {
            got = next(&mut w).await;
        }
        assert_eq!(got, Some(Change::Gone));
        assert!(DataDirWatch::new(&data).is_err(), "no directory, no watch");
    }
}
