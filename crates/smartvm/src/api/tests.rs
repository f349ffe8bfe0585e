//! Client tests against a minimal HTTP/1.1 peer on a Unix socket in the test.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Serves canned answers chosen by request line; counts accepted connections.
async fn serve(listener: UnixListener, connections: Arc<AtomicUsize>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            loop {
                let mut request_line = String::new();
                if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut content_length = 0;
                loop {
                    let mut h = String::new();
                    stream.read_line(&mut h).await.unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; content_length];
                stream.read_exact(&mut body).await.unwrap();
                let (status, extra, answer) = match request_line.split_whitespace().nth(1).unwrap_or("") {
                    "/" => (
                        "200 OK",
                        "",
                        r#"{"app_name":"Firecracker","id":"x","state":"Not started","vmm_version":"1.12.1"}"#
                            .to_string(),
                    ),
                    "/version" => ("200 OK", "", r#"{"firecracker_version":"1.12.1"}"#.to_string()),
                    "/echo" => ("200 OK", "", String::from_utf8(body).unwrap()),
                    "/fault" => ("400 Bad Request", "", r#"{"fault_message":"Invalid request method"}"#.to_string()),
                    "/raw-error" => ("400 Bad Request", "", r#"{"error":"Invalid header."}"#.to_string()),
                    "/deprecated" => ("204 No Content", "Deprecation: true\r\n", String::new()),
                    "/slow" => std::future::pending().await,
                    _ => ("204 No Content", "", String::new()),
                };
                let head = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n", answer.len());
                stream.get_mut().write_all(head.as_bytes()).await.unwrap();
                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
    }
}

mod logs {
    include!("../../tests/common/logs.rs");
}
use logs::capture as capture_logs;

fn start_server() -> (tempfile::TempDir, PathBuf, Arc<AtomicUsize>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve(listener, count.clone()));
    (dir, path, count)
}

#[tokio::test]
async fn raw_requests_keep_the_connection_alive() {
    let (_dir, path, connections) = start_server();
    let client = ApiClient::new(&path);
    let info = client.send(&GetInstanceInfo).await.unwrap();
    assert_eq!(info.state, "Not started");
    let echoed = client.put("/echo", &serde_json::json!({"a": 1})).await.unwrap();
    assert_eq!((echoed.ok, echoed.status_code, echoed.body.as_str()), (true, 200, r#"{"a":1}"#));
    let fault = client.patch("/fault", &serde_json::json!({})).await.unwrap();
    assert_eq!((fault.ok, fault.status_code), (false, 400));
    assert_eq!(fault.fault_message().as_deref(), Some("Invalid request method"));
    let (logs, guard) = capture_logs();
    assert_eq!(client.get("/deprecated").await.unwrap().status_code, 204);
    drop(guard);
    assert!(logs.text().contains("Firecracker marked this request as deprecated"), "{}", logs.text());
    assert_eq!(connections.load(Ordering::SeqCst), 1, "all requests should share one connection");
}

#[tokio::test]
async fn typed_send_maps_errors() {
    let (_dir, path, _) = start_server();
    let client = ApiClient::new(&path).with_timeout(Duration::from_millis(300));
    let e = client.send(&PutAction::new(ActionType::InstanceStart)).await;
    assert!(e.is_ok(), "204 decodes into ()");
    let raw = client.get("/raw-error").await.unwrap();
    assert_eq!(raw.fault_message().as_deref(), Some("Invalid header."));
    let timeout = client.get("/slow").await.unwrap_err();
    assert_eq!(timeout.code(), "API_TIMEOUT");
    // The client recovers with a new connection after a timeout.
    assert_eq!(client.send(&GetVersion).await.unwrap().firecracker_version, "1.12.1");
}

#[tokio::test]
async fn api_errors_carry_status_and_fault() {
    struct Fault;
    impl Endpoint for Fault {
        type Response = ();
        const METHOD: Method = Method::PUT;
        fn path(&self) -> String {
            "/fault".into()
        }
        fn body(&self) -> std::result::Result<Option<Vec<u8>>, serde_json::Error> {
            Ok(Some(b"{}".to_vec()))
        }
    }
    let (_dir, path, _) = start_server();
    let e = ApiClient::new(&path).send(&Fault).await.unwrap_err();
    assert_eq!(e.code(), "API_ERROR");
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.fault_message(), Some("Invalid request method"));
}

#[tokio::test]
async fn missing_socket_is_a_request_failure_and_not_ready() {
    let client = ApiClient::new("/nonexistent/smartvm.sock");
    assert_eq!(client.get("/").await.unwrap_err().code(), "SOCKET_REQUEST_FAILED");
    assert!(!client.is_ready(Duration::from_millis(20)).await);
    assert_eq!(client.wait_ready(Duration::from_millis(20)).await.unwrap_err().code(), "SOCKET_TIMEOUT");
}

#[test]
fn fault_message_shapes() {
    let r = |body: &str| ApiResponse { ok: false, status_code: 400, body: body.into() };
    assert_eq!(r("").fault_message(), None);
    assert_eq!(r("plain text").fault_message().as_deref(), Some("plain text"));
}

#[tokio::test]
async fn a_socket_nobody_answers_on_is_an_api_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fc.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
    let client = ApiClient::new(&path);
    assert_eq!(client.wait_ready(Duration::from_millis(20)).await.unwrap_err().code(), "API_TIMEOUT");
    assert_eq!(client.connect(Duration::from_millis(20)).await.unwrap_err().code(), "API_TIMEOUT");
}
