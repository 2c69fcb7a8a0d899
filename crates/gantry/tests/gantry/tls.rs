//! Redis over TLS: the services reach a redis-server through its TLS port (`rediss://`), trusting a CA of the
//! deployment's own and showing a client certificate, as Redis asks by default (`tls-auth-clients yes`).

use gantry_core::{
    config::{ConfigError, Secret},
    Config, StartError, Store,
};
use gantry_testkit::{RedisCluster, RedisServer, TestCerts};
use serde_json::json;

use crate::common::{test_config, veo, TestApp, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_settles_with_every_service_on_redis_over_tls() {
    let certs = TestCerts::generate().unwrap();
    let server = RedisServer::start_tls(&certs).unwrap();
    let tls_url = server.tls_url().unwrap();
    assert_speaks_tls_only(&tls_url);
    let app = TestApp::on_tls(server.into(), tls_url, &certs).await;
    settle_a_batch(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_settles_with_every_service_on_a_redis_cluster_over_tls() {
    let certs = TestCerts::generate().unwrap();
    let cluster = RedisCluster::start_tls(&certs).unwrap();
    let tls_urls = cluster.tls_urls().unwrap();
    for url in tls_urls.split(',') {
        assert_speaks_tls_only(url);
    }
    let app = TestApp::on_tls(TestRedis::Cluster(cluster), tls_urls, &certs).await;
    settle_a_batch(&app).await;
}

/// The port of `url` speaks TLS only: a plaintext client gets no answer from it.
fn assert_speaks_tls_only(url: &str) {
    let plain = url.replacen("rediss://", "redis://", 1);
    let mut probe = redis::Client::open(plain).unwrap();
    assert!(
        redis::cmd("PING").query::<String>(&mut probe).is_err(),
        "{url} answered plaintext"
    );
}

/// A batch of three (one failing) through the whole stack: charged two, refunded one, books in order.
async fn settle_a_batch(app: &TestApp) {
    let (_, key) = app.tenant(100).await;
    let batch_id = app
        .submit(
            &key,
            &json!({"tasks": [veo("a lighthouse"), veo("a storm"), veo("this one breaks [sim:fail]")]}),
        )
        .await;
    let batch = app.wait_final(&key, &batch_id).await;
    assert_eq!(batch["status"], "completed");
    assert_eq!(batch["request_counts"]["succeeded"], 2);
    assert_eq!(batch["request_counts"]["failed"], 1);
    assert_eq!(batch["credits"]["charged"], 16);
    assert_eq!(batch["credits"]["refunded"], 8);
    app.verify_ledger().await;
}

/// `config` pointed at `server`'s TLS port, with the TLS files `files` sets.
fn tls_config(server: &RedisServer, files: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    config.redis.url = Some(Secret::new(server.tls_url().unwrap()));
    files(&mut config);
    config
}

/// Connects with `config` and reads something: the error, if any step fails.
async fn try_store(config: &Config) -> Result<(), String> {
    let store = Store::from_config(config).await.map_err(|e| e.to_string())?;
    store.tenant_ids().await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_trusted_or_a_missing_client_certificate_fails_to_connect() {
    let certs = TestCerts::generate().unwrap();
    let server = RedisServer::start_tls(&certs).unwrap();

    // Everything set: it works (so the failures below are the missing pieces).
    let full = tls_config(&server, |c| {
        c.redis.tls_ca_file = Some(certs.ca());
        c.redis.tls_cert_file = Some(certs.client_cert());
        c.redis.tls_key_file = Some(certs.client_key());
    });
    full.validate().unwrap();
    try_store(&full).await.unwrap();

    // No CA file: the system's roots do not know the test CA.
    let untrusted = tls_config(&server, |c| {
        c.redis.tls_cert_file = Some(certs.client_cert());
        c.redis.tls_key_file = Some(certs.client_key());
    });
    let error = try_store(&untrusted).await.unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // No client certificate: the server refuses the connection.
    let anonymous = tls_config(&server, |c| c.redis.tls_ca_file = Some(certs.ca()));
    let error = try_store(&anonymous).await.unwrap_err();
    assert!(error.contains("CertificateRequired"), "{error}");
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_naming_the_key() {
    let invalid_key = |config: &Config| match config.validate() {
        Err(ConfigError::Invalid { key, message }) => format!("{key}: {message}"),
        other => panic!("expected an invalid key, got {other:?}"),
    };
    let mut config = test_config();
    config.redis.url = Some(Secret::new("rediss://127.0.0.1:6380"));
    config.redis.tls_cert_file = Some("client.crt".into());
    assert!(invalid_key(&config).starts_with("redis.tls_cert_file: and redis.tls_key_file go together"));

    config.redis.tls_key_file = Some("client.key".into());
    config.redis.url = Some(Secret::new("redis://127.0.0.1:6379"));
    assert!(invalid_key(&config).starts_with("redis.url: must use rediss://"));

    // A file that cannot be read is named when the service starts, and it does not wait for Redis.
    config.redis.url = Some(Secret::new("rediss://127.0.0.1:6380"));
    config.redis.tls_cert_file = None;
    config.redis.tls_key_file = None;
    config.redis.tls_ca_file = Some("/nonexistent/gantry-ca.pem".into());
    config.validate().unwrap();
    match Store::from_config(&config).await {
        Err(StartError::RedisTls(message)) => {
            assert!(
                message.contains("redis.tls_ca_file") && message.contains("/nonexistent/gantry-ca.pem"),
                "{message}"
            )
        }
        Err(other) => panic!("expected a TLS file error, got {other}"),
        Ok(_) => panic!("connected without a CA file"),
    }
}
