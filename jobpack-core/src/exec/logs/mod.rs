//! A job's log: stdout and stderr captured into one file, and any number of readers following it.
//!
//! The file is the single source of truth. Capture threads read the job's pipes (so the job never
//! waits on a reader), mask secrets, append to the file and publish the committed length on a
//! `watch` channel. A reader is a file position plus a receiver of that length: it reads history
//! from the file, then waits for the length to grow, until the log is closed. A reader that joins
//! late therefore gets the whole history, and a slow reader costs nothing but its own file reads:
//! no per-reader buffer exists that could grow or block the writer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

mod mask;
pub mod streams;

pub(crate) use mask::Masker;
use streams::{Stream, StreamIndexWriter};

/// A capture thread's first read buffer, and the size it may double up to.
const FIRST_READ: usize = 64 * 1024;
const LARGEST_READ: usize = 1 << 20;

/// The published state of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    len: u64,
    closed: bool,
}

/// The shared side of a log: where it is and how far it has been written.
#[derive(Debug, Clone)]
pub struct LogStream {
    path: PathBuf,
    committed: watch::Receiver<Committed>,
}

impl LogStream {
    /// A finished log on disk (e.g. after a restart): readers get the file and then EOF.
    pub fn finished(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (_tx, rx) = watch::channel(Committed { len, closed: true });
        LogStream {
            path,
            committed: rx,
        }
    }

    /// A reader from the start.
    pub fn reader(&self) -> LogReader {
        self.reader_at(0)
    }

    /// A reader from byte `offset` (e.g. an SSE `Last-Event-ID`).
    pub fn reader_at(&self, offset: u64) -> LogReader {
        LogReader {
            path: self.path.clone(),
            file: None,
            pos: offset,
            committed: self.committed.clone(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.committed.borrow().len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the job's output has ended.
    pub fn is_closed(&self) -> bool {
        self.committed.borrow().closed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Follows a log: history, then live data, then `None` when the log is closed.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    pos: u64,
    committed: watch::Receiver<Committed>,
}

impl LogReader {
    /// The byte offset of the next chunk.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next chunk (at most `max` bytes), waiting for the job to write more; `None` at the end.
    pub async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        loop {
            let c = *self.committed.borrow_and_update();
            if self.pos < c.len {
                let want = usize::try_from(c.len - self.pos)
                    .unwrap_or(usize::MAX)
                    .min(max);
                let file = match &mut self.file {
                    Some(f) => f,
                    None => {
                        let mut f = tokio::fs::File::open(&self.path).await?;
                        f.seek(io::SeekFrom::Start(self.pos)).await?;
                        self.file.insert(f)
                    }
                };
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    let n = file.read(&mut buf[got..]).await?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("log {} is shorter than published", self.path.display()),
                    ));
                }
                buf.truncate(got);
                self.pos += got as u64;
                return Ok(Some(buf));
            }
            if c.closed {
                return Ok(None);
            }
            if self.committed.changed().await.is_err() {
                // The writer is gone without closing: whatever is in the file is all there is.
                let len = tokio::fs::metadata(&self.path).await?.len();
                if self.pos >= len {
                    return Ok(None);
                }
                let (_tx, rx) = watch::channel(Committed { len, closed: true });
                self.committed = rx;
            }
        }
    }

    /// Reads everything until the log is closed.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(1 << 20).await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// The writing side, shared by the capture threads of one job.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter {
    inner: Arc<Mutex<WriterState>>,
}

#[derive(Debug)]
struct WriterState {
    file: File,
    tx: watch::Sender<Committed>,
    len: u64,
    cap: Option<u64>,
    exceeded: bool,
    open_streams: usize,
    /// One masker for the merged log: a secret split between stdout and stderr is still whole
    /// in the log, so it must be masked there, not per stream.
    masker: Masker,
    scratch: Vec<u8>,
    /// Which stream each byte came from (`streams.rs`).
    index: StreamIndexWriter,
    /// The stream of the last append (what the masker's held-back bytes are attributed to).
    last_stream: Stream,
    /// Output dropped because the file could not be written, and why.
    lost: u64,
    write_error: Option<String>,
    /// The length the file had when it was last synced (by [`LogWriter::close`]).
    synced_len: Option<u64>,
    /// Whether [`LogWriter::close`] syncs the file at all ([`LogWriter::set_sync`]).
    sync: bool,
}

