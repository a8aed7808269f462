//! Examples and end-to-end tests of the chat engine workspace.
