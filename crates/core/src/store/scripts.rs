//! The Lua scripts, one per transition, compiled in from `lua/` with the shared helpers of `lua/lib.lua`.

use redis::Script;

const LIB: &str = include_str!("../../lua/lib.lua");

macro_rules! script {
    ($name:literal) => {
        Script::new(&format!(
            "{}\n{}",
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
            retry_pump: script!("retry_pump"),
            limiter_acquire: script!("limiter_acquire"),
            limiter_release: script!("limiter_release"),
            cancel_batch: script!("cancel_batch"),
            idem_begin: script!("idem_begin"),
            idem_finish: script!("idem_finish"),
            idem_release: script!("idem_release"),
        }
    }
}
