//! The shared `Store` conformance suite, each test on its own schema of the
//! shared server (returning early when PostgreSQL is missing outside CI).

chat_core::store_conformance_tests!(match crate::support::fresh_store().await {
    Some(store) => store,
    None => return,
});
