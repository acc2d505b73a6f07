//! Certificates for the TLS tests, made with the `openssl` command line into a test's own
//! directory: a CA, leaves it signs (with the SANs a test asks for), self-signed certificates,
//! and expired ones. Each returns PEM file paths; `secret_yaml` wraps a pair in a Secret.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("reading the certificate")
    }

    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).expect("reading the key")
    }
}

/// A test CA in `dir`.
pub struct Pki {
    dir: PathBuf,
    pub ca: CertFiles,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (install it: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-addext subjectAltName=DNS:a,DNS:b` for the names given (IP addresses as IP:).
fn san_extension(sans: &[&str]) -> String {
    let names: Vec<String> = sans
        .iter()
        .map(|s| {
            if s.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{s}")
            } else if s.contains("://") {
                format!("URI:{s}")
            } else {
                format!("DNS:{s}")
            }
        })
        .collect();
    format!("subjectAltName={}", names.join(","))
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("PKI directory");
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
                "3650",
                "-subj",
                "/CN=kgw test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        Pki {
            dir: dir.to_path_buf(),
            ca: CertFiles {
                cert: dir.join("ca.crt"),
                key: dir.join("ca.key"),
            },
        }
    }

    /// A key and a signing request for `name` carrying `sans`: the files `name`.csr and
    /// `name`.key, and the name `name`.crt for the certificate to come.
    fn request(&self, name: &str, sans: &[&str]) -> (String, String, String) {
        let (csr, key, cert) = (
            format!("{name}.csr"),
            format!("{name}.key"),
            format!("{name}.crt"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &san_extension(sans),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        (csr, key, cert)
    }

    /// A leaf for `name` signed by the CA, carrying `sans` (DNS names, IPs or URIs).
    pub fn leaf(&self, name: &str, sans: &[&str]) -> CertFiles {
        let (csr, key, cert) = self.request(name, sans);
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, format!("{}\n", san_extension(sans))).expect("extension file");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "365",
                "-extfile",
                &ext.to_string_lossy(),
                "-out",
                &cert,
            ],
        );
        CertFiles {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }

    /// A self-signed certificate for `name` (no CA vouches for it).
    pub fn self_signed(&self, name: &str, sans: &[&str]) -> CertFiles {
        let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "365",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &san_extension(sans),
                "-keyout",
                &key,
                "-out",
                &cert,
            ],
        );
        CertFiles {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }

    /// A leaf signed by the CA that expired in 2021.
    pub fn expired(&self, name: &str, sans: &[&str]) -> CertFiles {
        let (csr, key, cert) = self.request(name, sans);
        // `openssl x509` cannot date a certificate in the past; `openssl ca` can.
        std::fs::write(
            self.dir.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n[any]\ncommonName = supplied\n",
        )
        .expect("ca.cnf");
        let index = self.dir.join("index.txt");
        if !index.exists() {
            std::fs::write(&index, "").expect("index.txt");
            std::fs::write(self.dir.join("serial"), "1000\n").expect("serial");
        }
        openssl(
            &self.dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.crt",
                "-keyfile",
                "ca.key",
                "-in",
                &csr,
                "-out",
                &cert,
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
                "-notext",
            ],
        );
        CertFiles {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// A `kubernetes.io/tls` Secret with the pair, and `ca.crt` when given, as YAML (stringData).
pub fn secret_yaml(namespace: &str, name: &str, pair: &CertFiles, ca: Option<&Path>) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&pair.cert_pem(), "    "),
        indent(&pair.key_pem(), "    ")
    );
    if let Some(ca) = ca {
        let ca = std::fs::read_to_string(ca).expect("reading the CA");
        yaml.push_str(&format!("  ca.crt: |\n{}", indent(&ca, "    ")));
    }
    yaml
}

/// A ConfigMap holding `ca.crt`, as BackendTLSPolicy refers to it.
pub fn ca_config_map_yaml(namespace: &str, name: &str, ca: &Path) -> String {
    let ca = std::fs::read_to_string(ca).expect("reading the CA");
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  ca.crt: |\n{}",
        indent(&ca, "    ")
    )
}
