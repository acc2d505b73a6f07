//! Test certificates made with the openssl CLI (no certificate generator crate is at hand): a
//! CA and the certificates it signs (`Pki`), and self-signed ones (`self_signed`), for the
//! upstream and downstream TLS tests.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Runs `openssl ARGS` in `dir`; a failure fails the test with openssl's words.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `names` (first one is the CN), PEM (certificate, key), made in
/// `dir`.
pub(crate) fn self_signed(dir: &std::path::Path, names: &[&str]) -> (String, String) {
    let (key, cert) = (format!("{}.key", names[0]), format!("{}.crt", names[0]));
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={}", names[0]),
            "-addext",
            &format!("subjectAltName={san}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
    );
    (
        std::fs::read_to_string(dir.join(cert)).unwrap(),
        std::fs::read_to_string(dir.join(key)).unwrap(),
    )
}

/// Test certificates made with the openssl CLI: a CA, and server certificates it signs.
pub(crate) struct Pki {
    pub dir: std::path::PathBuf,
}

impl Pki {
    pub(crate) fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("kgw-upstream-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            &format!("/CN=test CA {tag}"),
        ]);
        pki
    }

    pub(crate) fn openssl(&self, args: &[&str]) {
        openssl(&self.dir, args);
    }

    /// A server certificate `name`.crt with these SANs (e.g. "DNS:a.example.com"), signed by
    /// the CA.
    pub(crate) fn server(&self, name: &str, sans: &str) -> CertificateDer<'static> {
        self.leaf(name, sans, "serverAuth")
    }

    /// A certificate `name`.crt (key `name`.key) for `usage` (serverAuth, clientAuth).
    pub(crate) fn leaf(&self, name: &str, sans: &str, usage: &str) -> CertificateDer<'static> {
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            format!("subjectAltName={sans}\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
        crate::upstream_tls::parse_certificates(&std::fs::read(self.dir.join(&crt)).unwrap(), "test")
            .unwrap()
            .remove(0)
    }

    pub(crate) fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.crt")).unwrap()
    }
    /// The certificate `name`.crt, DER.
    pub(crate) fn cert(&self, name: &str) -> CertificateDer<'static> {
        crate::upstream_tls::parse_certificates(self.pem(&format!("{name}.crt")).as_bytes(), name)
            .unwrap()
            .remove(0)
    }

    /// The PEM text of one of its files.
    pub(crate) fn pem(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    /// The key of `name`, DER.
    pub(crate) fn key(&self, name: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.pem(&format!("{name}.key")).as_bytes()).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
