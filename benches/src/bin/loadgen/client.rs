//! A bare HTTP/1.1 client: one TCP connection per worker, driven through
//! hyper's low-level `client::conn::http1` API. No pool, no retries, no
//! redirects, no decompression: the least client-side work per request,
//! because the load generator shares the machine's cores with the server
//! it measures.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `Authorization: Bearer …` sent with every request (`loadgen --bearer`),
/// for an engine with bearer-token authentication on.
pub static BEARER: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();

/// Where requests go: a resolved address, the `Host` header and the path
/// prefix of the base URL (`http://host:port/prefix`).
#[derive(Debug)]
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    base_path: String,
}

impl Target {
    /// Parses and resolves an `http://` URL. Its path becomes the prefix of
    /// every request path.
    pub fn parse(url: &str) -> anyhow::Result<Arc<Self>> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            other => bail!("only http:// URLs are supported, not {other:?} ({url})"),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("URL {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = (authority.host(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolve {}", authority.host()))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", authority.host()))?;
        let host = HeaderValue::from_str(authority.as_str())?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Arc::new(Self {
            addr,
            host,
            base_path,
        }))
    }

    /// The request URI (origin form) of `path` under the base path.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        format!("{}{path}", self.base_path)
            .parse()
            .with_context(|| format!("bad path {path:?}"))
    }
}

/// One request to send: its class (index into the source's class names, e.g.
/// PUT and GET of the packages load), method, URI and body.
#[derive(Debug, Clone)]
pub struct Req {
    pub class: usize,
    pub method: Method,
    pub uri: Uri,
    pub body: Option<Bytes>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A complete response (body read to the end) with this status.
    Status(u16),
    /// No response: connect error, I/O or protocol error, or timeout.
    Error(&'static str),
}

/// One keep-alive connection, re-established after an error.
pub struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `target`, opened on first use (or by [`Conn::connect`]).
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    /// Opens the connection now, so that connecting is not timed.
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        if self.sender.is_none() {
            self.sender = Some(open(self.target.addr).await?);
        }
        Ok(())
    }

    /// Sends `req` and reads the whole response, within `timeout`. On an
    /// error or a timeout the connection is dropped (the next request opens
    /// a new one).
    pub async fn send(&mut self, req: Req, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(kind)) => {
                self.sender = None;
                Outcome::Error(kind)
            }
            Err(_) => {
                self.sender = None;
                Outcome::Error("timeout")
            }
        }
    }

    async fn exchange(&mut self, req: Req) -> Result<u16, &'static str> {
        // A kept-alive connection the server has closed fails `ready`: open
        // a new one once, without counting an error.
        let reusable = match self.sender.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match reusable {
            Some(s) => s,
            None => {
                let mut s = open(self.target.addr).await.map_err(|_| "connect")?;
                s.ready().await.map_err(|_| "connect")?;
                s
            }
        };
        let mut builder = Request::builder()
            .method(req.method)
            .uri(req.uri)
            .header(HOST, self.target.host.clone());
        if req.body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(authorization) = BEARER.get() {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        let request = builder
            .body(Full::new(req.body.unwrap_or_default()))
            .map_err(|_| "request")?;
        let response = sender.send_request(request).await.map_err(|_| "io")?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|_| "io")?;
        }
        self.sender = Some(sender);
        Ok(status)
    }
}

async fn open(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET` of `path` on a fresh connection: status and body. For the
/// occasional request (metrics scrapes), not for load.
pub async fn get(
    target: &Arc<Target>,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, Bytes)> {
    let fut = async {
        let mut sender = open(target.addr).await?;
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(target.uri(path)?)
            .header(HOST, target.host.clone());
        if let Some(authorization) = BEARER.get() {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        let request = builder.body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("GET {path}: timed out after {timeout:?}"))?
}
