//! The built-in demo origin: `ringway backend` and the backends `ringway demo` starts.
//!
//! Built on monoio-http, where convenience matters more than the last nanosecond. It
//! answers every request with 200 and one line naming itself, the method and the path
//! (plus the size of any request body); `/health` answers `ok`. It runs on its own
//! thread with its own runtime, never on a proxy worker.

use crate::warn;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use monoio::io::sink::SinkExt;
use monoio::io::stream::Stream;
use monoio::net::{TcpListener, TcpStream};
use monoio_http::common::body::Body;
use monoio_http::common::response::Response;
use monoio_http::h1::codec::decoder::FillPayload;
use monoio_http::h1::codec::ServerCodec;
use monoio_http::h1::payload::{FixedPayload, Payload};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Idle keep-alive connections are closed after this long.
const IDLE: Duration = Duration::from_secs(60);

/// Serves the demo origin on each `(listener, name)` pair from one new thread.
///
/// Returns once the thread's runtime is up; the thread runs until the process exits.
pub fn spawn(listeners: Vec<(std::net::TcpListener, String)>) -> std::io::Result<JoinHandle<()>> {
    for (l, _) in &listeners {
        l.set_nonblocking(true)?;
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("backend".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build();
            let mut rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (l, name) in listeners {
                    match TcpListener::from_std(l) {
                        Ok(l) => tasks.push(monoio::spawn(serve(l, Rc::from(name)))),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                for t in tasks {
                    t.await;
                }
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("backend thread died while starting")),
    }
}

/// Accepts connections on `listener` forever, answering as `name`.
pub async fn serve(listener: TcpListener, name: Rc<str>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(connection(stream, name.clone()));
            }
            Err(e) => {
                warn!("backend `{name}`: accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, name: Rc<str>) {
    let mut codec = ServerCodec::new_with_timeout(stream, IDLE);
    while let Some(Ok(req)) = codec.next().await {
        let (head, mut body) = req.into_parts();
        // Close when the client asked to: monoio-http's encoder does not decide that for us.
        let close = head
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
            || head.version == http::Version::HTTP_10;
        // The decoder only reads the body while we drain it, so drive both together.
        let received = if matches!(body, Payload::None) {
            0
        } else {
            let drain = async {
                let mut n = 0usize;
                while let Some(Ok(chunk)) = body.next_data().await {
                    n += chunk.len();
                }
                n
            };
            let (filled, n) = monoio::join!(codec.fill_payload(), drain);
            if filled.is_err() {
                return;
            }
            n
        };
        let resp = answer(&name, &head.method, head.uri.path(), received, close);
        if codec.send_and_flush(resp).await.is_err() || close {
            return;
        }
    }
}

/// The demo origin's answer to one request.
fn answer(name: &str, method: &http::Method, path: &str, received: usize, close: bool) -> Response {
    let text = if path == "/health" {
        "ok\n".to_string()
    } else if received > 0 {
        format!("hello from {name}: {method} {path} ({received} bytes received)\n")
    } else {
        format!("hello from {name}: {method} {path}\n")
    };
    let mut resp = Response::new(Payload::Fixed(FixedPayload::new(Bytes::from(text))));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
