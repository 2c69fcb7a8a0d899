//! Certificates for TLS tests, made with the `openssl` command-line tool: a throwaway CA, a server certificate
//! for 127.0.0.1 and a client certificate, both signed by that CA.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{ensure, Context};

/// A directory of PEM files: `ca.crt`, `server.crt`/`server.key` and `client.crt`/`client.key`; removed on drop.
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// Makes a new CA and the two certificates it signs (P-256 keys, valid for a day).
    pub fn generate() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "gantry-certs-{}-{}",
            std::process::id(),
            crate::free_port()?
        ));
        std::fs::create_dir_all(&dir).context("creating the certificate directory")?;
        let certs = Self { dir };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        certs.openssl(
            &[
                &["req", "-x509"],
                &key[..],
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
            "/CN=gantry test CA",
        )?;
        std::fs::write(
            certs.dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        std::fs::write(certs.dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for who in ["server", "client"] {
            let (key_file, csr, crt, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.crt"),
                format!("{who}.ext"),
            );
            certs.openssl(
                &[&["req"], &key[..], &["-keyout", &key_file, "-out", &csr]].concat(),
                &format!("/CN={who}"),
            )?;
            certs.openssl_x509(&csr, &crt, &ext)?;
        }
        Ok(certs)
    }

    /// The `redis-server` arguments that serve TLS with the server certificate and ask clients for a certificate
    /// signed by the CA (the TLS port is the caller's to add).
    pub fn redis_server_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--tls-cert-file".to_owned(),
            path(self.server_cert()),
            "--tls-key-file".to_owned(),
            path(self.server_key()),
            "--tls-ca-cert-file".to_owned(),
            path(self.ca()),
        ]
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// `openssl req ... -subj subject -days 1`: a key and a request (or, with `-x509`, a self-signed certificate).
    fn openssl(&self, args: &[&str], subject: &str) -> anyhow::Result<()> {
        run(&self.dir, &[args, &["-subj", subject, "-days", "1"]].concat())
    }

    /// Signs `csr` with the CA into `crt`, with the extensions in `ext`.
    fn openssl_x509(&self, csr: &str, crt: &str, ext: &str) -> anyhow::Result<()> {
        run(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                crt,
                "-days",
                "1",
                "-extfile",
                ext,
            ],
        )
    }
}

fn run(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (is it installed? `apt-get install openssl`)")?;
    ensure!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
