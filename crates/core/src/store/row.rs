//! Reading a stored hash into typed values, in one place: a missing optional field is `None` (or 0 for counters),
//! but a value that does not parse is [`StoreError::Corrupt`], never a silent default.

use std::{collections::HashMap, fmt::Display, str::FromStr};

use super::{Result, StoreError};

/// The fields of one hash (or of an HMGET), named for error messages.
pub(crate) struct Row<'a> {
    what: &'a str,
    fields: HashMap<&'a str, Option<&'a str>>,
}

impl<'a> Row<'a> {
    /// A row over a whole hash (HGETALL); `None` when the hash does not exist.
    pub(crate) fn of_hash(what: &'a str, hash: &'a HashMap<String, String>) -> Option<Self> {
        (!hash.is_empty()).then(|| Self {
            what,
            fields: hash.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect(),
        })
    }

    /// A row over the answer of `HMGET key names…`.
    pub(crate) fn of_fields(what: &'a str, names: &[&'a str], values: &'a [Option<String>]) -> Self {
        Self {
            what,
            fields: names
                .iter()
                .zip(values)
                .map(|(name, value)| (*name, value.as_deref()))
                .collect(),
        }
    }

    /// The raw text of a field; blank counts as absent.
    pub(crate) fn text(&self, name: &str) -> Option<&'a str> {
        self.fields.get(name).copied().flatten().filter(|v| !v.is_empty())
    }

    /// A field that must be present.
    pub(crate) fn string(&self, name: &str) -> Result<String> {
        self.text(name)
            .map(str::to_owned)
            .ok_or_else(|| self.corrupt(name, "is missing"))
    }

    /// A field that must be present and parse.
    pub(crate) fn parse<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: Display,
    {
        let text = self.text(name).ok_or_else(|| self.corrupt(name, "is missing"))?;
        text.parse()
            .map_err(|e| self.corrupt(name, &format!("`{text}` does not parse: {e}")))
    }

    /// A field that may be absent, but parses when present.
    pub(crate) fn parse_opt<T: FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: Display,
    {
        self.text(name)
            .map(|text| {
                text.parse()
                    .map_err(|e| self.corrupt(name, &format!("`{text}` does not parse: {e}")))
            })
            .transpose()
    }

    /// A counter or time: 0 when absent.
    pub(crate) fn number<T: FromStr + Default>(&self, name: &str) -> Result<T>
    where
        T::Err: Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or_default())
    }

    fn corrupt(&self, name: &str, problem: &str) -> StoreError {
        StoreError::Corrupt(format!("{}: field `{name}` {problem}", self.what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskStatus;

    #[test]
    fn unknown_values_are_errors_and_missing_counters_are_zero() {
        let names = ["status", "polls", "provider"];
        let values = [
            Some(TaskStatus::Running.as_str().to_owned()),
            None,
            Some("acme".to_owned()),
        ];
        let row = Row::of_fields("task t", &names, &values);
        assert_eq!(
            row.parse::<TaskStatus>("status").expect("status"),
            TaskStatus::Running
        );
        assert_eq!(row.number::<u32>("polls").expect("polls"), 0);
        let err = row
            .parse_opt::<crate::domain::ProviderName>("provider")
            .expect_err("unknown provider");
        assert!(err.to_string().contains("task t: field `provider`"), "{err}");
        assert!(row.string("remote_id").is_err());
    }
}
