//! Tenants, API keys and credits: every credit movement is a ledger entry, every batch ↔ tenant move is keyed
//! by batch id and idempotent.

use redis::AsyncCommands;

use super::{api_keys::NewKey, fields::tenant, Result, Store, StoreError};
use crate::{ids, model::now_ms};

/// A tenant's credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credits {
    pub balance: i64,
    pub frozen: i64,
    pub charged: i64,
    pub granted: i64,
}

/// The outcome of freezing a batch's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Reserved {
        balance: i64,
    },
    InsufficientCredits {
        balance: i64,
    },
    /// The batch id was settled or released before; it cannot be reserved again.
    Closed,
}

/// The outcome of settling a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Settled by this call.
    Settled { charged: u64, refunded: u64 },
    /// Settled before (a duplicate message): nothing moved.
    AlreadySettled { charged: u64, refunded: u64 },
    /// No reservation exists for the batch.
    NoReservation,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerEntry {
    pub id: String,
    pub object: &'static str,
    /// `grant`, `freeze`, `charge` or `refund`.
    pub kind: String,
    pub amount: i64,
    pub batch_id: Option<String>,
    /// The tenant's balance right after this entry.
    pub balance: i64,
    pub created_at: String,
}

impl LedgerEntry {
    fn from_stream(entry: redis::streams::StreamId) -> Self {
        let text = |k: &str| entry.get::<String>(k);
        Self {
            object: "ledger_entry",
            kind: text("kind").unwrap_or_default(),
            amount: entry.get("amount").unwrap_or(0),
            batch_id: text("batch_id"),
            balance: entry.get("balance").unwrap_or(0),
            created_at: crate::model::rfc3339(entry.get("at").unwrap_or(0)),
            id: entry.id,
        }
    }
}

/// The most credits one grant (or a new tenant) may hold.
pub const MAX_GRANT: u64 = 1_000_000_000_000;

/// The most credits a tenant may be granted in all: 2^53 - 1, so that every balance stays exact in the Lua
/// scripts, whose numbers are doubles.
const MAX_GRANTED_TOTAL: u64 = (1 << 53) - 1;

/// The answer to a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Granted {
        balance: i64,
    },
    NoTenant,
    /// Over [`MAX_GRANT`] at once, or past what a tenant may hold in all; nothing changed.
    TooMuch,
}

impl Store {
    /// Creates a tenant with `credits` (at most [`MAX_GRANT`]) and its first API key; returns its id and the key
    /// (shown once, stored hashed). The tenant's own state is one script; the tenant index and the key's lookup
    /// entry (other slots) follow, the key last, so a crash in between leaves no usable half-made tenant.
    pub async fn create_tenant(&self, name: &str, credits: u64) -> Result<(String, String)> {
        if credits > MAX_GRANT {
            return Err(StoreError::Corrupt(format!(
                "initial credits {credits} over the {MAX_GRANT} a grant may hold"
            )));
        }
        let tenant_id = ids::new_tenant_id();
        let key = NewKey::make(&tenant_id, None)?;
        let created: i64 = self
            .scripts
            .create_tenant
            .key(self.keys.tenant(&tenant_id))
            .key(self.keys.ledger(&tenant_id))
            .key(self.keys.api_key_records(&tenant_id))
            .arg(&tenant_id)
            .arg(name)
            .arg(now_ms())
            .arg(credits)
            .arg(&key.info.id)
            .arg(&key.record)
            .invoke_async(&mut self.connection())
            .await?;
        if created != 1 {
            return Err(StoreError::Corrupt(format!("tenant id {tenant_id} was taken")));
        }
        let _: () = self.connection().sadd(self.keys.tenants(), &tenant_id).await?;
        self.activate_api_key(&key).await?;
        Ok((tenant_id, key.api_key))
    }

    /// Grants credits (at most [`MAX_GRANT`] at once; a larger amount is refused as [`Grant::TooMuch`]).
    pub async fn grant(&self, tenant_id: &str, amount: u64, reason: &str) -> Result<Grant> {
        if !ids::is_tenant_id(tenant_id) {
            return Ok(Grant::NoTenant);
        }
        if amount > MAX_GRANT {
            return Ok(Grant::TooMuch);
        }
        let balance: i64 = self
            .scripts
            .grant
            .key(self.keys.tenant(tenant_id))
            .key(self.keys.ledger(tenant_id))
            .arg(amount)
            .arg(reason)
            .arg(now_ms())
            .arg(MAX_GRANTED_TOTAL)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(match balance {
            -1 => Grant::NoTenant,
            -2 => Grant::TooMuch,
            balance => Grant::Granted { balance },
        })
    }

    /// A tenant's credits (zero for an unknown tenant).
    pub async fn credits(&self, tenant_id: &str) -> Result<Credits> {
        let (balance, frozen, charged, granted): (Option<i64>, Option<i64>, Option<i64>, Option<i64>) = self
            .connection()
            .hmget(
                self.keys.tenant(tenant_id),
                &[tenant::BALANCE, tenant::FROZEN, tenant::CHARGED, tenant::GRANTED],
            )
            .await?;
        Ok(Credits {
            balance: balance.unwrap_or(0),
            frozen: frozen.unwrap_or(0),
            charged: charged.unwrap_or(0),
            granted: granted.unwrap_or(0),
        })
    }

