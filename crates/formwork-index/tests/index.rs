//! Index and Guide over small vocabularies built in the test: a byte-level one and a
//! SentencePiece one read from an in-memory GGUF file. The lazy index's on-demand DFA is also
//! checked against the full DFA over a sample of JSONSchemaBench
//! (`../shared/data/jsonschemabench`).

use std::path::PathBuf;
use std::sync::Arc;

use formwork_index::{
    ByteDfa, DfaConfig, Guide, Index, IndexConfig, IndexError, StateId, Vocabulary, gguf,
};
use formwork_schema::Compiler;
use proptest::prelude::*;
use serde_json::Value;

/// Byte-level vocabulary: all 256 bytes, some merges (some splitting UTF-8 characters),
/// a control token and EOS.
fn byte_vocab() -> Vocabulary {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let merges: &[&[u8]] = &[
        b"{\"",
        b"\":",
        b"\",\"",
        b"name",
        b"\":\"",
        b"\"}",
        b"ab",
        b"abc",
        b"20",
        b"2024-",
        b"-0",
        b" the",
        b"ing",
        "日本".as_bytes(),
        &[0xE6, 0x97], // the first two bytes of 日
        &[0xA5, 0xE6], // the end of 日 and the start of 本
        &[0x9C, 0xAC], // the end of 本
        "語".as_bytes(),
        &[0xF0, 0x9F],       // the start of an emoji
        &[0x98, 0x80, b'"'], // the end of 😀 and a quote
        "😀".as_bytes(),
        b"ab", // a duplicate spelling
    ];
    tokens.extend(merges.iter().map(|m| m.to_vec()));
    let control = tokens.len() as u32;
    tokens.push(b"<|im_start|>".to_vec());
    let eos = tokens.len() as u32;
    tokens.push(b"<|im_end|>".to_vec());
    Vocabulary::new(tokens, vec![eos], [control]).unwrap()
}

