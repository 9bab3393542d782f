//! An in-memory [`Disk`] that injects the faults a real disk can produce.
//!
//! Model: every file has a durable image and a list of writes not yet synced.
//! `fdatasync` makes a file's writes durable; `sync_dir` makes the directory's
//! names durable. [`MemDisk::crash`] throws away what was not made durable,
//! except that each unsynced write may survive whole, not at all, or torn at
//! any byte (chosen by a seeded RNG), as after a power loss. File handles
//! opened before a crash fail afterwards. Every call yields to the executor
//! once, so that other tasks interleave with I/O as they do on a real ring.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use glommio::io::DmaBuffer;

use crate::disk::{Disk, SegmentFile};

#[derive(Debug, Default, Clone)]
struct Inode {
    /// What reads see now.
    data: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Writes since the last fdatasync: (position, bytes), in issue order.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Durable length changes (preallocate / truncate) pending a sync.
    unsynced_len: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct State {
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    generation: u64,
    fail_syncs: bool,
    fail_next_writes: usize,
    space_bytes: Option<u64>,
    syncs: u64,
    writes: u64,
    nudges: u64,
    last_write: Option<(String, u64, usize)>,
    /// Writes pass while this is above zero (each takes one); `None`: no hold.
    writes_allowed: Option<u64>,
    held: Vec<std::task::Waker>,
    /// Nudges wait while this is set (`MemDisk::hold_nudges`).
    nudges_held: bool,
    held_nudges: Vec<std::task::Waker>,
}

impl State {
    /// Held writes check again whether they may go.
    fn wake_held(&mut self) {
        for w in self.held.drain(..) {
            w.wake();
        }
    }
    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .map(|&i| self.inodes[i].data.len() as u64)
            .sum()
    }
    fn name_of(&self, ino: usize) -> String {
        self.names
            .iter()
            .find(|(_, &i)| i == ino)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }
}

/// How unsynced writes fare in [`MemDisk::crash`].
#[derive(Debug, Clone, Copy)]
pub enum CrashMode {
    /// Every unsynced write and name change is lost.
    DropUnsynced,
    /// Each unsynced write survives whole, not at all, or torn at a random
    /// byte; each unsynced name change survives or not; seeded.
    Random(u64),
}

