//! The Formwork generation engine.
