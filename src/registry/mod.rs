//! The Schema Registry client, I/O at the edge of `avro-confluent`: fetch a writer schema by id
//! (`GET /schemas/ids/{id}`), register a schema under a subject (`POST /subjects/{s}/versions`).
//! Every request is retried with backoff for the settings' patience; what each answer means is
//! decided by the pure [`classify`]: a missing id is an answer (its records go to the DLQ), while
//! an unreachable, failing or refusing registry is an error that stops the command — records are
//! never sent to the DLQ because the registry is down. [`EventInput`] is the processor's decoder
//! with the fetching added.

use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use crate::config::cluster::Secret;
use crate::config::registry::RegistrySettings;
use crate::telemetry::metric;

mod input;

pub use input::{learn_fetched, EventInput, InputError};

/// Largest registry answer read (a schema is a few KiB).
const MAX_ANSWER_BYTES: u64 = 4 << 20;
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The waits before asking again for an id the registry does not know (a follower may not have
/// caught up with the leader yet): 3 attempts over 2 s, then the id is unknown.
const UNKNOWN_WAITS: &[Duration] = &[Duration::from_millis(500), Duration::from_millis(1500)];
/// What follows a 404 that is not the registry's "no such schema" (error code 40403).
const WRONG_404: &str = "(not a Schema Registry's \"schema not found\": check \
    --schema-registry-url and its path)";

/// Why a registry request failed (the command stops; a restart resumes from the last checkpoint).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {what} still failing after {}: {cause}", humantime::format_duration(*.waited))]
    Unavailable {
        url: String,
        what: String,
        waited: Duration,
        cause: String,
    },
    #[error("schema registry {url}: {what} refused: {cause}")]
    Refused {
        url: String,
        what: String,
        cause: String,
    },
    #[error("cannot set up the schema registry client: {0}")]
    Setup(String),
}

/// What one answer (or its absence) means.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// 2xx: the body.
    Answer(String),
    /// 404 with Confluent's `error_code` 40403: the registry does not know the schema.
    NotFound(String),
    /// Worth another try: no connection, timeout, 408, 429, 5xx.
    Retry(String),
    /// Not worth another try: 401/403 (credentials), other 4xx (a bad request or schema).
    Fail(String),
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// No connection, a timeout, a name not resolved (yet): may pass.
    Transient(String),
    /// A certificate not trusted, a bad URL: the same next time.
    Permanent(String),
}

/// The meaning of a response `(status, body)` or a transport error. Pure.
pub fn classify(outcome: Result<(u16, String), Transport>) -> Attempt {
    let (status, body) = match outcome {
        Ok(answer) => answer,
        Err(Transport::Transient(cause)) => return Attempt::Retry(cause),
        Err(Transport::Permanent(cause)) => return Attempt::Fail(cause),
    };
    let said = || format!("HTTP {status}: {}", one_line(&body));
    match status {
        200..=299 => Attempt::Answer(body),
        404 if unknown_schema(&body) => Attempt::NotFound(said()),
        404 => Attempt::Fail(format!("{} {WRONG_404}", said())),
        408 | 429 | 500..=599 => Attempt::Retry(said()),
        401 | 403 => Attempt::Fail(format!("{} (check the registry user and password)", said())),
        _ => Attempt::Fail(said()),
    }
}

/// Whether a 404 body is the registry's "schema not found" (`{"error_code":40403,…}`).
fn unknown_schema(body: &str) -> bool {
    #[derive(Deserialize)]
    struct ErrorAnswer {
        error_code: Option<serde_json::Value>,
    }
    serde_json::from_str::<ErrorAnswer>(body)
        .is_ok_and(|answer| answer.error_code.and_then(|code| code.as_i64()) == Some(40403))
}

/// The wait before retry `attempt` (0-based): 100 ms doubling, at most 5 s. Pure.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

fn one_line(text: &str) -> String {
    let line: String = text.chars().take(200).collect();
    line.replace(['\n', '\r'], " ")
}

/// A writer schema fetched by id: its text, or why the registry has none (a DLQ reason).
pub type Fetched = Result<String, NoSchema>;

/// Why the registry gave no Avro schema for an id.
#[derive(Debug, Clone, PartialEq)]
pub enum NoSchema {
    /// It does not know the id (yet: asked again after a while).
    Unknown(String),
    /// The schema is of another type; ids are immutable, so this is final.
    NotAvro(String),
}

/// A blocking registry client.
pub struct RegistryClient {
    agent: ureq::Agent,
    url: String,
    authorization: Option<Secret>,
    patience: Duration,
    unknown_waits: &'static [Duration],
}

