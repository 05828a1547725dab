//! Whole-system tests live in tests/tests/*.rs; this crate holds their shared helpers.
