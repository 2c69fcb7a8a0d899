//! A run's JSON line: fields in the order they were written, so it starts `{"system":"gantry","shape":...` like the
//! peer's (serde_json's own map would sort them).

use serde_json::Value;

/// An [`Ordered`] summary from `"key" => value` pairs (each value goes through `json!`).
macro_rules! ordered {
    ($($key:literal => $value:expr),* $(,)?) => {
        $crate::summary::Ordered(vec![$(($key.to_owned(), serde_json::json!($value))),*])
    };
}
pub(crate) use ordered;

/// A run's summary, its fields in order.
pub struct Ordered(pub Vec<(String, Value)>);

impl Ordered {
    /// The field `key` (`Null` when absent).
    pub fn get(&self, key: &str) -> &Value {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&Value::Null, |(_, v)| v)
    }
}

impl std::fmt::Display for Ordered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (key, value)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}:{value}", Value::from(key.as_str()))?;
        }
        f.write_str("}")
    }
}

/// `x` to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
