//! Checks shared by the engine's integration tests.

use formwork_index::Vocabulary;
use formwork_model::ModelInfo;

/// The constraint vocabulary the engine built from the model's tokenizer equals the one read
/// from the GGUF file's metadata with the model's EOS ids (what the engine built before it
/// used the tokenizer): the same bytes for every token, the same special tokens, the same
/// EOS ids.
pub fn assert_vocabulary_matches_the_gguf(built: &Vocabulary, info: &ModelInfo) {
    let file = Vocabulary::from_gguf(&info.path).unwrap();
    assert_eq!(built.len(), file.len());
    for id in 0..file.len() as u32 {
        assert_eq!(built.token(id), file.token(id), "token {id}");
        // The metadata's own EOS is special in `file`; the model's EOS ids are in `built`.
        let eos = info.eos_token_ids.contains(&id);
        assert_eq!(
            built.is_special(id),
            file.is_special(id) || eos,
            "token {id}"
        );
    }
    let mut eos = info.eos_token_ids.clone();
    eos.sort_unstable();
    eos.dedup();
    assert_eq!(built.eos(), eos);
}
