//! A job's log over HTTP: the text (from an offset or the last bytes, of both streams or one,
//! seeked and streamed, never read whole) and the SSE stream of JSON events (history, then live,
//! then `end`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::Body;
use poem_openapi::payload::Binary;
use poem_openapi::{ApiResponse, Object};

use jobpack_core::exec::logs::streams::{Stream, StreamRuns};

use crate::server::http::problem::{ApiResult, internal};
use crate::server::scheduler::queue::{Runner, row_is_final};
use crate::server::store::{JobRow, JobStatus};

#[derive(ApiResponse)]
pub enum LogText {
    /// The log bytes (UTF-8 as the job wrote it).
    #[oai(status = 200, content_type = "text/plain; charset=utf-8")]
    Ok(Binary<Body>),
}

/// The log at `path` as text, as long as it is now (a log still growing is answered up to
/// here): from the byte `start` picks given that length, of both streams or of `only`. No log
/// yet is an empty answer.
pub(crate) async fn log_text(
    path: std::path::PathBuf,
    start: impl FnOnce(u64) -> u64,
    only: Option<Stream>,
) -> ApiResult<LogText> {
    let len = match tokio::fs::metadata(&path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(internal(e)),
    };
    let body = log_body(path, start(len), len, only).map_err(internal)?;
    Ok(LogText::Ok(Binary(body)))
}

/// A stream of a job's output, as a query names it.
#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename = "LogStream", rename_all = "lowercase")]
pub enum LogStreamName {
    Stdout,
    Stderr,
}

impl LogStreamName {
    pub fn stream(self) -> Stream {
        match self {
            LogStreamName::Stdout => Stream::Stdout,
            LogStreamName::Stderr => Stream::Stderr,
        }
    }
}

/// The log bytes `[start, end)` of the file at `path` as a streamed body; with `only`, just
/// that stream's bytes (from the index beside the log).
pub(crate) fn log_body(
    path: std::path::PathBuf,
    start: u64,
    end: u64,
    only: Option<Stream>,
) -> std::io::Result<Body> {
    let segments: Vec<(u64, u64)> = match only {
        None => vec![(start, end)],
        Some(want) => StreamRuns::read(&path)?.segments_of(start, end, want),
    };
    struct St {
        path: std::path::PathBuf,
        file: Option<tokio::fs::File>,
        segments: std::vec::IntoIter<(u64, u64)>,
        /// The part of the current segment still to send.
        at: u64,
        end: u64,
    }
    let st = St {
        path,
        file: None,
        segments: segments.into_iter(),
        at: 0,
        end: 0,
    };
    let chunks = futures_util::stream::unfold(st, |mut st| async move {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        while st.at >= st.end {
            (st.at, st.end) = st.segments.next()?;
        }
        let want = usize::try_from(st.end - st.at)
            .unwrap_or(usize::MAX)
            .min(64 * 1024);
        let mut buf = vec![0u8; want];
        let read = async {
            let f = match &mut st.file {
                Some(f) => f,
                None => st.file.insert(tokio::fs::File::open(&st.path).await?),
            };
            f.seek(std::io::SeekFrom::Start(st.at)).await?;
            f.read_exact(&mut buf).await
        };
        match read.await {
            Ok(_) => {
                st.at += want as u64;
                Some((Ok(buf), st))
            }
            Err(e) => {
                // Once: the body ends with the error.
                st.segments = Vec::new().into_iter();
                st.at = st.end;
                Some((Err(e), st))
            }
        }
    });
    Ok(Body::from_bytes_stream(chunks))
}

/// One event of the log stream.
#[derive(Debug, Object)]
pub struct StreamItem {
    /// The byte offset after this event (also its SSE id; send it back as Last-Event-ID).
    pub offset: u64,
    /// Log text (invalid UTF-8 replaced), for `message` events.
    #[oai(nullable)]
    pub text: Option<String>,
    /// The final status, for the `end` event.
    #[oai(nullable)]
    pub status: Option<String>,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
}

/// What a job's log gives a follower: bytes from an offset, then the job's final row.
pub(crate) enum LogChunk {
    Data { start: u64, bytes: Vec<u8> },
    End(Box<JobRow>),
}

