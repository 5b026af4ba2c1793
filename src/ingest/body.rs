//! Reading an HTTP request body into memory under the gateway's budgets: memory is reserved as bytes
//! arrive (never the declared `Content-Length` up front, so idle requests hold nothing), from the
//! shared budget ([`super::settings::Limits::max_buffered_body_bytes`]) and from the client address's
//! own share ([`super::settings::Limits::max_buffered_body_bytes_per_client`]), and the whole body
//! must arrive within the read timeout. The reservation ([`BodyBudget`]) is held until the answer is
//! built, and moves from the body to what it is parsed into and then to their encoding
//! ([`BodyBudget::resize`]): each form is counted, not their sum, so a request's memory is at most
//! twice its reservation (two forms coexist while one is made from the other).
//!
//! **No hold-and-wait.** A request that holds nothing may wait (up to the queue wait) for room; one
//! that already holds some may only take what is free at once, except for one request at a time
//! (the gateway's `grow_turn`), which may wait. Requests that each hold part of the budget therefore
//! never all wait for each other: the others give up (`503`) and free what they held. A request whose
//! reservation would exceed the whole budget can never fit and is refused for good (`413`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::gateway::Gateway;

/// Body bytes held per client address, each at most `limit`.
#[derive(Debug)]
pub struct ClientBudgets {
    held: Mutex<HashMap<IpAddr, usize>>,
    limit: usize,
}

impl ClientBudgets {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ClientBudgets {
            held: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// Takes `bytes` more of `client`'s share; `false` (and nothing taken) if it would go over.
    fn take(&self, client: IpAddr, bytes: usize) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        let now = held.entry(client).or_insert(0);
        if *now + bytes > self.limit {
            if *now == 0 {
                held.remove(&client);
            }
            return false;
        }
        *now += bytes;
        true
    }

    fn give_back(&self, client: IpAddr, bytes: usize) {
        if let Ok(mut held) = self.held.lock() {
            if let Some(now) = held.get_mut(&client) {
                *now = now.saturating_sub(bytes);
                if *now == 0 {
                    held.remove(&client);
                }
            }
        }
    }
}

/// Memory one request holds: permits of the shared body budget and bytes of its client's share,
/// both given back on drop.
pub struct BodyBudget {
    shared: Option<OwnedSemaphorePermit>,
    clients: Arc<ClientBudgets>,
    client: IpAddr,
    bytes: usize,
}

/// Why room for more of a request could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// The client address already holds its share.
    Client,
    /// The shared budget stayed full for the whole queue wait.
    Shared,
    /// The request needs more than the whole budget: it can never fit.
    Never,
}

impl BodyBudget {
    pub fn new(gateway: &Gateway, client: IpAddr) -> Self {
        BodyBudget {
            shared: None,
            clients: Arc::clone(&gateway.clients),
            client,
            bytes: 0,
        }
    }

    /// Bytes of the shared budget this request holds.
    fn held(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Makes the shared reservation exactly `bytes`: gives back what is beyond, or grows by the
    /// difference as [`BodyBudget::grow_shared`] does.
    pub async fn resize(
        &mut self,
        gateway: &Gateway,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), NoRoom> {
        let held = self.held();
        if bytes <= held {
            if let Some(permit) = self.shared.as_mut() {
                drop(permit.split(held - bytes));
            }
            return Ok(());
        }
        self.grow_shared(gateway, bytes - held, deadline).await
    }

    /// Reserves `bytes` more of body, from the client's share and the shared budget (see
    /// [`BodyBudget::grow_shared`]).
    pub async fn grow(
        &mut self,
        gateway: &Gateway,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), NoRoom> {
        if self.bytes.saturating_add(bytes) > self.clients.limit {
            return Err(NoRoom::Never);
        }
        if !self.clients.take(self.client, bytes) {
            return Err(NoRoom::Client);
        }
        self.bytes += bytes;
        self.grow_shared(gateway, bytes, deadline).await
    }

    /// Reserves `bytes` more from the shared budget: `Never` if the reservation would exceed the
    /// whole budget. Holding nothing, it waits for room until `deadline`; holding some, it takes
    /// only what is free now, unless it gets the one turn to wait while holding.
    async fn grow_shared(
        &mut self,
        gateway: &Gateway,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), NoRoom> {
        if bytes == 0 {
            return Ok(());
        }
        let held = self.held();
        if held.saturating_add(bytes) > gateway.limits.max_buffered_body_bytes {
            return Err(NoRoom::Never);
        }
        let permits = u32::try_from(bytes).map_err(|_| NoRoom::Never)?;
        let bodies = Arc::clone(&gateway.bodies);
        let permit = match Arc::clone(&bodies).try_acquire_many_owned(permits) {
            Ok(permit) => permit,
            Err(_) => {
                let _turn = if held == 0 {
                    None
                } else {
                    Some(gateway.grow_turn.try_lock().map_err(|_| NoRoom::Shared)?)
                };
                let acquired =
                    tokio::time::timeout_at(deadline, bodies.acquire_many_owned(permits)).await;
                let Ok(Ok(permit)) = acquired else {
                    return Err(NoRoom::Shared);
                };
                permit
            }
        };
        match &mut self.shared {
            Some(held) => held.merge(permit),
            None => self.shared = Some(permit),
        }
        Ok(())
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        self.clients.give_back(self.client, self.bytes);
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyReadError {
    TooLarge,
    Timeout,
    NoRoom(NoRoom),
    Read(hyper::Error),
}

/// Reads `body` (at most `gateway.limits.max_body_bytes`, all of it by `deadline`), reserving
/// memory in `budget` for each piece before keeping it.
pub async fn read(
    mut body: Incoming,
    gateway: &Gateway,
    budget: &mut BodyBudget,
    deadline: Instant,
) -> Result<Bytes, BodyReadError> {
    let limits = &gateway.limits;
    let mut collected: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyReadError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(BodyReadError::Read(error)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if collected.len() + data.len() > limits.max_body_bytes {
            return Err(BodyReadError::TooLarge);
        }
        let wait_until = (Instant::now() + limits.queue_wait).min(deadline);
        budget
            .grow(gateway, data.len(), wait_until)
            .await
            .map_err(BodyReadError::NoRoom)?;
        collected.extend_from_slice(&data);
    }
    Ok(Bytes::from(collected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share_and_gives_it_back() {
        let budgets = ClientBudgets::new(100);
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(budgets.take(a, 60));
        assert!(!budgets.take(a, 41), "over the share");
        assert!(budgets.take(a, 40), "exactly the share");
        assert!(budgets.take(b, 100), "another client has its own share");
        budgets.give_back(a, 100);
        assert!(budgets.take(a, 100));
        budgets.give_back(a, 100);
        budgets.give_back(b, 100);
        assert!(
            budgets.held.lock().expect("lock").is_empty(),
            "no entry left behind"
        );
        assert!(!budgets.take(a, 101));
        assert!(budgets.held.lock().expect("lock").is_empty());
    }
}
