//! Python bindings (placeholder module filled next).