/// The fault-injecting in-memory disk. Clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    st: Rc<RefCell<State>>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn crashed() -> io::Error {
    io::Error::other("memdisk: file handle from before a crash")
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("memdisk: no file {name}"))
}

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn apply(image: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let end = pos as usize + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[pos as usize..end].copy_from_slice(bytes);
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// An independent copy of this disk (as it is now, unsynced state included).
    pub fn fork(&self) -> MemDisk {
        MemDisk {
            st: Rc::new(RefCell::new(self.st.borrow().clone())),
        }
    }

    /// Every later `fdatasync` fails with EIO (while `on`).
    pub fn fail_syncs(&self, on: bool) {
        self.st.borrow_mut().fail_syncs = on;
    }

    /// The next `n` writes fail with EIO.
    pub fn fail_next_writes(&self, n: usize) {
        self.st.borrow_mut().fail_next_writes = n;
    }

    /// Caps the total size of all files; growing past it fails with ENOSPC.
    pub fn set_space_bytes(&self, cap: Option<u64>) {
        self.st.borrow_mut().space_bytes = cap;
    }

    /// Lets the next `n` writes through and holds every later one (it stays
    /// in flight) until [`MemDisk::release_writes`]: a slow device, to see
    /// what runs while a write is outstanding.
    pub fn hold_writes_after(&self, n: u64) {
        self.st.borrow_mut().writes_allowed = Some(n);
    }

    /// Lets `n` more writes through (held ones first, in no set order).
    pub fn allow_writes(&self, n: u64) {
        let mut st = self.st.borrow_mut();
        st.writes_allowed = Some(st.writes_allowed.unwrap_or(0) + n);
        st.wake_held();
    }

    /// Writes waiting under [`MemDisk::hold_writes_after`].
    pub fn held_writes(&self) -> usize {
        self.st.borrow().held.len()
    }

    /// Lets held and later writes through.
    pub fn release_writes(&self) {
        let mut st = self.st.borrow_mut();
        st.writes_allowed = None;
        st.wake_held();
    }

    /// Number of successful `fdatasync` calls so far.
    pub fn syncs(&self) -> u64 {
        self.st.borrow().syncs
    }

    /// Nudges started from now on wait (a ring that does not answer
    /// them) until [`MemDisk::release_nudges`]; they are counted when
    /// they start.
    pub fn hold_nudges(&self) {
        self.st.borrow_mut().nudges_held = true;
    }

    /// Lets held and later nudges finish.
    pub fn release_nudges(&self) {
        let mut st = self.st.borrow_mut();
        st.nudges_held = false;
        for w in st.held_nudges.drain(..) {
            w.wake();
        }
    }

    /// Number of `SegmentFile::nudge` calls so far.
    pub fn nudges(&self) -> u64 {
        self.st.borrow().nudges
    }

    /// Number of successful writes so far.
    pub fn writes(&self) -> u64 {
        self.st.borrow().writes
    }

    /// Names of the files as they are now, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.st.borrow().names.keys().cloned().collect()
    }

    /// The current contents of a file.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.st.borrow();
        st.names.get(name).map(|&i| st.inodes[i].data.clone())
    }

    /// (file, position, length) of the last successful write.
    pub fn last_write(&self) -> Option<(String, u64, usize)> {
        self.st.borrow().last_write.clone()
    }

    /// Flips one bit of a file, in its current and its durable image.
    pub fn flip_bit(&self, name: &str, offset: usize, bit: u8) {
        let mut st = self.st.borrow_mut();
        let i = st.names[name];
        let ino = &mut st.inodes[i];
        ino.data[offset] ^= 1 << bit;
        if offset < ino.durable.len() {
            ino.durable[offset] ^= 1 << bit;
        }
    }

    /// Overwrites a range of a file with `byte`, in both images (a torn or
    /// damaged region, as a test wants it).
    pub fn fill_range(&self, name: &str, from: usize, to: usize, byte: u8) {
        let mut st = self.st.borrow_mut();
        let i = st.names[name];
        let ino = &mut st.inodes[i];
        let to_d = to.min(ino.data.len());
        ino.data[from.min(to_d)..to_d].fill(byte);
        let to_u = to.min(ino.durable.len());
        ino.durable[from.min(to_u)..to_u].fill(byte);
    }

    /// Power loss: keeps what was made durable and, per `mode`, some of
    /// what was not. Handles opened before this call fail from now on.
    pub fn crash(&self, mode: CrashMode) {
        let mut st = self.st.borrow_mut();
        let mut rng = SplitMix(match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::Random(s) => s,
        });
        let random = matches!(mode, CrashMode::Random(_));
        for ino in st.inodes.iter_mut() {
            let mut img = std::mem::take(&mut ino.durable);
            if random {
                if let Some(len) = ino.unsynced_len {
                    if rng.below(2) == 0 {
                        img.resize(len, 0);
                    }
                }
                for (pos, bytes) in &ino.unsynced {
                    match rng.below(3) {
                        0 => {}
                        1 => apply(&mut img, *pos, bytes),
                        _ => {
                            let keep = rng.below(bytes.len() as u64 + 1) as usize;
                            apply(&mut img, *pos, &bytes[..keep]);
                        }
                    }
                }
            }
            ino.durable = img.clone();
            ino.data = img;
            ino.unsynced.clear();
            ino.unsynced_len = None;
        }
        if random && rng.below(2) == 0 {
            // The directory's unsynced changes happened to reach the disk.
        } else {
            st.names = st.durable_names.clone();
        }
        st.durable_names = st.names.clone();
        st.generation += 1;
        st.last_write = None;
    }
}

/// A handle to a [`MemDisk`] file.
#[derive(Debug)]
pub struct MemFile {
    disk: MemDisk,
    ino: usize,
    generation: u64,
}

impl MemFile {
    fn check(&self) -> io::Result<()> {
        if self.disk.st.borrow().generation != self.generation {
            Err(crashed())
        } else {
            Ok(())
        }
    }
}

async fn yield_now() {
    futures_lite::future::yield_now().await
}

impl Disk for MemDisk {
    type File = MemFile;

    async fn list(&self) -> io::Result<Vec<String>> {
        yield_now().await;
        Ok(self.file_names())
    }

