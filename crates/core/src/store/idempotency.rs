//! Idempotent requests: Stripe's `Idempotency-Key` semantics, kept in Redis so that every gateway replica agrees.
//!
//! One record per tenant, endpoint (method and path) and key, under the tenant's hash tag
//! (`Keys::idempotency`), each step one script:
//! - begin (`idem_begin.lua`) creates the record `pending`, with a lease, an owner token and the id the request
//!   will create under (a batch id), or says what to answer instead: the stored answer (replay), a different
//!   request under the same key (mismatch), or another attempt that still holds the lease (in progress).
//! - finish (`idem_finish.lua`) stores the answer (status, headers, body) for the retries to replay.
//! - release (`idem_release.lua`) gives up the lease of a record whose answer is not kept (a 5xx): a retry of the
//!   same request runs it again at once, with the same batch id, so a reservation already made is reused.
//!
//! A pending record whose lease ran out belongs to an attempt that died (a crashed gateway): the next retry takes
//! it over and gets the id the dead attempt chose, so a retried create reuses its batch id and the reservation and
//! the batch, both idempotent per batch id, charge the tenant once. Only the attempt holding the record (its owner
//! token) may finish or release it; a slow attempt that was taken over changes nothing.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError};

/// The fingerprint of a request: sha256 (hex) over its method, path and raw body bytes. A retry must send the
/// same bytes to be recognised as the same request.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(method)
        .chain_update(b"\n")
        .chain_update(path)
        .chain_update(b"\n")
        .chain_update(body)
        .finalize();
    hex::encode(digest)
}

/// A request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    pub tenant: String,
    /// Method and path, e.g. `POST /v1/batches`: the scope of the key.
    pub endpoint: String,
    /// The client's key, as sent.
    pub key: String,
    /// See [`fingerprint`].
    pub fingerprint: String,
}

impl IdempotentRequest {
    pub fn new(tenant: &str, method: &str, path: &str, key: &str, body: &[u8]) -> Self {
        Self {
            tenant: tenant.to_owned(),
            endpoint: format!("{method} {path}"),
            key: key.to_owned(),
            fingerprint: fingerprint(method, path, body),
        }
    }
}

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    /// The headers worth replaying (content type, location), as (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The right of one attempt to run a request: it ends with [`Store::idempotency_finish`] or
/// [`Store::idempotency_release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyLease {
    /// This attempt's token; only the holder may finish or release the record.
    pub owner: String,
    /// The id to create under: the one given to the first attempt, kept in the record for take-overs.
    pub resource: String,
    /// Whether an earlier attempt's lease ran out and this one took the request over.
    pub taken_over: bool,
}

/// What to do with a request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// Run it, holding this lease.
    Run(IdempotencyLease),
    /// It was answered before: replay the answer.
    Replay(StoredAnswer),
    /// The key was used for a different request.
    Mismatch,
    /// Another attempt is running it and its lease has not run out.
    InProgress,
}

impl Store {
    /// Starts `request`, or says what to answer instead. A new record keeps `resource` (the id a create will use;
    /// may be empty), holds a lease of `lease_ms` from `now`, and expires after `ttl_ms`.
    pub async fn idempotency_begin(
        &self,
        request: &IdempotentRequest,
        resource: &str,
        now: u64,
        lease_ms: u64,
        ttl_ms: u64,
    ) -> Result<IdempotencyBegin> {
        let owner = new_owner();
        let reply: Vec<Vec<u8>> = self
            .scripts
            .idem_begin
            .key(self.record_key(request))
            .arg(&request.fingerprint)
            .arg(now)
            .arg(lease_ms)
            .arg(ttl_ms)
            .arg(&owner)
            .arg(resource)
            .invoke_async(&mut self.connection())
            .await?;
        parse_begin(reply, owner)
    }

    /// Stores the answer of the attempt holding `lease`, for `ttl_ms`; false when it no longer holds the record.
    pub async fn idempotency_finish(
        &self,
        request: &IdempotentRequest,
        lease: &IdempotencyLease,
        answer: &StoredAnswer,
        ttl_ms: u64,
    ) -> Result<bool> {
        let headers = serde_json::to_string(&answer.headers)
            .map_err(|e| StoreError::Corrupt(format!("idempotent answer headers: {e}")))?;
        let stored: i64 = self
            .scripts
            .idem_finish
            .key(self.record_key(request))
            .arg(&lease.owner)
            .arg(answer.status)
            .arg(answer.body.as_slice())
            .arg(headers)
            .arg(ttl_ms)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(stored == 1)
    }

