//! Logits to tokens: the sampling layer of Formwork.