/// A SentencePiece vocabulary as a GGUF file holds it: `<unk>`, `<s>`, `</s>`, 256 byte
/// tokens `<0xNN>`, and pieces with `▁` for spaces.
fn spm_gguf() -> Vec<u8> {
    use gguf::Value;

    let mut tokens: Vec<(String, i32)> =
        vec![("<unk>".into(), 2), ("<s>".into(), 3), ("</s>".into(), 3)];
    for b in 0..=255u8 {
        tokens.push((format!("<0x{b:02X}>"), 6));
    }
    for piece in [
        "▁",
        "▁the",
        "▁a",
        "he",
        "llo",
        "▁hello",
        "▁\"",
        "\"",
        "{",
        "}",
        "▁{",
        "\":",
        "▁日本",
        "語",
        "ab",
        "abc",
        "2024",
        "-",
        "0",
        "1",
        "▁▁",
    ] {
        tokens.push((piece.into(), 1));
    }
    tokens.push(("<tool>".into(), 4));
    let kv = [
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(
                tokens
                    .iter()
                    .map(|(t, _)| Value::String(t.clone()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(tokens.iter().map(|&(_, ty)| Value::I32(ty)).collect()),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ];
    let mut f = Vec::new();
    gguf::write(&mut f, &kv, &[]).unwrap();
    f
}

fn spm_vocab() -> Vocabulary {
    let f = spm_gguf();
    let meta = gguf::Metadata::from_reader(&f[..], f.len() as u64).unwrap();
    Vocabulary::from_gguf_metadata(&meta).unwrap()
}

const REGEXES: &[&str] = &[
    r#"\{"name":"[^"\\\x00-\x1F]{0,12}","n":(?:0|-?[1-9][0-9]{0,3})\}"#,
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])",
    r"(?:日本|語|😀)+[a-c]{0,3}",
    r#""(?:[^"\\]|\\["\\nt])*""#,
    r"(?: the| a| hello)+|ab(?:c|d)?",
];

/// Follows the bytes of `token` from `state` in the DFA.
fn run_bytes(dfa: &ByteDfa, mut state: StateId, bytes: &[u8]) -> StateId {
    for &b in bytes {
        state = dfa.next(state, b);
        if state == ByteDfa::DEAD {
            return state;
        }
    }
    state
}

/// Checks every computed state of an eager index against the DFA.
fn check_index(index: &Index, vocab: &Vocabulary) {
    let dfa = index.dfa().expect("an eager index keeps its full DFA");
    let mut stack = vec![index.start()];
    let mut seen = std::collections::HashSet::new();
    seen.insert(index.start());
    while let Some(s) = stack.pop() {
        let tokens = index.allowed_tokens(s);
        let next = index.next_states(s);
        assert_eq!(tokens.len(), next.len());
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        let mask = index.mask(s);
        let in_mask: usize = mask.iter().map(|w| w.count_ones() as usize).sum();
        assert_eq!(in_mask, tokens.len());
        assert_eq!(index.allowed_count(s), tokens.len());
        for (&t, &n) in tokens.iter().zip(next) {
            assert!(index.is_allowed(s, t));
            assert_eq!(index.next_state(s, t), Some(n));
        }
        for (&t, &n) in tokens.iter().zip(next) {
            assert!(mask[t as usize / 64] & (1 << (t % 64)) != 0);
            if vocab.is_eos(t) {
                assert_eq!(n, Index::FINISHED);
                assert!(dfa.is_accepting(s), "EOS only in accepting states");
                continue;
            }
            assert!(!vocab.is_special(t), "special token {t} allowed");
            // Every allowed token leads to a live state, the one its bytes reach.
            let bytes = vocab.token(t).unwrap();
            assert_eq!(run_bytes(dfa, s, bytes), n);
            assert!(n != ByteDfa::DEAD && dfa.distance_to_accept(n) != u32::MAX);
            if seen.insert(n) {
                stack.push(n);
            }
        }
        if dfa.is_accepting(s) {
            for &e in vocab.eos() {
                assert!(
                    tokens.binary_search(&e).is_ok(),
                    "EOS allowed when accepting"
                );
            }
        }
        // Completeness: every text token whose bytes stay alive is allowed.
        for t in (0..vocab.len() as u32).filter(|&t| !vocab.is_eos(t)) {
            let bytes = vocab.token(t).unwrap();
            let alive = !vocab.is_special(t)
                && !bytes.is_empty()
                && run_bytes(dfa, s, bytes) != ByteDfa::DEAD;
            assert_eq!(
                alive,
                tokens.binary_search(&t).is_ok(),
                "token {t} in state {s}"
            );
        }
    }
    assert_eq!(seen.len(), index.state_count());
}

/// Walks a lazy index in step with the eager one of the same regex, by tokens, from the
/// start: each pair of states allows the same tokens, agrees on acceptance, and the lazy
/// index's own answers agree with each other. The two number their states differently, and
/// one lazy state may stand for several eager ones: `regex-automata` delays a match by a
/// byte, so its DFA splits some subsets of NFA states in two.
fn check_lazy(lazy: &Index, eager: &Index, vocab: &Vocabulary) {
    let mut pairs = std::collections::HashSet::new();
    pairs.insert((lazy.start(), eager.start()));
    let mut lazy_states = std::collections::HashSet::from([lazy.start()]);
    let mut stack = vec![(lazy.start(), eager.start())];
    while let Some((l, e)) = stack.pop() {
        let tokens = lazy.allowed_tokens(l);
        assert_eq!(tokens, eager.allowed_tokens(e), "states {l} / {e}");
        assert_eq!(lazy.is_accepting(l), eager.is_accepting(e));
        assert_eq!(lazy.allowed_count(l), tokens.len());
        let mask = lazy.mask(l);
        assert_eq!(mask, eager.mask(e));
        let next = lazy.next_states(l).to_vec();
        for ((&t, &ln), &en) in tokens.iter().zip(&next).zip(eager.next_states(e)) {
            assert!(lazy.is_allowed(l, t));
            assert_eq!(lazy.next_state(l, t), Some(ln));
            if vocab.is_eos(t) {
                assert_eq!((ln, en), (Index::FINISHED, Index::FINISHED));
                continue;
            }
            lazy_states.insert(ln);
            if pairs.insert((ln, en)) {
                stack.push((ln, en));
            }
        }
    }
    assert_eq!(lazy_states.len(), lazy.state_count());
    assert!(lazy.state_count() <= eager.state_count());
    assert!(lazy.dfa_state_count() >= lazy.state_count());
}

#[test]
fn an_index_built_from_a_parsed_regex_equals_one_built_from_its_text() {
    let config = IndexConfig {
        lazy: true,
        accept_points: true,
        ..IndexConfig::default()
    };
    for vocab in [byte_vocab(), spm_vocab()] {
        for re in REGEXES {
            let hir = regex_syntax::parse(re).unwrap();
            let from_hir = Index::with_config_hir(&hir, &vocab, config).unwrap();
            let eager = Index::new(re, &vocab).unwrap();
            check_lazy(&from_hir, &eager, &vocab);
        }
    }
}

#[test]
fn indexes_are_sound_and_complete() {
    for vocab in [byte_vocab(), spm_vocab()] {
        for re in REGEXES {
            let index = Index::new(re, &vocab).unwrap();
            check_index(&index, &vocab);
            // A lazy index computes the same sets, and only the states asked for.
            let lazy = Index::lazy(re, &vocab).unwrap();
            assert_eq!(lazy.state_count(), 0);
            assert_eq!(
                lazy.allowed_tokens(lazy.start()),
                index.allowed_tokens(index.start())
            );
            assert_eq!(lazy.state_count(), 1);
            assert!(lazy.dfa().is_none(), "{re}: determinized on demand");
            check_lazy(&lazy, &index, &vocab);
            // Lazy tokens over the full DFA (what regexes with word boundaries get).
            let over_full = Index::from_dfa(
                ByteDfa::new(re).unwrap(),
                &vocab,
                IndexConfig {
                    lazy: true,
                    ..Default::default()
                },
            )
            .unwrap();
            check_index(&over_full, &vocab);
            // One thread or many: the same index.
            let single = Index::with_config(
                re,
                &vocab,
                IndexConfig {
                    threads: 1,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(single.state_count(), index.state_count());
        }
    }
}

#[test]
fn sentencepiece_vocabulary_from_gguf() {
    let v = spm_vocab();
    assert_eq!(v.len(), 3 + 256 + 21 + 1);
    assert_eq!(v.eos(), &[2]);
    assert!(v.is_special(0) && v.is_special(1) && v.is_special(2));
    assert_eq!(v.token(3 + 0xE6), Some(&[0xE6u8][..]));
    assert_eq!(v.token(3 + 256 + 1), Some(&b" the"[..]));
    assert_eq!(v.token(3 + 256 + 12), Some(" 日本".as_bytes()));
    assert_eq!(v.token(3 + 256 + 20), Some(&b"  "[..]));
    assert_eq!(v.token(3 + 256 + 21), Some(&b"<tool>"[..]));
    assert!(!v.is_special(3 + 256 + 21));
}

#[test]
fn control_tokens_are_never_allowed() {
    let v = byte_vocab();
    // The control token's bytes match, but it is never allowed; the bytes spelled out are.
    let index = Index::new(r"<\|im_start\|>x", &v).unwrap();
    let control = v.len() as u32 - 2;
    assert!(v.is_special(control));
    assert_eq!(index.allowed_tokens(index.start()), &[u32::from(b'<')]);
    let mut g = Guide::new(Arc::new(index));
    assert_eq!(
        g.advance(control),
        Err(IndexError::TokenNotAllowed {
            token: control,
            state: 0
        })
    );
}

#[test]
fn guide_walks_advances_and_rolls_back() {
    let v = byte_vocab();
    let eos = v.eos()[0];
    let index = Arc::new(Index::new(r"(?:ab|abc)x?", &v).unwrap());
    let mut g = Guide::new(index.clone());
    assert!(!g.accepts_eos() && !g.is_finished());
    // An invalid token is an error and changes nothing; so is an id out of range.
    assert!(matches!(
        g.advance(u32::from(b'x')),
        Err(IndexError::TokenNotAllowed { .. })
    ));
    assert!(matches!(
        g.advance(u32::MAX),
        Err(IndexError::TokenNotAllowed { .. })
    ));
    assert_eq!(g.state(), index.start());
    let ab = v.tokenize_greedy(b"ab").unwrap();
    assert_eq!(ab.len(), 1);
    g.advance(ab[0]).unwrap();
    assert!(g.accepts_eos() && !g.is_finished());
    assert!(g.allowed_tokens().contains(&eos));
    let mask = g.mask();
    assert!(mask[eos as usize / 64] & (1 << (eos % 64)) != 0);
    let mut other = g.clone();
    g.advance(u32::from(b'x')).unwrap();
    // A full match nothing can extend: only EOS is allowed.
    assert_eq!(g.allowed_tokens(), &[eos]);
    assert!(g.is_finished());
    // The clone is independent.
    assert_eq!(other.len(), 1);
    other.advance(u32::from(b'c')).unwrap();
    assert_eq!(g.len(), 2);
    // Rollback.
    assert_eq!(
        g.rollback(3),
        Err(IndexError::Rollback {
            requested: 3,
            available: 2
        })
    );
    g.rollback(1).unwrap();
    assert_eq!(g.len(), 1);
    assert!(!g.is_finished());
    g.advance(eos).unwrap();
    assert!(g.is_finished() && !g.accepts_eos());
    assert!(g.allowed_tokens().is_empty());
    assert!(g.mask().iter().all(|&w| w == 0));
    assert!(g.advance(u32::from(b'x')).is_err());
    g.rollback(2).unwrap();
    assert_eq!(g.state(), index.start());
    g.reset();
    assert!(g.is_empty());
}

#[test]
fn limits_are_errors() {
    let v = byte_vocab();
    let tight = IndexConfig {
        max_states: 3,
        ..Default::default()
    };
    assert!(matches!(
        Index::with_config("[a-z]{0,10}", &v, tight),
        Err(IndexError::TooLarge {
            limit: "states",
            ..
        })
    ));
    let tight = IndexConfig {
        max_memory: 64,
        ..Default::default()
    };
    assert!(matches!(
        Index::with_config("[a-z]{0,10}", &v, tight),
        Err(IndexError::TooLarge {
            limit: "memory",
            ..
        })
    ));
    assert!(matches!(Index::new("(", &v), Err(IndexError::Regex(_))));
}

#[test]
fn lazy_index_is_shared_across_threads() {
    let v = byte_vocab();
    let index = Arc::new(Index::lazy(REGEXES[0], &v).unwrap());
    let eager = Index::new(REGEXES[0], &v).unwrap();
    std::thread::scope(|s| {
        for seed in 0..4u64 {
            let index = index.clone();
            let eager = &eager;
            s.spawn(move || {
                let doc = eager.dfa().unwrap().sample(seed, 40);
                let mut g = Guide::new(index);
                for t in g.index().vocabulary().tokenize_greedy(&doc).unwrap() {
                    g.advance(t).unwrap();
                }
                assert!(g.accepts_eos());
            });
        }
    });
    assert!(index.state_count() <= eager.state_count());
}

/// A tiny deterministic generator for the random walks.
fn pick(seed: &mut u64, n: usize) -> usize {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) % n as u64) as usize
}

fn random_walk(index: Arc<Index>, mut seed: u64, max_tokens: usize) -> Option<Vec<u8>> {
    let vocab = index.vocabulary().clone();
    let mut g = Guide::new(index);
    let mut text = Vec::new();
    for _ in 0..max_tokens {
        let allowed = g.allowed_tokens();
        assert!(!allowed.is_empty(), "a live state allows some token");
        let t = allowed[pick(&mut seed, allowed.len())];
        g.advance(t).unwrap();
        if vocab.is_eos(t) {
            assert!(g.is_finished());
            return Some(text);
        }
        text.extend_from_slice(vocab.token(t).unwrap());
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_walks_ending_on_eos_match(seed in any::<u64>(), which in 0..REGEXES.len(), spm in any::<bool>()) {
        let vocab = if spm { spm_vocab() } else { byte_vocab() };
        let index = Arc::new(Index::new(REGEXES[which], &vocab).unwrap());
        for k in 0..8u64 {
            if let Some(text) = random_walk(index.clone(), seed ^ k, 64) {
                prop_assert!(index.dfa().unwrap().matches(&text), "{:?}", String::from_utf8_lossy(&text));
            }
        }
    }

    #[test]
    fn sampled_documents_are_accepted(seed in any::<u64>(), which in 0..REGEXES.len(), spm in any::<bool>(), lazy in any::<bool>()) {
        let vocab = if spm { spm_vocab() } else { byte_vocab() };
        let config = IndexConfig { lazy, ..Default::default() };
        let index = Arc::new(Index::with_config(REGEXES[which], &vocab, config).unwrap());
        let doc = ByteDfa::new(REGEXES[which]).unwrap().sample(seed, 48);
        let tokens = vocab.tokenize_greedy(&doc).unwrap();
        let mut g = Guide::new(index);
        for t in tokens {
            prop_assert!(g.advance(t).is_ok());
        }
        prop_assert!(g.accepts_eos());
        g.advance(vocab.eos()[0]).unwrap();
        prop_assert!(g.is_finished());
    }
}

#[test]
fn multibyte_characters_through_split_tokens() {
    let v = byte_vocab();
    let index = Arc::new(Index::new(r#""[^"]{1,8}""#, &v).unwrap());
    let mut g = Guide::new(index.clone());
    // "日本😀" spelled with tokens that cut characters in the middle.
    let find = |bytes: &[u8]| {
        (0..v.len() as u32)
            .find(|&t| v.token(t) == Some(bytes))
            .unwrap()
    };
    let seq: Vec<u32> = vec![
        u32::from(b'"'),
        find(&[0xE6, 0x97]),
        find(&[0xA5, 0xE6]),
        find(&[0x9C, 0xAC]),
        find(&[0xF0, 0x9F]),
        find(&[0x98, 0x80, b'"']),
    ];
    for &t in &seq {
        g.advance(t).unwrap();
    }
    assert!(g.accepts_eos());
    // A token cutting a character in the middle is refused where it would break UTF-8.
    let mut g = Guide::new(index);
    g.advance(u32::from(b'"')).unwrap();
    assert!(!g.is_allowed(find(&[0xA5, 0xE6])));
    assert!(!g.is_allowed(find(&[0x98, 0x80, b'"'])));
    g.advance(find(&[0xF0, 0x9F])).unwrap();
    assert!(!g.is_allowed(u32::from(b'"')));
    assert!(!g.is_allowed(find(&[0xE6, 0x97])));
}

#[test]
fn tokens_into_unspellable_states_are_dropped() {
    let tokens = vec![
        b"x".to_vec(),
        b"xy".to_vec(),
        b"q".to_vec(),
        b"</s>".to_vec(),
    ];
    let v = Vocabulary::new(tokens, vec![3], []).unwrap();
    // After "xy" only "z" would do, and no token holds a "z".
    let index = Index::new("xyz|xq", &v).unwrap();
    assert_eq!(index.allowed_tokens(index.start()), &[0]);
    assert_eq!(index.allowed_count(index.start()), 1);
    assert!(!index.is_allowed(index.start(), 1));
    assert_eq!(index.next_state(index.start(), 1), None);
    assert_eq!(index.state_count(), 3);
    // The state after "xy" is out of the eager index, and asking does not add it.
    let dfa = index.dfa().unwrap();
    let xy = dfa.next(dfa.next(dfa.start(), b'x'), b'y');
    assert!(index.allowed_tokens(xy).is_empty());
    assert!(index.mask(xy).iter().all(|&w| w == 0));
    assert_eq!(index.state_count(), 3);
    assert!(matches!(
        Index::new("xyz", &v),
        Err(IndexError::Unspellable)
    ));
    // A lazy index cannot see ahead.
    let lazy = Index::lazy("xyz|xq", &v).unwrap();
    assert_eq!(lazy.allowed_tokens(lazy.start()), &[0, 1]);
}

#[test]
fn unlimited_lazy_indexes_allocate_only_what_they_visit() {
    let v = byte_vocab();
    let config = IndexConfig {
        dfa: DfaConfig {
            max_states: usize::MAX,
            max_memory: usize::MAX,
        },
        lazy: true,
        ..Default::default()
    };
    let index = Arc::new(Index::with_config(REGEXES[0], &v, config).unwrap());
    assert!(index.memory_usage() < 1 << 20, "{}", index.memory_usage());
    let doc = ByteDfa::new(REGEXES[0]).unwrap().sample(5, 40);
    let mut g = Guide::new(index.clone());
    for t in v.tokenize_greedy(&doc).unwrap() {
        g.advance(t).unwrap();
    }
    assert!(g.accepts_eos());
    // Ids the index has not handed out are not states, and asking allocates nothing.
    let before = index.memory_usage();
    assert!(index.allowed_tokens(1 << 30).is_empty());
    assert_eq!(index.next_state(1 << 30, 0), None);
    assert!(!index.is_accepting(1 << 30));
    assert_eq!(index.memory_usage(), before);
}

#[test]
fn a_lazy_index_stops_growing_at_its_memory_limit() {
    let v = byte_vocab();
    // `[a-z]{0,3000}` has thousands of states, each with its own token list.
    let regex = "[a-z]{0,3000}";
    let unlimited = Index::lazy(regex, &v).unwrap();
    let budget = unlimited.memory_usage() + (64 << 10);
    let config = IndexConfig {
        lazy: true,
        max_memory: budget,
        ..Default::default()
    };
    let index = Arc::new(Index::with_config(regex, &v, config).unwrap());
    let mut g = Guide::new(index.clone());
    let mut steps = 0;
    // Walk with the one-byte token `a` until the index refuses to go on.
    let a = u32::from(b'a');
    while g.allowed_tokens().contains(&a) {
        g.advance(a).unwrap();
        steps += 1;
        assert!(steps < 3000, "the index never stopped growing");
    }
    assert!(index.is_truncated());
    // Bounded: the limit plus at most one state's entry over it.
    assert!(
        index.memory_usage() < budget + (16 << 10),
        "{}",
        index.memory_usage()
    );
    // What it still allows matches the regex: only EOS, since every state accepts.
    assert!(g.allowed_tokens().iter().all(|&t| v.is_eos(t)));
    assert!(g.accepts_eos());
    // An unlimited index of the same regex is not truncated on the same walk.
    let unlimited = Arc::new(unlimited);
    let mut g = Guide::new(unlimited.clone());
    for _ in 0..steps + 1 {
        g.advance(a).unwrap();
    }
    assert!(!unlimited.is_truncated());
}

/// Every how many JSONSchemaBench schemas one is checked.
const BENCH_STRIDE: usize = 40;

/// Each JSONSchemaBench schema with the instances its tests list.
fn jsonschemabench() -> Vec<(String, Value, Vec<Value>)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("test data missing: {} ({e})", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read jsonl");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("jsonl line");
            let instances = v["tests"]
                .as_array()
                .map(|ts| ts.iter().filter_map(|t| t.get("data").cloned()).collect())
                .unwrap_or_default();
            out.push((
                v["id"].as_str().unwrap_or("?").to_string(),
                v["schema"].clone(),
                instances,
            ));
        }
    }
    out
}

/// The on-demand DFA against the full DFA over real schemas: every labelled instance is
/// accepted by the lazy index exactly when the full DFA matches it (fed one byte token at a
/// time, so the guide's answers are the automaton's), documents sampled from the full DFA are
/// accepted, and random walks of the lazy index that end on EOS are matches.
#[test]
fn lazy_dfa_agrees_with_the_full_dfa_on_jsonschemabench() {
    let vocab = byte_vocab();
    let accepts = |index: &Arc<Index>, text: &[u8]| {
        let mut g = Guide::new(index.clone());
        text.iter().all(|&b| g.advance(u32::from(b)).is_ok()) && g.accepts_eos()
    };
    let limits = DfaConfig {
        max_states: 5_000,
        ..DfaConfig::default()
    };
    let (mut checked, mut instances, mut walks) = (0, 0, 0);
    for (i, (id, schema, tests)) in jsonschemabench().into_iter().enumerate() {
        if i % BENCH_STRIDE != 0 {
            continue;
        }
        let Ok(compiled) = Compiler::new().compile(&schema) else {
            continue;
        };
        let Ok(full) = ByteDfa::with_config(&compiled, limits) else {
            continue;
        };
        let lazy = Arc::new(Index::lazy(&compiled, &vocab).unwrap());
        assert!(lazy.dfa().is_none(), "{id}: determinized on demand");
        for instance in &tests {
            let text = serde_json::to_string(instance).unwrap();
            assert_eq!(
                accepts(&lazy, text.as_bytes()),
                full.matches(text.as_bytes()),
                "{id}: {text}"
            );
            instances += 1;
        }
        for seed in 0..4 {
            let doc = full.sample(seed, 200);
            assert!(
                accepts(&lazy, &doc),
                "{id}: {}",
                String::from_utf8_lossy(&doc)
            );
        }
        for k in 0..4u64 {
            if let Some(text) = random_walk(lazy.clone(), i as u64 ^ (k << 32), 300) {
                assert!(
                    full.matches(&text),
                    "{id}: {}",
                    String::from_utf8_lossy(&text)
                );
                walks += 1;
            }
        }
        checked += 1;
    }
    eprintln!("{checked} schemas, {instances} instances, {walks} finished walks");
    assert!(checked >= 150, "only {checked} schemas checked");
}

/// The forced continuation of `state` found the slow way, on the full DFA: every byte tried
/// at every step.
fn forced_by_hand(dfa: &ByteDfa, mut state: StateId, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max && !dfa.is_accepting(state) {
        let live: Vec<u8> = (0..=255u8)
            .filter(|&b| dfa.next(state, b) != ByteDfa::DEAD)
            .collect();
        let [b] = live[..] else { break };
        out.push(b);
        state = dfa.next(state, b);
    }
    out
}

/// Checks the forced continuation of every prefix of `doc` (a full match of `dfa`'s regex)
/// in `indexes` (built over [`byte_vocab`], where token `b` is byte `b`): it equals the one
/// found by hand, and it is a prefix of the rest of the document.
fn check_forced_along(dfa: &ByteDfa, indexes: &[Arc<Index>], doc: &[u8], what: &str) {
    let mut guides: Vec<Guide> = indexes.iter().map(|i| Guide::new(i.clone())).collect();
    let mut state = dfa.start();
    for at in 0..=doc.len() {
        let expected = forced_by_hand(dfa, state, 256);
        assert!(
            doc[at..].starts_with(&expected),
            "{what}: forced {:?} after {:?} but the match goes on {:?}",
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(&doc[..at]),
            String::from_utf8_lossy(&doc[at..])
        );
        for g in &mut guides {
            let mut forced = Vec::new();
            g.forced_bytes(256, &mut forced);
            assert_eq!(forced, expected, "{what} after {:?}", &doc[..at]);
            if let Some(&b) = doc.get(at) {
                g.advance(u32::from(b)).unwrap();
            }
        }
        if let Some(&b) = doc.get(at) {
            state = dfa.next(state, b);
        }
    }
}

#[test]
fn forced_bytes_stop_at_choices_and_full_matches() {
    let vocab = byte_vocab();
    let forced = |regex: &str, prefix: &[u8], max: usize| {
        let mut g = Guide::new(Arc::new(Index::lazy(regex, &vocab).unwrap()));
        for &b in prefix {
            g.advance(u32::from(b)).unwrap();
        }
        let mut out = Vec::new();
        g.forced_bytes(max, &mut out);
        String::from_utf8(out).unwrap()
    };
    let object = r#"\{"name":"[a-z]{1,8}","age":(?:0|[1-9][0-9]?)\}"#;
    assert_eq!(forced(object, b"", 256), r#"{"name":""#);
    assert_eq!(forced(object, b"", 3), r#"{"n"#);
    // Inside the string the next letter or the closing quote is a choice.
    assert_eq!(forced(object, br#"{"name":"ab"#, 256), "");
    assert_eq!(forced(object, br#"{"name":"ab""#, 256), r#","age":"#);
    // `0` ends the number: the brace is all that can follow.
    assert_eq!(forced(object, br#"{"name":"ab","age":0"#, 256), "}");
    // After `7`, a digit or the brace.
    assert_eq!(forced(object, br#"{"name":"ab","age":7"#, 256), "");
    // The rest of an enum value once it is unambiguous.
    let colors = "red|green|grey|blue";
    assert_eq!(forced(colors, b"", 256), "");
    assert_eq!(forced(colors, b"b", 256), "lue");
    assert_eq!(forced(colors, b"g", 256), "re");
    assert_eq!(forced(colors, b"gr", 256), "e");
    assert_eq!(forced(colors, b"gre", 256), "");
    assert_eq!(forced(colors, b"gree", 256), "n");
    // A full match may end the text (EOS is a choice) even where one byte could follow.
    assert_eq!(forced("ab(?:cd)?", b"a", 256), "b");
    assert_eq!(forced("ab(?:cd)?", b"ab", 256), "");
    assert_eq!(forced("ab(?:cd)?", b"abc", 256), "d");
    // A class of several bytes is a choice; a multi-byte character is forced byte by byte.
    assert_eq!(forced("x[ab]y", b"", 256), "x");
    assert_eq!(forced("日本|語", "日".as_bytes(), 256), "本");
    // Nothing after EOS.
    let mut g = Guide::new(Arc::new(Index::lazy("ab", &vocab).unwrap()));
    g.advance(u32::from(b'a')).unwrap();
    g.advance(u32::from(b'b')).unwrap();
    g.advance(vocab.eos()[0]).unwrap();
    let mut out = Vec::new();
    g.forced_bytes(256, &mut out);
    assert!(out.is_empty());
}

/// Forced bytes are a prefix of every match that goes on from where they are asked: checked
/// at every prefix of documents sampled from each regex (and from JSONSchemaBench schemas),
/// in an eager and a lazy index, against the continuation found byte by byte on the DFA.
#[test]
fn forced_bytes_are_a_prefix_of_every_sampled_match() {
    let vocab = byte_vocab();
    let mut regexes: Vec<String> = REGEXES.iter().map(|r| r.to_string()).collect();
    regexes.push(r#"\{"name":"[a-z]{1,8}","tags":\[(?:"(?:red|green|grey)"(?:,"(?:red|green|grey)"){0,2})?\]\}"#.into());
    for (i, (_, schema, _)) in jsonschemabench().into_iter().enumerate() {
        if i % (4 * BENCH_STRIDE) == 0
            && let Ok(compiled) = Compiler::new().compile(&schema)
            && ByteDfa::with_config(
                &compiled,
                DfaConfig {
                    max_states: 5_000,
                    ..DfaConfig::default()
                },
            )
            .is_ok()
        {
            regexes.push(compiled);
        }
    }
    assert!(regexes.len() > 20);
    for regex in &regexes {
        let dfa = ByteDfa::new(regex).unwrap();
        let lazy = Arc::new(Index::lazy(regex, &vocab).unwrap());
        let mut indexes = vec![lazy];
        if dfa.state_count() < 2_000 {
            indexes.push(Arc::new(Index::new(regex, &vocab).unwrap()));
        }
        for seed in 0..6 {
            let doc = dfa.sample(seed, 120);
            check_forced_along(&dfa, &indexes, &doc, regex);
        }
    }
}
