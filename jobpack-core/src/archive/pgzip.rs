//! A deterministic parallel gzip writer: the input is cut into fixed blocks of [`BLOCK`] bytes
//! (cut by position in the stream, never by how the caller's writes fall), each block is
//! compressed on its own as raw deflate primed with the previous block's last 32 KiB and ended
//! with a sync flush (the last one with the stream's end), and the blocks are written in order
//! under one gzip header and trailer. The bytes depend only on the input, the level and the
//! backend ([`COMPRESSOR`]), never on the number of threads or the machine: one thread writes the
//! same stream as eight. It is an ordinary single-member gzip file that any reader accepts.
//!
//! Input of at most one block is compressed on the caller's thread; threads start with the
//! second block (an artifact that small gains nothing from them).
//!
//! Why not the `gzp` crate: its writer panics in `Drop` if finishing fails (a full disk while an
//! error is already being returned), always starts its threads, and cuts a block wherever
//! `flush` is called.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes of input per independently compressed block. Changing it changes every artifact.
pub const BLOCK: usize = 1 << 20;
/// The deflate window: how much of the previous block primes the next.
const DICT: usize = 32 << 10;
/// The most compression threads, whatever the machine has.
const MAX_THREADS: usize = 8;

/// The compressor as the manifest records it: backend, its version, the level, the block size.
/// A test checks the version against `Cargo.lock`, so the record cannot drift from the build.
pub const COMPRESSOR: &str = "gzip (zlib-rs 0.6.8, level 6, 1 MiB blocks, 32 KiB dictionary)";

/// A full block for a thread (never the last: `finish` compresses that one itself).
struct Task {
    data: Vec<u8>,
    dict: Option<Arc<[u8]>>,
    reply: mpsc::SyncSender<io::Result<Vec<u8>>>,
}