    /// Freezes `amount` for `batch_id` (idempotent per batch id).
    pub async fn reserve(
        &self,
        tenant_id: &str,
        batch_id: &str,
        amount: u64,
        now: u64,
    ) -> Result<Reservation> {
        let (ok, balance): (i64, i64) = self
            .scripts
            .reserve
            .key(self.keys.tenant(tenant_id))
            .key(self.keys.reservations(tenant_id))
            .key(self.keys.ledger(tenant_id))
            .key(self.keys.tenant_batches(tenant_id))
            .key(self.keys.settlements(tenant_id))
            .key(self.keys.ledger_by_batch(tenant_id))
            .arg(batch_id)
            .arg(amount)
            .arg(now)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(match ok {
            1 => Reservation::Reserved { balance },
            0 => Reservation::InsufficientCredits { balance },
            _ => Reservation::Closed,
        })
    }

    /// Charges `charge` of the batch's reservation and refunds the rest, exactly once per batch.
    pub async fn settle(&self, tenant_id: &str, batch_id: &str, charge: u64) -> Result<Settlement> {
        let reply: Vec<i64> = self
            .scripts
            .settle
            .key(self.keys.tenant(tenant_id))
            .key(self.keys.reservations(tenant_id))
            .key(self.keys.ledger(tenant_id))
            .key(self.keys.settlements(tenant_id))
            .key(self.keys.ledger_by_batch(tenant_id))
            .arg(batch_id)
            .arg(charge)
            .arg(now_ms())
            .invoke_async(&mut self.connection())
            .await?;
        let amount = |i: usize| reply.get(i).and_then(|v| u64::try_from(*v).ok()).unwrap_or(0);
        match reply.first() {
            Some(1) => Ok(Settlement::Settled {
                charged: amount(1),
                refunded: amount(2),
            }),
            Some(0) => Ok(Settlement::AlreadySettled {
                charged: amount(1),
                refunded: amount(2),
            }),
            Some(-1) => Ok(Settlement::NoReservation),
            _ => Err(StoreError::Corrupt(format!("settle answered {reply:?}"))),
        }
    }

    /// A tenant's ledger, oldest first.
    pub async fn ledger(&self, tenant_id: &str) -> Result<Vec<LedgerEntry>> {
        let reply: redis::streams::StreamRangeReply =
            self.connection().xrange_all(self.keys.ledger(tenant_id)).await?;
        Ok(reply.ids.into_iter().map(LedgerEntry::from_stream).collect())
    }

    /// A page of a tenant's ledger, newest first, after the entry `after` (exclusive; a well-formed stream id),
    /// optionally of one batch.
    pub async fn ledger_page(
        &self,
        tenant_id: &str,
        batch_id: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<super::Page<LedgerEntry>> {
        if after == Some("0-0") {
            // Nothing comes before the first possible id (and Redis refuses the range).
            return Ok(super::Page::empty());
        }
        if let Some(batch_id) = batch_id {
            return self.batch_ledger_page(tenant_id, batch_id, limit, after).await;
        }
        let end = match after {
            Some(id) => format!("({id}"),
            None => "+".to_owned(),
        };
        // One more than the page, to know whether more follow.
        let chunk: redis::streams::StreamRangeReply = self
            .connection()
            .xrevrange_count(self.keys.ledger(tenant_id), &end, "-", limit + 1)
            .await?;
        let data = chunk.ids.into_iter().map(LedgerEntry::from_stream).collect();
        Ok(super::Page::of_overfetched(data, limit))
    }

    /// A page of one batch's ledger entries, found through the batch's index (a few entries, whatever the size of
    /// the tenant's ledger; a batch id the tenant never had costs one HGET).
    async fn batch_ledger_page(
        &self,
        tenant_id: &str,
        batch_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<super::Page<LedgerEntry>> {
        let mut conn = self.connection();
        let ids: Option<String> = conn.hget(self.keys.ledger_by_batch(tenant_id), batch_id).await?;
        let after = after.and_then(ids::parse_stream_id);
        // Newest first, after the cursor, one more than the page to know whether more follow.
        let ids: Vec<&str> = ids
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .rev()
            .filter(|id| after.is_none_or(|after| ids::parse_stream_id(id).is_some_and(|id| id < after)))
            .take(limit + 1)
            .collect();
        if ids.is_empty() {
            return Ok(super::Page::empty());
        }
        let key = self.keys.ledger(tenant_id);
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.xrange(&key, *id, *id);
        }
        let replies: Vec<redis::streams::StreamRangeReply> = pipe.query_async(&mut conn).await?;
        let data = replies
            .into_iter()
            .flat_map(|reply| reply.ids)
            .map(LedgerEntry::from_stream)
            .collect();
        Ok(super::Page::of_overfetched(data, limit))
    }
}