/// The log of a job from byte `start` as it grows (history, then live), waiting for the job to
/// start if it has not, and ending with its final row. Ends early (without `End`) only if the
/// job is deleted meanwhile. A retried job's earlier attempts come first when `start` is 0
/// (each attempt's bytes counted from its own start), then each next attempt as it runs.
pub(crate) fn log_chunks(
    runner: Arc<Runner>,
    id: String,
    start: u64,
    chunk: usize,
) -> BoxStream<'static, LogChunk> {
    struct St {
        runner: Arc<Runner>,
        id: String,
        reader: Option<jobpack_core::exec::LogReader>,
        pos: u64,
        done: bool,
        /// The attempt whose log is read (1, 2, ...).
        attempt: i64,
        /// Whether it is an earlier attempt, kept as `attempt-N.log`.
        earlier: bool,
    }
    let earlier = runner.store.attempt_count(&id).unwrap_or(0);
    let st = St {
        runner,
        id,
        reader: None,
        pos: start,
        done: false,
        attempt: if start == 0 { 1 } else { earlier + 1 },
        earlier: false,
    };
    futures_util::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        'next: loop {
            if st.reader.is_none() {
                let kept = st.runner.store.attempt_count(&st.id).unwrap_or(0);
                if st.attempt <= kept {
                    // An earlier attempt: its kept log, whole.
                    let path = st.runner.attempt_log_path(&st.id, st.attempt);
                    let log = jobpack_core::exec::LogStream::finished(&path);
                    st.reader = Some(log.reader_at(st.pos));
                    st.earlier = true;
                } else if let Some(log) = st.runner.log(&st.id) {
                    st.reader = Some(log.reader_at(st.pos));
                    st.earlier = false;
                } else {
                    // Not running here: not yet (queued, packing), never (failed before
                    // running), over, or running in a worker process (its log file grows).
                    let path = st.runner.log_path(&st.id);
                    match st.runner.store.get(&st.id) {
                        Ok(Some(r)) if row_is_final(&r) && !st.runner.is_live(&st.id) => {
                            if path.exists() {
                                // What the file holds, then the end.
                                let log = jobpack_core::exec::LogStream::finished(&path);
                                st.reader = Some(log.reader_at(st.pos));
                                st.earlier = false;
                            } else {
                                st.done = true;
                                return Some((LogChunk::End(Box::new(r)), st));
                            }
                        }
                        Ok(Some(r)) if r.status == JobStatus::Running => {
                            if let Some(bytes) = read_from(&path, st.pos, chunk).await {
                                let start = st.pos;
                                st.pos += bytes.len() as u64;
                                return Some((LogChunk::Data { start, bytes }, st));
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        Ok(Some(_)) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        _ => return None,
                    }
                }
            }
            let reader = st.reader.as_mut()?;
            match reader.next_chunk(chunk).await {
                Ok(Some(bytes)) => {
                    let start = st.pos;
                    st.pos += bytes.len() as u64;
                    return Some((LogChunk::Data { start, bytes }, st));
                }
                Ok(None) | Err(_) if st.earlier => {
                    // On to the next attempt's log.
                    (st.attempt, st.reader, st.pos) = (st.attempt + 1, None, 0);
                    continue 'next;
                }
                Ok(None) | Err(_) => {
                    // The output ended; the final status follows shortly, or another attempt.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    loop {
                        match st.runner.store.get(&st.id) {
                            Ok(Some(r))
                                if row_is_final(&r) || tokio::time::Instant::now() > deadline =>
                            {
                                st.done = true;
                                return Some((LogChunk::End(Box::new(r)), st));
                            }
                            // Retried: this attempt's log was kept; the next one's follows.
                            Ok(Some(_))
                                if st.runner.store.attempt_count(&st.id).unwrap_or(0)
                                    >= st.attempt =>
                            {
                                (st.attempt, st.reader, st.pos) = (st.attempt + 1, None, 0);
                                continue 'next;
                            }
                            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                            _ => return None,
                        }
                    }
                }
            }
        }
    })
    .boxed()
}

/// The most bytes of log one SSE event carries: a stream's buffers are a few of these, so many
/// readers of one noisy job stay small.
const SSE_CHUNK: usize = 16 * 1024;

/// At most `chunk` bytes of the file at `path` from `pos`, if it has bytes there.
async fn read_from(path: &std::path::Path, pos: u64, chunk: usize) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await.ok()?;
    f.seek(std::io::SeekFrom::Start(pos)).await.ok()?;
    let mut buf = vec![0u8; chunk];
    let n = f.read(&mut buf).await.ok()?;
    (n > 0).then(|| {
        buf.truncate(n);
        buf
    })
}

