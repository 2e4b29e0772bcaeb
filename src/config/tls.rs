//! TLS and mTLS for the main listener (rustls).
//!
//! [`server_config`] loads the certificate chain and key (PEM files) and,
//! when a client CA is given, verifies client certificates against it:
//! required (`client_auth = "required"`) or optional (`"optional"`, so
//! API-key callers and probes without certificates still connect).
//! [`client_names`] reads the names a verified client certificate carries
//! (DNS subject alternative names and the subject common name): a caller's
//! `tls_client_names` match against these.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are requested.
    #[default]
    None,
    /// Requested and verified when presented; connections without one are accepted.
    Optional,
    /// Every connection must present a certificate signed by the client CA.
    Required,
}

/// TLS settings.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: String,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates that sign client certificates (enables mTLS).
    pub client_ca_file: Option<String>,
    /// Whether a client certificate is required (default: required when a
    /// client CA is given).
    pub client_auth: Option<ClientAuth>,
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{what}: cannot read {path}: {e}"))
}

/// Builds the rustls server config, advertising h2 and http/1.1 by ALPN.
pub fn server_config(c: &TlsConfig) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("tls.cert_file", &c.cert_file)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file {}: not PEM certificates: {e}", c.cert_file))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no certificate found",
            c.cert_file
        ));
    }
    // The key's bytes are not echoed in any error.
    let key = PrivateKeyDer::from_pem_slice(&read("tls.key_file", &c.key_file)?)
        .map_err(|_| format!("tls.key_file {}: no PEM private key found", c.key_file))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mode = c.client_auth.unwrap_or(if c.client_ca_file.is_some() {
        ClientAuth::Required
    } else {
        ClientAuth::None
    });
    let builder = match (&c.client_ca_file, mode) {
        (_, ClientAuth::None) => builder.with_no_client_auth(),
        (None, _) => return Err("tls.client_auth: needs tls.client_ca_file".to_owned()),
        (Some(ca), mode) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read("tls.client_ca_file", ca)?) {
                let cert = cert.map_err(|e| format!("tls.client_ca_file {ca}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.client_ca_file {ca}: {e}"))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if mode == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("tls.client_ca_file {ca}: {e}"))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls: certificate and key do not match or are unsupported: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The DNS subject alternative names and subject common names of a client
/// certificate (already verified by rustls).
pub fn client_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    for cn in x509.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(s.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_generated_client_certificate() {
        let ck =
            rcgen::generate_simple_self_signed(vec!["orchestrator.internal".to_owned()]).unwrap();
        let names = client_names(ck.cert.der());
        assert!(
            names.contains(&"orchestrator.internal".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn loads_pem_files_and_explains_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let c = TlsConfig {
            cert_file: cert.to_string_lossy().into_owned(),
            key_file: key.to_string_lossy().into_owned(),
            client_ca_file: Some(cert.to_string_lossy().into_owned()),
            client_auth: Some(ClientAuth::Optional),
        };
        let sc = server_config(&c).unwrap();
        assert_eq!(sc.alpn_protocols[0], b"h2");
        let missing = TlsConfig {
            key_file: "/nonexistent/key.pem".into(),
            ..c.clone()
        };
        let e = server_config(&missing).unwrap_err();
        assert!(e.contains("tls.key_file"), "{e}");
        let swapped = TlsConfig {
            key_file: c.cert_file.clone(),
            ..c
        };
        let e = server_config(&swapped).unwrap_err();
        assert!(e.contains("tls.key_file") && !e.contains("BEGIN"), "{e}");
    }
}
