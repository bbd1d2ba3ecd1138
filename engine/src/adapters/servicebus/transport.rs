//! The `azure_core::HttpClient` injected into the crate's `QueueClient`.
//!
//! It forwards every request to `azure_core`'s own reqwest client (so no
//! direct reqwest dependency is needed) after three adjustments:
//!
//! - **Endpoint override.** The crate hard-codes
//!   `https://{namespace}.servicebus.windows.net`; when an endpoint such as
//!   `http://127.0.0.1:PORT` is configured, the scheme, host and port of each
//!   request are replaced by it (path and query are kept). The SAS token is
//!   left as the crate signed it: its `sr` still names the public URI, which
//!   the double accepts because it compares paths.
//! - **Peek-lock responses are made safe for the crate.** `peek_lock_message2`
//!   decodes the `BrokerProperties` header into a struct with `i32` fields
//!   (`EnqueuedSequenceNumber`) and returns `Err` when that fails, *after* the
//!   service has locked the message, so the lock URL is lost and the message
//!   stays invisible until the lock expires. The header is therefore renamed
//!   to [`RAW_BROKER_PROPERTIES`] here (the crate then sees none and cannot
//!   fail) and the adapter decodes it itself with `i64` sequence numbers.
//!   Likewise a body that is not UTF-8 would make the crate's
//!   `collect_string` fail after the lock was taken; it is replaced by its
//!   lossy UTF-8 rendering, so the message reaches the workflow and is
//!   dead-lettered there with a reason instead of looping through lock
//!   expiries.
//! - **A deadline.** azure_core's reqwest client has no timeout; a request is
//!   given up after its long-poll `timeout` plus a margin.
//! - **Connections are kept alive.** azure_core's own client keeps no idle
//!   connection (`pool_max_idle_per_host(0)`, against a hyper hang on
//!   connections the server closed), so every request paid a TCP and TLS
//!   handshake. The transport uses one pooled reqwest client per adapter
//!   instead, whose idle connections are dropped after [`POOL_IDLE`] (well
//!   inside the 4 minutes after which Azure's load balancers drop idle
//!   connections), with TCP keep-alive on; the deadline above bounds any
//!   request that would hang on a connection gone stale.
//!
//! Never `{:?}`-format an `azure_core::Request`: azure_core 0.21's `Headers`
//! `Debug` redacts every header *except* `Authorization` (an inverted test),
//! which would log the SAS token.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::{Error, ErrorKind};
use azure_core::headers::{HeaderName, Headers};
use azure_core::{HttpClient, Method, Request, Response, Url};

/// Where the transport moves the peek-lock `BrokerProperties` header.
pub(crate) const RAW_BROKER_PROPERTIES: HeaderName =
    HeaderName::from_static("x-dronedelivery-raw-brokerproperties");

const BROKER_PROPERTIES: &str = "brokerproperties";

/// Extra time granted past a long poll's own `timeout`, and the limit of
/// every other request.
const REQUEST_MARGIN: Duration = Duration::from_secs(30);
/// How long an idle pooled connection is kept.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(50);

/// One pooled client (see the module documentation); azure_core's
/// unpooled one if it cannot be built.
fn pooled_client() -> Arc<dyn HttpClient> {
    match reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .tcp_nodelay(true)
        .build()
    {
        Ok(client) => Arc::new(client),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a pooled HTTP client for Service Bus; opening a connection per request");
            azure_core::new_http_client()
        }
    }
}

/// The injected client.
#[derive(Debug)]
pub(crate) struct Transport {
    inner: Arc<dyn HttpClient>,
    endpoint: Option<Url>,
}

impl Transport {
    /// A transport sending to `endpoint` (scheme, host and port only) or,
    /// when `None`, where the crate addressed the request.
    pub(crate) fn new(endpoint: Option<Url>) -> Self {
        Self {
            inner: pooled_client(),
            endpoint,
        }
    }

