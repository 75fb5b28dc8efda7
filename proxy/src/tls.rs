//! TLS termination: the certificate and key from PEM files, reloaded when
//! they change.
//!
//! A renewed certificate (cert-manager rewriting a Secret, an ACME client
//! rewriting files) must be served without a restart, and a bad renewal
//! must not take TLS down. So the listener does not hold a certificate: it
//! asks [`Certificate`] on every handshake, which holds the last good pair
//! and replaces it only with a pair that loads and matches. The files are
//! looked at every second by content, like the config file (a Secret mount
//! swaps a symlink, so neither mtime nor inotify on the file is reliable).
//!
//! The certificate and key are read with the same bounds as a config file
//! (regular files, at most 16 MiB), parsed with rustls's PEM reader and
//! checked to match each other before use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::file::read_watched_text;

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`tls.crt` of a Kubernetes TLS
    /// Secret).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{}: {what}; give a PEM file with {expected}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// The key is not one rustls can sign with, or does not belong to the
    /// certificate.
    #[error("{} and {} cannot be used together: {reason}; give the key of the certificate's first (leaf) entry", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The process's rustls provider: the one installed as the default (weir's
/// binary installs aws-lc-rs at startup), else the provider rustls picks
/// from its features.
fn provider() -> Arc<CryptoProvider> {
    if let Some(provider) = CryptoProvider::get_default() {
        return Arc::clone(provider);
    }
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .map(Arc::clone)
        .expect("a default rustls provider was just installed")
}

fn read(path: &Path) -> Result<String, TlsError> {
    read_watched_text(path, "a PEM file").map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads and checks the pair: the chain, leaf first, and a key that signs
/// for the leaf.
///
/// # Errors
/// [`TlsError`] naming the file and what to give instead.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let (cert_text, key_text) = read_pair(files)?;
    parse(files, &cert_text, &key_text)
}

/// The certificate and key files' text.
fn read_pair(files: &TlsFiles) -> Result<(String, String), TlsError> {
    Ok((read(&files.cert)?, read(&files.key)?))
}

/// [`load`] on text already read from `files` (named in errors).
fn parse(files: &TlsFiles, cert_text: &str, key_text: &str) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            what: e.to_string(),
            expected: "the certificate chain (BEGIN CERTIFICATE)",
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert.clone(),
            what: "no certificate in it".into(),
            expected: "the certificate chain (BEGIN CERTIFICATE)",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        what: e.to_string(),
        expected: "the private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}

/// What a CA bundle for `https` upstreams must hold.
const CA_BUNDLE: &str = "CA certificates only (BEGIN CERTIFICATE)";

/// Checks a CA bundle for `https` upstreams as pingora's connector will
/// load it: every PEM section a certificate that rustls takes as a trust
/// anchor, at least one. pingora panics on a bundle it cannot load; weir
/// refuses it at startup, naming the file. Returns how many it holds.
///
/// # Errors
/// [`TlsError`] naming the file and what to give instead.
pub fn check_ca_bundle(path: &Path) -> Result<usize, TlsError> {
    let text = read(path)?;
    let pem = |what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
        expected: CA_BUNDLE,
    };
    let mut store = pingora::tls::RootCertStore::empty();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
        let (kind, der) = section.map_err(|e| pem(e.to_string()))?;
        if kind != SectionKind::Certificate {
            return Err(pem(format!("it holds a {kind:?} section")));
        }
        store
            .add(CertificateDer::from(der))
            .map_err(|e| pem(format!("a certificate rustls cannot use: {e}")))?;
    }
    if store.is_empty() {
        return Err(pem("no certificate in it".into()));
    }
    Ok(store.len())
}

/// The certificate the listener serves: the last good pair from
/// [`TlsFiles`], replaced when the files change to another good pair.
pub struct Certificate {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    state: Mutex<Seen>,
}

/// What the last look at the files found.
#[derive(Debug, Default)]
struct Seen {
    /// XXH64 of the certificate and key text last looked at.
    fingerprint: Option<u64>,
    /// Why the files as they are now are not served, if they are not.
    last_error: Option<Arc<TlsError>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn fingerprint(cert: &str, key: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
    hasher.update(cert.as_bytes());
    hasher.update(&[0]);
    hasher.update(key.as_bytes());
    hasher.digest()
}

/// What one look at the files did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The files did not change.
    Unchanged,
    /// A new pair is served from the next handshake on.
    Served,
    /// The files changed but cannot be used; the last good pair stays.
    Refused(String),
}

impl Certificate {
    /// Loads the pair; the proxy does not start without a good one.
    ///
    /// # Errors
    /// As [`load`].
    pub fn open(files: TlsFiles) -> Result<Certificate, TlsError> {
        let (cert_text, key_text) = read_pair(&files)?;
        let key = parse(&files, &cert_text, &key_text)?;
        let print = fingerprint(&cert_text, &key_text);
        Ok(Certificate {
            files,
            current: ArcSwap::from_pointee(key),
            state: Mutex::new(Seen {
                fingerprint: Some(print),
                last_error: None,
            }),
        })
    }

    /// Why the files on disk are not the ones served, if they are not.
    pub fn last_error(&self) -> Option<Arc<TlsError>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_error
            .clone()
    }

    /// Looks at the files once: serves a changed pair that loads, keeps
    /// the last good one (and logs why, once) when it does not.
    pub fn poll(&self) -> Renewal {
        let mut seen = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let texts = read_pair(&self.files);
        let print = texts.as_ref().ok().map(|(c, k)| fingerprint(c, k));
        if print.is_some() && print == seen.fingerprint {
            return Renewal::Unchanged;
        }
        // While a renewal writes the two files one after the other, the
        // pair does not match for a moment: that is refused here and the
        // next look, after the second file, serves it.
        match texts.and_then(|(cert, key)| parse(&self.files, &cert, &key)) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                seen.fingerprint = print;
                seen.last_error = None;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Renewal::Served
            }
            Err(e) => {
                let message = e.to_string();
                if seen.last_error.as_ref().map(|l| l.to_string()) != Some(message.clone()) {
                    tracing::warn!(error = %message, "TLS certificate not reloaded; serving the last good one");
                }
                seen.fingerprint = print;
                seen.last_error = Some(Arc::new(e));
                Renewal::Refused(message)
            }
        }
    }

    /// Polls the files every `every` until the returned future is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // File reads block; keep them off the proxy's workers.
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || me.poll()).await;
        }
    }
}

/// The listener's view: one certificate for every name asked for.
#[derive(Debug)]
pub(crate) struct Resolver(pub(crate) Arc<Certificate>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}
