//! The mesh's certificate authority (rcgen): a self-signed root generated on first install, or the user's
//! plug-in CA (Secret `cacerts` with `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`, Istio's
//! layout). It issues the webhook's serving certificate (renewed when a third of its lifetime is left) and
//! workload certificates from CSRs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::Error;

/// Keys of a CA Secret (Istio's plug-in CA layout; also used for the generated `istio-ca-secret`).
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Name of the Secret holding a generated root (Istio's name).
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";

/// Lifetime of a generated root.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of the webhook's serving certificate.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A signing CA: its certificate and key, the root of trust and the chain from the CA up to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaMaterial {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub root_cert_pem: String,
    pub cert_chain_pem: String,
}

/// A serving certificate issued by the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    /// Leaf certificate followed by the CA chain.
    pub cert_chain_pem: String,
    pub key_pem: String,
    /// What clients trust: the root.
    pub ca_bundle_pem: String,
}

fn ca_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Ca(format!("{what}: {e}"))
}

fn at(now: OffsetDateTime, after: Duration) -> OffsetDateTime {
    now + time::Duration::seconds(after.as_secs() as i64)
}

impl CaMaterial {
    /// Generates a self-signed root for `trust_domain`, valid from `now` for [`ROOT_LIFETIME`].
    pub fn generate(trust_domain: &str, now: OffsetDateTime) -> Result<CaMaterial, Error> {
        let key = KeyPair::generate().map_err(|e| ca_err("generating the root key", e))?;
        let params = root_params(trust_domain, now)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| ca_err("self-signing the root", e))?;
        let pem = cert.pem();
        Ok(CaMaterial {
            ca_cert_pem: pem.clone(),
            ca_key_pem: key.serialize_pem(),
            root_cert_pem: pem.clone(),
            cert_chain_pem: pem,
        })
    }

    /// Reads a CA Secret's data; `secret` names it in errors. Every key is required, and the key must
    /// match the certificate (checked by signing with it).
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
        secret: (&str, &str),
    ) -> Result<CaMaterial, Error> {
        let get = |key: &str| -> Result<String, Error> {
            let bytes = data.get(key).ok_or_else(|| Error::CaSecret {
                namespace: secret.0.to_string(),
                name: secret.1.to_string(),
                why: format!(
                    "missing key {key} (expected {CA_CERT}, {CA_KEY}, {ROOT_CERT}, {CERT_CHAIN})"
                ),
            })?;
            String::from_utf8(bytes.clone()).map_err(|_| Error::CaSecret {
                namespace: secret.0.to_string(),
                name: secret.1.to_string(),
                why: format!("{key} is not PEM text"),
            })
        };
        let m = CaMaterial {
            ca_cert_pem: get(CA_CERT)?,
            ca_key_pem: get(CA_KEY)?,
            root_cert_pem: get(ROOT_CERT)?,
            cert_chain_pem: get(CERT_CHAIN)?,
        };
        m.issuer().map_err(|e| Error::CaSecret {
            namespace: secret.0.to_string(),
            name: secret.1.to_string(),
            why: e.to_string(),
        })?;
        Ok(m)
    }

    /// The Secret data of this CA.
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        [
            (CA_CERT, &self.ca_cert_pem),
            (CA_KEY, &self.ca_key_pem),
            (ROOT_CERT, &self.root_cert_pem),
            (CERT_CHAIN, &self.cert_chain_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Error> {
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| ca_err(CA_KEY, e))?;
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, key).map_err(|e| ca_err(CA_CERT, e))
    }

    /// Issues a TLS serving certificate for `hosts` (DNS names or IP addresses).
    pub fn issue_serving(
        &self,
        hosts: &[String],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<ServingCert, Error> {
        let issuer = self.issuer()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            hosts.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| ca_err(&format!("host name {h}"), e)),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = at(now, lifetime);
        let key = KeyPair::generate().map_err(|e| ca_err("generating the serving key", e))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| ca_err("signing the serving certificate", e))?;
        Ok(ServingCert {
            cert_chain_pem: format!("{}{}", cert.pem(), self.cert_chain_pem),
            key_pem: key.serialize_pem(),
            ca_bundle_pem: self.root_cert_pem.clone(),
        })
    }

    /// Signs a workload's CSR with a SPIFFE identity (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`) as its
    /// only SAN; returns the leaf followed by the CA chain.
    pub fn sign_workload_csr(
        &self,
        csr_pem: &str,
        spiffe_id: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<String, Error> {
        let issuer = self.issuer()?;
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| ca_err("workload CSR", e))?;
        let uri = spiffe_id
            .to_string()
            .try_into()
            .map_err(|e| ca_err(&format!("SPIFFE id {spiffe_id}"), e))?;
        csr.params.subject_alt_names = vec![SanType::URI(uri)];
        csr.params.distinguished_name = DistinguishedName::new();
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        csr.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        csr.params.not_before = now - time::Duration::minutes(5);
        csr.params.not_after = at(now, ttl);
        let cert = csr
            .signed_by(&issuer)
            .map_err(|e| ca_err("signing the workload certificate", e))?;
        Ok(format!("{}{}", cert.pem(), self.cert_chain_pem))
    }
}

fn root_params(trust_domain: &str, now: OffsetDateTime) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "halyard root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = at(now, ROOT_LIFETIME);
    Ok(params)
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS names and IP addresses (as text) of the subjectAltName extension.
    pub hosts: Vec<String>,
}

