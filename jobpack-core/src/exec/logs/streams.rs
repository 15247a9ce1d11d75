//! Which stream each byte of a merged log came from.
//!
//! Beside the log `job.log` lies `job.log.streams`: one 9-byte record (the stream, then the log
//! offset where its run starts, little-endian) each time the writing stream changes. A run lasts
//! until the next record's start, or the end of the log. The writer writes a run's record
//! before its bytes and publishes the log's length after them, so a reader that stays below a
//! published length always has the records for what it reads. A log without an index (written
//! before there was one, or by a backend whose output merges the streams, such as Slurm's output
//! file) is all stdout.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A stream of a job's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn code(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    fn from_code(c: u8) -> Option<Stream> {
        match c {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl std::str::FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(Stream::Stdout),
            "stderr" => Ok(Stream::Stderr),
            other => Err(format!("unknown stream {other:?}: stdout or stderr")),
        }
    }
}

const RECORD: usize = 9;

/// The index file of the log at `log`.
pub fn index_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".streams");
    log.with_file_name(name)
}

/// The writing side: records a run each time the stream changes.
#[derive(Debug)]
pub(crate) struct StreamIndexWriter {
    file: File,
    last: Option<Stream>,
}

impl StreamIndexWriter {
    /// Creates (truncates) the index of the log at `log`.
    pub(crate) fn create(log: &Path) -> io::Result<Self> {
        Ok(StreamIndexWriter {
            file: File::create(index_path(log))?,
            last: None,
        })
    }

    /// Notes that the bytes from log offset `start` on come from `stream` (written only when the
    /// stream changes). Call before writing those bytes.
    pub(crate) fn note(&mut self, stream: Stream, start: u64) -> io::Result<()> {
        if self.last == Some(stream) {
            return Ok(());
        }
        let mut rec = [0u8; RECORD];
        rec[0] = stream.code();
        rec[1..].copy_from_slice(&start.to_le_bytes());
        self.file.write_all(&rec)?;
        self.last = Some(stream);
        Ok(())
    }
}

/// The runs of a log, read from its index; [`StreamRuns::refresh`] reads what was added since.
#[derive(Debug, Clone)]
pub struct StreamRuns {
    index: PathBuf,
    /// Bytes of the index read so far (whole records only).
    read: u64,
    runs: Vec<(u64, Stream)>,
}

impl StreamRuns {
    /// The runs of the log at `log` as far as its index has been written.
    pub fn read(log: &Path) -> io::Result<StreamRuns> {
        let mut r = StreamRuns {
            index: index_path(log),
            read: 0,
            runs: Vec::new(),
        };
        r.refresh()?;
        Ok(r)
    }

    /// The runs of a log that has no index yet (all stdout until one appears at `log`'s index
    /// path; call [`StreamRuns::refresh`]).
    pub fn empty() -> StreamRuns {
        StreamRuns {
            index: PathBuf::new(),
            read: 0,
            runs: Vec::new(),
        }
    }

    /// Reads the records written since the last read.
    pub fn refresh(&mut self) -> io::Result<()> {
        let mut f = match File::open(&self.index) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        f.seek(io::SeekFrom::Start(self.read))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        // A record being written may be read in part: it is read whole next time.
        for rec in buf.chunks_exact(RECORD) {
            let start = u64::from_le_bytes(rec[1..].try_into().unwrap_or_default());
            if let Some(s) = Stream::from_code(rec[0]) {
                self.runs.push((start, s));
            }
            self.read += RECORD as u64;
        }
        Ok(())
    }

    /// The parts of `[start, end)` that came from `want`, in order.
    pub fn segments_of(&self, start: u64, end: u64, want: Stream) -> Vec<(u64, u64)> {
        self.segments(start, end)
            .into_iter()
            .filter(|(_, _, s)| *s == want)
            .map(|(a, b, _)| (a, b))
            .collect()
    }

    /// The parts of the log's bytes `[start, end)`, in order, each with its stream.
    pub fn segments(&self, start: u64, end: u64) -> Vec<(u64, u64, Stream)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        // The run that holds `start`: the last one starting at or before it.
        let first = self.runs.partition_point(|(s, _)| *s <= start);
        let mut stream = match first {
            0 => Stream::Stdout,
            i => self.runs[i - 1].1,
        };
        let mut at = start;
        for &(run_start, s) in &self.runs[first..] {
            if run_start >= end {
                break;
            }
            if run_start > at {
                out.push((at, run_start, stream));
                at = run_start;
            }
            stream = s;
        }
        out.push((at, end, stream));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_ranges_by_stream() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("job.log");
        let mut w = StreamIndexWriter::create(&log).unwrap();
        w.note(Stream::Stdout, 0).unwrap();
        w.note(Stream::Stdout, 5).unwrap(); // same stream: no record
        w.note(Stream::Stderr, 10).unwrap();
        w.note(Stream::Stdout, 14).unwrap();
        assert_eq!(std::fs::metadata(index_path(&log)).unwrap().len(), 27);
        let r = StreamRuns::read(&log).unwrap();
        use Stream::*;
        assert_eq!(
            r.segments(0, 20),
            [(0, 10, Stdout), (10, 14, Stderr), (14, 20, Stdout)]
        );
        assert_eq!(r.segments(11, 12), [(11, 12, Stderr)]);
        assert_eq!(r.segments(12, 16), [(12, 14, Stderr), (14, 16, Stdout)]);
        assert!(r.segments(5, 5).is_empty());

        // A torn record is read whole later; a log without an index is stdout.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(index_path(&log))
            .unwrap();
        f.write_all(&[2, 20, 0]).unwrap();
        let mut r = StreamRuns::read(&log).unwrap();
        assert_eq!(r.segments(14, 30), [(14, 30, Stdout)]);
        f.write_all(&[0, 0, 0, 0, 0, 0]).unwrap();
        r.refresh().unwrap();
        assert_eq!(r.segments(14, 30), [(14, 20, Stdout), (20, 30, Stderr)]);
        let none = StreamRuns::read(&dir.path().join("other.log")).unwrap();
        assert_eq!(none.segments(0, 3), [(0, 3, Stdout)]);
    }
}
