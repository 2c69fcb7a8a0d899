//! Signed provider callback URLs. Providers do not sign their callbacks, so Gantry signs the URL it hands out:
//! `<base>/v1/provider/callbacks/<provider>/<task id>?token=<attempt>.<hex HMAC-SHA256(task id, attempt)>`.
//! The attempt inside the token fences late callbacks of an older attempt.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, task_id: &str, attempt: u32) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(task_id.as_bytes());
    mac.update(b":");
    mac.update(attempt.to_string().as_bytes());
    mac
}

/// The token of `task_id`'s attempt `attempt`.
pub fn token(secret: &str, task_id: &str, attempt: u32) -> String {
    format!(
        "{attempt}.{}",
        hex::encode(mac(secret, task_id, attempt).finalize().into_bytes())
    )
}

/// The attempt a token was made for, if the token is genuine (checked in constant time).
pub fn verify(secret: &str, task_id: &str, token: &str) -> Option<u32> {
    let (attempt, signature) = token.split_once('.')?;
    let attempt: u32 = attempt.parse().ok()?;
    let signature = hex::decode(signature).ok()?;
    mac(secret, task_id, attempt).verify_slice(&signature).ok()?;
    Some(attempt)
}

/// The callback URL to give the provider for this attempt.
pub fn url(base: &str, provider: &str, task_id: &str, attempt: u32, secret: &str) -> String {
    format!(
        "{}/v1/provider/callbacks/{provider}/{task_id}?token={}",
        base.trim_end_matches('/'),
        token(secret, task_id, attempt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genuine_tokens_verify_and_forgeries_do_not() {
        let t = token("s3cret", "tsk_a_1", 2);
        assert_eq!(verify("s3cret", "tsk_a_1", &t), Some(2));
        assert_eq!(verify("s3cret", "tsk_a_2", &t), None, "bound to the task");
        assert_eq!(verify("other", "tsk_a_1", &t), None, "bound to the secret");
        let bumped = t.replacen("2.", "3.", 1);
        assert_eq!(verify("s3cret", "tsk_a_1", &bumped), None, "bound to the attempt");
        assert_eq!(verify("s3cret", "tsk_a_1", "2.zz"), None);
        assert_eq!(verify("s3cret", "tsk_a_1", ""), None);
    }

    #[test]
    fn urls_carry_the_token() {
        let u = url(
            "https://g.example/",
            crate::domain::ProviderName::Grsai.as_str(),
            "tsk_a_1",
            1,
            "k",
        );
        assert!(
            u.starts_with("https://g.example/v1/provider/callbacks/grsai/tsk_a_1?token=1."),
            "{u}"
        );
    }
}