/// Reads the first certificate of a PEM text.
pub fn cert_info(pem_text: &str) -> Result<CertInfo, Error> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| ca_err("reading a PEM certificate", e))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| ca_err("parsing an X.509 certificate", e))?;
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => hosts.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                        hosts.push(IpAddr::from(a).to_string());
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        hosts.push(IpAddr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        hosts,
    })
}

/// Whether an existing serving certificate must be replaced: unreadable, for other hosts, trusted through
/// another root, or with less than a third of its lifetime left.
pub fn serving_needs_renewal(
    cert_chain_pem: &str,
    ca_bundle_pem: &str,
    ca: &CaMaterial,
    hosts: &[String],
    now: OffsetDateTime,
) -> bool {
    if ca_bundle_pem != ca.root_cert_pem || !cert_chain_pem.ends_with(&ca.cert_chain_pem) {
        return true;
    }
    let Ok(info) = cert_info(cert_chain_pem) else {
        return true;
    };
    let mut want: Vec<&String> = hosts.iter().collect();
    let mut have: Vec<&String> = info.hosts.iter().collect();
    want.sort();
    have.sort();
    if want != have {
        return true;
    }
    let lifetime = info.not_after - info.not_before;
    now + lifetime / 3 >= info.not_after
}

/// When a serving certificate is due for renewal (a third of its lifetime before expiry).
pub fn renewal_due(cert_chain_pem: &str) -> Option<OffsetDateTime> {
    let info = cert_info(cert_chain_pem).ok()?;
    let lifetime = info.not_after - info.not_before;
    Some(info.not_after - lifetime / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn generated_root_issues_a_serving_cert_for_the_hosts() {
        let ca = CaMaterial::generate("cluster.local", now()).unwrap();
        let hosts = vec![
            "halyard-webhook.istio-system.svc".to_string(),
            "127.0.0.1".to_string(),
        ];
        let s = ca.issue_serving(&hosts, now(), SERVING_LIFETIME).unwrap();
        assert_eq!(s.ca_bundle_pem, ca.root_cert_pem);
        assert!(s.cert_chain_pem.ends_with(&ca.cert_chain_pem));
        let info = cert_info(&s.cert_chain_pem).unwrap();
        assert_eq!(info.hosts, hosts);
        assert!(!serving_needs_renewal(
            &s.cert_chain_pem,
            &s.ca_bundle_pem,
            &ca,
            &hosts,
            now()
        ));
        // two thirds into its life it is renewed
        let later = now() + time::Duration::days(250);
        assert!(serving_needs_renewal(
            &s.cert_chain_pem,
            &s.ca_bundle_pem,
            &ca,
            &hosts,
            later
        ));
        // other hosts, or another root, also renew
        assert!(serving_needs_renewal(
            &s.cert_chain_pem,
            &s.ca_bundle_pem,
            &ca,
            &hosts[..1],
            now()
        ));
        let other = CaMaterial::generate("cluster.local", now()).unwrap();
        assert!(serving_needs_renewal(
            &s.cert_chain_pem,
            &s.ca_bundle_pem,
            &other,
            &hosts,
            now()
        ));
        assert!(renewal_due(&s.cert_chain_pem).unwrap() < info.not_after);
    }

    #[test]
    fn secret_round_trip_and_missing_keys_are_named() {
        let ca = CaMaterial::generate("example.org", now()).unwrap();
        let data = ca.to_secret_data();
        let back = CaMaterial::from_secret_data(&data, ("istio-system", "cacerts")).unwrap();
        assert_eq!(back, ca);
        let mut partial = data.clone();
        partial.remove(CA_KEY);
        let err = CaMaterial::from_secret_data(&partial, ("istio-system", "cacerts"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("istio-system/cacerts") && err.contains("missing key ca-key.pem"),
            "{err}"
        );
        let mut bad = data;
        bad.insert(CA_KEY.into(), b"not a key".to_vec());
        assert!(CaMaterial::from_secret_data(&bad, ("istio-system", "cacerts")).is_err());
    }

    #[test]
    fn plugged_intermediate_signs_with_its_chain() {
        // A root and an intermediate made by hand, as a user's cacerts would hold.
        let root = CaMaterial::generate("example.org", now()).unwrap();
        let root_issuer = root.issuer().unwrap();
        let mut params = root_params("example.org", now()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "intermediate");
        let key = KeyPair::generate().unwrap();
        let inter = params.signed_by(&key, &root_issuer).unwrap();
        let plugged = CaMaterial {
            ca_cert_pem: inter.pem(),
            ca_key_pem: key.serialize_pem(),
            root_cert_pem: root.root_cert_pem.clone(),
            cert_chain_pem: format!("{}{}", inter.pem(), root.root_cert_pem),
        };
        let s = plugged
            .issue_serving(&["w.ns.svc".to_string()], now(), SERVING_LIFETIME)
            .unwrap();
        assert_eq!(s.ca_bundle_pem, root.root_cert_pem);
        assert_eq!(s.cert_chain_pem.matches("BEGIN CERTIFICATE").count(), 3);
    }

    #[test]
    fn workload_csr_gets_the_spiffe_identity() {
        let ca = CaMaterial::generate("cluster.local", now()).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let id = "spiffe://cluster.local/ns/default/sa/bookinfo";
        let chain = ca
            .sign_workload_csr(&csr, id, now(), Duration::from_secs(86400))
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value.general_names).contains(id));
    }
}
