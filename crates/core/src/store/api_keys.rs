//! A tenant's API keys: several at once, each with an id, an optional expiry and its last use; revoking one takes
//! effect on every gateway at the next request (gateways look keys up in Redis on every request).
//!
//! | key | type | what |
//! |---|---|---|
//! | `<prefix>:apikeys` | hash | sha256(key) → `<tenant id> <key id> <expires at ms, 0 = never>` (a bare tenant id: a key from before key ids, named `key_legacy`) |
//! | `<prefix>:{t:<id>}:keys` | hash | key id → `{"hash", "created_at", "expires_at"}` (JSON) |
//! | `<prefix>:{t:<id>}:keys_used` | hash | key id → when it was last used (ms; written by `tenant_rate.lua`) |

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError};
use crate::{ids, model::now_ms};

/// The id given to a key made before keys had ids.
pub const LEGACY_KEY_ID: &str = "key_legacy";

/// What is known about one API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub last_used_at: Option<u64>,
}

/// An authenticated key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub tenant_id: String,
    pub key_id: String,
}

#[derive(Serialize, Deserialize)]
struct KeyRecord {
    hash: String,
    created_at: u64,
    expires_at: Option<u64>,
}

pub(super) fn hash_key(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

/// A new key for `tenant_id`, ready to store: its info, the key itself, its record (JSON) and its lookup entry.
pub(super) struct NewKey {
    pub info: ApiKeyInfo,
    pub api_key: String,
    pub hash: String,
    pub record: String,
    pub owner: String,
}

impl NewKey {
    pub(super) fn make(tenant_id: &str, expires_at: Option<u64>) -> Result<Self> {
        let (key_id, api_key) = (ids::new_key_id(), ids::new_api_key());
        let hash = hash_key(&api_key);
        let created_at = now_ms();
        let record = serde_json::to_string(&KeyRecord {
            hash: hash.clone(),
            created_at,
            expires_at,
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Self {
            owner: format!("{tenant_id} {key_id} {}", expires_at.unwrap_or(0)),
            info: ApiKeyInfo {
                id: key_id,
                created_at,
                expires_at,
                last_used_at: None,
            },
            api_key,
            hash,
            record,
        })
    }
}

impl Store {
    /// Makes `key` work: its lookup entry is written last, once everything it points to exists.
    pub(super) async fn activate_api_key(&self, key: &NewKey) -> Result<()> {
        let _: () = self
            .connection()
            .hset(self.keys.api_keys(), &key.hash, &key.owner)
            .await?;
        Ok(())
    }

    /// Issues a new key for `tenant_id` (valid until `expires_at` ms, if given); returns its record and the key,
    /// which is shown once and stored only hashed. `None` when the tenant does not exist.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        expires_at: Option<u64>,
    ) -> Result<Option<(ApiKeyInfo, String)>> {
        if !ids::is_tenant_id(tenant_id) || !self.tenant_exists(tenant_id).await? {
            return Ok(None);
        }
        let key = NewKey::make(tenant_id, expires_at)?;
        let _: () = self
            .connection()
            .hset(self.keys.api_key_records(tenant_id), &key.info.id, &key.record)
            .await?;
        self.activate_api_key(&key).await?;
        Ok(Some((key.info, key.api_key)))
    }

    /// A tenant's keys, oldest first.
    pub async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>> {
        let mut conn = self.connection();
        let records: HashMap<String, String> = conn.hgetall(self.keys.api_key_records(tenant_id)).await?;
        let used: HashMap<String, u64> = conn.hgetall(self.keys.api_keys_used(tenant_id)).await?;
        let mut keys = records
            .into_iter()
            .map(|(id, json)| {
                let record: KeyRecord = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("api key {id}: {e}")))?;
                Ok(ApiKeyInfo {
                    last_used_at: used.get(&id).copied(),
                    created_at: record.created_at,
                    expires_at: record.expires_at,
                    id,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Revokes one key; false when the tenant has no such key.
    pub async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool> {
        let mut conn = self.connection();
        let records = self.keys.api_key_records(tenant_id);
        let json: Option<String> = conn.hget(&records, key_id).await?;
        let Some(json) = json else {
            return Ok(false);
        };
        let record: KeyRecord =
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("api key {key_id}: {e}")))?;
        // First: from here on the key is refused everywhere.
        let _: () = conn.hdel(self.keys.api_keys(), &record.hash).await?;
        let _: () = conn.hdel(&records, key_id).await?;
        let _: () = conn.hdel(self.keys.api_keys_used(tenant_id), key_id).await?;
        Ok(true)
    }

    /// The tenant and key id of a valid, unexpired key.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<KeyOwner>> {
        let owner: Option<String> = self
            .connection()
            .hget(self.keys.api_keys(), hash_key(api_key))
            .await?;
        let Some(owner) = owner else {
            return Ok(None);
        };
        let mut parts = owner.split(' ');
        let tenant_id = parts.next().unwrap_or_default().to_owned();
        let key_id = parts.next().unwrap_or(LEGACY_KEY_ID).to_owned();
        let expires_at: u64 = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
        if expires_at != 0 && expires_at <= now_ms() {
            return Ok(None);
        }
        Ok(Some(KeyOwner { tenant_id, key_id }))
    }

    async fn tenant_exists(&self, tenant_id: &str) -> Result<bool> {
        Ok(self.connection().exists(self.keys.tenant(tenant_id)).await?)
    }
}
