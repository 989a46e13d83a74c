//! One readiness probe attempt against a pod on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::{Readiness, valid_path};

/// Most bytes read while looking for the status line.
const STATUS_LINE_LIMIT: usize = 1024;

/// Runs one attempt bounded by `timeout`; the error says why it failed. `Exec` checks are not
/// network probes and fail here (the runtime runs them).
#[cfg(test)]
pub(crate) async fn probe_once(
    check: &Readiness,
    address: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    probe_with(check, address, timeout, &[]).await
}

/// [`probe_once`] with extra request headers for `HttpGet`.
pub(crate) async fn probe_with(
    check: &Readiness,
    address: SocketAddr,
    timeout: Duration,
    headers: &[(String, String)],
) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(check, address, headers)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn attempt(
    check: &Readiness,
    address: SocketAddr,
    headers: &[(String, String)],
) -> Result<(), String> {
    if let Readiness::Exec { .. } = check {
        return Err("exec checks are run by the runtime".into());
    }
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    if let Readiness::Grpc { service } = check {
        return grpc_health(stream, address, service).await;
    }
    let Readiness::HttpGet { path } = check else {
        return Ok(());
    };
    if !valid_path(path) {
        return Err(format!("invalid readiness path {path:?}"));
    }
    let mut extra = String::new();
    let mut host = address.to_string();
    for (name, value) in headers {
        let clean = |s: &str| s.bytes().all(|b| b >= b' ' && b != 0x7f);
        if name.is_empty() || !clean(name) || name.contains(':') || !clean(value) {
            return Err(format!("invalid probe header {name:?}"));
        }
        if name.eq_ignore_ascii_case("host") {
            host.clone_from(value);
        } else {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tidegate-probe\r\n\
         Accept: */*\r\n{extra}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send probe: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() >= STATUS_LINE_LIMIT {
            return Err("status line too long".into());
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read probe answer: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status = status_code(&head).ok_or("malformed status line")?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// One `grpc.health.v1.Health/Check` call over h2c on `stream`: passes when the server answers
/// `SERVING` with `grpc-status: 0`.
async fn grpc_health(stream: TcpStream, address: SocketAddr, service: &str) -> Result<(), String> {
    use http_body_util::BodyExt as _;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("h2c handshake with {address}: {e}"))?;
    // Ends when `sender` is dropped with this function.
    tokio::spawn(connection);
    // HealthCheckRequest { string service = 1; } in a gRPC length-prefixed frame.
    let mut message = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        message.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            message.push(u8::try_from(len & 0x7f).unwrap_or(0) | 0x80);
            len >>= 7;
        }
        message.push(u8::try_from(len).unwrap_or(0));
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::post(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .map_err(|e| format!("gRPC health request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("gRPC health check to {address}: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!(
            "gRPC health check answered HTTP {}",
            response.status()
        ));
    }
    let header_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("gRPC health answer: {e}"))?;
    let trailer_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = trailer_status.or(header_status).unwrap_or_default();
    if status != "0" {
        return Err(format!(
            "gRPC health check failed with grpc-status {status:?}"
        ));
    }
    let body = collected.to_bytes();
    // HealthCheckResponse { ServingStatus status = 1; }: SERVING is 1.
    let serving = body.len() >= 5 && body[5..].windows(2).any(|w| w == [0x08, 0x01]);
    if serving {
        Ok(())
    } else {
        Err(format!("gRPC health of {service:?} is not SERVING"))
    }
}

/// The status code of `HTTP/1.x NNN ...`.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_line_parsing() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20x OK\r\n"), None);
    }

    /// Serves one connection with `answer` and returns the request it read.
    async fn serve_once(answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            let n = socket.read(&mut buf).await.expect("read");
            socket.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (address, task)
    }

    #[tokio::test]
    async fn http_get_accepts_2xx_and_3xx_only() {
        let check = Readiness::HttpGet {
            path: "/ready".into(),
        };
        let timeout = Duration::from_secs(5);
        let (address, served) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(probe_once(&check, address, timeout).await, Ok(()));
        assert!(
            served
                .await
                .expect("served")
                .starts_with("GET /ready HTTP/1.1\r\n")
        );

        let (address, _served) = serve_once("HTTP/1.1 302 Found\r\n\r\n").await;
        assert_eq!(probe_once(&check, address, timeout).await, Ok(()));

        let (address, _served) = serve_once("HTTP/1.1 503 Unavailable\r\n\r\n").await;
        let error = probe_once(&check, address, timeout)
            .await
            .expect_err("probe fails");
        assert!(error.contains("503"), "{error}");
    }

    #[tokio::test]
    async fn refused_and_silent_ports_fail() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        // Accepts (kernel backlog) but never answers.
        let check = Readiness::HttpGet { path: "/".into() };
        let error = probe_once(&check, address, Duration::from_millis(100))
            .await
            .expect_err("probe fails");
        assert!(error.contains("no answer"), "{error}");
        assert_eq!(
            probe_once(&Readiness::TcpPort, address, Duration::from_secs(5)).await,
            Ok(())
        );
        drop(listener);
        let error = probe_once(&Readiness::TcpPort, address, Duration::from_secs(5))
            .await
            .expect_err("probe fails");
        assert!(error.contains("connect"), "{error}");
    }
}
