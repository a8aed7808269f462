//! Unit tests: conformance, batching, failures inside batches.

mod conformance;
