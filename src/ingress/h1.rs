//! HTTP/1.1 served without hyper's server for the requests that make up nearly all traffic; the
//! rest is handed to hyper on the same connection.
//!
//! Why: hyper keeps an 8 KiB read buffer (pinned by the parsed headers, which share it) and an
//! 8 KiB write buffer for every connection, 16 KiB for each client that only waits for a cold
//! revision, and its dispatcher is a second HTTP/1 state machine on every proxied request. Here
//! a request is read into a buffer of the ingress thread, its head and body are copied out in
//! one allocation of their exact size, and a connection keeps no buffer between requests.
//!
//! Served here: HTTP/1.0 and 1.1 requests whose head and `Content-Length` body (at most
//! [`MAX_REQUEST`] together) have arrived, with no `Transfer-Encoding`, `Upgrade`, `Expect` or
//! `CONNECT`. Everything else (chunked or still-arriving bodies with their timeouts, upgrades,
//! `100-continue`, the HTTP/2 preface, heads that do not parse, with hyper's 400 and 431
//! answers) is handed to hyper with the bytes read so far, for the rest of the connection.
//!
//! What hyper's server does and this keeps: the header read timeout also bounds keep-alive
//! idleness; a client that goes away while its request waits cancels it (the connection is read
//! for end-of-file while the handler runs, as hyper does, without half-close); pipelined
//! requests are answered in order; responses get `Date`, `Content-Length` when the body's size
//! is known, else chunked framing (trailers only for a client that sent `TE: trailers`), and
//! `Connection: close` when the connection ends after them.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{ClientBody, ConnLimits, ConnState};

/// Headers a request may carry at most (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest request, head and body, served here; a larger one goes to hyper.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Reads of an incomplete head before the connection goes to hyper.
const MAX_PARTIAL_READS: usize = 8;
/// The buffer each ingress thread reads new requests into.
const THREAD_BUFFER: usize = 16 * 1024;

/// How the connection left this server.
pub enum End {
    /// Closed (by the client, a timeout, an error, or `Connection: close`).
    Closed,
    /// The next request is for hyper; the bytes read so far are in `pending`.
    Handoff,
}

/// Serves requests on `stream` until it closes or one needs hyper. `pending` holds bytes read
/// and not yet served (a pipelined request, a head still arriving) and, after [`End::Handoff`],
/// everything hyper has to read first.
pub async fn serve<H, F>(
    stream: &TcpStream,
    pending: &mut BytesMut,
    peer: SocketAddr,
    limits: &ConnLimits,
    state: &Arc<ConnState>,
    handler: &H,
) -> End
where
    H: Fn(Request<ClientBody>, SocketAddr) -> F,
    F: Future<Output = Response<axum::body::Body>>,
{
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
    // See [`drained`].
    let single_threaded = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    loop {
        let next = next_request(
            stream,
            pending,
            limits,
            state,
            sleep.as_mut(),
            single_threaded,
        );
        let parsed = match next.await {
            Next::Request(parsed) => parsed,
            Next::Closed => return End::Closed,
            Next::Handoff => return End::Handoff,
        };
        let Parsed {
            request,
            keep_alive,
            head,
            te_trailers,
            ..
        } = parsed;
        let version = request.version();
        let open = state.enter();
        let Some(response) = WatchingForEof::new(stream, pending, handler(request, peer)).await
        else {
            return End::Closed;
        };
        let keep_alive = keep_alive && !state.closing.load(Ordering::Acquire);
        let framing = Meta {
            version,
            head,
            te_trailers,
        };
        let kept = write_response(stream, response, &framing, keep_alive).await;
        drop(open);
        match kept {
            Ok(true) if !state.closing.load(Ordering::Acquire) => {}
            _ => return End::Closed,
        }
    }
}

// A parsed request is returned, not stored; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Parsed),
    Closed,
    Handoff,
}

/// Waits for the next complete request: from `pending` if one is there, else from the socket
/// within the header read timeout.
async fn next_request(
    stream: &TcpStream,
    pending: &mut BytesMut,
    limits: &ConnLimits,
    state: &Arc<ConnState>,
    mut sleep: Pin<&mut tokio::time::Sleep>,
    single_threaded: bool,
) -> Next {
    if !pending.is_empty() {
        match take_parsed(pending) {
            Parse::Complete(parsed) => return Next::Request(parsed),
            Parse::Partial => {}
            Parse::Hyper => return Next::Handoff,
        }
    }
    let (mut armed, mut reads) = (false, 0);
    // A head on its way is not idleness: the header read timeout governs it, not the idle one.
    let mut _receiving = None;
    loop {
        // A request that is already there needs no timer.
        match read_some(stream, pending, single_threaded) {
            Read::Request(parsed) => return Next::Request(parsed),
            Read::Closed => return Next::Closed,
            Read::Handoff => return Next::Handoff,
            Read::More => {}
        }
        // A head that trickles in is hyper's: each attempt here parses it from the start.
        if !pending.is_empty() {
            _receiving.get_or_insert_with(|| state.enter());
            reads += 1;
            if reads > MAX_PARTIAL_READS {
                return Next::Handoff;
            }
        }
        if !armed {
            sleep
                .as_mut()
                .reset(Instant::now() + limits.header_read_timeout);
            armed = true;
        }
        tokio::select! {
            biased;
            ready = stream.readable() => if ready.is_err() { return Next::Closed },
            () = sleep.as_mut() => return Next::Closed,
        }
    }
}

