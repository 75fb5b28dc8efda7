//! A certificate authority and certificates for TLS tests, made by the
//! real `openssl` command (Debian's, present wherever the tests run): a
//! test trusts only its own CA, never the system's.

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`, panicking with its stderr.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` arguments for a new P-256 key, written unencrypted.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// A CA in `dir`: `ca.crt` and `ca.key` (P-256, valid two days).
pub fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &NEW_KEY,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=weir test CA",
            ],
        ]
        .concat(),
    );
}

/// A certificate for `127.0.0.1` and `localhost` with common name `cn`,
/// signed by [`make_ca`]'s CA: `NAME.crt` and `NAME.key` in `dir`.
pub fn make_leaf(dir: &Path, name: &str, cn: &str) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write the extension file");
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            &["req"][..],
            &NEW_KEY,
            &["-keyout", &key, "-out", &csr, "-subj", &subject],
        ]
        .concat(),
    );
    openssl(
        dir,
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
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}
