//! Dead letters: stream messages that could not be processed (malformed, or delivered `streams.max_deliveries`
//! times without success) are moved, with the reason, to their partition's dead-letter stream, so they stop
//! blocking the group yet stay available to ops (`gantry admin dead-letters list|replay|drop`).

use redis::AsyncCommands;

use super::{Result, Store, StoreError};
use crate::{consumer::Delivery, model::now_ms};

/// One dead letter, as ops see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// `p<partition>/<entry id>`: what `replay` and `drop` take.
    pub handle: String,
    pub source: String,
    pub error: String,
    /// The original message's fields.
    pub fields: Vec<(String, String)>,
}

const META: [&str; 5] = ["dl_source", "dl_group", "dl_id", "dl_error", "dl_at"];

impl Store {
    /// Moves a delivered message to the dead-letter stream of its partition and acknowledges it, atomically.
    pub async fn dead_letter(
        &self,
        group: &str,
        delivery: &Delivery,
        error: &str,
        maxlen: u64,
    ) -> Result<()> {
        let dead = self.keys.dead_letters_of(&delivery.stream);
        let mut fields: Vec<(String, String)> = vec![
            ("dl_source".into(), delivery.stream.clone()),
            ("dl_group".into(), group.to_owned()),
            ("dl_id".into(), delivery.id.clone()),
            ("dl_error".into(), error.to_owned()),
            ("dl_at".into(), now_ms().to_string()),
        ];
        fields.extend(delivery.fields.iter().cloned());
        let _: () = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*")
            .arg(&fields)
            .ignore()
            .xack(&delivery.stream, group, &[&delivery.id])
            .ignore()
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    /// Every dead letter, partition by partition, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        let mut conn = self.connection();
        for p in 0..self.keys.partitions() {
            let reply: redis::streams::StreamRangeReply = conn.xrange_all(self.keys.dead_letters(p)).await?;
            for entry in reply.ids {
                let text = |k: &str| entry.get::<String>(k).unwrap_or_default();
                let mut fields: Vec<(String, String)> = entry
                    .map
                    .iter()
                    .filter(|(k, _)| !META.contains(&k.as_str()))
                    .filter_map(|(k, v)| {
                        redis::from_redis_value_ref::<String>(v)
                            .ok()
                            .map(|v| (k.clone(), v))
                    })
                    .collect();
                fields.sort();
                out.push(DeadLetter {
                    handle: format!("p{p}/{}", entry.id),
                    source: text("dl_source"),
                    error: text("dl_error"),
                    fields,
                });
            }
        }
        Ok(out)
    }

    /// Puts a dead letter back on the stream it came from (as a new message) and removes it from the dead letters.
    pub async fn replay_dead_letter(&self, handle: &str) -> Result<bool> {
        let Some(letter) = self
            .dead_letters()
            .await?
            .into_iter()
            .find(|l| l.handle == handle)
        else {
            return Ok(false);
        };
        if letter.source.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "dead letter {handle} has no source stream"
            )));
        }
        let (dead, id) = self.dead_letter_key(handle)?;
        let _: () = redis::pipe()
            .atomic()
            .xadd(&letter.source, "*", &letter.fields)
            .ignore()
            .xdel(&dead, &[&id])
            .ignore()
            .query_async(&mut self.connection())
            .await?;
        Ok(true)
    }

    /// Deletes a dead letter for good.
    pub async fn drop_dead_letter(&self, handle: &str) -> Result<bool> {
        let (dead, id) = self.dead_letter_key(handle)?;
        let removed: i64 = self.connection().xdel(&dead, &[&id]).await?;
        Ok(removed > 0)
    }

    fn dead_letter_key(&self, handle: &str) -> Result<(String, String)> {
        let parsed = handle
            .strip_prefix('p')
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(p, id)| Some((p.parse::<u32>().ok()?, id)))
            .filter(|(p, _)| *p < self.keys.partitions());
        let (p, id) =
            parsed.ok_or_else(|| StoreError::Corrupt(format!("not a dead-letter handle: {handle}")))?;
        Ok((self.keys.dead_letters(p), id.to_owned()))
    }
}
