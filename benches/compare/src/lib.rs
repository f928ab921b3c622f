//! Shared pieces of the side-by-side benchmarks: the default model's vocabulary, and
//! llguidance's token environment over it.

use std::sync::Arc;

use formwork_index::Vocabulary;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// The vocabulary of `models/$FORMWORK_COMPARE_MODEL` (default: the default model's,
/// SmolLM2-135M; `gemma-3-270m-q4_k_m.gguf` for Gemma 3's 262,144 tokens), its trie built.
pub fn default_vocabulary() -> Vocabulary {
    let file = std::env::var("FORMWORK_COMPARE_MODEL")
        .unwrap_or_else(|_| "SmolLM2-135M-Instruct.Q4_1.gguf".to_string());
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(&file);
    assert!(
        path.exists(),
        "the model is missing at {}: run `cargo xtask fetch-model` (`gemma3-270m` for Gemma 3)",
        path.display()
    );
    let vocab = Vocabulary::from_gguf(&path).expect("reading the vocabulary");
    eprintln!("vocabulary: {file}, {} tokens", vocab.len());
    vocab.trie();
    vocab
}

struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// llguidance's token environment over our vocabulary: the same bytes per id, special tokens
/// marked with toktrie's 0xFF prefix, the same EOS ids.
pub fn llguidance_env(vocab: &Vocabulary) -> TokEnv {
    let words: Vec<Vec<u8>> = (0..vocab.len() as u32)
        .map(|id| {
            let bytes = vocab.token(id).unwrap_or_default();
            if vocab.is_special(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(bytes);
                w
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let info = TokRxInfo::new(words.len() as u32, vocab.eos()[0]);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(vocab.eos());
    Arc::new(Env { trie })
}