// A parsed request is returned, not stored; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Read {
    Request(Parsed),
    /// Nothing (more) to read yet.
    More,
    Closed,
    Handoff,
}

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; THREAD_BUFFER].into_boxed_slice());
}

/// Reads what the socket has without waiting and parses it.
fn read_some(stream: &TcpStream, pending: &mut BytesMut, single_threaded: bool) -> Read {
    if pending.is_empty() {
        // The common case, a whole request in one read: parsed from the thread's buffer, and
        // only what is left over is kept with the connection.
        return READ_BUFFER.with_borrow_mut(|buffer| match stream.try_read(buffer) {
            Ok(0) => Read::Closed,
            Ok(n) => {
                if single_threaded && n < buffer.len() {
                    drained(stream);
                }
                read_from_buffer(&buffer[..n], pending)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::More,
            Err(_) => Read::Closed,
        });
    }
    pending.reserve(THREAD_BUFFER);
    let room = pending.capacity() - pending.len();
    match stream.try_read_buf(pending) {
        Ok(0) => Read::Closed,
        Ok(n) => {
            if single_threaded && n < room {
                drained(stream);
            }
            match take_parsed(pending) {
                Parse::Complete(parsed) => Read::Request(parsed),
                Parse::Partial => Read::More,
                Parse::Hyper => Read::Handoff,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::More,
        Err(_) => Read::Closed,
    }
}

/// A request from what one read put in the thread's buffer; what it does not take is kept in
/// `pending`.
fn read_from_buffer(read: &[u8], pending: &mut BytesMut) -> Read {
    match parse(read) {
        Parse::Complete(parsed) => {
            if parsed.consumed < read.len() {
                pending.extend_from_slice(&read[parsed.consumed..]);
            }
            Read::Request(parsed)
        }
        Parse::Partial => {
            pending.extend_from_slice(read);
            Read::More
        }
        Parse::Hyper => {
            pending.extend_from_slice(read);
            Read::Handoff
        }
    }
}

/// Records that a read returned less than it asked for, so the socket had nothing more: the
/// next wait for it (for end-of-file while the request runs, or for the next request) registers
/// at once instead of first reading to learn there is nothing (one `recvfrom` fewer per
/// request). Sound only on a single-threaded runtime (the ingress threads'): its I/O driver runs
/// only between polls of this task, so data that arrives after the read is reported after
/// this, never lost; on a multi-threaded one (the admin listener) the driver could report it in
/// between, and this would erase it.
fn drained(stream: &TcpStream) {
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Parses the request at the start of `pending` and removes it from there; an emptied buffer
/// is freed, so a connection whose request waits keeps none.
fn take_parsed(pending: &mut BytesMut) -> Parse {
    let parse = parse(pending);
    if let Parse::Complete(parsed) = &parse {
        pending.advance(parsed.consumed);
        if pending.is_empty() {
            *pending = BytesMut::new();
        }
    }
    parse
}

pin_project_lite::pin_project! {
    /// Runs a handler's future while reading the connection for end-of-file: a client that goes
    /// away cancels its request (`None`). Bytes that arrive meanwhile (a pipelined request) are kept
    /// in `pending`, and then the connection is not read again until the answer is out. A struct
    /// rather than an `async fn`, so the handler's future is stored once (this is most of what a
    /// connection waiting for a cold revision costs).
    struct WatchingForEof<'a, F> {
        #[pin]
        handler: F,
        stream: &'a TcpStream,
        pending: &'a mut BytesMut,
        watching: bool,
    }
}

impl<'a, F> WatchingForEof<'a, F> {
    fn new(stream: &'a TcpStream, pending: &'a mut BytesMut, handler: F) -> Self {
        let watching = pending.is_empty();
        WatchingForEof {
            handler,
            stream,
            pending,
            watching,
        }
    }
}

impl<F: Future> Future for WatchingForEof<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.handler.poll(cx) {
            return Poll::Ready(Some(output));
        }
        while *this.watching {
            match this.stream.poll_read_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                // Into the thread's buffer: nearly always there is nothing to read, and nothing
                // is allocated.
                Poll::Ready(Ok(())) => {
                    let read = READ_BUFFER.with_borrow_mut(|buffer| {
                        let read = this.stream.try_read(&mut buffer[..]);
                        if let Ok(n) = read {
                            this.pending.extend_from_slice(&buffer[..n]);
                        }
                        read
                    });
                    match read {
                        Ok(0) => return Poll::Ready(None),
                        Ok(_) => *this.watching = false,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Poll::Ready(None),
                    }
                }
            }
        }
        Poll::Pending
    }
}

