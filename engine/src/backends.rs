//! Choosing and connecting the backends the flags ask for.
//!
//! Stores and queue are chosen independently: `--redis-url` moves
//! deliveries, drones and idempotency keys to Redis; `--mongodb-uri` moves
//! packages, history, dead letters and notify-me requests to MongoDB;
//! `--queue` picks the broker. Whatever is not configured stays in memory,
//! and the start-up log says so.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use dronedelivery_actors::ports::MessageQueue;
use dronedelivery_actors::Backends;

use crate::adapters::batch::BatchConfig;
use crate::adapters::lanes::Lanes;
use crate::adapters::memory;
use crate::adapters::mongo::{self, MongoConfig};
use crate::adapters::redis::{self as redis_adapter, RedisConfig, StreamsConfig, TlsRoots};
use crate::adapters::servicebus::{ServiceBusConfig, ServiceBusQueue};
use crate::config::{QueueKind, ServeArgs};

/// Connected backends and whether anything is persisted.
pub struct Connected {
    /// The adapters.
    pub backends: Backends,
    /// True when every store and the queue are outside the process.
    pub persistent: bool,
}

/// Connects what the settings ask for.
pub async fn connect(args: &ServeArgs) -> anyhow::Result<Connected> {
    let mut b = memory::backends(
        Duration::from_secs(args.lock_duration_secs),
        args.queue_capacity,
    );
    let mut persistent = true;
    let tls_roots = args
        .redis_tls_ca_file
        .as_deref()
        .map(TlsRoots::from_pem_file)
        .transpose()
        .context("invalid --redis-tls-ca-file")?;

    match &args.redis_url {
        Some(url) => {
            let cfg = RedisConfig {
                url: url.expose().to_owned(),
                tls_roots: tls_roots.clone(),
                prefix: args.redis_prefix.clone(),
                retention: Duration::from_secs(args.retention_days * 24 * 3600),
            };
            let stores = redis_adapter::connect(&cfg)
                .await
                .context("could not connect to Redis")?;
            b.deliveries = stores.deliveries;
            b.drones = stores.drones;
            b.idempotency = stores.idempotency;
            b.ownership = stores.ownership;
            b.control = stores.control;
        }
        None => persistent = false,
    }

    match &args.mongodb_uri {
        Some(uri) => {
            let cfg = MongoConfig {
                uri: uri.expose().to_owned(),
                database: None,
            };
            let stores = mongo::connect_with(&cfg, store_batch(args))
                .await
                .context("could not connect to MongoDB")?;
            b.packages = stores.packages;
            b.dead_letters = stores.dead_letters;
            b.history = stores.history;
            b.notify = stores.notify;
        }
        None => persistent = false,
    }

    b.queue = match args.queue {
        QueueKind::Memory => {
            persistent = false;
            b.queue
        }
        QueueKind::RedisStreams => {
            let Some(url) = &args.redis_url else {
                bail!("--queue redis-streams needs --redis-url");
            };
            let mut cfg = StreamsConfig::new(url.expose(), args.redis_prefix.clone());
            cfg.tls_roots = tls_roots;
            cfg.stream.clone_from(&args.stream);
            cfg.group.clone_from(&args.consumer_group);
            cfg.lock_duration = Duration::from_secs(args.lock_duration_secs);
            // One stream per partition, so that an engine receives only the
            // messages of the partitions it holds.
            cfg.partitions = args.partitions;
            // Operators see consumer names in XINFO/XPENDING: make them say
            // which engine (host, fleet partition, process) holds a message.
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            let fleet = if args.fleet_id.is_empty() {
                "engine"
            } else {
                &args.fleet_id
            };
            cfg.consumer = format!("{host}-{fleet}-{}", std::process::id());
            // The expedited lane: the same streams under another name
            // (`{stream}-expedited`, one per partition), read first.
            let mut lane = cfg.clone();
            lane.stream = format!("{}-expedited", cfg.stream);
            let normal: Arc<dyn MessageQueue> = redis_adapter::RedisStreamsQueue::connect(cfg)
                .await
                .context("could not open the Redis stream")?;
            let expedited: Arc<dyn MessageQueue> = redis_adapter::RedisStreamsQueue::connect(lane)
                .await
                .context("could not open the expedited Redis stream")?;
            Lanes::new(normal, expedited)
        }
        QueueKind::Servicebus => {
            let cfg = servicebus_config(args)?;
            let lane = args.servicebus_expedited_queue.as_ref().map(|name| {
                let mut lane = cfg.clone();
                lane.queue.clone_from(name);
                lane
            });
            let batch = send_batch(args);
            let normal: Arc<dyn MessageQueue> = ServiceBusQueue::with_send_batch(cfg, batch)
                .context("invalid Service Bus settings")?;
            match lane {
                // Service Bus queues are the operator's to create: the
                // expedited lane is one more, named by its setting.
                Some(lane) => Lanes::new(
                    normal,
                    ServiceBusQueue::with_send_batch(lane, batch)
                        .context("invalid expedited Service Bus queue")?,
                ),
                None => normal,
            }
        }
    };
    Ok(Connected {
        backends: b,
        persistent,
    })
}

fn servicebus_config(args: &ServeArgs) -> anyhow::Result<ServiceBusConfig> {
    let mut cfg = match &args.servicebus_connection_string {
        Some(cs) => {
            ServiceBusConfig::from_connection_string(cs.expose(), args.servicebus_queue.as_deref())
                .context("invalid --servicebus-connection-string")?
        }
        None => {
            let (Some(namespace), Some(queue), Some(policy_name), Some(policy_key)) = (
                &args.servicebus_namespace,
                &args.servicebus_queue,
                &args.servicebus_policy_name,
                &args.servicebus_policy_key,
            ) else {
                bail!(
                    "--queue servicebus needs --servicebus-connection-string, or all of \
                     --servicebus-namespace, --servicebus-queue, --servicebus-policy-name and --servicebus-policy-key"
                );
            };
            ServiceBusConfig {
                namespace: namespace.clone(),
                queue: queue.clone(),
                policy_name: policy_name.clone(),
                policy_key: policy_key.expose().to_owned(),
                partitions: 1,
                endpoint: None,
            }
        }
    };
    // One queue per partition, so that an engine receives only the
    // messages of the partitions it holds.
    cfg.partitions = args.partitions;
    if args.servicebus_endpoint.is_some() {
        cfg.endpoint.clone_from(&args.servicebus_endpoint);
    }
    Ok(cfg)
}

/// How Service Bus sends are batched ([`ServeArgs::send_batch_max`]).
fn send_batch(args: &ServeArgs) -> BatchConfig {
    ServiceBusQueue::default_send_batch()
        .capped(usize::try_from(args.send_batch_max).unwrap_or(usize::MAX))
}

/// How store writes are batched ([`ServeArgs::store_batch_max`]).
fn store_batch(args: &ServeArgs) -> BatchConfig {
    BatchConfig::with_max(usize::try_from(args.store_batch_max).unwrap_or(usize::MAX))
}
