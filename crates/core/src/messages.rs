//! Stream messages: typed, versioned payloads carried as flat stream fields (`v`, `type`, then the type's own
//! fields). Lua scripts write them through functions generated from `Message::to_fields` (`store/scripts.rs`);
//! `proto-docs/streams.md` documents them. Every message may carry the W3C `traceparent` of the request that
//! created its batch, so its processing joins the batch's trace.

use std::collections::HashMap;

use redis::Value;

/// The version every message is written with.
pub const VERSION: &str = "1";

/// The field that carries a message's W3C trace context, when it has one.
pub const TRACEPARENT: &str = "traceparent";

/// A message on one of Gantry's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `submit` stream: create this task at the provider.
    SubmitTask {
        task_id: String,
        batch_id: String,
        traceparent: Option<String>,
    },
    /// `settle` stream: every task of this batch is terminal; settle its credits.
    SettleBatch {
        batch_id: String,
        traceparent: Option<String>,
    },
}

impl Message {
    /// The stream fields of this message.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("v", VERSION.to_owned())];
        let traceparent = match self {
            Self::SubmitTask {
                task_id,
                batch_id,
                traceparent,
            } => {
                fields.push(("type", "submit_task".into()));
                fields.push(("task_id", task_id.clone()));
                fields.push(("batch_id", batch_id.clone()));
                traceparent
            }
            Self::SettleBatch {
                batch_id,
                traceparent,
            } => {
                fields.push(("type", "settle_batch".into()));
                fields.push(("batch_id", batch_id.clone()));
                traceparent
            }
        };
        if let Some(traceparent) = traceparent {
            fields.push((TRACEPARENT, traceparent.clone()));
        }
        fields
    }

    /// The `traceparent` the message carries, if any.
    pub fn traceparent(&self) -> Option<&str> {
        match self {
            Self::SubmitTask { traceparent, .. } | Self::SettleBatch { traceparent, .. } => {
                traceparent.as_deref()
            }
        }
    }

    /// Parses the fields of a stream entry; the error says what is wrong.
    pub fn from_fields(map: &HashMap<String, Value>) -> Result<Self, String> {
        let get = |k: &str| -> Result<String, String> {
            match map.get(k) {
                Some(Value::BulkString(b)) => {
                    String::from_utf8(b.clone()).map_err(|_| format!("field {k} is not UTF-8"))
                }
                Some(Value::SimpleString(s)) => Ok(s.clone()),
                _ => Err(format!("field {k} is missing")),
            }
        };
        let version = get("v")?;
        if version != VERSION {
            return Err(format!("unsupported message version {version}"));
        }
        let traceparent = get(TRACEPARENT).ok().filter(|t| !t.is_empty());
        match get("type")?.as_str() {
            "submit_task" => Ok(Self::SubmitTask {
                task_id: get("task_id")?,
                batch_id: get("batch_id")?,
                traceparent,
            }),
            "settle_batch" => Ok(Self::SettleBatch {
                batch_id: get("batch_id")?,
                traceparent,
            }),
            other => Err(format!("unknown message type {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_fields() {
        for message in [
            Message::SubmitTask {
                task_id: "tsk_a_1".into(),
                batch_id: "bat_a".into(),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            },
            Message::SubmitTask {
                task_id: "tsk_a_1".into(),
                batch_id: "bat_a".into(),
                traceparent: None,
            },
            Message::SettleBatch {
                batch_id: "bat_a".into(),
                traceparent: None,
            },
        ] {
            let map = message
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::BulkString(v.into_bytes())))
                .collect();
            assert_eq!(Message::from_fields(&map), Ok(message));
        }
    }

    #[test]
    fn unknown_versions_and_types_are_errors() {
        let map: HashMap<String, Value> = [("v", "2"), ("type", "submit_task")]
            .map(|(k, v)| (k.to_owned(), Value::SimpleString(v.into())))
            .into();
        assert!(Message::from_fields(&map).is_err());
        let map: HashMap<String, Value> = [("v", "1"), ("type", "explode")]
            .map(|(k, v)| (k.to_owned(), Value::SimpleString(v.into())))
            .into();
        assert!(Message::from_fields(&map).is_err());
    }
}
