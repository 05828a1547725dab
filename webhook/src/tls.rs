//! Serving certificate from PEM files, reloaded when they change. The resolver looks at the files' modification
//! time and size at each handshake and swaps in the new key pair once it parses and matches; connections
//! already established keep their session, so rotation drops nothing. A half-written pair (new certificate,
//! old key) does not match and is retried on the next handshake while the previous pair keeps serving.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::Error;

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[derive(Debug)]
struct Loaded {
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
}

#[derive(Debug)]
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a PEM certificate chain and private key.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let tls_err = |path: &Path, why: String| Error::Tls {
        path: path.to_path_buf(),
        why,
    };
    let cert_file = fs::File::open(cert_path).map_err(|e| Error::io(cert_path, e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(cert_file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert_path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(cert_path, "no CERTIFICATE block".into()));
    }
    let key_file = fs::File::open(key_path).map_err(|e| Error::io(key_path, e))?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_file))
        .map_err(|e| tls_err(key_path, format!("bad PEM: {e}")))?
        .ok_or_else(|| tls_err(key_path, "no PRIVATE KEY block".into()))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        tls_err(
            key_path,
            format!("key does not fit certificate {}: {e}", cert_path.display()),
        )
    })
}

impl ReloadingCertResolver {
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Result<Self, Error> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let provider = provider();
        let stamps = (stamp(&cert_path), stamp(&key_path));
        let key = Arc::new(load_certified_key(&cert_path, &key_path, &provider)?);
        Ok(ReloadingCertResolver {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Loaded { stamps, key }),
        })
    }

    /// Reloads when either file changed; returns whether a new pair is now served.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.stamps == stamps {
                return false;
            }
        }
        match load_certified_key(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                *current = Loaded {
                    stamps,
                    key: Arc::new(key),
                };
                tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                true
            }
            Err(e) => {
                // Keep serving the previous pair; the next handshake tries again.
                tracing::warn!(error = %e, "serving certificate changed but cannot be loaded yet");
                false
            }
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .key
            .clone()
    }

    /// A rustls server config (TLS 1.2/1.3, ALPN h2 and http/1.1) serving this resolver's pair.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls {
                path: self.cert_path.clone(),
                why: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(self.current())
    }
}
