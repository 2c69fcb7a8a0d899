//! placeholder
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
