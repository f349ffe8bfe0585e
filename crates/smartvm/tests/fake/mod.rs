//! A local HTTP server with the shapes smartvm downloads from: GitHub's latest-release JSON and
//! release assets, and an S3 bucket answering `ListObjectsV2` (paginated) and object GETs.
//! Built from small files the tests generate; the code under test reaches it via its mirrors.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use smartvm::images::Mirrors;

/// What a path answers.
#[derive(Clone)]
pub enum Route {
    /// 200 with these bytes.
    Data(Bytes),
    /// Announces the full length, sends only the first `sent` bytes, then breaks the connection.
    Truncated { data: Bytes, sent: usize },
    /// This status, empty body.
    Status(u16),
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Route>,
    bucket: BTreeMap<String, Bytes>,
    list_override: Option<String>,
    hits: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct FakeServer {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

pub const PAGE: usize = 3;

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let mut g = inner.lock().unwrap();
    *g.hits.entry(path.clone()).or_default() += 1;
    if path == "/s3/" || path == "/s3" {
        if let Some(body) = &g.list_override {
            return body.clone().into_response();
        }
        let q: HashMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), urlencoding_decode(v)))
            .collect();
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let keys: Vec<&String> = g.bucket.keys().filter(|k| k.starts_with(&prefix)).collect();
        let start: usize =
            q.get("continuation-token").and_then(|t| t.strip_prefix("page-")).and_then(|n| n.parse().ok()).unwrap_or(0);
        let page: Vec<&&String> = keys.iter().skip(start).take(PAGE).collect();
        let truncated = start + PAGE < keys.len();
        let mut xml = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>spec.ccfc.min</Name>"#,
        );
        xml += &format!(
            "<Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><IsTruncated>{truncated}</IsTruncated>",
            page.len()
        );
        if truncated {
            xml += &format!("<NextContinuationToken>page-{}</NextContinuationToken>", start + PAGE);
        }
        for k in page {
            xml += &format!("<Contents><Key>{k}</Key><Size>{}</Size></Contents>", g.bucket[*k].len());
        }
        xml += "</ListBucketResult>";
        return ([(header::CONTENT_TYPE, "application/xml")], xml).into_response();
    }
    if let Some(key) = path.strip_prefix("/s3/") {
        if let Some(data) = g.bucket.get(key) {
            return data.clone().into_response();
        }
    }
    match g.routes.get(&path).cloned() {
        Some(Route::Data(d)) => d.into_response(),
        Some(Route::Status(s)) => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
        Some(Route::Truncated { data, sent }) => {
            let head = data.slice(..sent);
            let stream = futures_util::stream::iter(vec![
                Ok::<Bytes, std::io::Error>(head),
                Err(std::io::Error::other("connection dropped by the test server")),
            ]);
            Response::builder().header(header::CONTENT_LENGTH, data.len()).body(Body::from_stream(stream)).unwrap()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeServer {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn mirrors(&self) -> Mirrors {
        Mirrors { github_api: self.url("/api"), github: self.url("/gh"), ci_artifacts: self.url("/s3") }
    }

    pub fn route(&self, path: &str, route: Route) {
        self.inner.lock().unwrap().routes.insert(path.to_string(), route);
    }

    pub fn data(&self, path: &str, data: impl Into<Bytes>) {
        self.route(path, Route::Data(data.into()));
    }

    pub fn object(&self, key: &str, data: impl Into<Bytes>) {
        self.inner.lock().unwrap().bucket.insert(key.to_string(), data.into());
    }

    pub fn override_listing(&self, body: &str) {
        self.inner.lock().unwrap().list_override = Some(body.to_string());
    }

    pub fn hits(&self, path: &str) -> usize {
        self.inner.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }

    /// Latest release `tag`.
    pub fn latest(&self, tag: &str) {
        self.data(
            "/api/repos/firecracker-microvm/firecracker/releases/latest",
            format!(r#"{{"tag_name":"{tag}","name":"Firecracker {tag}","draft":false}}"#),
        );
    }

    /// A release tarball for `version`/x86_64 with the given binaries, its `.sha256.txt`, and
    /// `SHA256SUMS` inside (optionally listing `sums_override` instead of the real sums).
    pub fn release(&self, version: &str, firecracker: &[u8], jailer: &[u8], corrupt_sums: bool) -> Vec<u8> {
        let dir = format!("release-{version}-x86_64");
        let fc_name = format!("firecracker-{version}-x86_64");
        let jl_name = format!("jailer-{version}-x86_64");
        let sum = |d: &[u8]| hex::encode(sha2::Sha256::digest(d));
        let sums = if corrupt_sums {
            format!("{}  ./{fc_name}\n{}  ./{jl_name}\n", "0".repeat(64), sum(jailer))
        } else {
            format!("{}  ./{fc_name}\n{}  ./{jl_name}\n", sum(firecracker), sum(jailer))
        };
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (name, data) in [
            (fc_name.as_str(), firecracker),
            (jl_name.as_str(), jailer),
            ("SHA256SUMS", sums.as_bytes()),
            (&*format!("{fc_name}.debug"), b"debug symbols".as_slice()),
            ("LICENSE", b"Apache-2.0".as_slice()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            builder.append_data(&mut h, format!("{dir}/{name}"), data).unwrap();
        }
        let tgz = builder.into_inner().unwrap().finish().unwrap();
        let base =
            format!("/gh/firecracker-microvm/firecracker/releases/download/{version}/firecracker-{version}-x86_64.tgz");
        self.data(&format!("{base}.sha256.txt"), format!("{}  firecracker-{version}-x86_64.tgz\n", sum(&tgz)));
        self.data(&base, tgz.clone());
        tgz
    }
}

/// Gzip helper kept for tests that need compressed payloads.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
