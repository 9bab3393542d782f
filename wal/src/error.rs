use std::io;

/// Errors of the WAL. I/O trouble is reported, never retried silently.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal: {op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("wal: disk full during {op} of {file}; nothing acknowledged is lost, reopen once space is freed")]
    DiskFull { op: &'static str, file: String },
    #[error("wal: corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("wal: record of {len} bytes exceeds record_bytes_max = {max}")]
    RecordTooLarge { len: usize, max: usize },
    #[error("wal: queue full ({queued} bytes queued, queue_bytes_max = {max})")]
    QueueFull { queued: usize, max: usize },
    #[error("wal: poisoned by an earlier failure, every call fails until reopened: {cause}")]
    Poisoned {
        cause: String,
        /// The failure was a full disk: reopening once space is freed
        /// resumes (an fsync or write error is fail-stop instead).
        disk_full: bool,
    },
    #[error("wal: invalid options: {0}")]
    InvalidOptions(String),
    #[error("wal: closed")]
    Closed,
}

impl WalError {
    /// Whether this is (or the log was poisoned by) a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            WalError::DiskFull { .. }
                | WalError::Poisoned {
                    disk_full: true,
                    ..
                }
        )
    }

    pub(crate) fn io(op: &'static str, file: String, source: io::Error) -> Self {
        // glommio's errors keep the kind (StorageFull) but not the errno.
        if source.raw_os_error() == Some(28) || source.kind() == io::ErrorKind::StorageFull {
            WalError::DiskFull { op, file }
        } else {
            WalError::Io { op, file, source }
        }
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: glommio turns ENOSPC into an io::Error that keeps the
    /// kind but not the errno, and a full disk was taken for an I/O error
    /// (fail-stop) instead of a full disk.
    #[test]
    fn a_full_disk_is_recognized_with_or_without_its_errno() {
        let raw = io::Error::from_raw_os_error(28);
        let wrapped = io::Error::new(raw.kind(), format!("{raw}, op: Pre-allocate space"));
        assert_eq!(wrapped.raw_os_error(), None);
        for e in [raw, wrapped] {
            assert!(WalError::io("preallocate", "f".into(), e).is_disk_full());
        }
        let other = io::Error::from_raw_os_error(5);
        assert!(!WalError::io("write", "f".into(), other).is_disk_full());
    }
}
