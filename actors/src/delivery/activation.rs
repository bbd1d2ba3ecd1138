//! Reaching a delivery's actor: activated on demand, at most one per id.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

use super::DeliveryActor;
use crate::context::Context;
use crate::protocol::DeliveryMsg;

/// Why a delivery actor could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The `deliveries` supervisor is not running (restarting or shutting down).
    #[error("the deliveries supervisor is not running")]
    NoSupervisor,
    /// The actor failed to start (its state could not be loaded).
    #[error("delivery actor failed to start: {0}")]
    Spawn(String),
}

/// The live actor of a delivery, activating it (loading its state from the
/// store) when there is none. The registry name guarantees at most one live
/// actor per delivery id in this process: of two concurrent activations one
/// gets `ActorAlreadyRegistered` and uses the other's actor, which queues
/// messages until its `pre_start` has finished.
pub async fn activate(
    ctx: &Arc<Context>,
    id: &str,
) -> Result<ActorRef<DeliveryMsg>, ActivationError> {
    let name = ctx.delivery_name(id);
    for _ in 0..3 {
        if let Some(actor) = ActorRef::<DeliveryMsg>::where_is(name.clone()) {
            return Ok(actor);
        }
        let supervisor: ActorCell = ractor::registry::where_is(ctx.name("deliveries"))
            .ok_or(ActivationError::NoSupervisor)?;
        match Actor::spawn_linked(
            Some(name.clone()),
            DeliveryActor,
            (Arc::clone(ctx), id.to_owned()),
            supervisor,
        )
        .await
        {
            Ok((actor, _)) => return Ok(actor),
            Err(SpawnErr::ActorAlreadyRegistered(_)) => continue,
            Err(e) => return Err(ActivationError::Spawn(e.to_string())),
        }
    }
    Err(ActivationError::Spawn(format!("could not activate {name}")))
}

/// Sends a one-way message to a delivery, activating it if needed. A
/// message that races with the actor stopping (passivation) is retried on a
/// fresh activation.
pub async fn tell(ctx: &Arc<Context>, id: &str, msg: DeliveryMsg) -> Result<(), ActivationError> {
    let mut msg = msg;
    for _ in 0..3 {
        let actor = activate(ctx, id).await?;
        match actor.cast(msg) {
            Ok(()) => return Ok(()),
            Err(ractor::MessagingErr::SendErr(back)) => msg = back,
            Err(e) => return Err(ActivationError::Spawn(e.to_string())),
        }
    }
    Err(ActivationError::Spawn(format!(
        "delivery {id} kept stopping"
    )))
}