impl LogWriter {
    /// Creates (truncates) the log file.
    pub(crate) fn create(path: &Path, cap: Option<u64>) -> io::Result<(LogWriter, LogStream)> {
        let file = File::create(path)?;
        let index = StreamIndexWriter::create(path)?;
        let (tx, rx) = watch::channel(Committed {
            len: 0,
            closed: false,
        });
        let w = LogWriter {
            inner: Arc::new(Mutex::new(WriterState {
                file,
                tx,
                len: 0,
                cap,
                exceeded: false,
                open_streams: 0,
                masker: Masker::new(&[]),
                scratch: Vec::new(),
                index,
                last_stream: Stream::Stdout,
                lost: 0,
                write_error: None,
                synced_len: None,
                sync: true,
            })),
        };
        Ok((
            w,
            LogStream {
                path: path.to_path_buf(),
                committed: rx,
            },
        ))
    }

    /// Sets the secrets masked in everything appended after this.
    pub(crate) fn set_secrets(&self, secrets: &[Vec<u8>]) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.masker = Masker::new(secrets);
    }

    /// Appends `stream`'s bytes through the masker (bytes that may begin a secret wait for the
    /// next append, from either stream, and are attributed to the stream whose append releases
    /// them); returns `false` once the log cap is reached.
    pub(crate) fn append_masked(&self, data: &[u8], stream: Stream) -> io::Result<bool> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.masker.is_noop() {
            return Self::append_locked(&mut s, data, stream);
        }
        let mut out = std::mem::take(&mut s.scratch);
        out.clear();
        s.masker.push(data, &mut out);
        let r = Self::append_locked(&mut s, &out, stream);
        s.scratch = out;
        r
    }

    /// Writes what the masker still holds back (at the end of the output).
    fn flush_masker(&self) -> io::Result<bool> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        s.masker.finish(&mut out);
        if out.is_empty() {
            return Ok(!s.exceeded);
        }
        let stream = s.last_stream;
        Self::append_locked(&mut s, &out, stream)
    }

    /// Appends `stream`'s bytes; returns `false` once the log cap is reached (the rest is
    /// dropped).
    pub(crate) fn append(&self, data: &[u8], stream: Stream) -> io::Result<bool> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::append_locked(&mut s, data, stream)
    }

    fn append_locked(s: &mut WriterState, data: &[u8], stream: Stream) -> io::Result<bool> {
        if s.exceeded {
            return Ok(false);
        }
        s.last_stream = stream;
        let mut take = data.len();
        if let Some(cap) = s.cap {
            let room = cap.saturating_sub(s.len);
            if (take as u64) > room {
                take = room as usize;
                s.exceeded = true;
            }
        }
        if take == 0 {
            return Ok(!s.exceeded);
        }
        // The run's record goes first, so that a reader below the published length has it.
        let indexed = s.index.note(stream, s.len);
        if let Err(e) = indexed.and_then(|_| s.file.write_all(&data[..take])) {
            // A write that failed part way (a full disk) is undone, so the file keeps matching
            // the published length; the bytes are counted as lost and the job goes on.
            use std::io::Seek;
            let len = s.len;
            let undone = s
                .file
                .set_len(len)
                .and_then(|_| s.file.seek(io::SeekFrom::Start(len)));
            s.lost += take as u64;
            s.write_error = Some(match undone {
                Ok(_) => e.to_string(),
                Err(u) => format!("{e}; and the log could not be cut back: {u}"),
            });
            return Ok(!s.exceeded);
        }
        s.len += take as u64;
        let len = s.len;
        s.tx.send_modify(|c| c.len = len);
        Ok(!s.exceeded)
    }

    /// What went wrong with the log, for the outcome's `log_error`: bytes of output that could
    /// not be written (the disk was full) and the last error, or a failed sync at the end.
    pub(crate) fn error(&self) -> Option<String> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.write_error.clone().map(|e| match s.lost {
            0 => e,
            n => format!("{n} bytes of output were lost: {e}"),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.inner.lock().map(|s| s.len).unwrap_or(0)
    }

    /// Whether closing the log syncs it to disk (the default); `false` for a log removed after
    /// the run.
    pub(crate) fn set_sync(&self, sync: bool) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.sync = sync;
    }

    /// Closes the log for readers: they get EOF after the last byte. The file is synced, unless
    /// nothing was written since an earlier close synced it (the run's end closes it again after
    /// its last capture thread did: a second sync asked the disk to flush its cache for nothing)
    /// or [`LogWriter::set_sync`] said not to.
    pub(crate) fn close(&self) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.sync && s.synced_len != Some(s.len) {
            match s.file.sync_data() {
                Ok(()) => s.synced_len = Some(s.len),
                Err(e) if s.write_error.is_none() => {
                    // Said in the outcome (its log_error): the log may not survive the machine's
                    // crash.
                    s.write_error = Some(format!("the log could not be synced to disk: {e}"));
                }
                Err(_) => {}
            }
        }
        s.tx.send_modify(|c| c.closed = true);
    }

    /// Starts a thread that copies `src` (a pipe) into the log until EOF, through two maskers:
    /// its own stream's (a secret split across two writes of one stream) and then the log's (a
    /// secret split between stdout and stderr, see [`LogWriter::set_secrets`]). `on_cap` is called
    /// once if the log cap is hit. Returns the thread's handle.
    pub(crate) fn capture(
        &self,
        mut src: File,
        stream: Stream,
        on_cap: Arc<dyn Fn() + Send + Sync>,
    ) -> std::thread::JoinHandle<io::Result<()>> {
        let w = self.clone();
        w.inner
            .lock()
            .map(|mut s| s.open_streams += 1)
            .unwrap_or_default();
        std::thread::Builder::new()
            .name("jobpack-log".into())
            .spawn(move || {
                let secrets = w
                    .inner
                    .lock()
                    .map(|s| s.masker.secrets.clone())
                    .unwrap_or_default();
                let mut own = Masker::new(&secrets);
                let mut out = Vec::with_capacity(64 * 1024);
                // A bigger pipe means fewer wake-ups of the job and of this thread.
                // A failure only leaves the default size.
                nix::fcntl::fcntl(&src, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20)).ok();
                // Small at first: most jobs write little, and every byte of the buffer is zeroed
                // (each page faulted in) before the first read. A read that fills it doubles it,
                // up to 1 MiB, for a job that writes a lot.
                let mut buf = vec![0u8; FIRST_READ];
                let mut capped = false;
                let result = loop {
                    let n = match src.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => break Err(e),
                    };
                    if n == buf.len() && buf.len() < LARGEST_READ {
                        buf.resize(buf.len() * 2, 0);
                    }
                    if capped {
                        // Keep draining so the job never blocks on a full pipe before it is killed.
                        continue;
                    }
                    let data = if own.is_noop() {
                        &buf[..n]
                    } else {
                        out.clear();
                        own.push(&buf[..n], &mut out);
                        &out[..]
                    };
                    match w.append_masked(data, stream) {
                        Ok(true) => {}
                        Ok(false) => {
                            capped = true;
                            on_cap();
                        }
                        Err(e) => break Err(e),
                    }
                };
                out.clear();
                own.finish(&mut out);
                if !capped && !out.is_empty() && !w.append_masked(&out, stream).unwrap_or(false) {
                    capped = true;
                    on_cap();
                }
                let last = w
                    .inner
                    .lock()
                    .map(|mut s| {
                        s.open_streams -= 1;
                        s.open_streams == 0
                    })
                    .unwrap_or(true);
                if last {
                    if !capped && !w.flush_masker().unwrap_or(false) {
                        on_cap();
                    }
                    w.close();
                }
                result
            })
            .expect("spawning a log thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_that_cannot_be_written_or_synced_says_so() {
        // /dev/full fails every write (ENOSPC) and cannot be synced: the writer's file swapped
        // for it after creation stands for a full disk.
        let full = || File::options().write(true).open("/dev/full").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = LogWriter::create(&dir.path().join("log"), None).unwrap();
        w.inner.lock().unwrap().file = full();
        w.append(b"hello", Stream::Stdout).unwrap();
        w.close();
        let e = w.error().unwrap();
        assert!(e.starts_with("5 bytes of output were lost: "), "{e}");
        assert_eq!(w.len(), 0);
        // Nothing lost, but the log did not reach the disk.
        let (w, _) = LogWriter::create(&dir.path().join("log2"), None).unwrap();
        assert_eq!(w.error(), None);
        w.inner.lock().unwrap().file = full();
        w.close();
        let e = w.error().unwrap();
        assert!(
            e.starts_with("the log could not be synced to disk: "),
            "{e}"
        );
        // A log that is not to be synced is not: closing it twice tries nothing and says nothing.
        let (w, _) = LogWriter::create(&dir.path().join("log3"), None).unwrap();
        w.inner.lock().unwrap().file = full();
        w.set_sync(false);
        w.close();
        w.close();
        assert_eq!(w.error(), None);
    }

    #[tokio::test]
    async fn late_and_slow_readers_see_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (w, stream) = LogWriter::create(&dir.path().join("log"), None).unwrap();
        w.append(b"one ", Stream::Stdout).unwrap();
        let mut early = stream.reader();
        assert_eq!(early.next_chunk(100).await.unwrap().unwrap(), b"one ");
        w.append(b"two ", Stream::Stderr).unwrap();
        let mut late = stream.reader();
        let mut resumed = stream.reader_at(4);
        w.append(b"three", Stream::Stdout).unwrap();
        w.close();
        assert_eq!(early.read_to_end().await.unwrap(), b"two three");
        assert_eq!(late.read_to_end().await.unwrap(), b"one two three");
        assert_eq!(resumed.read_to_end().await.unwrap(), b"two three");
        let mut after = LogStream::finished(dir.path().join("log")).reader();
        assert_eq!(after.read_to_end().await.unwrap(), b"one two three");
        let runs = streams::StreamRuns::read(&dir.path().join("log")).unwrap();
        assert_eq!(
            runs.segments(0, 13),
            [
                (0, 4, Stream::Stdout),
                (4, 8, Stream::Stderr),
                (8, 13, Stream::Stdout)
            ]
        );
    }

    #[test]
    fn a_secret_split_between_the_streams_is_masked_in_the_merged_log() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _s) = LogWriter::create(&dir.path().join("log"), None).unwrap();
        w.set_secrets(&[b"hunter2".to_vec()]);
        // stderr's first byte, then stdout's rest: "hunter2" whole in the file.
        w.append_masked(b"pw=h", Stream::Stderr).unwrap();
        w.append_masked(b"unter2\n", Stream::Stdout).unwrap();
        w.flush_masker().unwrap();
        assert_eq!(std::fs::read(dir.path().join("log")).unwrap(), b"pw=***\n");
    }

    /// Megabytes through one pipe: the capture thread's buffer grows from its first size on
    /// full reads, and every byte still arrives once, in order.
    #[test]
    fn a_large_stream_is_captured_whole_through_a_growing_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _s) = LogWriter::create(&dir.path().join("log"), None).unwrap();
        let (r, wr) = nix::unistd::pipe().unwrap();
        // No two 4-byte words alike: a byte lost, repeated or moved shows.
        let data: Vec<u8> = (0..(3 * LARGEST_READ / 4) as u32)
            .flat_map(u32::to_le_bytes)
            .collect();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || File::from(wr).write_all(&data))
        };
        let capture = w.capture(File::from(r), Stream::Stdout, Arc::new(|| {}));
        writer.join().unwrap().unwrap();
        capture.join().unwrap().unwrap();
        assert!(w.error().is_none());
        assert!(std::fs::read(dir.path().join("log")).unwrap() == data);
    }

    #[test]
    fn the_cap_truncates_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _s) = LogWriter::create(&dir.path().join("log"), Some(10)).unwrap();
        assert!(w.append(b"12345", Stream::Stdout).unwrap());
        assert!(!w.append(b"6789012", Stream::Stdout).unwrap());
        assert!(!w.append(b"more", Stream::Stdout).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("log")).unwrap(),
            b"1234567890"
        );
    }
}
