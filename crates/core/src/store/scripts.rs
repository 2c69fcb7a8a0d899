//! The Lua scripts, one per transition, compiled in from `lua/`. Each script is sent to Redis as three parts:
//!
//! 1. a prelude generated here, at load time, from the formats Rust owns (`messages.rs`), so that no `.lua` file
//!    copies them: `submit_task_message(task_id, batch_id)` and `settle_batch_message(batch_id)` return a
//!    message's flat field list, rendered from `Message::to_fields` itself, and `TRACEPARENT_FIELD` names the
//!    field that carries a message's trace context (`messages::TRACEPARENT`). Changing a message in Rust changes
//!    what the scripts write; nothing in Lua has to follow by hand. For example:
//!
//!    ```lua
//!    local TRACEPARENT_FIELD = 'traceparent'
//!    local function settle_batch_message(batch_id)
//!      return { 'v', '1', 'type', 'settle_batch', 'batch_id', batch_id }
//!    end
//!    ```
//!
//!    The prelude also names the fields of the batch, task and tenant hashes (`fields.rs`): `BATCH`, `TASK` and
//!    `TENANT` map a key, the Rust constant's name in lower case, to the field, and raise an error for a key they
//!    do not have, so a misspelt field fails the script instead of reading or writing a `nil` field:
//!
//!    ```lua
//!    local TASK = setmetatable({
//!      id = 'id',
//!      status = 'status',
//!      -- ...
//!    }, { __index = function(_, key) error('TASK has no field ' .. tostring(key), 2) end })
//!    ```
//!
//! 2. the hand-written helpers of `lua/lib.lua` (which may use the prelude);
//! 3. the script itself.
//!
//! Ids are not generated into Lua: the Rust caller passes any id a script needs (see `ids.rs`).

use redis::Script;

use super::fields::{LuaTable, LUA_TABLES};
use crate::messages::{self, Message};

const LIB: &str = include_str!("../../lua/lib.lua");

macro_rules! script {
    ($prelude:expr, $name:literal) => {
        Script::new(&format!(
            "{}{}\n{}",
            $prelude,
            LIB,
            include_str!(concat!("../../lua/", $name, ".lua"))
        ))
    };
}

pub(crate) struct Scripts {
    pub create_batch: Script,
    pub claim_submit: Script,
    pub mark_running: Script,
    pub finish_task: Script,
    pub poll_claim: Script,
    pub poll_update: Script,
    pub settle_finalize: Script,
    pub grant: Script,
    pub reserve: Script,
    pub settle: Script,
    pub retry_later: Script,
    pub retry_pump: Script,
    pub limiter_acquire: Script,
    pub limiter_release: Script,
    pub cancel_batch: Script,
    pub idem_begin: Script,
    pub idem_finish: Script,
    pub idem_release: Script,
}

impl Scripts {
    pub fn load() -> Self {
        let prelude = prelude();
        Self {
            create_batch: script!(prelude, "create_batch"),
            claim_submit: script!(prelude, "claim_submit"),
            mark_running: script!(prelude, "mark_running"),
            finish_task: script!(prelude, "finish_task"),
            poll_claim: script!(prelude, "poll_claim"),
            poll_update: script!(prelude, "poll_update"),
            settle_finalize: script!(prelude, "settle_finalize"),
            grant: script!(prelude, "grant"),
            reserve: script!(prelude, "reserve"),
            settle: script!(prelude, "settle"),
            retry_later: script!(prelude, "retry_later"),
            retry_pump: script!(prelude, "retry_pump"),
            limiter_acquire: script!(prelude, "limiter_acquire"),
            limiter_release: script!(prelude, "limiter_release"),
            cancel_batch: script!(prelude, "cancel_batch"),
            idem_begin: script!(prelude, "idem_begin"),
            idem_finish: script!(prelude, "idem_finish"),
            idem_release: script!(prelude, "idem_release"),
        }
    }
}

/// A Lua function of the prelude that returns the fields of one kind of message.
struct MessageFunction {
    name: &'static str,
    /// The function's parameters, in call order.
    params: &'static [&'static str],
    /// The message with each parameter's value standing in for it (see `param`).
    template: Message,
}

/// The message functions of the prelude. The message's optional `traceparent` is left out: `xadd_message`
/// (`lib.lua`) appends it when the batch has one.
fn message_functions() -> [MessageFunction; 2] {
    [
        MessageFunction {
            name: "submit_task_message",
            params: &["task_id", "batch_id"],
            template: Message::SubmitTask {
                task_id: param("task_id"),
                batch_id: param("batch_id"),
                traceparent: None,
            },
        },
        MessageFunction {
            name: "settle_batch_message",
            params: &["batch_id"],
            template: Message::SettleBatch {
                batch_id: param("batch_id"),
                traceparent: None,
            },
        },
    ]
}

/// The value that stands for the Lua parameter `name` in a template message. It starts with a NUL byte, which
/// no constant of a message contains.
fn param(name: &str) -> String {
    format!("\0{name}")
}