/// A request parsed from a buffer, with what its answer's framing depends on.
struct Parsed {
    request: Request<ClientBody>,
    /// Bytes of the buffer it took, head and body.
    consumed: usize,
    keep_alive: bool,
    /// A `HEAD` request: the answer has no body.
    head: bool,
    te_trailers: bool,
}

// A parsed request is returned, not stored; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parse {
    Complete(Parsed),
    /// The head is not complete yet.
    Partial,
    /// Not for this server (see the module's documentation).
    Hyper,
}

fn parse(buffer: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buffer.len() < MAX_REQUEST => return Parse::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Parse::Hyper,
    };
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Parse::Hyper,
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Parse::Hyper;
    };
    if method == "CONNECT" {
        return Parse::Hyper;
    }
    let mut content_length: Option<usize> = None;
    let (mut close, mut keep_alive_token, mut te_trailers) = (false, false, false);
    for field in parsed.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (content_length, decimal(field.value)) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Parse::Hyper,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Parse::Hyper;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parse::Hyper;
                }
            }
        } else if name.eq_ignore_ascii_case("te") {
            te_trailers |= tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        }
    }
    let body_len = content_length.unwrap_or(0);
    let Some(total) = head_len.checked_add(body_len) else {
        return Parse::Hyper;
    };
    // A body still arriving gets hyper's body timeouts (and their 408).
    if total > MAX_REQUEST || buffer.len() < total {
        return Parse::Hyper;
    }
    // One allocation for the head and body; the target, header values and body share it.
    let whole = Bytes::copy_from_slice(&buffer[..total]);
    let slice = |part: &[u8]| {
        let start = part.as_ptr() as usize - buffer.as_ptr() as usize;
        whole.slice(start..start + part.len())
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parse::Hyper;
    };
    let uri = if target == "/" {
        Uri::from_static("/")
    } else {
        match Uri::from_maybe_shared(slice(target.as_bytes())) {
            Ok(uri) => uri,
            Err(_) => return Parse::Hyper,
        }
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_maybe_shared(slice(field.value)),
        ) else {
            return Parse::Hyper;
        };
        map.append(name, value);
    }
    let head = method == Method::HEAD;
    let body = ClientBody::buffered(whole.slice(head_len..total));
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    Parse::Complete(Parsed {
        request,
        consumed: total,
        keep_alive,
        head,
        te_trailers,
    })
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6).
fn decimal(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// What the answer's framing depends on.
struct Meta {
    version: Version,
    head: bool,
    te_trailers: bool,
}

enum Framing {
    /// No body (`HEAD`, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends with the connection.
    UntilClose,
}

/// Writes `response`; says whether the connection can take another request.
async fn write_response(
    stream: &TcpStream,
    response: Response<axum::body::Body>,
    meta: &Meta,
    keep_alive: bool,
) -> io::Result<bool> {
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    let status = parts.status;
    let mut keep_alive =
        keep_alive && !super::proxy::has_token(headers, &header::CONNECTION, "close");
    headers.remove(header::TRANSFER_ENCODING);
    let mut body = std::pin::pin!(body);
    let framing = if meta.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        if status == StatusCode::NO_CONTENT || status.is_informational() {
            headers.remove(header::CONTENT_LENGTH);
        }
        Framing::Empty
    } else if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| decimal(v.as_bytes()))
    {
        Framing::Length(length as u64)
    } else if let Some(length) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        Framing::Length(length)
    } else if meta.version == Version::HTTP_11 {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    if !keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else if meta.version == Version::HTTP_10 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, date());
    }
    let mut head = Vec::with_capacity(128 + headers.len() * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    put_fields(&mut head, headers);
    head.extend_from_slice(b"\r\n");
    let length = match framing {
        Framing::Empty => {
            write_all(stream, &mut [IoSlice::new(&head)]).await?;
            return Ok(keep_alive);
        }
        Framing::Length(length) => Some(length),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let chunked = matches!(framing, Framing::Chunked);
    let mut head = Some(head);
    let mut sent: u64 = 0;
    loop {
        // The head goes out with the first piece of the body when that is ready at once.
        let frame = match head {
            Some(_) => match body.as_mut().frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    let head = head.take().unwrap_or_default();
                    write_all(stream, &mut [IoSlice::new(&head)]).await?;
                    continue;
                }
            },
            None => body.as_mut().frame().await,
        };
        let head_bytes = head.take().unwrap_or_default();
        let frame = match frame {
            None => {
                let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                write_all(stream, &mut [IoSlice::new(&head_bytes), IoSlice::new(end)]).await?;
                // A body shorter than its Content-Length: the client must not wait for the rest.
                return Ok(keep_alive && length.is_none_or(|length| sent == length));
            }
            // The pod's body broke off: so does this one (no final chunk, short of its length).
            Some(Err(_)) => {
                write_all(stream, &mut [IoSlice::new(&head_bytes)]).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                    let mut end = b"0\r\n".to_vec();
                    if meta.te_trailers {
                        put_fields(&mut end, &trailers);
                    }
                    end.extend_from_slice(b"\r\n");
                    write_all(stream, &mut [IoSlice::new(&head_bytes), IoSlice::new(&end)]).await?;
                    return Ok(keep_alive);
                }
                write_all(stream, &mut [IoSlice::new(&head_bytes)]).await?;
                continue;
            }
        };
        sent += data.len() as u64;
        if length.is_some_and(|length| sent > length) {
            // More than announced: what fits is sent and the connection ends.
            let fits = data.len() - usize::try_from(sent - length.unwrap_or(0)).unwrap_or(0);
            write_all(
                stream,
                &mut [IoSlice::new(&head_bytes), IoSlice::new(&data[..fits])],
            )
            .await?;
            return Ok(false);
        }
        let ends = body.is_end_stream();
        if chunked {
            if data.is_empty() {
                continue;
            }
            let mut size = [0u8; 18];
            let size = chunk_size(data.len(), &mut size);
            let tail: &[u8] = if ends { b"\r\n0\r\n\r\n" } else { b"\r\n" };
            write_all(
                stream,
                &mut [
                    IoSlice::new(&head_bytes),
                    IoSlice::new(size),
                    IoSlice::new(&data),
                    IoSlice::new(tail),
                ],
            )
            .await?;
        } else {
            write_all(
                stream,
                &mut [IoSlice::new(&head_bytes), IoSlice::new(&data)],
            )
            .await?;
        }
        if ends {
            return Ok(keep_alive && length.is_none_or(|length| sent == length));
        }
    }
}

