//! Start-up checks of the TLS files: each mistake an operator can make with certificates is
//! refused with a message naming the key and the fix.

use std::os::unix::fs::PermissionsExt;

use pgquorum_tests::certs::{Ca, Issued};

use super::*;

/// Writes the files of `issued` and `ca` (key 0600) and returns the settings naming them.
fn settings(dir: &Path, issued: &Issued, ca: &str) -> TlsSettings {
    let (cert, key, ca_file) = (dir.join("m.crt"), dir.join("m.key"), dir.join("ca.crt"));
    std::fs::write(&cert, &issued.cert).expect("cert");
    std::fs::write(&key, &issued.key).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&ca_file, ca).expect("ca");
    TlsSettings { cert_file: Some(cert), key_file: Some(key), ca_file: Some(ca_file), ..Default::default() }
}

#[test]
fn a_certificate_the_ca_signed_for_the_dialled_host_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster CA");
    let mut s = settings(dir.path(), &ca.issue("m1", &["127.0.0.1", "m1.pg.svc"]), &ca.pem());
    s.resolve("127.0.0.1").expect("valid for the IP address");
    assert!(s.material.is_some());
    s.resolve("m1.pg.svc").expect("valid for the DNS name");
    assert!(TlsSettings::default().resolve("127.0.0.1").is_ok(), "no tls.* at all: plain gRPC");
}

#[test]
fn a_certificate_from_another_ca_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, other) = (Ca::new("cluster CA"), Ca::new("someone else's CA"));
    let mut s = settings(dir.path(), &other.issue("m1", &["127.0.0.1"]), &ca.pem());
    let err = s.resolve("127.0.0.1").expect_err("foreign certificate");
    assert!(err.contains("does not verify against tls.ca_file"), "{err}");
    assert!(err.contains("other members would refuse this agent"), "{err}");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster CA");
    let (a, b) = (ca.issue("m1", &["127.0.0.1"]), ca.issue("m2", &["127.0.0.1"]));
    let mut s = settings(dir.path(), &Issued { cert: a.cert, key: b.key }, &ca.pem());
    let err = s.resolve("127.0.0.1").expect_err("mismatched key");
    assert!(err.contains("does not belong to tls.cert_file"), "{err}");
}

#[test]
fn a_certificate_without_the_dialled_name_is_refused_unless_server_name_says_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster CA");
    let mut s = settings(dir.path(), &ca.issue("m1", &["pg-cluster"]), &ca.pem());
    let err = s.resolve("10.0.0.9").expect_err("wrong name");
    assert!(err.contains("is not valid for 10.0.0.9"), "{err}");
    assert!(err.contains("subject alternative names, or set tls.server_name"), "{err}");
    s.server_name = "pg-cluster".into();
    s.resolve("10.0.0.9").expect("checked against tls.server_name");
}

#[test]
fn partial_settings_unreadable_files_and_open_keys_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster CA");
    let mut s = settings(dir.path(), &ca.issue("m1", &["127.0.0.1"]), &ca.pem());
    let key = s.key_file.clone().expect("set");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = s.resolve("127.0.0.1").expect_err("world-readable key");
    assert!(
        err.starts_with("tls.key_file: ") && err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    std::fs::write(s.ca_file.as_ref().expect("set"), "not a certificate").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = s.resolve("127.0.0.1").expect_err("no CA");
    assert!(err.contains("tls.ca_file") && err.contains("holds no certificate"), "{err}");
    let mut partial = TlsSettings { cert_file: s.cert_file.clone(), ..Default::default() };
    let err = partial.resolve("127.0.0.1").expect_err("partial");
    assert!(err.contains("set tls.key_file and tls.ca_file too"), "{err}");
    let mut missing = TlsSettings { cert_file: Some(dir.path().join("nope.crt")), ..s.clone() };
    let err = missing.resolve("127.0.0.1").expect_err("missing");
    assert!(err.starts_with("tls.cert_file: cannot read"), "{err}");
}