/// The generated prelude (see the module comment).
fn prelude() -> String {
    let mut lua = String::from("-- Generated from messages.rs and store/fields.rs by store/scripts.rs.\n");
    for table in &LUA_TABLES {
        lua.push_str(&lua_table(table));
    }
    lua.push_str(&format!(
        "local TRACEPARENT_FIELD = {}\n",
        lua_string(messages::TRACEPARENT)
    ));
    for function in message_functions() {
        lua.push_str(&format!(
            "local function {}({})\n  return {{ {} }}\nend\n",
            function.name,
            function.params.join(", "),
            lua_fields(&function).join(", ")
        ));
    }
    lua
}

/// The Lua key of a field: its Rust constant's name in lower case.
fn lua_key(constant: &str) -> String {
    constant.to_ascii_lowercase()
}

/// A table of field names, guarded against unknown keys.
fn lua_table(table: &LuaTable) -> String {
    let mut lua = format!("local {} = setmetatable({{\n", table.name);
    for (constant, field) in table.fields {
        lua.push_str(&format!("  {} = {},\n", lua_key(constant), lua_string(field)));
    }
    lua.push_str(&format!(
        "}}, {{ __index = function(_, key) error('{} has no field ' .. tostring(key), 2) end }})\n",
        table.name
    ));
    lua
}

/// The template's fields as Lua expressions, name then value: a parameter's stand-in becomes the parameter,
/// anything else a string literal.
fn lua_fields(function: &MessageFunction) -> Vec<String> {
    let value = |text: &str| match function.params.iter().find(|p| param(p) == text) {
        Some(name) => (*name).to_owned(),
        None => lua_string(text),
    };
    function
        .template
        .to_fields()
        .into_iter()
        .flat_map(|(name, text)| [lua_string(name), value(&text)])
        .collect()
}

/// `text` as a Lua string literal: printable ASCII as it is (`\` and `'` escaped), any other byte as a decimal
/// escape of three digits, which Lua reads back byte for byte.
fn lua_string(text: &str) -> String {
    let mut lua = String::with_capacity(text.len() + 2);
    lua.push('\'');
    for byte in text.bytes() {
        match byte {
            b'\\' | b'\'' => {
                lua.push('\\');
                lua.push(char::from(byte));
            }
            b' '..=b'~' => lua.push(char::from(byte)),
            _ => lua.push_str(&format!("\\{byte:03}")),
        }
    }
    lua.push('\'');
    lua
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_escape_quotes_backslashes_and_other_bytes() {
        assert_eq!(lua_string("submit_task"), "'submit_task'");
        assert_eq!(lua_string(r"it's a\b"), r"'it\'s a\\b'");
        assert_eq!(lua_string("a\n\0é1"), r"'a\010\000\195\1691'");
    }

    #[test]
    fn every_parameter_is_one_field_value_and_every_other_value_a_literal() {
        for function in message_functions() {
            let fields = lua_fields(&function);
            assert_eq!(fields.len(), 2 * function.template.to_fields().len());
            for param in function.params {
                assert_eq!(
                    fields.iter().filter(|f| f == param).count(),
                    1,
                    "{} uses {param} once",
                    function.name
                );
            }
            for field in fields.iter().filter(|f| !function.params.contains(&f.as_str())) {
                assert!(field.starts_with('\'') && !field.contains('\0'), "{field}");
            }
        }
    }

    #[test]
    fn the_prelude_maps_every_field_once_and_guards_unknown_keys() {
        let lua = prelude();
        for table in &LUA_TABLES {
            let start = lua
                .find(&format!("local {} = setmetatable({{\n", table.name))
                .expect("the table is declared");
            let body = &lua[start..];
            let end = body.find("}, {").expect("the table ends");
            let (entries, guard) = body.split_at(end);
            for (constant, field) in table.fields {
                let entry = format!("\n  {} = '{field}',\n", lua_key(constant));
                assert_eq!(entries.matches(&entry).count(), 1, "{}: {entry}", table.name);
            }
            assert_eq!(entries.lines().count(), 1 + table.fields.len(), "{}", table.name);
            assert!(
                guard.starts_with(&format!(
                    "}}, {{ __index = function(_, key) error('{} has no field ' .. tostring(key), 2) end }})\n",
                    table.name
                )),
                "{guard}"
            );
        }
    }

    #[test]
    fn every_lua_key_is_a_plain_identifier() {
        const KEYWORDS: [&str; 21] = [
            "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in", "local",
            "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
        ];
        for table in &LUA_TABLES {
            for (constant, _) in table.fields {
                let key = lua_key(constant);
                let mut chars = key.chars();
                assert!(
                    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_'),
                    "{key}"
                );
                assert!(
                    chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{key}"
                );
                assert!(!KEYWORDS.contains(&key.as_str()), "{key}");
            }
        }
    }

    #[test]
    fn the_prelude_defines_the_trace_field_and_one_function_per_message() {
        let lua = prelude();
        assert!(lua.contains("local TRACEPARENT_FIELD = 'traceparent'\n"));
        assert!(lua.contains("local function submit_task_message(task_id, batch_id)\n"));
        assert!(lua.contains("local function settle_batch_message(batch_id)\n"));
    }
}