impl RegistryClient {
    pub fn new(settings: &RegistrySettings) -> Result<RegistryClient, RegistryError> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots = match &settings.ca_location {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    RegistryError::Setup(format!("cannot read {}: {e}", path.display()))
                })?;
                let certs = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<Certificate<'static>>, _>>()
                    .map_err(|e| RegistryError::Setup(format!("{}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(RegistryError::Setup(format!(
                        "{} holds no PEM certificate",
                        path.display()
                    )));
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .build()
            .into();
        if settings.sends_password_in_clear() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(registry = %settings.url, "schema registry basic auth over plain http: the password is readable on the wire; use https://");
            });
        }
        let authorization = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some(Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()))
            ))),
            _ => None,
        };
        Ok(RegistryClient {
            agent,
            url: settings.url.clone(),
            authorization,
            patience: settings.patience,
            unknown_waits: UNKNOWN_WAITS,
        })
    }

    /// The writer schema of `id`: `Ok(Err(reason))` when the registry has none, or it is not Avro.
    pub fn schema_by_id(&self, id: u32) -> Result<Fetched, RegistryError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct SchemaAnswer {
            schema: String,
            schema_type: Option<String>,
        }
        let what = format!("GET /schemas/ids/{id}");
        let body = match self.with_patience(&what, || self.get(&format!("/schemas/ids/{id}")))? {
            Ok(body) => body,
            Err(not_found) => {
                return Ok(Err(NoSchema::Unknown(format!(
                    "the registry has no such schema ({not_found})"
                ))))
            }
        };
        let answer: SchemaAnswer =
            serde_json::from_str(&body).map_err(|e| self.refused(&what, e.to_string()))?;
        Ok(match answer.schema_type.as_deref() {
            None | Some("AVRO") => Ok(answer.schema),
            Some(other) => Err(NoSchema::NotAvro(format!(
                "it is a {other} schema, not Avro"
            ))),
        })
    }

    /// Registers `schema` under `subject` (or finds it registered): its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        #[derive(Deserialize)]
        struct IdAnswer {
            id: u32,
        }
        let what = format!("POST /subjects/{subject}/versions");
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!("/subjects/{}/versions", percent_path(subject));
        let answer = self
            .with_patience(&what, || self.post(&path, &body))?
            .map_err(|not_found| self.refused(&what, not_found))?;
        serde_json::from_str::<IdAnswer>(&answer)
            .map(|a| a.id)
            .map_err(|e| self.refused(&what, e.to_string()))
    }

    fn refused(&self, what: &str, cause: String) -> RegistryError {
        RegistryError::Refused {
            url: self.url.clone(),
            what: what.to_owned(),
            cause,
        }
    }

    /// Runs `request` until it answers, is refused, or the patience is spent.
    fn with_patience(
        &self,
        what: &str,
        request: impl Fn() -> Result<(u16, String), Transport>,
    ) -> Result<Result<String, String>, RegistryError> {
        let started = Instant::now();
        let mut unknown = 0;
        for attempt in 0.. {
            let outcome = |label: &'static str| {
                metrics::counter!(metric::SCHEMA_REGISTRY_REQUESTS, "outcome" => label).increment(1)
            };
            match classify(request()) {
                Attempt::Answer(body) => {
                    outcome("ok");
                    return Ok(Ok(body));
                }
                Attempt::NotFound(reason) => {
                    let Some(wait) = self.unknown_waits.get(unknown) else {
                        outcome("not_found");
                        return Ok(Err(reason));
                    };
                    unknown += 1;
                    outcome("retried");
                    std::thread::sleep(*wait);
                }
                Attempt::Fail(cause) => {
                    outcome("failed");
                    return Err(self.refused(what, cause));
                }
                Attempt::Retry(cause) => {
                    let wait = backoff(attempt);
                    if started.elapsed() + wait > self.patience {
                        outcome("failed");
                        return Err(RegistryError::Unavailable {
                            url: self.url.clone(),
                            what: what.to_owned(),
                            waited: Duration::from_millis(started.elapsed().as_millis() as u64),
                            cause,
                        });
                    }
                    outcome("retried");
                    tracing::warn!(registry = %self.url, request = what, %cause, retry_in = ?wait, "schema registry request failed; retrying");
                    std::thread::sleep(wait);
                }
            }
        }
        unreachable!("the loop returns")
    }

    fn get(&self, path: &str) -> Result<(u16, String), Transport> {
        let mut request = self.agent.get(format!("{}{path}", self.url));
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.expose());
        }
        read(
            request
                .header("Accept", "application/vnd.schemaregistry.v1+json")
                .call(),
        )
    }

    fn post(&self, path: &str, body: &str) -> Result<(u16, String), Transport> {
        let mut request = self.agent.post(format!("{}{path}", self.url));
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.expose());
        }
        read(
            request
                .header("Accept", "application/vnd.schemaregistry.v1+json")
                .content_type("application/vnd.schemaregistry.v1+json")
                .send(body),
        )
    }
}

fn read(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), Transport> {
    let mut response = response.map_err(|e| match e {
        ureq::Error::Tls(_)
        | ureq::Error::NativeTls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::BadUri(_)
        | ureq::Error::TlsRequired => Transport::Permanent(format!("TLS or URL: {e}")),
        other => Transport::Transient(other.to_string()),
    })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| Transport::Transient(e.to_string()))?;
    Ok((status, body))
}

