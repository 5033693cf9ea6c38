//! TLS for the Audit trail API: the server's rustls configuration, and the
//! client configuration the Portal uses to call the Engines.
//!
//! Only the `ring` provider is compiled in, so every configuration is built
//! with an explicit provider instead of relying on a process default.
//!
//! Engine certificates: Nexthink appliances ship self-signed certificates,
//! and `nginxSelfSignedCertificate` in `/var/nexthink/nxauditlog/.env`
//! (read as an environment file) says whether the Portal must accept them.
//! The API contract (docs/operations.md) puts verification on by default, so only an explicit `true`
//! turns it off; `false`, a missing key or a missing file verify against
//! the CA roots (Mozilla's, the system bundle, and an optional extra file).
//! Accepting self-signed certificates means accepting any certificate, as
//! `curl -k` does (appliance certificates rarely name the host the Portal
//! uses), while the handshake signature is still checked, so the peer must
//! hold the key of the certificate it shows.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ApiError;

/// The system CA bundle read in verifying mode when present (Debian path).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The key of the environment file that decides Engine verification.
pub const SELF_SIGNED_KEY: &str = "nginxSelfSignedCertificate";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let bad = |m: String| ApiError::Tls(format!("{}: {m}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in PEM file".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ApiError> {
    let bad = |m: String| ApiError::Tls(format!("{}: {m}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no private key in PEM file".into()))
}

/// The server configuration: HTTP/1.1 only, TLS 1.2 and 1.3.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ApiError::Tls(format!("{}: {e}", cert.display())))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// How the Portal checks the Engines' certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineTls {
    /// `nginxSelfSignedCertificate=true`: any certificate (handshake
    /// signature still verified).
    AcceptSelfSigned,
    /// Full verification against the CA roots.
    Verify,
}

/// Reads `nginxSelfSignedCertificate` from an environment file: `KEY=VALUE`
/// lines, `#` comments, optional `export ` and quotes; the last assignment
/// wins (the documented procedure appends a line). A missing file means
/// verification; an unreadable one or an unknown value is an error, so a
/// typo cannot silently change the TLS policy.
pub fn engine_tls_from_env_file(path: &Path) -> Result<EngineTls, ApiError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EngineTls::Verify),
        Err(e) => return Err(ApiError::Config(format!("{}: {e}", path.display()))),
    };
    let mut value: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != SELF_SIGNED_KEY {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        value = Some(v.trim().to_ascii_lowercase());
    }
    match value.as_deref() {
        None => Ok(EngineTls::Verify),
        Some("true" | "1" | "yes") => Ok(EngineTls::AcceptSelfSigned),
        Some("false" | "0" | "no") => Ok(EngineTls::Verify),
        Some(other) => Err(ApiError::Config(format!(
            "{}: {SELF_SIGNED_KEY} must be true or false, not {other:?}",
            path.display()
        ))),
    }
}

/// The client configuration for calls to the Engines. `extra_ca` adds
/// trusted roots (PEM) in verifying mode.
pub fn client_config(
    mode: &EngineTls,
    extra_ca: Option<&Path>,
) -> Result<rustls::ClientConfig, ApiError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?;
    let mut cfg = match mode {
        EngineTls::AcceptSelfSigned => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth(),
        EngineTls::Verify => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let system = Path::new(SYSTEM_CA_BUNDLE);
            if system.exists() {
                if let Ok(certs) = load_certs(system) {
                    roots.add_parsable_certificates(certs);
                }
            }
            if let Some(p) = extra_ca {
                for c in load_certs(p)? {
                    roots
                        .add(c)
                        .map_err(|e| ApiError::Tls(format!("{}: {e}", p.display())))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts any server certificate but checks the handshake signature with
/// the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Result<EngineTls, ApiError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".env");
        std::fs::write(&p, text).unwrap();
        engine_tls_from_env_file(&p)
    }

    #[test]
    fn env_file_decides_verification() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            engine_tls_from_env_file(&d.path().join("missing")).unwrap(),
            EngineTls::Verify
        );
        assert_eq!(env("").unwrap(), EngineTls::Verify);
        assert_eq!(
            env("nginxSelfSignedCertificate=true\n").unwrap(),
            EngineTls::AcceptSelfSigned
        );
        assert_eq!(
            env("# c\nOTHER=1\nexport nginxSelfSignedCertificate = \"TRUE\"\n").unwrap(),
            EngineTls::AcceptSelfSigned
        );
        // The documented procedure appends `false` at the bottom: last wins.
        assert_eq!(
            env("nginxSelfSignedCertificate=true\nnginxSelfSignedCertificate=false").unwrap(),
            EngineTls::Verify
        );
        assert!(env("nginxSelfSignedCertificate=maybe").is_err());
    }

    #[test]
    fn client_configs_build() {
        assert!(client_config(&EngineTls::Verify, None).is_ok());
        assert!(client_config(&EngineTls::AcceptSelfSigned, None).is_ok());
    }
}
