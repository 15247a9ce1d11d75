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

use crate::server::scheduler::queue::{Runner, row_is_final};
use crate::server::store::JobRow;

#[derive(ApiResponse)]
pub enum LogText {
    /// The log bytes (UTF-8 as the job wrote it).
    #[oai(status = 200, content_type = "text/plain; charset=utf-8")]
    Ok(Binary<Body>),
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
        Some(want) => StreamRuns::read(&path)?
            .segments(start, end)
            .into_iter()
            .filter(|(_, _, s)| *s == want)
            .map(|(a, b, _)| (a, b))
            .collect(),
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

/// The log of a job as a stream of events, from byte `start`, ending with an `end` event.
pub(crate) fn log_events(
    runner: Arc<Runner>,
    id: String,
    start: u64,
) -> BoxStream<'static, StreamItem> {
    struct St {
        runner: Arc<Runner>,
        id: String,
        reader: Option<jobpack_core::exec::LogReader>,
        /// Bytes read from the log; `emitted` ≤ `read` (an incomplete UTF-8 tail is held back).
        emitted: u64,
        carry: Vec<u8>,
        done: bool,
    }
    let st = St {
        runner,
        id,
        reader: None,
        emitted: start,
        carry: Vec::new(),
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if st.reader.is_none() {
                if let Some(log) = st.runner.log(&st.id) {
                    st.reader = Some(log.reader_at(st.emitted));
                } else {
                    // Not running yet (queued, packing) or never will (failed before running).
                    match st.runner.store.get(&st.id) {
                        Ok(Some(r)) if row_is_final(&r) && !st.runner.is_live(&st.id) => {
                            st.done = true;
                            return Some((end_item(&r, st.emitted), st));
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
            match reader.next_chunk(64 * 1024).await {
                Ok(Some(chunk)) => {
                    st.carry.extend_from_slice(&chunk);
                    let valid = match std::str::from_utf8(&st.carry) {
                        Ok(_) => st.carry.len(),
                        // Hold back an incomplete sequence at the end; replace invalid ones.
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => st.carry.len(),
                    };
                    if valid == 0 {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&st.carry[..valid]).into_owned();
                    st.carry.drain(..valid);
                    st.emitted += valid as u64;
                    let item = StreamItem {
                        offset: st.emitted,
                        text: Some(text),
                        status: None,
                        exit_code: None,
                    };
                    return Some((item, st));
                }
                Ok(None) | Err(_) => {
                    if !st.carry.is_empty() {
                        let text = String::from_utf8_lossy(&st.carry).into_owned();
                        st.emitted += st.carry.len() as u64;
                        st.carry.clear();
                        return Some((
                            StreamItem {
                                offset: st.emitted,
                                text: Some(text),
                                status: None,
                                exit_code: None,
                            },
                            st,
                        ));
                    }
                    // The output ended; the final status follows shortly.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    loop {
                        match st.runner.store.get(&st.id) {
                            Ok(Some(r))
                                if row_is_final(&r) || tokio::time::Instant::now() > deadline =>
                            {
                                st.done = true;
                                return Some((end_item(&r, st.emitted), st));
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

fn end_item(r: &JobRow, offset: u64) -> StreamItem {
    StreamItem {
        offset,
        text: None,
        status: Some(r.status.as_str().into()),
        exit_code: r.exit_code,
    }
}
