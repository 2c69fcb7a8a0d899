//! Identifiers. A task id embeds its batch's id, so any task can be found (and its partition derived) from
//! its id alone: `bat_<hex>` → `tsk_<hex>_<index>`.

use rand::RngCore;

/// Makes a new batch id (time-ordered, so newer ids sort later).
pub fn new_batch_id() -> String {
    format!("bat_{}", uuid::Uuid::now_v7().simple())
}

/// Makes a new tenant id.
pub fn new_tenant_id() -> String {
    format!("ten_{}", uuid::Uuid::now_v7().simple())
}

/// Makes a new API key id (the key's public name, for listing and revoking).
pub fn new_key_id() -> String {
    format!("key_{}", uuid::Uuid::now_v7().simple())
}

/// Makes a new API key (shown once; only its hash is stored).
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("gk_{}", hex::encode(bytes))
}

/// The id of task `index` of `batch_id`.
pub fn task_id(batch_id: &str, index: usize) -> String {
    format!("{}{index}", task_id_stem(batch_id))
}

/// What every task id of `batch_id` starts with: the task's index follows. Scripts that walk a batch's tasks
/// get it from here, so the id format lives in this module only.
pub fn task_id_stem(batch_id: &str) -> String {
    format!("tsk_{}_", batch_id.strip_prefix("bat_").unwrap_or(batch_id))
}

/// Splits a task id into its batch id and index; `None` for anything that is not a task id.
pub fn parse_task_id(task_id: &str) -> Option<(String, usize)> {
    let rest = task_id.strip_prefix("tsk_")?;
    let (suffix, index) = rest.rsplit_once('_')?;
    if !is_id_suffix(suffix) {
        return None;
    }
    Some((format!("bat_{suffix}"), index.parse().ok()?))
}

/// The creation time (ms) inside a batch id (a UUIDv7: its first 48 bits).
pub fn batch_created_ms(batch_id: &str) -> Option<u64> {
    u64::from_str_radix(batch_id.strip_prefix("bat_")?.get(..12)?, 16).ok()
}

/// A Redis stream entry id (`<ms>-<seq>`) as (milliseconds, sequence); `None` for anything else, including
/// numbers past 64 bits, which Redis refuses.
pub fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let part = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse().ok())
            .flatten()
    };
    Some((part(ms)?, part(seq)?))
}

/// Whether `id` has the shape of a batch id (guards key building against arbitrary input).
pub fn is_batch_id(id: &str) -> bool {
    id.strip_prefix("bat_").is_some_and(is_id_suffix)
}

/// Whether `id` has the shape of a tenant id.
pub fn is_tenant_id(id: &str) -> bool {
    id.strip_prefix("ten_").is_some_and(is_id_suffix)
}

fn is_id_suffix(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip() {
        let batch = new_batch_id();
        assert!(is_batch_id(&batch));
        let task = task_id(&batch, 42);
        assert_eq!(parse_task_id(&task), Some((batch.clone(), 42)));
        assert_eq!(task, format!("{}42", task_id_stem(&batch)));
    }

    #[test]
    fn batch_ids_carry_their_creation_time() {
        let before = crate::model::now_ms();
        let id = new_batch_id();
        let created = batch_created_ms(&id).expect("a time");
        assert!(created >= before.saturating_sub(1) && created <= crate::model::now_ms() + 1);
        assert_eq!(batch_created_ms("bat_x"), None);
    }

    #[test]
    fn stream_ids_are_two_64_bit_numbers() {
        assert_eq!(parse_stream_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(parse_stream_id("00-01"), Some((0, 1)));
        for junk in [
            "",
            "5",
            "5-",
            "-5",
            "+5-1",
            "5-1-2",
            "1-x",
            "99999999999999999999999-0",
        ] {
            assert_eq!(parse_stream_id(junk), None, "{junk}");
        }
    }

    #[test]
    fn junk_is_not_an_id() {
        assert_eq!(parse_task_id("tsk_abc_1"), None);
        assert_eq!(parse_task_id("bat_0123"), None);
        assert!(!is_batch_id("bat_{p1}"));
        assert!(!is_tenant_id("ten_"));
    }
}
