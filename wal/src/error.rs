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
    Poisoned { cause: String },
    #[error("wal: invalid options: {0}")]
    InvalidOptions(String),
    #[error("wal: closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, file: String, source: io::Error) -> Self {
        if source.raw_os_error() == Some(28) {
            WalError::DiskFull { op, file }
        } else {
            WalError::Io { op, file, source }
        }
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
