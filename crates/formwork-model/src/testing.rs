//! Tiny random-weight models written at test time, so tests of the layers above run in
//! milliseconds without the real model file.
//!
//! [`write_tiny_gguf`] writes a complete GGUF file: a small byte-level BPE vocabulary (the 256
//! bytes, a few dozen merges, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), a chatml
//! template, and random weights (Q8_0 projections, f32 norms) for a llama, qwen2 or qwen3
//! block layout. Same spec, same file.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::{Architecture, ModelError};

/// The chatml template the tiny models carry.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Merges on top of the byte tokens, in the GPT-2 byte alphabet (`Ġ` is a space).
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "a"),
    ("Ġ", "b"),
    ("Ġ", "c"),
    ("Ġ", "d"),
    ("Ġ", "e"),
    ("Ġ", "f"),
    ("Ġ", "t"),
    ("Ġ", "s"),
    ("Ġ", "i"),
    ("Ġ", "o"),
    ("Ġ", "w"),
    ("Ġ", "\""),
    ("Ġ", "{"),
    ("Ġ", "1"),
    ("t", "h"),
    ("e", "r"),
    ("i", "n"),
    ("o", "n"),
    ("a", "n"),
    ("r", "e"),
    ("a", "t"),
    ("e", "s"),
    ("Ġt", "h"),
    ("Ġth", "e"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("Ġi", "s"),
    ("\"", ":"),
    ("\"", ","),
    ("{", "\""),
    (",", "Ġ"),
    ("\":", "Ġ"),
    ("\",", "Ġ\""),
    ("t", "r"),
    ("tr", "u"),
    ("tru", "e"),
    ("f", "a"),
    ("fa", "l"),
    ("fal", "s"),
    ("fals", "e"),
    ("n", "u"),
    ("nu", "l"),
    ("nul", "l"),
    ("1", "0"),
    ("2", "0"),
    ("Ċ", "Ċ"),
    ("Ġ", "Ġ"),
    ("ĠĠ", "ĠĠ"),
    ("n", "a"),
    ("na", "m"),
    ("nam", "e"),
    ("a", "g"),
    ("ag", "e"),
    ("i", "d"),
    ("Ġ", "P"),
    ("ĠP", "a"),
    ("ĠPa", "r"),
    ("ĠPar", "i"),
    ("ĠPari", "s"),
    ("Ã", "©"),
    ("ä", "¸"),
    ("ð", "Ł"),
];

/// The shape of a tiny model.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    /// Block layout to write.
    pub architecture: Architecture,
    /// Decoder blocks.
    pub layers: usize,
    /// Residual width (a multiple of 32).
    pub hidden_size: usize,
    /// Feed-forward width (a multiple of 32).
    pub intermediate_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Context length written in the metadata.
    pub context_length: usize,
    /// Seed of the random weights.
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> TinySpec {
        TinySpec {
            architecture: Architecture::Llama,
            layers: 2,
            hidden_size: 64,
            intermediate_size: 128,
            heads: 4,
            kv_heads: 2,
            context_length: 1024,
            seed: 7,
        }
    }
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the rest are moved to
/// code points from U+0100.
pub fn gpt2_byte_char(b: u8) -> char {
    let printable = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
    if printable(b) {
        return b as char;
    }
    let shift = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shift).unwrap_or('?')
}

/// The tiny vocabulary: token strings (GPT-2 alphabet), token types and merges.
pub fn tiny_vocabulary() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3, 3, 3];
    for b in 0..=255u8 {
        tokens.push(gpt2_byte_char(b).to_string());
        types.push(1);
    }
    let mut merges = Vec::new();
    for (a, b) in MERGES {
        let merged = format!("{a}{b}");
        if !tokens.contains(&merged) {
            tokens.push(merged);
            types.push(1);
        }
        merges.push(format!("{a} {b}"));
    }
    (tokens, types, merges)
}

struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        let u1 = self.next_f32().max(1e-7);
        let u2 = self.next_f32();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

/// Writes a tiny random model to `path`.
pub fn write_tiny_gguf(path: &Path, spec: &TinySpec) -> Result<(), ModelError> {
    let dev = Device::Cpu;
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (tokens, types, merges) = tiny_vocabulary();
    let vocab = tokens.len();
    let h = spec.hidden_size;
    let head_dim = h / spec.heads;
    let kv = spec.kv_heads * head_dim;
    let arch = spec.architecture.as_str();

    let mut random = |rows: usize, cols: usize, std: f32| -> Result<Tensor, ModelError> {
        let data: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * std).collect();
        Ok(Tensor::from_vec(data, (rows, cols), &dev)?)
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let q8 = |t: Tensor| QTensor::quantize(&t, GgmlDType::Q8_0);
    let f32t = |t: Tensor| QTensor::quantize(&t, GgmlDType::F32);
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &Device::Cpu);
    tensors.push(("token_embd.weight".into(), q8(random(vocab, h, 1.0)?)?));
    tensors.push(("output_norm.weight".into(), f32t(ones(h)?)?));
    let scale = 1.0 / (h as f32).sqrt();
    // A separate, small output projection keeps the next-token distribution broad, so
    // different seeds give different texts.
    tensors.push(("output.weight".into(), q8(random(vocab, h, 2.0 * scale)?)?));
    for i in 0..spec.layers {
        let p = format!("blk.{i}");
        tensors.push((format!("{p}.attn_norm.weight"), f32t(ones(h)?)?));
        tensors.push((format!("{p}.ffn_norm.weight"), f32t(ones(h)?)?));
        tensors.push((format!("{p}.attn_q.weight"), q8(random(h, h, scale)?)?));
        tensors.push((format!("{p}.attn_k.weight"), q8(random(kv, h, scale)?)?));
        tensors.push((format!("{p}.attn_v.weight"), q8(random(kv, h, scale)?)?));
        tensors.push((format!("{p}.attn_output.weight"), q8(random(h, h, scale)?)?));
        tensors.push((
            format!("{p}.ffn_gate.weight"),
            q8(random(spec.intermediate_size, h, scale)?)?,
        ));
        tensors.push((
            format!("{p}.ffn_up.weight"),
            q8(random(spec.intermediate_size, h, scale)?)?,
        ));
        tensors.push((
            format!("{p}.ffn_down.weight"),
            q8(random(
                h,
                spec.intermediate_size,
                1.0 / (spec.intermediate_size as f32).sqrt(),
            )?)?,
        ));
        if spec.architecture == Architecture::Qwen2 {
            for (name, n) in [("attn_q", h), ("attn_k", kv), ("attn_v", kv)] {
                let b = random(1, n, 0.1)?.flatten_all()?;
                tensors.push((format!("{p}.{name}.bias"), f32t(b)?));
            }
        }
        if spec.architecture == Architecture::Qwen3 {
            tensors.push((format!("{p}.attn_q_norm.weight"), f32t(ones(head_dim)?)?));
            tensors.push((format!("{p}.attn_k_norm.weight"), f32t(ones(head_dim)?)?));
        }
    }

    let u32v = |x: usize| Value::U32(x as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String(format!("tiny-random-{arch}")),
        ),
        (key("block_count"), u32v(spec.layers)),
        (key("context_length"), u32v(spec.context_length)),
        (key("embedding_length"), u32v(h)),
        (key("feed_forward_length"), u32v(spec.intermediate_size)),
        (key("attention.head_count"), u32v(spec.heads)),
        (key("attention.head_count_kv"), u32v(spec.kv_heads)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML_TEMPLATE.into()),
        ),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    candle_core::quantized::gguf_file::write(&mut file, &md, &ts)?;
    Ok(())
}
