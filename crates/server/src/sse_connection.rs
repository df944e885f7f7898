//! The event-stream connection: a `GET` of an SSE route served without hyper's connection state.
//!
//! Why: an idle SSE subscriber is an open connection, and hyper keeps two 8 KiB buffers per
//! HTTP/1.1 connection (its floor; one is reserved again while a response streams), which alone
//! cost more than the memory target per subscriber (`docs/benchmarks.md`). A stream's response
//! never reads again and writes only the hub's shared frames, so here the request head is read
//! into a buffer freed once parsed, the request goes through the same router as every other
//! (authentication, CORS, rate limits, the error shape), and the response is written as it
//! comes: the head, then each body frame as one HTTP/1.1 chunk straight from its shared bytes.
//! The connection then closes (`Connection: close`); every other request is hyper's.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The request lines served here; anything else (another method, path or a partial first
/// segment) goes to hyper.
const STREAM_REQUESTS: [&[u8]; 2] = [b"GET /api/v1/sdk/stream", b"GET /api/v1/ofrep/events"];
/// Headers a stream request may carry (hyper's default limit).
const MAX_HEADERS: usize = 100;

/// Whether the connection's first bytes are a `GET` of an SSE route (without consuming them).
/// Waits for the first segment only: a request line split across segments goes to hyper.
pub(crate) async fn is_stream_request(stream: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 32];
    let Ok(Ok(n)) = tokio::time::timeout(timeout, stream.peek(&mut first)).await else { return false };
    let seen = &first[..n];
    STREAM_REQUESTS
        .iter()
        .any(|line| seen.len() > line.len() && seen.starts_with(line) && matches!(seen[line.len()], b'?' | b' '))
}

/// Serves one stream request on `stream`, then closes it.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    max_head: usize,
    timeout: Duration,
) -> std::io::Result<()> {
    let request = match tokio::time::timeout(timeout, read_head(&mut stream, max_head)).await {
        Ok(Ok(Ok(request))) => request,
        Ok(Ok(Err(status))) => return write_response(&mut stream, plain(status), Version::HTTP_11).await,
        Ok(Err(e)) => return Err(e),
        // Too slow to send its head (hyper's connections close then too).
        Err(_) => return Ok(()),
    };
    let version = request.version();
    let mut request = request;
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    // A `Router` is always ready (its `poll_ready` returns `Ready` unconditionally).
    let Ok(response) = tower_service::Service::call(&mut router.clone(), request).await;
    write_response(&mut stream, response, version).await
}

/// A bodiless answer for a head that could not be read (400, 431).
fn plain(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Reads and parses the request head; the buffer is dropped on return.
async fn read_head(stream: &mut TcpStream, max_head: usize) -> std::io::Result<Result<Request<Body>, StatusCode>> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if buffer.len() >= max_head {
            return Ok(Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        }
        // Straight into the buffer: a stack array here would stay in every stream task's state.
        buffer.reserve(1024);
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) => return Ok(build(&parsed, buffer.len() - len)),
            Err(httparse::Error::TooManyHeaders) => return Ok(Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)),
            Err(_) => return Ok(Err(StatusCode::BAD_REQUEST)),
        }
    }
}

/// The parsed head as a request with an empty body; a body or pipelined bytes are refused (a
/// stream's `GET` has neither).
fn build(parsed: &httparse::Request<'_, '_>, trailing: usize) -> Result<Request<Body>, StatusCode> {
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(parsed.path.ok_or(StatusCode::BAD_REQUEST)?)
        .version(version)
        .body(Body::empty())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| StatusCode::BAD_REQUEST)?;
        request.headers_mut().append(name, value);
    }
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body || trailing > 0 {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(request)
}

/// Writes `response`: its head, then its body as chunks (close-delimited for HTTP/1.0), until
/// the body ends or the client goes away.
async fn write_response(stream: &mut TcpStream, response: Response<Body>, version: Version) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let chunked = version == Version::HTTP_11;
    let mut head = Vec::with_capacity(256);
    let reason = parts.status.canonical_reason().unwrap_or("");
    head.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in &parts.headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    stream.write_all(&head).await?;
    drop(head);
    let mut body = body.into_data_stream();
    let (mut reader, mut writer) = stream.split();
    // The client sends nothing more on this connection: a readable socket means it closed
    // (or broke the protocol); either way the stream ends.
    let mut probe = [0u8; 16];
    loop {
        tokio::select! {
            frame = body.next() => match frame {
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => write_chunk(&mut writer, data, chunked).await?,
                // A body error (streams have none) ends the response like its end.
                Some(Err(_)) | None => break,
            },
            _ = reader.read(&mut probe) => return Ok(()),
        }
    }
    if chunked {
        writer.write_all(b"0\r\n\r\n").await?;
    }
    writer.shutdown().await
}

/// One body frame as an HTTP/1.1 chunk, written from the shared bytes without copying them.
async fn write_chunk(stream: &mut tokio::net::tcp::WriteHalf<'_>, data: Bytes, chunked: bool) -> std::io::Result<()> {
    if !chunked {
        return stream.write_all(&data).await;
    }
    let size = format!("{:x}\r\n", data.len());
    let mut parts = bytes::Buf::chain(bytes::Buf::chain(size.as_bytes(), data), &b"\r\n"[..]);
    while bytes::Buf::has_remaining(&parts) {
        stream.write_buf(&mut parts).await?;
    }
    Ok(())
}
