//! A memory-mapped file of fixed-size big-endian entries: the storage under
//! [`OffsetIndex`](super::offset_index::OffsetIndex) and
//! [`TimeIndex`](super::time_index::TimeIndex).
//!
//! The active segment's index is preallocated to `max_bytes` (sparse, so
//! unused entries cost no disk) and mapped writable; how many entries are
//! valid is not in the file but in the partition head, published only after
//! the entries are written. When a segment rolls, its index is trimmed to the
//! valid entries, so for a closed segment the count is `len / entry_size`.
//! Readers never touch entries at or past the count they were given, which
//! is what makes trimming a file that other processes have mapped safe.
//!
//! A store through a mapping into a page the filesystem has not allocated
//! makes the kernel allocate it at the fault, and when it cannot (a full
//! disk, a quota) the process gets SIGBUS: no error code, no message, the
//! process is gone. So no entry is written into a page before its blocks
//! are allocated with `fallocate` ([`IndexFile::put`] checks, and
//! allocates ahead in chunks); a disk that is full turns into the `Io`
//! error the caller's append reports (`Error::is_disk_full`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

use crate::error::{IoContext, Result};

enum Map {
    Empty,
    Read(Mmap),
    Write(MmapMut),
}

pub struct IndexFile {
    path: PathBuf,
    entry_size: usize,
    map: Map,
    /// (device, inode) of the file under a writable map, for allocating
    /// its blocks. No descriptor is kept (the map stays valid without one,
    /// and a process with thousands of partitions cannot afford two more
    /// each): [`IndexFile::allocate`], which runs once per chunk, opens the
    /// file again and checks it is this one.
    file: Option<(u64, u64)>,
    /// The first `allocated` bytes of the file have their blocks allocated,
    /// so stores below it cannot fault for want of space: by this process,
    /// or (below the page of the first entry it wrote) by whoever wrote the
    /// entries there, which are published ones (see [`IndexFile::put`]).
    /// 0 until the first entry is written.
    allocated: u64,
    /// The filesystem has no `fallocate`: allocate by rewriting the bytes.
    no_fallocate: bool,
}

/// The most bytes [`IndexFile::put`] allocates at once past the entry it
/// writes. Chunks start at one page and double with the bytes allocated so
/// far, so a small partition's index keeps a page or two on disk (as the
/// sparse file did), while a busy one allocates 64 KiB per call: with the
/// default 4 KiB `index.interval.bytes`, one `fallocate` per 32 MiB of log
/// for the offset index and one per 21 MiB for the time index.
const ALLOCATE_AHEAD_MAX: u64 = 64 << 10;

impl IndexFile {
    /// Open for appending, growing the file to `max_bytes` if it is shorter.
    pub fn open_writable(path: &Path, entry_size: usize, max_bytes: u64) -> Result<IndexFile> {
        let file = open_rw(path)?;
        let max_bytes = max_bytes - max_bytes % entry_size as u64;
        let meta = file.metadata().ctx("stat index", path)?;
        let len = meta.len();
        if len < max_bytes {
            file.set_len(max_bytes).ctx("grow index", path)?;
        }
        let map_len = len.max(max_bytes);
        // SAFETY: entries are read and written only below published counts
        // (see the module docs), so other processes never race our accesses.
        let map = unsafe { MmapOptions::new().len(map_len as usize).map_mut(&file) }
            .ctx("mmap index", path)?;
        advise_random(&map);
        Ok(IndexFile {
            path: path.to_path_buf(),
            entry_size,
            map: Map::Write(map),
            file: Some(id_of(&meta)),
            allocated: 0,
            no_fallocate: false,
        })
    }

    /// Open the index of a segment some writer created, without creating,
    /// growing or shrinking the file: the whole current file is mapped
    /// writable (for the append-lock holder), or nothing if it is absent.
    /// Readers that may hold a stale head use this, so that reopening a
    /// segment that has just been closed (and its index trimmed) can never
    /// grow that index back to its preallocated size.
    pub fn open_existing(path: &Path, entry_size: usize) -> Result<IndexFile> {
        Self::map_existing(path, entry_size, true)
    }

