//! The I/O layer the WAL writes through: a directory of segment files.
//!
//! [`DmaDisk`] is the production implementation (glommio DMA files: O_DIRECT
//! through io_uring). [`crate::MemDisk`] is an in-memory implementation that
//! injects faults (torn writes, lost unsynced data, bit flips, failing
//! `fdatasync`, a full disk) for tests. Both are driven from a glommio
//! executor; neither blocks the executor thread on the hot path (`write_at`,
//! `fdatasync`). Directory listing at open uses a plain `readdir`: it is
//! recovery, not the hot path.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

/// A directory holding segment files.
#[allow(async_fn_in_trait)] // single-threaded executor: the futures need not be Send
pub trait Disk: Clone + 'static {
    type File: SegmentFile;
    /// Names of the files in the directory (no particular order).
    async fn list(&self) -> io::Result<Vec<String>>;
    /// Creates a new file; fails if it exists.
    async fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// An aligned buffer suitable for `write_at`.
    fn alloc_buf(&self, len: usize) -> DmaBuffer;
    /// Human-readable location of `name`, for error messages.
    fn describe(&self, name: &str) -> String;
}

/// One segment file.
#[allow(async_fn_in_trait)]
pub trait SegmentFile: 'static {
    /// Writes all of `buf` at `pos` (both block-aligned); a short write is an error.
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos` (block-aligned); shorter only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    async fn fdatasync(&self) -> io::Result<()>;
    /// Allocates `len` bytes of disk space and sets the file size to `len`.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    async fn close(self) -> io::Result<()>;
    /// Issues one small read of the file's first block on the ring its
    /// writes use, for the writer to call while a write is late
    /// (`WRITE_NUDGE_MS`): on glommio's poll ring (IOPOLL), a write's
    /// completion is posted only when the ring is entered again, and a
    /// write left in flight when the shard goes idle was seen waiting for
    /// the next submission for 33 s (the chaos test of moves). The read's
    /// result does not matter; a file with no such ring does nothing.
    async fn nudge(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Segment files on a real filesystem, through glommio's DMA files.
#[derive(Clone, Debug)]
pub struct DmaDisk {
    dir: Rc<PathBuf>,
    /// The directory, opened at its first sync and kept open: a sync then
    /// needs no new file descriptor, so a process out of descriptors (a
    /// flood of client connections) cannot make the WAL fail there.
    dir_handle: Rc<RefCell<Option<Rc<glommio::io::Directory>>>>,
}

impl DmaDisk {
    /// Uses `dir`, creating it if needed.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::create_dir_all(dir.as_ref())?;
        // Absolute: glommio cannot sync a directory opened by a relative
        // path (EBADF).
        let dir = std::path::absolute(dir.as_ref())?;
        Ok(DmaDisk {
            dir: Rc::new(dir),
            dir_handle: Rc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn gio<T>(r: glommio::Result<T, ()>) -> io::Result<T> {
    r.map_err(io::Error::from)
}

impl Disk for DmaDisk {
    type File = DmaSegment;

    async fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&*self.dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    async fn create(&self, name: &str) -> io::Result<DmaSegment> {
        let f = gio(OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(self.path(name))
            .await)?;
        Ok(DmaSegment {
            file: f,
            path: self.path(name),
        })
    }

    async fn open(&self, name: &str) -> io::Result<DmaSegment> {
        let f = gio(OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(self.path(name))
            .await)?;
        Ok(DmaSegment {
            file: f,
            path: self.path(name),
        })
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        gio(glommio::io::rename(self.path(from), self.path(to)).await)
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        gio(glommio::io::remove(self.path(name)).await)
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let held = self.dir_handle.borrow().clone();
        let d = match held {
            Some(d) => d,
            None => {
                let d = Rc::new(gio(glommio::io::Directory::open(&*self.dir).await)?);
                *self.dir_handle.borrow_mut() = Some(d.clone());
                d
            }
        };
        gio(d.sync().await)
    }

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        glommio::allocate_dma_buffer(len)
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A segment file opened for direct I/O.
#[derive(Debug)]
pub struct DmaSegment {
    file: DmaFile,
    path: PathBuf,
}

impl SegmentFile for DmaSegment {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        let len = buf.len();
        let n = gio(self.file.write_rc_at(buf, pos).await)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short direct write: {n} of {len} bytes at offset {pos}"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        // Recovery reads go through the page cache: direct reads of
        // preallocated, never-written extents fail with EOPNOTSUPP on the
        // io_uring poll ring (seen on ext4/virtio). Our direct writes
        // invalidate the cached pages they cover, so this sees the disk.
        let f = gio(glommio::io::BufferedFile::open(&self.path).await)?;
        let r = gio(f.read_at(pos, len).await);
        gio(f.close().await)?;
        Ok(r?.to_vec())
    }

    async fn fdatasync(&self) -> io::Result<()> {
        gio(self.file.fdatasync().await)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        gio(self.file.pre_allocate(len, false).await)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        gio(self.file.truncate(len).await)
    }

    async fn size(&self) -> io::Result<u64> {
        gio(self.file.file_size().await)
    }

    async fn nudge(&self) -> io::Result<()> {
        let block = self.file.alignment().max(512) as usize;
        gio(self.file.read_at(0, block).await).map(|_| ())
    }

    async fn close(self) -> io::Result<()> {
        gio(self.file.close().await)
    }
}
