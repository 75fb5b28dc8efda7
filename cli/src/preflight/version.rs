//! The API server's version against the Kubernetes this binary was built
//! for.
//!
//! weir is built against k8s-openapi's `v1_34` feature (the workspace
//! Cargo.toml): the Kubernetes 1.34 API. The policy is kubectl's skew
//! policy, ±1 minor version: a server from 1.33 to 1.35 is supported
//! (PASS). Beyond that, everything weir uses (CRDs with CEL validation
//! rules, apps/v1, discovery.k8s.io/v1 EndpointSlices, events.k8s.io/v1,
//! coordination.k8s.io/v1 Leases, SelfSubjectAccessReview) is GA and
//! stable, so it most likely works, but is untested (WARN). Older than
//! 1.29, the CRD's CEL validation rules are not GA (below 1.25 they are
//! off by default) and the API server would not check the Canary's
//! rules: FAIL.
//!
//! A real API server has one version, so only [`check`] can be tested at
//! every skew: it is a pure function of the server's reported version.

use k8s_openapi::apimachinery::pkg::version::Info;

use super::check::{Check, names};

/// The Kubernetes minor version (of major 1) this binary is built for:
/// k8s-openapi's feature `v1_34` in the workspace Cargo.toml.
pub const BUILT_FOR: u32 = 34;
/// Supported skew, in minor versions either way (kubectl's policy).
pub const SKEW: u32 = 1;
/// The oldest minor version with CRD validation rules (CEL) GA.
pub const OLDEST: u32 = 29;

/// `(major, minor)` of the server: its `major` and `minor` fields, which
/// some providers suffix (`"34+"`), else its `gitVersion`
/// (`v1.34.12-eks-abc`).
pub fn parse(info: &Info) -> Option<(u32, u32)> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    if let (Some(major), Some(minor)) = (digits(&info.major), digits(&info.minor)) {
        return Some((major, minor));
    }
    let mut parts = info.git_version.trim_start_matches('v').split('.');
    Some((digits(parts.next()?)?, digits(parts.next()?)?))
}

/// The verdict on the server's version.
pub fn check(info: &Info) -> Check {
    let built = format!("1.{BUILT_FOR}");
    let supported = format!("1.{}–1.{}", BUILT_FOR - SKEW, BUILT_FOR + SKEW);
    let Some((major, minor)) = parse(info) else {
        return Check::warn(
            names::VERSION,
            format!(
                "cannot read the server's version (major {:?}, minor {:?}, gitVersion {:?})",
                info.major, info.minor, info.git_version
            ),
            format!("check by hand that the server runs Kubernetes {supported}"),
        );
    };
    let server = format!("{major}.{minor} ({})", info.git_version);
    if major != 1 {
        return Check::fail(
            names::VERSION,
            format!(
                "server {server}: weir {} knows Kubernetes 1.x only",
                env!("CARGO_PKG_VERSION")
            ),
            format!("use a weir release built for Kubernetes {major}.{minor}"),
        );
    }
    if minor.abs_diff(BUILT_FOR) <= SKEW {
        return Check::pass(
            names::VERSION,
            format!("server {server}; this weir is built for {built} (supported: {supported})"),
        );
    }
    if minor < OLDEST {
        return Check::fail(
            names::VERSION,
            format!(
                "server {server} is older than 1.{OLDEST}: the Canary CRD's validation rules (CEL) \
                 are not GA there; this weir is built for {built}"
            ),
            format!("upgrade the cluster to Kubernetes {supported}"),
        );
    }
    let side = if minor < BUILT_FOR { "older" } else { "newer" };
    Check::warn(
        names::VERSION,
        format!(
            "server {server} is {side} than this weir supports ({supported}, built for {built}); \
             the APIs weir uses are GA there, but this pairing is untested"
        ),
        if minor < BUILT_FOR {
            format!("upgrade the cluster to {supported}, or use a weir release built for 1.{minor}")
        } else {
            format!("use a weir release built for 1.{minor}")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::Status;

    fn info(major: &str, minor: &str, git: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            git_version: git.into(),
            ..Info::default()
        }
    }

    #[test]
    fn versions_are_read_from_major_minor_or_git_version() {
        assert_eq!(parse(&info("1", "34", "v1.34.12")), Some((1, 34)));
        assert_eq!(parse(&info("1", "33+", "v1.33.4-gke.1")), Some((1, 33)));
        assert_eq!(parse(&info("", "", "v1.31.2-eks-7f9249a")), Some((1, 31)));
        assert_eq!(parse(&info("", "", "nonsense")), None);
    }

    #[test]
    fn skew_within_one_minor_passes_older_than_cel_fails_the_rest_warns() {
        // (minor, status): the policy at every distance from 1.34.
        let table = [
            ("34", Status::Pass),
            ("33", Status::Pass),
            ("35", Status::Pass),
            ("35+", Status::Pass),
            ("32", Status::Warn),
            ("29", Status::Warn),
            ("36", Status::Warn),
            ("40", Status::Warn),
            ("28", Status::Fail),
            ("21", Status::Fail),
        ];
        for (minor, want) in table {
            let got = check(&info("1", minor, &format!("v1.{minor}.0")));
            assert_eq!(got.status, want, "1.{minor}: {got:?}");
            assert_eq!(got.check, "version");
            if want != Status::Pass {
                assert!(!got.fix.is_empty(), "1.{minor} needs a fix: {got:?}");
            }
        }
        let old = check(&info("1", "27", "v1.27.3"));
        assert!(old.detail.contains("older than 1.29"), "{old:?}");
        assert!(old.fix.contains("1.33–1.35"), "{old:?}");
        let new = check(&info("1", "37", "v1.37.0"));
        assert!(
            new.detail.contains("newer than this weir supports"),
            "{new:?}"
        );
        assert_eq!(check(&info("2", "0", "v2.0.0")).status, Status::Fail);
        assert_eq!(check(&info("x", "y", "z")).status, Status::Warn);
    }
}
