//! The handler of `GET /v1/windows/{source}`, as the telemetry server calls it: the bearer token
//! (`401` without it), the source from the path (`400`, `404`), its partitions and their owners
//! ([`Discovery`], on a blocking thread), the question to the poll loop ([`Asker`], `503` when it is
//! busy or does not answer within [`ANSWER_TIMEOUT`]), and the JSON answer.

use std::sync::Arc;
use std::time::Duration;

use super::answer::{source_of, PartitionAnswer, PathError, WindowsAnswer, PATH_PREFIX};
use super::discovery::Discovery;
use super::queries::{Asker, Query};
use crate::auth::bearer_matches;
use crate::config::cluster::Secret;
use crate::telemetry::Endpoint;

/// How long a handler waits for the poll loop (which answers between batches of records, or after
/// its idle poll of up to 10 ms; a checkpoint or a rebalance in progress delays it further).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP answer: status and JSON body.
pub type Answer = (u16, String);

/// What the endpoint needs.
pub struct LiveService {
    token: Secret,
    asker: Asker,
    discovery: Arc<Discovery>,
}

fn error(status: u16, message: &str) -> Answer {
    (status, serde_json::json!({ "error": message }).to_string())
}

impl LiveService {
    pub fn new(token: Secret, asker: Asker, discovery: Discovery) -> Self {
        LiveService {
            token,
            asker,
            discovery: Arc::new(discovery),
        }
    }

    /// Whether an `Authorization` header value carries the token.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        bearer_matches(header, self.token.expose().as_bytes())
    }

    /// The answer to an authorized `GET` of `path` (under [`super::answer::PATH_PREFIX`]).
    pub async fn windows(&self, path: &str) -> Answer {
        let source = match source_of(path) {
            Ok(source) => source,
            Err(e @ PathError::NotThisEndpoint) => return error(404, &e.to_string()),
            Err(e @ PathError::BadSource) => return error(400, &e.to_string()),
        };
        let discovery = Arc::clone(&self.discovery);
        let snapshot = match tokio::task::spawn_blocking(move || discovery.snapshot()).await {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(e)) => return error(503, &e.to_string()),
            Err(_) => return error(503, "describing the group failed"),
        };
        let partitions = snapshot.partitions_of(&source);
        if snapshot.partitioner == crate::partitioner::Partitioner::Unknown {
            return error(
                501,
                "the input partitioner is unknown (--input-partitioner): a source's partition cannot be found",
            );
        }
        if partitions.is_empty() {
            return error(503, "the input topics have no partitions (yet)");
        }
        let query = Query {
            source: source.clone(),
            partitions: partitions.clone(),
        };
        let reply = match self.asker.ask(query, ANSWER_TIMEOUT).await {
            Ok(reply) => reply,
            Err(e) => return error(503, &e.to_string()),
        };
        let answers = partitions
            .into_iter()
            .zip(reply.into_iter().chain(std::iter::repeat(None)))
            .map(|((topic, partition), state)| PartitionAnswer {
                owned: state.is_some(),
                owner: match state {
                    Some(_) => None,
                    None => snapshot.owners.get(&(topic.clone(), partition)).cloned(),
                },
                topic,
                partition,
                state,
            })
            .collect();
        match serde_json::to_string(&WindowsAnswer::new(source, answers)) {
            Ok(body) => (200, body),
            Err(e) => error(500, &e.to_string()),
        }
    }
}

impl Endpoint for LiveService {
    fn prefix(&self) -> &'static str {
        PATH_PREFIX
    }

    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        LiveService::authorized(self, authorization)
    }

    fn answer<'a>(
        &'a self,
        path: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)> + Send + 'a>> {
        Box::pin(self.windows(path))
    }
}
