//! Certificates for tests of mutual TLS: a throw-away CA and the certificates it signs, made
//! with rcgen on ring (no OpenSSL), as PEM text. Writing them where agents can read them is
//! `secrets`' job.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that lives as long as the test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl Ca {
    /// A new CA called `name`, with a fresh ECDSA P-256 key.
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("no names is a valid CA");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a CA key");
        Ca { issuer: CertifiedIssuer::self_signed(p, key).expect("a self-signed CA certificate") }
    }

    /// The CA's certificate (what `tls.ca_file` and `--ca-file` hold).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `common_name`, valid for `names` (DNS names or IP addresses), for both
    /// server and client use, as every member needs.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("valid subject alternative names");
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a key");
        let cert = p.signed_by(&key, &*self.issuer).expect("the CA signs");
        Issued { cert: cert.pem(), key: key.serialize_pem() }
    }
}