    /// The same with azure_core's own client, a connection per request:
    /// only to measure what pooling saves.
    #[cfg(feature = "test-support")]
    pub(crate) fn unpooled(endpoint: Option<Url>) -> Self {
        Self {
            inner: azure_core::new_http_client(),
            endpoint,
        }
    }

    fn rewrite(&self, url: &mut Url) -> azure_core::Result<()> {
        let Some(ep) = &self.endpoint else {
            return Ok(());
        };
        let failed = || {
            Error::message(
                ErrorKind::Other,
                "cannot redirect the request to the configured endpoint",
            )
        };
        if url.scheme() != ep.scheme() {
            url.set_scheme(ep.scheme()).map_err(|()| failed())?;
        }
        url.set_host(ep.host_str()).map_err(|_| failed())?;
        url.set_port(ep.port()).map_err(|()| failed())?;
        Ok(())
    }
}

fn is_peek_lock(request: &Request) -> bool {
    *request.method() == Method::Post && request.url().path().ends_with("/messages/head")
}

fn long_poll_timeout(url: &Url) -> Duration {
    url.query_pairs()
        .find(|(k, _)| k == "timeout")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        // The service long-polls for 60 s when no timeout is given.
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Renames `BrokerProperties` and makes the body valid UTF-8 (see the
/// module documentation).
async fn adapt_peek_lock_response(response: Response) -> azure_core::Result<Response> {
    let (status, headers, body) = response.deconstruct();
    let body = body.collect().await?;
    let body = match std::str::from_utf8(&body) {
        Ok(_) => body,
        Err(_) => {
            tracing::warn!("Service Bus message body is not UTF-8; passing its lossy rendering");
            String::from_utf8_lossy(&body).into_owned().into()
        }
    };
    let mut adapted = Headers::new();
    for (name, value) in headers.iter() {
        if name.as_str().eq_ignore_ascii_case(BROKER_PROPERTIES) {
            adapted.insert(RAW_BROKER_PROPERTIES, value.clone());
        } else {
            adapted.insert(name.clone(), value.clone());
        }
    }
    let stream = futures::stream::once(async move { Ok(body) });
    Ok(Response::new(status, adapted, Box::pin(stream)))
}

#[async_trait]
impl HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        let mut request = request.clone();
        self.rewrite(request.url_mut())?;
        let peek = is_peek_lock(&request);
        let limit = if peek {
            long_poll_timeout(request.url()) + REQUEST_MARGIN
        } else {
            REQUEST_MARGIN
        };
        let response = tokio::time::timeout(limit, self.inner.execute_request(&request))
            .await
            .map_err(|_| {
                Error::with_message(ErrorKind::Io, || {
                    format!(
                        "Service Bus did not answer {} {} within {limit:?}",
                        request.method(),
                        request.url().path()
                    )
                })
            })??;
        if peek {
            adapt_peek_lock_response(response).await
        } else {
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_scheme_host_and_port_only() {
        let ep = Url::parse("http://127.0.0.1:8123").unwrap();
        let t = Transport::new(Some(ep));
        let mut url =
            Url::parse("https://ns.servicebus.windows.net/q/messages/head?timeout=3").unwrap();
        t.rewrite(&mut url).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8123/q/messages/head?timeout=3"
        );
        // Idempotent: a lock URL handed out by the double is left as is.
        t.rewrite(&mut url).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8123/q/messages/head?timeout=3"
        );
        assert_eq!(long_poll_timeout(&url), Duration::from_secs(3));
    }

    #[test]
    fn without_an_endpoint_nothing_changes() {
        let t = Transport::new(None);
        let mut url = Url::parse("https://ns.servicebus.windows.net/q/messages").unwrap();
        t.rewrite(&mut url).unwrap();
        assert_eq!(url.as_str(), "https://ns.servicebus.windows.net/q/messages");
    }
}
