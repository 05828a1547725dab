//! Upgrade rules: Istio only tests upgrades between adjacent minor versions ("There's no guarantee that
//! skipping multiple versions is safe"), so a change of `spec.version` by more than one minor version (or
//! of the major version) is refused; the user goes through each minor version in turn, or installs the new
//! version as a second revision (`spec.revision`) and moves namespaces over (canary upgrade).

use std::fmt;

/// A `MAJOR.MINOR.PATCH` version, with an optional `v` prefix and pre-release/build suffix (ignored for
/// ordering purposes beyond equality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub suffix: String,
}

impl Version {
    /// Parses `1.2.3`, `v1.2.3`, `1.2.3-rc.1`; `1.2` means `1.2.0`.
    pub fn parse(text: &str) -> Result<Version, String> {
        let t = text.strip_prefix('v').unwrap_or(text);
        let (core, suffix) = match t.find(['-', '+']) {
            Some(i) => (&t[..i], t[i..].to_string()),
            None => (t, String::new()),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(format!(
                "\"{text}\" is not a version: expected MAJOR.MINOR.PATCH such as 1.2.3"
            ));
        }
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("\"{text}\" is not a version: {what} \"{s}\" is not a number"))
        };
        Ok(Version {
            major: num(parts[0], "major")?,
            minor: num(parts[1], "minor")?,
            patch: match parts.get(2) {
                Some(p) => num(p, "patch")?,
                None => 0,
            },
            suffix,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.major, self.minor, self.patch, self.suffix
        )
    }
}

/// What a change from the installed version to the desired one means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradePlan {
    /// Nothing installed yet.
    FreshInstall,
    /// Same version: reconcile in place.
    Unchanged,
    /// Adjacent minor version or a patch change (up or down): components are rolled.
    Roll { from: String, to: String },
}

/// Decides whether moving from `installed` to `desired` is allowed. The error is the message shown in the
/// `Reconciled` condition.
pub fn plan(installed: Option<&str>, desired: &str) -> Result<UpgradePlan, String> {
    let to = Version::parse(desired).map_err(|e| format!("spec.version: {e}"))?;
    let Some(installed) = installed else {
        return Ok(UpgradePlan::FreshInstall);
    };
    let from = match Version::parse(installed) {
        Ok(v) => v,
        // An unreadable recorded version cannot be reasoned about; treat as a fresh install of `desired`.
        Err(_) => return Ok(UpgradePlan::FreshInstall),
    };
    if from == to {
        return Ok(UpgradePlan::Unchanged);
    }
    if from.major != to.major {
        return Err(format!(
            "cannot move from {from} to {to}: a major version change is not supported in place; install {to} \
             as a new revision (spec.revision) and move namespaces with the istio.io/rev label"
        ));
    }
    let gap = from.minor.abs_diff(to.minor);
    if gap > 1 {
        let next = if to.minor > from.minor {
            from.minor + 1
        } else {
            from.minor - 1
        };
        return Err(format!(
            "cannot move from {from} to {to}: more than one minor version at a time is not safe; set \
             spec.version to {}.{}.x first, or install {to} as a new revision (spec.revision)",
            from.major, next
        ));
    }
    Ok(UpgradePlan::Roll {
        from: from.to_string(),
        to: to.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Version::parse("v1.22.3").unwrap().to_string(), "1.22.3");
        assert_eq!(Version::parse("1.2").unwrap().patch, 0);
        assert_eq!(Version::parse("1.2.3-rc.1").unwrap().suffix, "-rc.1");
        assert!(
            Version::parse("latest")
                .unwrap_err()
                .contains("MAJOR.MINOR.PATCH")
        );
        assert!(Version::parse("1.x.0").unwrap_err().contains("minor \"x\""));
    }

    #[test]
    fn adjacent_minor_and_patch_changes_roll() {
        assert_eq!(plan(None, "1.3.0").unwrap(), UpgradePlan::FreshInstall);
        assert_eq!(
            plan(Some("1.3.0"), "1.3.0").unwrap(),
            UpgradePlan::Unchanged
        );
        assert!(matches!(
            plan(Some("1.3.0"), "1.4.2").unwrap(),
            UpgradePlan::Roll { .. }
        ));
        assert!(matches!(
            plan(Some("1.3.0"), "1.3.7").unwrap(),
            UpgradePlan::Roll { .. }
        ));
        // rollback to the previous minor is allowed
        assert!(matches!(
            plan(Some("1.4.0"), "1.3.9").unwrap(),
            UpgradePlan::Roll { .. }
        ));
    }

    #[test]
    fn skipping_minor_versions_is_refused_with_the_next_step() {
        let err = plan(Some("1.2.0"), "1.4.0").unwrap_err();
        assert!(err.contains("more than one minor version"), "{err}");
        assert!(err.contains("1.3.x first"), "{err}");
        let err = plan(Some("1.9.0"), "2.0.0").unwrap_err();
        assert!(err.contains("major version"), "{err}");
        let err = plan(Some("1.2.0"), "one").unwrap_err();
        assert!(err.starts_with("spec.version:"), "{err}");
    }
}
