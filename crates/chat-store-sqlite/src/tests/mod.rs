//! Unit tests: conformance, the idempotency window.

mod conformance;
mod idempotency;