    async fn create(&self, name: &str) -> io::Result<MemFile> {
        yield_now().await;
        let mut st = self.st.borrow_mut();
        if st.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("memdisk: {name} exists"),
            ));
        }
        st.inodes.push(Inode::default());
        let ino = st.inodes.len() - 1;
        st.names.insert(name.to_string(), ino);
        Ok(MemFile {
            disk: self.clone(),
            ino,
            generation: st.generation,
        })
    }

    async fn open(&self, name: &str) -> io::Result<MemFile> {
        yield_now().await;
        let st = self.st.borrow();
        let ino = *st.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(MemFile {
            disk: self.clone(),
            ino,
            generation: st.generation,
        })
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        yield_now().await;
        let mut st = self.st.borrow_mut();
        let ino = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_string(), ino);
        Ok(())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        yield_now().await;
        let mut st = self.st.borrow_mut();
        st.names.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        yield_now().await;
        let mut st = self.st.borrow_mut();
        st.durable_names = st.names.clone();
        Ok(())
    }

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        glommio::allocate_dma_buffer_global(len)
    }

    fn describe(&self, name: &str) -> String {
        format!("memdisk:{name}")
    }
}

impl SegmentFile for MemFile {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        yield_now().await;
        std::future::poll_fn(|cx| {
            let mut st = self.disk.st.borrow_mut();
            match st.writes_allowed {
                None => std::task::Poll::Ready(()),
                Some(n) if n > 0 => {
                    st.writes_allowed = Some(n - 1);
                    std::task::Poll::Ready(())
                }
                Some(_) => {
                    if !st.held.iter().any(|w| w.will_wake(cx.waker())) {
                        st.held.push(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
            }
        })
        .await;
        self.check()?;
        let mut st = self.disk.st.borrow_mut();
        if st.fail_next_writes > 0 {
            st.fail_next_writes -= 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        let end = pos + buf.len() as u64;
        let cur = st.inodes[self.ino].data.len() as u64;
        if end > cur {
            if let Some(cap) = st.space_bytes {
                if st.used_bytes() + (end - cur) > cap {
                    return Err(enospc());
                }
            }
        }
        let ino = &mut st.inodes[self.ino];
        apply(&mut ino.data, pos, buf.as_bytes());
        ino.unsynced.push((pos, buf.as_bytes().to_vec()));
        st.writes += 1;
        let name = st.name_of(self.ino);
        st.last_write = Some((name, pos, buf.len()));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        yield_now().await;
        self.check()?;
        let st = self.disk.st.borrow();
        let d = &st.inodes[self.ino].data;
        let from = (pos as usize).min(d.len());
        let to = (pos as usize + len).min(d.len());
        Ok(d[from..to].to_vec())
    }

    async fn fdatasync(&self) -> io::Result<()> {
        yield_now().await;
        self.check()?;
        let mut st = self.disk.st.borrow_mut();
        if st.fail_syncs {
            return Err(io::Error::from_raw_os_error(5));
        }
        let ino = &mut st.inodes[self.ino];
        if ino.unsynced_len.is_some() {
            // A size change since the last sync: copy the file once.
            ino.durable = ino.data.clone();
            ino.unsynced.clear();
        } else {
            // The current image is the durable one with the unsynced
            // writes applied in order: apply them (a sync costs what was
            // written, not the file's size).
            for (pos, bytes) in ino.unsynced.drain(..) {
                apply(&mut ino.durable, pos, &bytes);
            }
            debug_assert_eq!(
                ino.durable.len(),
                ino.data.len(),
                "memdisk: images diverged"
            );
        }
        ino.unsynced_len = None;
        st.syncs += 1;
        Ok(())
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        yield_now().await;
        self.check()?;
        let mut st = self.disk.st.borrow_mut();
        let cur = st.inodes[self.ino].data.len() as u64;
        if len > cur {
            if let Some(cap) = st.space_bytes {
                if st.used_bytes() + (len - cur) > cap {
                    return Err(enospc());
                }
            }
            let ino = &mut st.inodes[self.ino];
            ino.data.resize(len as usize, 0);
            ino.unsynced_len = Some(len as usize);
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        yield_now().await;
        self.check()?;
        let mut st = self.disk.st.borrow_mut();
        let ino = &mut st.inodes[self.ino];
        ino.data.resize(len as usize, 0);
        ino.unsynced_len = Some(len as usize);
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.check()?;
        Ok(self.disk.st.borrow().inodes[self.ino].data.len() as u64)
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }

    async fn nudge(&self) -> io::Result<()> {
        self.disk.st.borrow_mut().nudges += 1;
        std::future::poll_fn(|cx| {
            let mut st = self.disk.st.borrow_mut();
            if !st.nudges_held {
                return std::task::Poll::Ready(());
            }
            st.held_nudges.push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await;
        Ok(())
    }
}