/// The log of a job as a stream of events, from byte `start`, ending with an `end` event. Text
/// is cut at UTF-8 boundaries (an incomplete sequence waits for the next chunk).
pub(crate) fn log_events(
    runner: Arc<Runner>,
    id: String,
    start: u64,
) -> BoxStream<'static, StreamItem> {
    let mut carry: Vec<u8> = Vec::new();
    let mut emitted = start;
    let open = crate::server::metrics::StreamGuard::new("sse");
    log_chunks(runner, id, start, SSE_CHUNK)
        .flat_map(move |c| {
            let _open = &open;
            let items = match c {
                LogChunk::Data { bytes, .. } => {
                    carry.extend_from_slice(&bytes);
                    let valid = match std::str::from_utf8(&carry) {
                        Ok(_) => carry.len(),
                        // Hold back an incomplete sequence at the end; replace invalid ones.
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => carry.len(),
                    };
                    if valid == 0 {
                        Vec::new()
                    } else {
                        let text = String::from_utf8_lossy(&carry[..valid]).into_owned();
                        carry.drain(..valid);
                        emitted += valid as u64;
                        vec![text_item(emitted, text)]
                    }
                }
                LogChunk::End(r) => {
                    let mut out = Vec::new();
                    if !carry.is_empty() {
                        let text = String::from_utf8_lossy(&carry).into_owned();
                        emitted += carry.len() as u64;
                        carry.clear();
                        out.push(text_item(emitted, text));
                    }
                    out.push(end_item(&r, emitted));
                    out
                }
            };
            futures_util::stream::iter(items)
        })
        .boxed()
}

fn text_item(offset: u64, text: String) -> StreamItem {
    StreamItem {
        offset,
        text: Some(text),
        status: None,
        exit_code: None,
    }
}

/// One line of a job's output, for the seed doors' stream: which stream, the line (without its
/// newline; invalid UTF-8 replaced), or the end with the final row.
pub(crate) enum LineEvent {
    Line(Stream, String),
    End(Box<JobRow>),
}

/// The log of a job line by line, each line tagged with its stream (a line split across chunks
/// is whole; stdout and stderr lines are kept apart even when their bytes interleave), then the
/// end. A last line without a newline comes before the end.
pub(crate) fn log_lines(runner: Arc<Runner>, id: String) -> BoxStream<'static, LineEvent> {
    let path = runner.log_path(&id);
    let mut runs: Option<StreamRuns> = None;
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let slot = |s: Stream| match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    };
    log_chunks(runner, id, 0, SSE_CHUNK)
        .flat_map(move |c| {
            let mut out = Vec::new();
            match c {
                LogChunk::Data { start, bytes } => {
                    let runs = match &mut runs {
                        Some(r) => {
                            r.refresh().ok();
                            r
                        }
                        None => runs.insert(
                            StreamRuns::read(&path).unwrap_or_else(|_| StreamRuns::empty()),
                        ),
                    };
                    let end = start + bytes.len() as u64;
                    for (a, b, stream) in runs.segments(start, end) {
                        let part = &bytes[(a - start) as usize..(b - start) as usize];
                        let buf = &mut partial[slot(stream)];
                        for piece in part.split_inclusive(|&c| c == b'\n') {
                            buf.extend_from_slice(piece);
                            if buf.ends_with(b"\n") {
                                buf.pop();
                                out.push(LineEvent::Line(
                                    stream,
                                    String::from_utf8_lossy(buf).into_owned(),
                                ));
                                buf.clear();
                            }
                        }
                    }
                }
                LogChunk::End(r) => {
                    for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                        if !partial[i].is_empty() {
                            let line = String::from_utf8_lossy(&partial[i]).into_owned();
                            partial[i].clear();
                            out.push(LineEvent::Line(stream, line));
                        }
                    }
                    out.push(LineEvent::End(r));
                }
            }
            futures_util::stream::iter(out)
        })
        .boxed()
}

fn end_item(r: &JobRow, offset: u64) -> StreamItem {
    StreamItem {
        offset,
        text: None,
        status: Some(r.status.as_str().into()),
        exit_code: r.exit_code,
    }
}
