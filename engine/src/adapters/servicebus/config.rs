//! Settings of a Service Bus queue: a portal connection string or separate
//! settings, validated before anything is sent.

use std::fmt;

use azure_core::Url;
use dronedelivery_actors::ports::StoreError;

/// Where and how to reach a Service Bus queue.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceBusConfig {
    /// Namespace name: `NS` of `NS.servicebus.windows.net`.
    pub namespace: String,
    /// Queue name: the queue of partition 0. Partition `n > 0` is the queue
    /// `{queue}-{n}` (see [`ServiceBusConfig::partition_queue`]).
    pub queue: String,
    /// How many partitions, hence queues, the deliveries are spread over
    /// (the engine's `--partitions`). 1 is the single queue of the
    /// reference implementation.
    pub partitions: u32,
    /// Shared access policy (rule) name, e.g. `RootManageSharedAccessKey`.
    pub policy_name: String,
    /// Shared access policy key. Never logged.
    pub policy_key: String,
    /// Base URL overriding `https://{namespace}.servicebus.windows.net`
    /// (scheme, host and port only), e.g. `http://127.0.0.1:PORT` for the
    /// local double of the REST protocol. `None` for Azure.
    pub endpoint: Option<String>,
}

impl fmt::Debug for ServiceBusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusConfig")
            .field("namespace", &self.namespace)
            .field("queue", &self.queue)
            .field("partitions", &self.partitions)
            .field("policy_name", &self.policy_name)
            .field("policy_key", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Most partitions a queue may be spread over: each is a queue of the
/// namespace (a Standard namespace holds up to 10,000 entities) and, once
/// held, one long-polling receiver.
pub const MAX_PARTITIONS: u32 = 1024;

pub(super) fn invalid(what: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("invalid Service Bus settings: {what}"))
}

impl ServiceBusConfig {
    /// Parses a portal connection string,
    /// `Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=queue`.
    /// Keys are case-insensitive; unknown keys (`TransportType`, ...) are
    /// ignored. The queue is `EntityPath` or else `queue`; when both are
    /// given they must name the same queue.
    ///
    /// # Errors
    /// A missing part, a host other than `*.servicebus.windows.net`, a
    /// pre-signed `SharedAccessSignature=` string, or no queue. The key is
    /// never part of the message.
    pub fn from_connection_string(s: &str, queue: Option<&str>) -> Result<Self, StoreError> {
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut entity = None;
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(invalid(
                    "connection string parts must be Key=Value pairs separated by ';'",
                ));
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v),
                "sharedaccesskeyname" => key_name = Some(v),
                "sharedaccesskey" => key = Some(v),
                "entitypath" => entity = Some(v).filter(|e| !e.is_empty()),
                "sharedaccesssignature" => {
                    return Err(invalid(
                        "pre-signed SharedAccessSignature connection strings are not supported; \
                         use one with SharedAccessKeyName and SharedAccessKey",
                    ))
                }
                _ => {}
            }
        }
        let endpoint = endpoint.ok_or_else(|| invalid("the connection string has no Endpoint"))?;
        let policy_name = key_name
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("the connection string has no SharedAccessKeyName"))?;
        let policy_key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("the connection string has no SharedAccessKey"))?;
        let host = endpoint
            .split_once("://")
            .map_or(endpoint, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let namespace = host
            .strip_suffix(".servicebus.windows.net")
            .filter(|ns| !ns.is_empty() && !ns.contains('.'))
            .ok_or_else(|| {
                invalid(format!(
                    "Endpoint host '{host}' is not NAMESPACE.servicebus.windows.net \
                     (for a local double, set the endpoint override instead)"
                ))
            })?;
        let queue = match (entity, queue.filter(|q| !q.is_empty())) {
            (Some(e), Some(q)) if !e.eq_ignore_ascii_case(q) => {
                return Err(invalid(format!(
                    "the connection string is for queue '{e}' but queue '{q}' was asked for"
                )))
            }
            (Some(e), _) => e,
            (None, Some(q)) => q,
            (None, None) => {
                return Err(invalid(
                    "the connection string has no EntityPath and no queue name was given",
                ))
            }
        };
        Ok(Self {
            namespace: namespace.to_owned(),
            queue: queue.to_owned(),
            policy_name: policy_name.to_owned(),
            policy_key: policy_key.to_owned(),
            partitions: 1,
            endpoint: None,
        })
    }

    /// The queue holding partition `partition`'s messages: the configured
    /// queue for partition 0 (so one partition is the reference
    /// implementation's layout, and messages queued before partitioning are
    /// still read), `{queue}-{partition}` for the others.
    pub fn partition_queue(&self, partition: u32) -> String {
        if partition == 0 {
            self.queue.clone()
        } else {
            format!("{}-{partition}", self.queue)
        }
    }

    pub(super) fn validate(&self) -> Result<Option<Url>, StoreError> {
        let ns_ok = !self.namespace.is_empty()
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ns_ok {
            return Err(invalid(format!(
                "namespace '{}' must be a host name label (letters, digits, '-')",
                self.namespace
            )));
        }
        let queue_ok = !self.queue.is_empty()
            && !self.queue.starts_with('/')
            && !self.queue.ends_with('/')
            && self
                .queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '~'));
        if !queue_ok {
            return Err(invalid(format!(
                "queue name '{}' may only hold letters, digits and - _ . / ~",
                self.queue
            )));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(invalid(format!(
                "partitions must be 1 to {MAX_PARTITIONS} (one queue each), not {}",
                self.partitions
            )));
        }
        if self.policy_name.is_empty() || self.policy_key.is_empty() {
            return Err(invalid(
                "the shared access policy name and key are required",
            ));
        }
        let Some(endpoint) = &self.endpoint else {
            return Ok(None);
        };
        let url =
            Url::parse(endpoint).map_err(|e| invalid(format!("endpoint '{endpoint}': {e}")))?;
        let origin_only = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.path() == "/"
            && url.query().is_none();
        if !origin_only {
            return Err(invalid(format!(
                "endpoint '{endpoint}' must be http(s)://host[:port] with no path"
            )));
        }
        Ok(Some(url))
    }
}