/// `name: value` lines, one per field (a head's headers or a chunked body's trailers).
fn put_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A chunk's size line, written into `buffer`.
fn chunk_size(len: usize, buffer: &mut [u8; 18]) -> &[u8] {
    use std::io::Write as _;
    let mut cursor = io::Cursor::new(&mut buffer[..]);
    // 16 hexadecimal digits and CRLF always fit.
    let _ = write!(cursor, "{len:x}\r\n");
    let written = usize::try_from(cursor.position()).unwrap_or(0);
    &buffer[..written]
}

/// Writes every slice, in as few system calls as the socket allows.
async fn write_all(stream: &TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match stream.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, HeaderValue)> =
        const { std::cell::RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The `Date` header, formatted once a second per thread.
fn date() -> HeaderValue {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, value)| {
        if *cached != second
            && let Ok(formatted) = HeaderValue::from_str(&httpdate::fmt_http_date(now))
        {
            *value = formatted;
            *cached = second;
        }
        value.clone()
    })
}

/// A connection handed to hyper: what was read already, then the socket.
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub fn new(inner: TcpStream, prefix: Bytes) -> Rewind {
        Rewind { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> Parsed {
        match parse(raw) {
            Parse::Complete(parsed) => parsed,
            Parse::Partial => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
            Parse::Hyper => panic!("for hyper: {:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn for_hyper(raw: &[u8]) -> bool {
        matches!(parse(raw), Parse::Hyper)
    }

    #[test]
    fn a_whole_request_is_parsed_with_its_body_and_the_rest_is_left() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhelloGET / HTTP/1.1\r\n";
        let parsed = complete(raw);
        assert_eq!(parsed.consumed, raw.len() - b"GET / HTTP/1.1\r\n".len());
        assert!(parsed.keep_alive);
        let request = parsed.request;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(request.body().size_hint().exact(), Some(5));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_tokens() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n").te_trailers);
    }

    #[test]
    fn everything_this_server_does_not_serve_goes_to_hyper() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhalf",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n",
        ] {
            assert!(for_hyper(raw), "{:?}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost:"), Parse::Partial));
    }

    #[test]
    fn chunk_sizes_are_hexadecimal() {
        assert_eq!(chunk_size(255, &mut [0; 18]), b"ff\r\n");
        assert_eq!(chunk_size(usize::MAX, &mut [0; 18]).len(), 18);
    }
}