/// `text` as one URL path segment (subjects are usually `[A-Za-z0-9._-]`).
fn percent_path(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_id_is_an_answer_the_rest_retries_or_stops() {
        let cases = [
            (Ok((200, "{}".to_owned())), Attempt::Answer("{}".into())),
            (
                Ok((
                    404,
                    r#"{"error_code":40403,"message":"Schema not found"}"#.to_owned(),
                )),
                Attempt::NotFound(
                    r#"HTTP 404: {"error_code":40403,"message":"Schema not found"}"#.into(),
                ),
            ),
            // Any other 404 is not the registry saying "no such id": a wrong path, an ingress.
            (
                Ok((404, "<html><body>Not Found</body></html>".to_owned())),
                Attempt::Fail(format!(
                    "HTTP 404: <html><body>Not Found</body></html> {WRONG_404}"
                )),
            ),
            (
                Ok((
                    404,
                    r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.to_owned(),
                )),
                Attempt::Fail(format!(
                    r#"HTTP 404: {{"error_code":404,"message":"HTTP 404 Not Found"}} {WRONG_404}"#
                )),
            ),
            (
                Ok((404, r#"{"error_code":"40403"}"#.to_owned())),
                Attempt::Fail(format!(r#"HTTP 404: {{"error_code":"40403"}} {WRONG_404}"#)),
            ),
            (
                Err(Transport::Transient("connection refused".to_owned())),
                Attempt::Retry("connection refused".into()),
            ),
            (
                Err(Transport::Permanent("certificate not trusted".to_owned())),
                Attempt::Fail("certificate not trusted".into()),
            ),
            (
                Ok((503, "down".to_owned())),
                Attempt::Retry("HTTP 503: down".into()),
            ),
            (
                Ok((500, "x".to_owned())),
                Attempt::Retry("HTTP 500: x".into()),
            ),
            (
                Ok((429, "slow".to_owned())),
                Attempt::Retry("HTTP 429: slow".into()),
            ),
            (
                Ok((408, "t".to_owned())),
                Attempt::Retry("HTTP 408: t".into()),
            ),
            (
                Ok((401, "no".to_owned())),
                Attempt::Fail("HTTP 401: no (check the registry user and password)".into()),
            ),
            (
                Ok((409, "incompatible".to_owned())),
                Attempt::Fail("HTTP 409: incompatible".into()),
            ),
            (
                Ok((422, "bad\nschema".to_owned())),
                Attempt::Fail("HTTP 422: bad schema".into()),
            ),
        ];
        for (outcome, expected) in cases {
            assert_eq!(classify(outcome.clone()), expected, "{outcome:?}");
        }
    }

    fn client() -> RegistryClient {
        let mut client = RegistryClient::new(&RegistrySettings {
            url: "http://127.0.0.1:1".into(),
            username: None,
            password: None,
            ca_location: None,
            subject_strategy: crate::config::registry::SubjectStrategy::Topic,
            patience: Duration::from_secs(5),
        })
        .unwrap();
        const WAITS: &[Duration] = &[Duration::from_millis(1), Duration::from_millis(2)];
        client.unknown_waits = WAITS;
        client
    }

    /// A fake registry answering `answers` in turn (the last one again once they run out).
    fn answering(
        answers: Vec<(u16, &'static str)>,
    ) -> impl Fn() -> Result<(u16, String), Transport> {
        let next = std::cell::Cell::new(0);
        move || {
            let i = next.get();
            next.set(i + 1);
            let (status, body) = answers[i.min(answers.len() - 1)];
            Ok((status, body.to_owned()))
        }
    }

    const UNKNOWN: &str = r#"{"error_code":40403,"message":"Schema 7 not found"}"#;

    #[test]
    fn an_unknown_id_is_asked_again_briefly_before_it_is_an_answer() {
        let client = client();
        // A follower that had not caught up yet: the schema, not a DLQ reason.
        let fetched = client.with_patience("GET", answering(vec![(404, UNKNOWN), (200, "{}")]));
        assert_eq!(fetched.unwrap(), Ok("{}".to_owned()));
        let fetched = client.with_patience(
            "GET",
            answering(vec![(404, UNKNOWN), (404, UNKNOWN), (200, "{}")]),
        );
        assert_eq!(fetched.unwrap(), Ok("{}".to_owned()));
        // Still unknown after the attempts: the answer.
        let fetched = client.with_patience("GET", answering(vec![(404, UNKNOWN)]));
        assert!(matches!(fetched, Ok(Err(reason)) if reason.contains("40403")));
    }

    #[test]
    fn a_404_that_is_not_an_unknown_id_stops_the_command() {
        let client = client();
        for body in ["<html>Not Found</html>", r#"{"error_code":40401}"#, ""] {
            match client.with_patience("GET /schemas/ids/7", answering(vec![(404, body)])) {
                Err(RegistryError::Refused { cause, .. }) => {
                    assert!(cause.contains("schema-registry-url"), "{body}: {cause}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let waits: Vec<u64> = (0..9).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn subjects_are_one_path_segment() {
        assert_eq!(percent_path("averages-value"), "averages-value");
        assert_eq!(
            percent_path("streamagg.TrafficAverage"),
            "streamagg.TrafficAverage"
        );
        assert_eq!(percent_path("a/b c"), "a%2Fb%20c");
    }
}
