//! How the PostgreSQL store's connections are encrypted and whom they trust: libpq's `sslmode`
//! and `sslrootcert`, read from the store URL, so a URL that works with `psql` works here.

use std::path::PathBuf;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never encrypted.
    Disable,
    /// Encrypted when the server offers it, unverified (libpq's default).
    #[default]
    Prefer,
    /// Always encrypted, unverified (verified against `sslrootcert` when one is given).
    Require,
    /// Always encrypted, the server's certificate signed by a trusted authority.
    VerifyCa,
    /// Also for the host the URL names.
    VerifyFull,
}

impl SslMode {
    /// Its name in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of a store URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// How far the connection is encrypted and checked.
    pub mode: SslMode,
    /// The authorities to trust (PEM, one or more certificates) instead of the system's.
    pub root_cert: Option<PathBuf>,
}

/// A TLS setting that cannot be used, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An `sslmode` libpq does not know.
    #[error(
        "sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full (verify-full with sslrootcert=CA.pem checks the server is the one named)"
    )]
    Mode(String),
    /// The `sslrootcert` file cannot be read.
    #[error("cannot read sslrootcert `{path}`; name a PEM file of the authorities to trust")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `sslrootcert` file holds no certificate that parses.
    #[error("sslrootcert `{path}` holds no PEM certificate that parses")]
    Cert {
        /// The file.
        path: PathBuf,
        /// The first certificate's error, if one looked like a certificate.
        source: Option<native_tls::Error>,
    },
    /// `verify-ca` with no authority of its own would take any publicly signed certificate
    /// for any name.
    #[error(
        "sslmode=verify-ca checks the authority only, so it needs sslrootcert=CA.pem; use verify-full to trust the system's authorities"
    )]
    VerifyCaWithoutRoot,
    /// `verify-*` or `sslrootcert` in a connection string this parser leaves to the driver.
    #[error(
        "sslmode=verify-ca, verify-full and sslrootcert need the store as a postgres://USER@HOST:PORT/DATABASE URL with one host"
    )]
    NeedsUrl,
    /// The TLS library refused the settings.
    #[error("cannot set up TLS for the store")]
    Connector(#[source] native_tls::Error),
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL: answers the rest (for the
/// driver, which knows neither `verify-*` nor `sslrootcert`) and the settings. The rest keeps
/// every other byte of the query as written (the driver percent-decodes it; re-encoding it
/// would turn a space into `+`). A connection string that is not such a URL is the driver's
/// to read, with its own `sslmode` (`None`); it may not ask for what only this parser knows.
pub fn split(url: &str) -> Result<(String, Option<Tls>), TlsError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some(mut parsed) = is_url.then(|| url::Url::parse(url).ok()).flatten() else {
        if url.contains("sslmode=verify") || url.contains("sslrootcert") {
            return Err(TlsError::NeedsUrl);
        }
        return Ok((url.to_string(), None));
    };
    let mut tls = Tls::default();
    let mut rest = Vec::new();
    for segment in parsed.query().unwrap_or_default().split('&') {
        let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match percent_encoding::percent_decode_str(key)
            .decode_utf8_lossy()
            .as_ref()
        {
            "sslmode" => {
                tls.mode = match value.as_ref() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(TlsError::Mode(other.to_string())),
                }
            }
            // `system`, as in libpq: the system's authorities, which is what no file means here.
            "sslrootcert" if value == "system" => tls.root_cert = None,
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value.as_ref())),
            _ if segment.is_empty() => {}
            _ => rest.push(segment),
        }
    }
    if tls.mode == SslMode::VerifyCa && tls.root_cert.is_none() {
        return Err(TlsError::VerifyCaWithoutRoot);
    }
    let rest = rest.join("&");
    parsed.set_query((!rest.is_empty()).then_some(rest.as_str()));
    Ok((parsed.to_string(), Some(tls)))
}

impl Tls {
    /// What the driver's own `sslmode` means here, for a connection string it read itself.
    pub fn of_driver(mode: tokio_postgres::config::SslMode) -> Self {
        Self {
            mode: match mode {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
                // Require, and any mode a later driver adds: encrypted at least.
                _ => SslMode::Require,
            },
            root_cert: None,
        }
    }

    /// Whether the server's certificate is checked.
    pub fn verified(&self) -> bool {
        matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (self.mode == SslMode::Require && self.root_cert.is_some())
    }

