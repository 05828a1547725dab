//! The outcome of validating one object: every error with its field path, plus warnings.

use std::fmt;

/// One validation error: where (a field path such as `spec.http[0].route[1].weight`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All errors and warnings found in one object. Warnings never make an object invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// Istio's denial text: `configuration is invalid: <msg>` for one error, or go-multierror's list form
    /// `configuration is invalid: N errors occurred:\n\t* ...` for several. Empty when the object is valid.
    pub fn denial_message(&self) -> String {
        match self.errors.as_slice() {
            [] => String::new(),
            [one] => format!("configuration is invalid: {one}"),
            many => {
                let mut out = format!("configuration is invalid: {} errors occurred:", many.len());
                for e in many {
                    out.push_str("\n\t* ");
                    out.push_str(&e.to_string());
                }
                // go-multierror ends its list with a blank line; keep the text identical.
                out.push_str("\n\n");
                out
            }
        }
    }
}

/// Collects findings while the rules walk an object.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    report: Report,
}

impl Ctx {
    pub(crate) fn err(&mut self, path: &str, message: impl Into<String>) {
        self.report.errors.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records a rule's `Result`, so rule functions can stay plain `fn(..) -> Result<(), String>`.
    pub(crate) fn check(&mut self, path: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.err(path, message);
        }
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl AsRef<str>) {
        let text = if path.is_empty() {
            message.as_ref().to_string()
        } else {
            format!("{path}: {}", message.as_ref())
        };
        if !self.report.warnings.contains(&text) {
            self.report.warnings.push(text);
        }
    }

    /// Whether an error was already recorded at `path` or inside it.
    pub(crate) fn has_error_at_or_below(&self, path: &str) -> bool {
        self.report.errors.iter().any(|e| {
            e.path == path
                || e.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.report.errors.is_empty()
    }

    /// Prefixes every error message recorded from `from` on (go-multierror's `Prefix`).
    pub(crate) fn prefix_errors_from(&mut self, from: usize, prefix: &str) {
        for e in self.report.errors.iter_mut().skip(from) {
            e.message = format!("{prefix} {}", e.message);
        }
    }

    pub(crate) fn error_count(&self) -> usize {
        self.report.errors.len()
    }

    pub(crate) fn into_report(self) -> Report {
        self.report
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn err(path: &str, message: &str) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }

    #[test]
    fn valid_report_has_no_denial() {
        let r = Report::default();
        assert!(r.is_valid());
        assert_eq!(r.denial_message(), "");
    }

    #[test]
    fn single_error_is_plain() {
        let r = Report {
            errors: vec![err("spec.http[0].route[0].weight", "weight -1 < 0")],
            warnings: vec![],
        };
        assert!(!r.is_valid());
        assert_eq!(
            r.denial_message(),
            "configuration is invalid: spec.http[0].route[0].weight: weight -1 < 0"
        );
    }

    #[test]
    fn several_errors_use_multierror_form() {
        let r = Report {
            errors: vec![err("spec.a", "one"), err("", "two")],
            warnings: vec![],
        };
        assert_eq!(
            r.denial_message(),
            "configuration is invalid: 2 errors occurred:\n\t* spec.a: one\n\t* two\n\n"
        );
    }

    #[test]
    fn warnings_are_deduplicated_and_keep_path() {
        let mut cx = Ctx::default();
        cx.warn("spec.x", "careful");
        cx.warn("spec.x", "careful");
        cx.warn("", "global");
        let r = cx.into_report();
        assert!(r.is_valid());
        assert_eq!(r.warnings, vec!["spec.x: careful", "global"]);
    }
}
