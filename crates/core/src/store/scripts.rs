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
//!    The prelude also names the fields of the batch, task and tenant hashes (`fields.rs`), one local constant per
//!    field: `<HASH>_<CONSTANT>`, e.g. `TASK_STATUS` for `task::STATUS`. A misspelt name is an undeclared global,
//!    which Redis refuses to read, so the script fails instead of reading or writing a `nil` field. (Constants
//!    rather than guarded tables: the prelude runs on every call, and building three tables with metatables cost
//!    about 2.5 µs of Redis time per call, measured with `redis-benchmark`.)
//!
//!    ```lua
//!    local TASK_ID = 'id'
//!    local TASK_STATUS = 'status'
//!    -- ...
//!    ```
//!
//! 2. the hand-written helpers of `lua/lib.lua` (which may use the prelude);
//! 3. the script itself.
//!
//! Ids are not generated into Lua: the Rust caller passes any id a script needs (see `ids.rs`).

use std::collections::HashSet;

use redis::Script;

use super::fields::{LuaTable, LUA_TABLES};
use crate::messages::{self, Message};

const LIB: &str = include_str!("../../lua/lib.lua");

macro_rules! script {
    ($name:literal) => {
        with_prelude(&format!(
            "{}\n{}",
            LIB,
            include_str!(concat!("../../lua/", $name, ".lua"))
        ))
    };
}

/// `body` (the helpers and one script) behind the part of the prelude it uses: the prelude runs on every call, so
/// a script declares only the field constants it names (about 1 µs of Redis time per call for all of them).
fn with_prelude(body: &str) -> Script {
    let names: HashSet<&str> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    Script::new(&format!("{}{body}", prelude(|name| names.contains(name))))
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
    pub renew_lease: Script,
    pub retry_pump: Script,
    pub limiter_take: Script,
    pub tenant_rate: Script,
    pub create_tenant: Script,
    pub cancel_batch: Script,
    pub idem_begin: Script,
    pub idem_finish: Script,
    pub idem_release: Script,
    pub open_claim: Script,
    pub expire_batches: Script,
    pub expire_tenant: Script,
    pub trim_stream: Script,
}

impl Scripts {
    pub fn load() -> Self {
        Self {
            create_batch: script!("create_batch"),
            claim_submit: script!("claim_submit"),
            mark_running: script!("mark_running"),
            finish_task: script!("finish_task"),
            poll_claim: script!("poll_claim"),
            poll_update: script!("poll_update"),
            settle_finalize: script!("settle_finalize"),
            grant: script!("grant"),
            reserve: script!("reserve"),
            settle: script!("settle"),
            retry_later: script!("retry_later"),
            renew_lease: script!("renew_lease"),
            retry_pump: script!("retry_pump"),
            limiter_take: script!("limiter_take"),
            tenant_rate: script!("tenant_rate"),
            create_tenant: script!("create_tenant"),
            cancel_batch: script!("cancel_batch"),
            idem_begin: script!("idem_begin"),
            idem_finish: script!("idem_finish"),
            idem_release: script!("idem_release"),
            open_claim: script!("open_claim"),
            expire_batches: script!("expire_batches"),
            expire_tenant: script!("expire_tenant"),
            trim_stream: script!("trim_stream"),
        }
    }

    /// Every script, for loading them all at once.
    pub fn all(&self) -> [&Script; 24] {
        [
            &self.create_batch,
            &self.claim_submit,
            &self.mark_running,
            &self.finish_task,
            &self.poll_claim,
            &self.poll_update,
            &self.settle_finalize,
            &self.grant,
            &self.reserve,
            &self.settle,
            &self.retry_later,
            &self.renew_lease,
            &self.retry_pump,
            &self.limiter_take,
            &self.tenant_rate,
            &self.create_tenant,
            &self.cancel_batch,
            &self.idem_begin,
            &self.idem_finish,
            &self.idem_release,
            &self.open_claim,
            &self.expire_batches,
            &self.expire_tenant,
            &self.trim_stream,
        ]
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

/// The generated prelude (see the module comment), with the field constants for which `uses` holds.
fn prelude(uses: impl Fn(&str) -> bool) -> String {
    let mut lua = String::from("-- Generated from messages.rs and store/fields.rs by store/scripts.rs.\n");
    for table in &LUA_TABLES {
        lua.push_str(&lua_table(table, &uses));
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

/// The Lua name of a field: the hash's name and the Rust constant's, `TASK_STATUS`.
fn lua_name(table: &LuaTable, constant: &str) -> String {
    format!("{}_{constant}", table.name)
}

/// One local constant per field of a hash, for the fields whose Lua name `uses` accepts.
fn lua_table(table: &LuaTable, uses: impl Fn(&str) -> bool) -> String {
    table
        .fields
        .iter()
        .map(|(constant, field)| (lua_name(table, constant), field))
        .filter(|(name, _)| uses(name))
        .map(|(name, field)| format!("local {name} = {}\n", lua_string(field)))
        .collect()
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
    fn every_script_file_is_in_the_list_that_loads_them_all() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let files = std::fs::read_dir(&dir)
            .expect("the lua directory")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".lua") && name != "lib.lua")
            .count();
        assert_eq!(Scripts::load().all().len(), files);
    }

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
    fn the_prelude_declares_every_field_once() {
        let lua = prelude(|_| true);
        for table in &LUA_TABLES {
            for (constant, field) in table.fields {
                let line = format!("\nlocal {} = '{field}'\n", lua_name(table, constant));
                assert_eq!(lua.matches(&line).count(), 1, "{line}");
            }
            let declared = lua
                .lines()
                .filter(|l| l.starts_with(&format!("local {}_", table.name)))
                .count();
            assert_eq!(declared, table.fields.len(), "{}", table.name);
        }
    }

    #[test]
    fn a_script_declares_only_the_fields_it_names() {
        let lua = prelude(|name| name == "TASK_STATUS");
        assert!(lua.contains("\nlocal TASK_STATUS = 'status'\n"));
        assert!(!lua.contains("local TASK_ID ="));
        assert!(!lua.contains("local BATCH_"));
    }

    #[test]
    fn every_lua_name_is_a_plain_identifier() {
        for table in &LUA_TABLES {
            for (constant, _) in table.fields {
                let name = lua_name(table, constant);
                let mut chars = name.chars();
                assert!(chars.next().is_some_and(|c| c.is_ascii_uppercase()), "{name}");
                assert!(
                    chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn the_prelude_defines_the_trace_field_and_one_function_per_message() {
        let lua = prelude(|_| true);
        assert!(lua.contains("local TRACEPARENT_FIELD = 'traceparent'\n"));
        assert!(lua.contains("local function submit_task_message(task_id, batch_id)\n"));
        assert!(lua.contains("local function settle_batch_message(batch_id)\n"));
    }
}
