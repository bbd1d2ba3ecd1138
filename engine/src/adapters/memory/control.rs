//! The control plane in one process: cards in a map, requests through
//! channels. Engines sharing these backends (tests, benchmarks) reach each
//! other exactly as they would through Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dronedelivery_actors::cluster::{
    CallError, ControlReply, ControlRequest, EngineCard, IncomingRequest,
};
use dronedelivery_actors::ports::{ControlPlane, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

/// Cards and request channels of the engines of one process.
#[derive(Debug, Default)]
pub struct MemoryControlPlane {
    state: Mutex<State>,
    /// Each serving engine's inbox, taken by its serving loop.
    inboxes:
        Mutex<HashMap<String, Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<IncomingRequest>>>>>,
}

#[derive(Debug, Default)]
struct State {
    cards: BTreeMap<String, (EngineCard, Instant)>,
    senders: HashMap<String, mpsc::UnboundedSender<IncomingRequest>>,
    waiting: HashMap<String, oneshot::Sender<ControlReply>>,
}

impl MemoryControlPlane {
    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, engine: &str) -> bool {
        self.state()
            .cards
            .get(engine)
            .is_some_and(|(_, until)| *until > Instant::now())
    }
}

#[async_trait]
impl ControlPlane for MemoryControlPlane {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn register(&self, card: &EngineCard, ttl: Duration) -> StoreResult<()> {
        self.state()
            .cards
            .insert(card.id.clone(), (card.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn deregister(&self, engine: &str) -> StoreResult<()> {
        let mut state = self.state();
        state.cards.remove(engine);
        state.senders.remove(engine);
        Ok(())
    }

    async fn members(&self) -> StoreResult<Vec<EngineCard>> {
        let now = Instant::now();
        let mut state = self.state();
        state.cards.retain(|_, (_, until)| *until > now);
        Ok(state.cards.values().map(|(c, _)| c.clone()).collect())
    }

    async fn call(
        &self,
        engine: &str,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<ControlReply, CallError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state();
            let incoming = IncomingRequest {
                id: id.clone(),
                request: request.clone(),
            };
            let delivered = state
                .senders
                .get(engine)
                .is_some_and(|s| s.send(incoming).is_ok());
            if !delivered {
                drop(state);
                return Err(if self.live(engine) {
                    CallError::NotListening(engine.to_owned())
                } else {
                    CallError::UnknownEngine(engine.to_owned())
                });
            }
            state.waiting.insert(id.clone(), tx);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => {
                self.state().waiting.remove(&id);
                Err(CallError::Timeout {
                    engine: engine.to_owned(),
                    timeout,
                })
            }
        }
    }

    async fn next_request(&self, engine: &str) -> StoreResult<IncomingRequest> {
        let inbox = {
            let mut inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
            let inbox = inboxes.entry(engine.to_owned()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                self.state().senders.insert(engine.to_owned(), tx);
                Arc::new(tokio::sync::Mutex::new(rx))
            });
            Arc::clone(inbox)
        };
        let mut rx = inbox.lock().await;
        rx.recv()
            .await
            .ok_or_else(|| StoreError::Unavailable("the control plane is closed".into()))
    }

    async fn reply(&self, to: &IncomingRequest, reply: &ControlReply) -> StoreResult<()> {
        if let Some(waiting) = self.state().waiting.remove(&to.id) {
            // A caller that gave up has dropped its end: nothing to tell.
            let _ = waiting.send(reply.clone());
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_control_plane_contract() {
        crate::adapters::control_contract::run_all(Arc::new(MemoryControlPlane::default())).await;
    }
}