    /// An index with no entries, mapping nothing: for a segment whose index
    /// files cannot be trusted to match its log (see `LogSegment::indexes`).
    pub fn empty(path: &Path, entry_size: usize) -> IndexFile {
        IndexFile {
            path: path.to_path_buf(),
            entry_size,
            map: Map::Empty,
            file: None,
            allocated: 0,
            no_fallocate: false,
        }
    }

    /// Open a closed segment's index read-only.
    pub fn open_readonly(path: &Path, entry_size: usize) -> Result<IndexFile> {
        Self::map_existing(path, entry_size, false)
    }

    /// Map an index file at its current length (none if absent or empty).
    fn map_existing(path: &Path, entry_size: usize, writable: bool) -> Result<IndexFile> {
        let file = match OpenOptions::new().read(true).write(writable).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IndexFile::empty(path, entry_size))
            }
            Err(e) => return Err(crate::Error::io("open index", path, e)),
        };
        let meta = file.metadata().ctx("stat index", path)?;
        let len = meta.len();
        let len = (len - len % entry_size as u64) as usize;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let map = match (len, writable) {
            (0, _) => Map::Empty,
            (_, true) => {
                // SAFETY: as in `open_writable`: accesses stay below counts
                // published by the head, so no other process races them.
                let m = unsafe { opts.map_mut(&file) }.ctx("mmap index", path)?;
                advise_random(&m);
                Map::Write(m)
            }
            (_, false) => {
                // SAFETY: as above; a read-only mapping is never written.
                let m = unsafe { opts.map(&file) }.ctx("mmap index", path)?;
                advise_random(&m);
                Map::Read(m)
            }
        };
        let file = match map {
            Map::Write(_) => Some(id_of(&meta)),
            _ => None,
        };
        Ok(IndexFile {
            path: path.to_path_buf(),
            entry_size,
            map,
            file,
            allocated: 0,
            no_fallocate: false,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.map {
            Map::Empty => &[],
            Map::Read(m) => m,
            Map::Write(m) => m,
        }
    }

    /// Entries the mapping can hold.
    pub fn capacity(&self) -> u64 {
        (self.bytes().len() / self.entry_size) as u64
    }

    /// Entry `i`, or `None` past the mapping.
    #[inline]
    pub fn entry(&self, i: u64) -> Option<&[u8]> {
        let start = usize::try_from(i).ok()?.checked_mul(self.entry_size)?;
        self.bytes().get(start..start.checked_add(self.entry_size)?)
    }

    /// Write entry `i`: `Ok(false)` when the index is full or read-only, an
    /// `Io` error (disk full, say) when the entry's page cannot be
    /// allocated, in which case nothing was written.
    ///
    /// Only the append-lock holder writes, and only the first entry past
    /// the published count (or, rebuilding an index, entries from 0 with
    /// the count not yet published): so every entry at or past `i` is no
    /// reader's, which is what lets [`IndexFile::allocate`] rewrite them.
    #[inline]
    pub fn put(&mut self, i: u64, entry: &[u8]) -> Result<bool> {
        debug_assert_eq!(entry.len(), self.entry_size);
        let es = self.entry_size;
        let Map::Write(m) = &self.map else {
            return Ok(false);
        };
        let Some((start, end)) = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(es))
            .and_then(|s| Some((s, s.checked_add(es)?)))
            .filter(|(_, e)| *e <= m.len())
        else {
            return Ok(false);
        };
        // Never store into a page before its blocks are allocated: a fault
        // the filesystem cannot serve is SIGBUS, not an error.
        if end as u64 > self.allocated {
            self.allocate(start as u64, end as u64)?;
        }
        let Map::Write(m) = &mut self.map else {
            return Ok(false);
        };
        m[start..end].copy_from_slice(entry);
        Ok(true)
    }

    /// Allocate the file's blocks for the entry at `start..end` and a chunk
    /// past it (as much again as is allocated, one page to
    /// [`ALLOCATE_AHEAD_MAX`], never past the mapping), from where the
    /// allocation ends or the entry's page starts, whichever is later. The
    /// pages below the entry's hold the entries before it, published, so
    /// written through some mapping and allocated by that: starting there
    /// after a reopen keeps the call (and the room it must find) one chunk.
    /// Rebuilding an index writes entries from 0, so it allocates them all.
    ///
    /// `FALLOC_FL_KEEP_SIZE`: the mapping never reaches past the file's
    /// size it was made at, but the file may have been trimmed under a
    /// stale mapping; allocating must never grow it back.
    ///
    /// A filesystem without `fallocate` (EOPNOTSUPP) gets the chunk's own
    /// bytes written back with `pwrite`, which makes it allocate them (or
    /// fail with ENOSPC) without changing a byte: no other process writes
    /// this file meanwhile (see [`IndexFile::put`]).
    #[cold]
    fn allocate(&mut self, start: u64, end: u64) -> Result<()> {
        let page = page_size();
        let map_len = self.bytes().len() as u64;
        let ahead = self.allocated.clamp(page, ALLOCATE_AHEAD_MAX);
        let to = end
            .next_multiple_of(page)
            .saturating_add(ahead)
            .min(map_len)
            .max(end);
        let from = self.allocated.max(start - start % page).min(to);
        let Some(id) = self.file else {
            return Ok(());
        };
        let file = open_existing_rw(&self.path)?;
        if file_id(&file, &self.path)? != id {
            // Never the case for the active segment's index (only its
            // appender resizes it, and recovery runs alone); refuse rather
            // than allocate a file the mapping does not show.
            return Err(crate::Error::io(
                "allocate index",
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the index file was replaced since it was mapped",
                ),
            ));
        }
        if !self.no_fallocate {
            match fallocate_keep_size(&file, from, to - from) {
                Ok(()) => {
                    self.allocated = to;
                    return Ok(());
                }
                Err(e) if is_unsupported(&e) => self.no_fallocate = true,
                Err(e) => return Err(crate::Error::io("allocate index", &self.path, e)),
            }
        }
        // Read with `pread`, not through the mapping: on some filesystems
        // (tmpfs) even a read fault on a hole allocates, and SIGBUSes.
        let mut bytes = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut bytes, from)
            .ctx("allocate index", &self.path)?;
        file.write_all_at(&bytes, from)
            .ctx("allocate index", &self.path)?;
        self.allocated = to;
        Ok(())
    }

    /// Whether the mapping holds fewer entries than a file of `max_bytes`.
    pub fn is_short_of(&self, max_bytes: u64) -> bool {
        self.capacity() < max_bytes / self.entry_size as u64
    }

    /// Shrink the file to `entries` entries and remap it read-only. Never
    /// to more entries than the mapping holds: entries that were never
    /// written here (a missing or short file) must not become zero-filled
    /// "entries" (a zero timestamp would make the segment look expired).
    pub fn trim(&mut self, entries: u64) -> Result<()> {
        let entries = entries.min(self.capacity());
        let file = open_rw(&self.path)?;
        file.set_len(entries * self.entry_size as u64)
            .ctx("trim index", &self.path)?;
        *self = IndexFile::open_readonly(&self.path, self.entry_size)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        if let Map::Write(m) = &self.map {
            m.flush().ctx("flush index", &self.path)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Tell the kernel that an index mapping is read and written a page here
/// and there (binary searches, one entry per `index.interval.bytes`), so a
/// page fault brings in that page alone. Without it a fault is served with
/// the device's read-around window (`read_ahead_kb`, 8 MiB on some hosts):
/// the first entry written into a fresh, sparse 10 MiB index allocated and
/// zero-filled megabytes of page cache for its holes, about 6 ms of kernel
/// time per file, so a flush whose 800 batches each crossed the index
/// interval spent 10-25 s in page faults. Advice only: if it fails,
/// indexes work as before, just slower.
fn advise_random(map: &impl Advise) {
    let _ = map.advise_random();
}

/// The two mapping kinds of `memmap2`, which share no trait for `advise`.
trait Advise {
    fn advise_random(&self) -> std::io::Result<()>;
}

impl Advise for Mmap {
    fn advise_random(&self) -> std::io::Result<()> {
        self.advise(Advice::Random)
    }
}

impl Advise for MmapMut {
    fn advise_random(&self) -> std::io::Result<()> {
        self.advise(Advice::Random)
    }
}

/// `fallocate(FALLOC_FL_KEEP_SIZE)` of `len` bytes at `offset`, retried
/// when interrupted.
pub(crate) fn fallocate_keep_size(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: a plain syscall on a descriptor we own; no memory passed.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `fallocate` failed because the filesystem does not have it.
pub(crate) fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

fn open_existing_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx("open index", path)
}

fn file_id(file: &File, path: &Path) -> Result<(u64, u64)> {
    Ok(id_of(&file.metadata().ctx("stat index", path)?))
}

fn id_of(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("open index", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that starts at `addr`, from
    /// `/proc/self/smaps`.
    fn vm_flags(addr: *const u8) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
        let start = format!("{:x}-", addr as usize);
        let mut in_map = false;
        for line in smaps.lines() {
            if line.starts_with(&start) {
                in_map = true;
            } else if in_map {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            }
        }
        panic!("no mapping at {addr:?} in /proc/self/smaps");
    }

    /// Pages of the mapping `bytes` that are in the page cache.
    fn resident_pages(bytes: &[u8]) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut vec = vec![0u8; bytes.len().div_ceil(page)];
        // SAFETY: `bytes` is a whole mapping (page-aligned start) and `vec`
        // has one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                bytes.as_ptr() as *mut libc::c_void,
                bytes.len(),
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// The first entry written into a fresh, sparse index must fault in its
    /// own page, not the device's read-around window: with 8 MiB of
    /// `read_ahead_kb`, every first entry zero-filled 8 MiB of page cache,
    /// and a flush of 800 partitions crossing `index.interval.bytes` took
    /// 10-25 s. The mapping carries the random-access advice (`rr`), and
    /// (on a device with read-ahead) the write leaves a handful of pages
    /// resident, not thousands.
    #[test]
    fn first_entry_of_a_sparse_index_faults_in_one_page_not_a_read_ahead_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        let max = 10 << 20;
        let mut idx = IndexFile::open_writable(&path, 8, max).expect("open index");
        assert_eq!(idx.capacity(), max / 8);
        assert!(idx.put(0, &[1, 2, 3, 4, 5, 6, 7, 8]).expect("put"));
        let bytes = idx.bytes();
        assert!(
            vm_flags(bytes.as_ptr()).iter().any(|f| f == "rr"),
            "writable index mapping lacks MADV_RANDOM"
        );
        // Fault-around may map up to 16 already-cached pages; read-around
        // would have read 2,048 of them.
        let resident = resident_pages(bytes);
        assert!(resident <= 16, "{resident} pages resident after one entry");
        assert_eq!(idx.entry(0), Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..]));

        // A closed segment's index (trimmed, mapped read-only) and one
        // mapped as found are advised the same way.
        idx.trim(1).expect("trim");
        assert!(vm_flags(idx.bytes().as_ptr()).iter().any(|f| f == "rr"));
        let again = IndexFile::open_existing(&path, 8).expect("reopen");
        assert!(vm_flags(again.bytes().as_ptr()).iter().any(|f| f == "rr"));
        assert_eq!(again.entry(0), Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..]));
    }

    /// Bytes of `path` the filesystem has blocks for.
    fn allocated_bytes(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    /// Every entry's page is allocated before the entry is stored, in
    /// chunks that start at a page and double up to `ALLOCATE_AHEAD_MAX`
    /// ahead of the entry, and never past the mapping.
    #[test]
    fn put_allocates_each_page_before_storing_into_it_in_growing_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        let max = 1 << 20;
        let mut idx = IndexFile::open_writable(&path, 8, max).expect("open index");
        assert_eq!(idx.allocated, 0);
        let page = page_size();
        let mut chunks = 0;
        let mut last = 0;
        for i in 0..max / 8 {
            assert!(idx.put(i, &i.to_be_bytes()).expect("put"));
            let end = (i + 1) * 8;
            assert!(idx.allocated >= end, "entry {i} stored past the allocation");
            assert!(idx.allocated <= end.next_multiple_of(page) + ALLOCATE_AHEAD_MAX);
            if idx.allocated != last {
                chunks += 1;
                last = idx.allocated;
            }
        }
        assert_eq!(idx.allocated, max, "never past the mapping");
        // Doubling from one page to 64 KiB, then 64 KiB at a time.
        assert!(
            chunks <= 6 + max / ALLOCATE_AHEAD_MAX,
            "{chunks} allocations"
        );
        if !idx.no_fallocate {
            assert!(allocated_bytes(&path) >= max);
        }
        for i in 0..max / 8 {
            assert_eq!(idx.entry(i), Some(&i.to_be_bytes()[..]));
        }
        assert!(!idx.put(max / 8, &[0; 8]).expect("put past the end"));
    }

    /// A small index allocates a page, not a chunk of 64 KiB: a directory
    /// of many small partitions keeps its indexes small on disk.
    #[test]
    fn first_entry_allocates_about_one_page() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.timeindex");
        let mut idx = IndexFile::open_writable(&path, 12, 10 << 20).expect("open index");
        assert!(idx.put(0, &[7; 12]).expect("put"));
        assert!(idx.allocated <= 2 * page_size(), "{}", idx.allocated);
    }

    /// Reopened with entries in it, the index allocates one chunk from the
    /// next entry's page: the entries keep their bytes, also on a
    /// filesystem without `fallocate`, where the chunk's own bytes are
    /// rewritten.
    #[test]
    fn allocating_after_a_reopen_keeps_the_entries_with_or_without_fallocate() {
        for no_fallocate in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("00000000000000000000.index");
            let n = 3000u64;
            {
                let mut idx = IndexFile::open_writable(&path, 8, 1 << 20).expect("open");
                for i in 0..n {
                    assert!(idx.put(i, &(i * 3).to_be_bytes()).expect("put"));
                }
                idx.flush().expect("flush");
            }
            let mut idx = IndexFile::open_existing(&path, 8).expect("reopen");
            idx.no_fallocate = no_fallocate;
            assert!(idx.put(n, &(n * 3).to_be_bytes()).expect("put"));
            assert!(idx.allocated > (n + 1) * 8);
            assert!(idx.allocated <= (n + 1) * 8 + 2 * page_size(), "one chunk");
            for i in 0..=n {
                assert_eq!(idx.entry(i), Some(&(i * 3).to_be_bytes()[..]), "entry {i}");
            }
            assert!(allocated_bytes(&path) >= idx.allocated);
        }
    }

    /// On a full filesystem an entry whose page is not allocated is a
    /// disk-full error, with nothing stored (the process used to die of
    /// SIGBUS at the store); once space is freed the same entry goes in.
    /// Needs a tmpfs of its own, so root: skipped (passing) otherwise.
    #[test]
    fn put_on_a_full_filesystem_is_a_disk_full_error_then_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.0)
                    .status();
            }
        }
        let _unmount = Unmount(&mnt);
        let path = mnt.join("00000000000000000000.index");
        let mut idx = IndexFile::open_writable(&path, 8, 512 << 10).expect("open index");
        assert!(idx.put(0, &[1; 8]).expect("first entry"));
        let filler = mnt.join("filler");
        {
            use std::io::Write;
            let mut f = File::create(&filler).expect("filler");
            while f.write_all(&[0u8; 4096]).is_ok() {}
        }
        // The first entry past what is allocated.
        let i = idx.allocated / 8;
        let err = idx.put(i, &[2; 8]).expect_err("a full disk");
        assert!(err.is_disk_full(), "{err}");
        // (Not read back through the mapping: on tmpfs even a read fault on
        // an unallocated page allocates, and on a full one SIGBUSes.)
        let mut stored = [9u8; 8];
        File::open(&path)
            .and_then(|f| f.read_exact_at(&mut stored, i * 8))
            .expect("pread");
        assert_eq!(stored, [0u8; 8], "nothing stored");
        // Entries in allocated pages still go in.
        assert!(idx.put(1, &[3; 8]).expect("allocated page"));
        std::fs::remove_file(&filler).expect("free");
        assert!(idx.put(i, &[2; 8]).expect("after freeing"));
        assert_eq!(idx.entry(i), Some(&[2u8; 8][..]));
        drop(idx);
    }
}