    /// What the driver is told: whether it must encrypt.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The connector that encrypts and checks as the mode says.
    pub fn connector(&self) -> Result<postgres_native_tls::MakeTlsConnector, TlsError> {
        let mut b = native_tls::TlsConnector::builder();
        if self.verified() {
            if let Some(path) = &self.root_cert {
                // Like libpq: sslrootcert is the only authority trusted.
                b.disable_built_in_roots(true);
                for cert in certificates(path)? {
                    b.add_root_certificate(cert);
                }
            }
            if self.mode != SslMode::VerifyFull {
                b.danger_accept_invalid_hostnames(true);
            }
        } else {
            // prefer and require check nothing, as in libpq: they only keep eavesdroppers out.
            b.danger_accept_invalid_certs(true);
            b.danger_accept_invalid_hostnames(true);
        }
        let c = b.build().map_err(TlsError::Connector)?;
        Ok(postgres_native_tls::MakeTlsConnector::new(c))
    }
}

/// Every certificate of a PEM file (a provider's bundle holds many).
fn certificates(path: &std::path::Path) -> Result<Vec<native_tls::Certificate>, TlsError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut certs = Vec::new();
    let mut first_error = None;
    for block in text.split(BEGIN).skip(1) {
        let pem = format!("{BEGIN}{block}");
        match native_tls::Certificate::from_pem(pem.as_bytes()) {
            Ok(c) => certs.push(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: path.to_path_buf(),
            source: first_error,
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_settings_come_out_of_the_url_and_the_rest_stays() {
        let split = |u: &str| {
            let (rest, tls) = split(u).unwrap();
            (rest, tls.unwrap())
        };
        let (rest, tls) = split(
            "postgres://keelson@db:5432/keelson?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        );
        assert_eq!(
            rest,
            "postgres://keelson@db:5432/keelson?application_name=x"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert!(tls.verified());
        let (rest, tls) = split("postgres://keelson@db/keelson");
        assert_eq!(rest, "postgres://keelson@db/keelson");
        assert_eq!(tls, Tls::default());
        assert!(!tls.verified());
        let (rest, tls) = split("postgresql://k@db/k?sslmode=require");
        assert_eq!(rest, "postgresql://k@db/k");
        assert!(!tls.verified());
        // require with an authority checks it, as libpq does.
        let (_, tls) = split("postgres://k@db/k?sslmode=require&sslrootcert=ca.pem");
        assert!(tls.verified());
        // The rest of the query keeps its bytes: a space stays %20, a socket path stays encoded.
        let (rest, _) = split(
            "postgres://k@db/k?password=my%20pass&sslmode=require&host=%2Fvar%2Frun%2Fpg&user=a+b",
        );
        assert_eq!(
            rest,
            "postgres://k@db/k?password=my%20pass&host=%2Fvar%2Frun%2Fpg&user=a+b"
        );
        // An encoded authority path is decoded; `system` is the system's authorities.
        let (_, tls) =
            split("postgres://k@db/k?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem");
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca b.pem")));
        let (_, tls) = split("postgres://k@db/k?sslmode=verify-full&sslrootcert=system");
        assert_eq!(tls.root_cert, None);
        assert!(tls.verified());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let err = split("postgres://k@db/k?sslmode=verify").unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
        // verify-ca with the system's authorities would take any public certificate.
        assert!(matches!(
            split("postgres://k@db/k?sslmode=verify-ca"),
            Err(TlsError::VerifyCaWithoutRoot)
        ));
        // A key=value string, or a URL the parser cannot read (hosts with ports), is the
        // driver's, sslmode included; what only this parser knows is refused there.
        for kv in [
            "host=db user=k sslmode=require",
            "postgres://u@h1:5432,h2:5432/db?sslmode=require",
        ] {
            assert_eq!(split(kv).unwrap(), (kv.to_string(), None));
        }
        for kv in [
            "host=db user=k sslmode=verify-full",
            "postgres://u@h1:5432,h2:5432/db?sslmode=verify-full",
            "host=db sslrootcert=/ca.pem",
        ] {
            assert!(matches!(split(kv), Err(TlsError::NeedsUrl)), "{kv}");
        }
        assert_eq!(
            Tls::of_driver(tokio_postgres::config::SslMode::Require).mode,
            SslMode::Require
        );
    }

    #[test]
    fn an_authority_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let tls = |p: &std::path::Path| Tls {
            mode: SslMode::VerifyFull,
            root_cert: Some(p.to_path_buf()),
        };
        assert!(matches!(
            tls(&missing).connector(),
            Err(TlsError::Read { .. })
        ));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(matches!(tls(&junk).connector(), Err(TlsError::Cert { .. })));
    }
}
