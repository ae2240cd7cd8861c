//! TLS: certificates and keys read from PEM files, and the rustls configurations of the
//! server (HTTPS on the one port, with client certificates checked for the peer API) and
//! of the clients (members talking to members, nacosctl, the tests).
//!
//! Owns only configuration: the server's connections are `http::server`'s, and the
//! clients' are ureq's. Every error names the file and what to do.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(path: &Path, what: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "{}: {what}: {why}; give a PEM file (`-----BEGIN ...-----`)",
        path.display()
    ))
}

/// Every certificate in a PEM file (a chain: the leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, "cannot read certificates", e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(path, "not a certificate file", e))?;
    if certs.is_empty() {
        return Err(bad(path, "no certificate in it", "found none"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad(path, "no private key in it", e))
}

fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| bad(path, "not a usable CA certificate", e))?;
    }
    Ok(roots)
}

/// The server side: `cert` and `key` for the port, and with `client_ca`, client
/// certificates signed by it are checked. Clients without one may still connect (a client
/// of the `/v1` API needs none); the peer API then refuses a request whose connection did
/// not present a valid certificate (`http`).
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(ca, "cannot check client certificates with it", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, "the key does not match the certificate", e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The client side: server certificates are checked against `ca` (else the public web
/// roots), and with `identity` (certificate, key) the client presents a certificate, as a
/// member does to its peers.
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<ClientConfig> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| bad(key, "the key does not match the certificate", e)),
    }
}

/// A member's TLS settings: what it serves with, and what it talks to its peers with.
#[derive(Clone, Debug)]
pub struct NodeTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// Peer requests must come over a connection with a client certificate signed by
    /// `--tls-client-ca`.
    pub peers_need_certificates: bool,
}

impl NodeTls {
    /// From the node's flags: `--tls-cert`, `--tls-key`, `--tls-client-ca`, `--tls-ca`.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<NodeTls> {
        Ok(NodeTls {
            server: Arc::new(server_config(cert, key, client_ca)?),
            client: Arc::new(client_config(ca, Some((cert, key)))?),
            peers_need_certificates: client_ca.is_some(),
        })
    }
}

/// The first byte of a TLS connection (a handshake record): anything else on a TLS port is
/// plain HTTP (or noise), answered in plain text so the client learns why.
pub const HANDSHAKE_BYTE: u8 = 0x16;

/// A throwaway certificate authority and certificates for local and test clusters
/// (`nacosctl certs`, `scripts/cluster.sh up N --tls`): never for production, where the
/// operator's own CA issues them.
pub mod local {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    use crate::error::{Error, Result};

    /// The files `make` writes into its directory.
    #[derive(Clone, Debug)]
    pub struct Files {
        pub ca: PathBuf,
        /// Every member's certificate (valid for all the hosts given), for serving and for
        /// presenting to peers; also usable as a client certificate.
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    fn rc(e: rcgen::Error) -> Error {
        Error::Config(format!("cannot make a certificate: {e}"))
    }

    /// Makes `ca.pem`, `ca-key.pem`, `node.pem` and `node-key.pem` in `dir`, the node
    /// certificate valid for `hosts` (names or IP addresses) and signed by the new CA.
    /// With `expired`, the node certificate's validity ended in 2021 (for tests).
    pub fn make(dir: &Path, hosts: &[String], expired: bool) -> Result<Files> {
        std::fs::create_dir_all(dir).map_err(|e| Error::store(dir, e))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "nacos-raft local CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(rc)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
        let mut node = CertificateParams::new(hosts.to_vec()).map_err(rc)?;
        node.distinguished_name
            .push(DnType::CommonName, "nacos-raft member");
        node.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            node.not_before = rcgen::date_time_ymd(2020, 1, 1);
            node.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let node_key = KeyPair::generate().map_err(rc)?;
        let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key).map_err(rc)?;
        let files = Files {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|e| Error::store(path, e))
        };
        write(&files.ca, ca_cert.pem())?;
        write(&dir.join("ca-key.pem"), ca_key.serialize_pem())?;
        write(&files.cert, node_cert.pem())?;
        write(&files.key, node_key.serialize_pem())?;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_certificates_load_into_both_configs_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = local::make(dir.path(), &["127.0.0.1".into(), "localhost".into()], false).unwrap();
        let t = NodeTls::load(&f.cert, &f.key, Some(&f.ca), Some(&f.ca)).unwrap();
        assert!(t.peers_need_certificates);
        assert!(client_config(Some(&f.ca), None).is_ok());
        // A key that is not the certificate's, a file that is not PEM, a missing file.
        let other = tempfile::tempdir().unwrap();
        let g = local::make(other.path(), &["127.0.0.1".into()], false).unwrap();
        let e = server_config(&f.cert, &g.key, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = server_config(&junk, &f.key, None).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("PEM"), "{e}");
        let e = read_key(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