    /// Forgets the request of the attempt holding `lease` (its answer is not kept); false when it no longer holds
    /// the record.
    pub async fn idempotency_release(
        &self,
        request: &IdempotentRequest,
        lease: &IdempotencyLease,
    ) -> Result<bool> {
        let deleted: i64 = self
            .scripts
            .idem_release
            .key(self.record_key(request))
            .arg(&lease.owner)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(deleted == 1)
    }

    fn record_key(&self, request: &IdempotentRequest) -> String {
        self.keys
            .idempotency(&request.tenant, &request.endpoint, &request.key)
    }
}

fn new_owner() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn parse_begin(reply: Vec<Vec<u8>>, owner: String) -> Result<IdempotencyBegin> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("idem_begin answered {what}"));
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| corrupt("non-UTF-8 text"));
    let mut parts = reply.into_iter();
    let kind = text(parts.next().ok_or_else(|| corrupt("nothing"))?)?;
    let mut next = || parts.next().ok_or_else(|| corrupt(&format!("a short `{kind}`")));
    Ok(match kind.as_str() {
        "new" | "takeover" => IdempotencyBegin::Run(IdempotencyLease {
            owner,
            resource: text(next()?)?,
            taken_over: kind == "takeover",
        }),
        "replay" => {
            let status = text(next()?)?.parse().map_err(|_| corrupt("a bad status"))?;
            let body = next()?;
            let headers = serde_json::from_slice(&next()?).map_err(|_| corrupt("bad headers"))?;
            IdempotencyBegin::Replay(StoredAnswer {
                status,
                headers,
                body,
            })
        }
        "mismatch" => IdempotencyBegin::Mismatch,
        "in_progress" => IdempotencyBegin::InProgress,
        other => return Err(corrupt(&format!("`{other}`"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_method_path_and_the_exact_body() {
        let base = fingerprint("POST", "/v1/batches", br#"{"tasks":[]}"#);
        assert_eq!(base.len(), 64);
        assert_eq!(base, fingerprint("POST", "/v1/batches", br#"{"tasks":[]}"#));
        assert_ne!(base, fingerprint("POST", "/v1/batches", br#"{"tasks": []}"#));
        assert_ne!(base, fingerprint("PUT", "/v1/batches", br#"{"tasks":[]}"#));
        assert_ne!(base, fingerprint("POST", "/v1/batches/x", br#"{"tasks":[]}"#));
        // The separators keep the parts apart.
        assert_ne!(fingerprint("POST", "/a", b"b"), fingerprint("POST", "/ab", b""));
    }

    #[test]
    fn requests_are_scoped_by_method_and_path() {
        let request = IdempotentRequest::new("ten_1", "POST", "/v1/tasks/t/cancel", "k", b"");
        assert_eq!(request.endpoint, "POST /v1/tasks/t/cancel");
        assert_eq!(
            request.fingerprint,
            fingerprint("POST", "/v1/tasks/t/cancel", b"")
        );
    }

    fn reply(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn begin_replies_are_parsed() {
        let owner = || "o".to_owned();
        assert_eq!(
            parse_begin(reply(&["takeover", "bat_1"]), owner()).ok(),
            Some(IdempotencyBegin::Run(IdempotencyLease {
                owner: owner(),
                resource: "bat_1".into(),
                taken_over: true,
            }))
        );
        assert_eq!(
            parse_begin(
                reply(&["replay", "202", "{}", r#"[["location","/v1/batches/b"]]"#]),
                owner()
            )
            .ok(),
            Some(IdempotencyBegin::Replay(StoredAnswer {
                status: 202,
                headers: vec![("location".into(), "/v1/batches/b".into())],
                body: b"{}".to_vec(),
            }))
        );
        assert_eq!(
            parse_begin(reply(&["mismatch"]), owner()).ok(),
            Some(IdempotencyBegin::Mismatch)
        );
        assert!(parse_begin(reply(&["replay", "202"]), owner()).is_err());
        assert!(parse_begin(reply(&["what"]), owner()).is_err());
        assert!(parse_begin(Vec::new(), owner()).is_err());
    }
}