struct Pool {
    tasks: Option<mpsc::SyncSender<Task>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(level: u32, threads: usize) -> Pool {
        let (tx, rx) = mpsc::sync_channel::<Task>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        let task = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(task) = task else { return };
                        let out = deflate_block(level, &task.data, task.dict.as_deref(), false);
                        // The writer may have gone (an error elsewhere): nothing to tell.
                        if task.reply.send(out).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pool {
            tasks: Some(tx),
            threads,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tasks.take();
        for t in self.threads.drain(..) {
            // A worker that panicked has already reported through its reply channel closing.
            if t.join().is_err() {
                continue;
            }
        }
    }
}

/// Compresses one block as raw deflate: primed with `dict`, ended with a sync flush (so the
/// next block starts on a byte boundary) or, for the last, with the end of the stream.
///
/// Each block gets a compressor of its own: one reused after `reset` wrote other bytes for the
/// same block depending on what it had compressed before (zlib-rs 0.6.8), so the artifact's bytes
/// depended on which thread took which block (a test compresses 25 blocks on 1, 2, 3 and 5
/// threads). A new compressor costs far less than the megabyte it compresses.
fn deflate_block(level: u32, data: &[u8], dict: Option<&[u8]>, last: bool) -> io::Result<Vec<u8>> {
    let c = &mut Compress::new(Compression::new(level), false);
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    let start = c.total_in();
    loop {
        let used = (c.total_in() - start) as usize;
        if out.len() == out.capacity() {
            out.reserve(64 << 10);
        }
        let status = c
            .compress_vec(&data[used..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = (c.total_in() - start) as usize == data.len();
        // A sync flush is complete once a call leaves output space unused.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

/// The writer. Call [`ParGzWriter::finish`] to write the end of the stream and get `W` back;
/// dropping it unfinished leaves `W` with an incomplete stream.
pub struct ParGzWriter<W: Write> {
    out: W,
    level: u32,
    /// Compression threads; `None`: as many as the machine offers, found when the first full
    /// block needs them (most artifacts are one block, and finding out reads the process's
    /// cgroup files: a few opens per pack).
    threads: Option<usize>,
    /// The gzip header, until it is written (with the first block's bytes).
    header: Option<[u8; 10]>,
    buf: Vec<u8>,
    dict: Option<Arc<[u8]>>,
    crc: crc32fast::Hasher,
    len: u64,
    pool: Option<Pool>,
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer at `level`, with as many threads as the machine offers (at most 8).
    pub fn new(out: W, level: u32) -> ParGzWriter<W> {
        ParGzWriter::make(out, level, None)
    }

    /// The number of compression threads (resolving the machine's on first use).
    fn threads(&mut self) -> usize {
        *self.threads.get_or_insert_with(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_THREADS)
        })
    }

    /// A writer with exactly `threads` compression threads (the bytes are the same for any).
    pub fn with_threads(out: W, level: u32, threads: usize) -> ParGzWriter<W> {
        ParGzWriter::make(out, level, Some(threads.max(1)))
    }

    /// `threads`: `None` for the machine's, found when a second block needs them.
    fn make(out: W, level: u32, threads: Option<usize>) -> ParGzWriter<W> {
        let xfl = match level {
            9.. => 2,
            0 | 1 => 4,
            _ => 0,
        };
        ParGzWriter {
            out,
            level,
            threads,
            // Magic, deflate, no flags, mtime 0, XFL, OS 255 ("unknown").
            header: Some([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]),
            buf: Vec::new(),
            dict: None,
            crc: crc32fast::Hasher::new(),
            len: 0,
            pool: None,
            in_flight: VecDeque::new(),
        }
    }

    /// Writes the header if it is not written yet, then `bytes`.
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(h) = self.header.take() {
            self.out.write_all(&h)?;
        }
        self.out.write_all(bytes)
    }

    /// Waits for the oldest block in flight and writes it.
    fn drain_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let block = rx
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))??;
        self.emit(&block)
    }

    /// Hands the full block in `buf` to the threads (starting them with the first).
    fn submit_full_block(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = self.dict.replace(Arc::from(&data[data.len() - DICT..]));
        let threads = self.threads();
        let level = self.level;
        let pool = self.pool.get_or_insert_with(|| Pool::start(level, threads));
        let (reply, rx) = mpsc::sync_channel(1);
        let task = Task { data, dict, reply };
        let sent = pool.tasks.as_ref().map(|t| t.send(task));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("the compression threads stopped"));
        }
        self.in_flight.push_back(rx);
        while self.in_flight.len() > 2 * threads {
            self.drain_one()?;
        }
        Ok(())
    }

    /// Compresses what is left as the last block, writes every block in order and the trailer,
    /// and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        while !self.in_flight.is_empty() {
            self.drain_one()?;
        }
        let last = deflate_block(self.level, &self.buf, self.dict.as_deref(), true)?;
        self.emit(&last)?;
        // The threads (if any) end as the rest of the writer is dropped here.
        let ParGzWriter {
            mut out, crc, len, ..
        } = self;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(len as u32).to_le_bytes());
        out.write_all(&trailer)?;
        Ok(out)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            // A full block is handed on only when more input follows: the last block is always
            // compressed by `finish`, with the end of the stream.
            if self.buf.len() == BLOCK {
                self.submit_full_block()?;
            }
            let n = (BLOCK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        self.crc.update(data);
        self.len += data.len() as u64;
        Ok(data.len())
    }

    /// Flushes the inner writer only: blocks are cut by position, so a flush cannot end one
    /// early (that would make the bytes depend on the caller's flushes).
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Compressible but not trivial input: text-like rows from a fixed generator.
    fn input(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut i = 0u64;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(format!("{i},{},{}\n", x % 1_000_000, x >> 44).as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn compress(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = ParGzWriter::with_threads(Vec::new(), 6, threads);
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_threads_and_any_write_sizes_and_any_reader_gets_the_input() {
        for len in [0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12_345] {
            let data = input(len);
            let one = compress(&data, 1, 1 << 16);
            for (threads, chunk) in [(2, 4096), (8, 777_777), (3, len)] {
                assert_eq!(
                    one,
                    compress(&data, threads, chunk),
                    "len {len}, {threads} threads"
                );
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
            // The members' trailer: crc32 and size, as gzip defines them.
            let n = one.len();
            assert_eq!(&one[n - 4..], &(len as u32).to_le_bytes());
            assert_eq!(&one[n - 8..n - 4], &crc32fast::hash(&data).to_le_bytes());
        }
    }

    /// Many more blocks than threads: each thread's compressor takes block after block, in an
    /// order the scheduler decides. The bytes must not depend on which compressor had which.
    #[test]
    fn same_bytes_when_each_thread_compresses_many_blocks() {
        let data = input(24 * BLOCK + 999);
        let one = compress(&data, 1, 1 << 16);
        for threads in [2, 3, 2, 5] {
            assert!(
                one == compress(&data, threads, 1 << 16),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn the_dictionary_keeps_the_ratio_close_to_one_stream() {
        let data = input(4 * BLOCK);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        plain.write_all(&data).unwrap();
        let plain = plain.finish().unwrap().len() as f64;
        let par = compress(&data, 2, 1 << 16).len() as f64;
        assert!(par / plain < 1.01, "{par} vs {plain}");
    }

    #[test]
    fn the_recorded_backend_version_is_the_one_built() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let at = lock.find("name = \"zlib-rs\"\nversion = \"").unwrap() + 28;
        let version = &lock[at..at + lock[at..].find('"').unwrap()];
        // A new backend version may write other bytes: record it (and re-pin the golden hash).
        let recorded = format!("zlib-rs {version},");
        assert!(
            COMPRESSOR.contains(&recorded),
            "{COMPRESSOR} vs zlib-rs {version}"
        );
    }

    #[test]
    fn an_error_of_the_inner_writer_is_returned() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = input(5 * BLOCK);
        let mut w = ParGzWriter::with_threads(Full, 6, 2);
        let r = w.write_all(&data).and_then(|()| w.finish().map(|_| ()));
        assert_eq!(r.unwrap_err().raw_os_error(), Some(28));
    }
}
