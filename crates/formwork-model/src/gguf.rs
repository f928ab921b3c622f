//! Loading a transformer, its tokenizer and its metadata from one GGUF file, read by
//! `formwork-gguf`.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use formwork_gguf::{GgmlType, GgufError, GgufFile, TensorInfo, Value};

use crate::candle::{CandleModel, Embedding, Layer, Linear, RmsNorm};
use crate::config::{Architecture, RopeStyle, SlidingWindow, TransformerConfig};
use crate::info::ModelInfo;
use crate::tokenizer::{GgufVocab, Tokenizer};
use crate::transformer::Transformer;
use crate::{LoadOptions, LoadedModel, ModelError};

/// Typed access to a GGUF file's metadata, with errors naming the file and the key.
pub(crate) struct Metadata<'a> {
    path: &'a Path,
    meta: &'a formwork_gguf::Metadata,
}

impl<'a> Metadata<'a> {
    fn err(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::Metadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.meta.get(key)
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "not in the metadata"))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => integer(v)
                .map(Some)
                .ok_or_else(|| self.err(key, "not an unsigned integer")),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, "not a number")),
        }
    }

    /// A string value; trailing NULs, which some writers leave, are dropped.
    fn opt_str(&self, key: &str) -> Option<&'a str> {
        self.get(key)
            .and_then(Value::as_str)
            .map(|s| s.trim_end_matches('\0'))
    }

    fn opt_bool(&self, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        v.as_bool().or_else(|| integer(v).map(|x| x != 0))
    }

    /// An array of strings; strings that are not UTF-8 are decoded lossily.
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_bytes()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .ok_or_else(|| self.err(key, "an element is not a string"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.err(key, "not an array of strings")),
        }
    }

    fn numbers(&self, key: &str) -> Result<Option<Vec<f64>>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| self.err(key, "an element is not a number"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.err(key, "not an array of numbers")),
        }
    }
}

fn integer(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok())
}

/// The GGUF file at `path`: its metadata and tensor infos, and the open file for the data.
pub(crate) fn open(path: &Path) -> Result<(GgufFile, BufReader<File>), ModelError> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let gguf = GgufFile::from_reader(&mut reader, len).map_err(|e| gguf_error(path, e))?;
    Ok((gguf, reader))
}

/// A reader error as a model error: a tensor's as [`ModelError::Weight`], the rest as
/// [`ModelError::Gguf`].
pub(crate) fn gguf_error(path: &Path, e: GgufError) -> ModelError {
    match e {
        GgufError::InvalidTensor { name, reason } => ModelError::Weight {
            path: path.to_path_buf(),
            name,
            message: reason,
        },
        other => ModelError::Gguf {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// candle's name for a GGML type, if candle computes with it.
fn candle_dtype(ty: GgmlType) -> Option<GgmlDType> {
    Some(match ty {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2K => GgmlDType::Q2K,
        GgmlType::Q3K => GgmlDType::Q3K,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
        GgmlType::Q8K => GgmlDType::Q8K,
        _ => return None,
    })
}

/// Reads one tensor of `gguf` as a candle [`QTensor`] on `device`.
pub(crate) fn qtensor<R: Read + Seek>(
    path: &Path,
    gguf: &GgufFile,
    reader: &mut R,
    info: &TensorInfo,
    device: &Device,
) -> Result<QTensor, ModelError> {
    let err = |message: String| ModelError::Weight {
        path: path.to_path_buf(),
        name: info.name.clone(),
        message,
    };
    let dtype = candle_dtype(info.ggml_type)
        .ok_or_else(|| err(format!("format {} is not supported", info.ggml_type)))?;
    let data = gguf
        .tensor_data(reader, info)
        .map_err(|e| gguf_error(path, e))?;
    candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, &data, info.shape.clone(), device)
        .map_err(|e| err(e.to_string()))
}

/// Reads the weights, tokenizer and metadata of a GGUF model.
pub(crate) fn load(path: &Path, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    let device = &options.device;
    let (gguf, mut reader) = open(path)?;
    let md = Metadata {
        path,
        meta: &gguf.metadata,
    };
    let arch_name = md
        .opt_str("general.architecture")
        .ok_or_else(|| md.err("general.architecture", "not in the metadata"))?;
    let architecture =
        Architecture::from_name(arch_name).ok_or_else(|| ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: arch_name.to_string(),
            supported: Architecture::SUPPORTED,
        })?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let hidden_size = md.usize(&key("embedding_length"))?;
    let heads = md.usize(&key("attention.head_count"))?;
    let kv_heads = md
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(heads);
    let head_dim = match md.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None if heads > 0 => hidden_size / heads,
        None => return Err(md.err(&key("attention.head_count"), "zero heads")),
    };
    let mut tensors = Tensors {
        path,
        gguf: &gguf,
        reader: &mut reader,
        device,
    };
    let (vocab_size, embed_width) = match gguf
        .tensor("token_embd.weight")
        .ok_or_else(|| tensors.err("token_embd.weight", "missing"))?
        .shape[..]
    {
        [rows, cols] => (rows, cols),
        ref shape => {
            return Err(tensors.err(
                "token_embd.weight",
                format!("shape {shape:?}, expected a matrix"),
            ));
        }
    };
    if embed_width != hidden_size {
        return Err(tensors.err(
            "token_embd.weight",
            format!("width {embed_width}, expected the embedding length {hidden_size}"),
        ));
    }
    let mut config = TransformerConfig {
        architecture,
        layers: md.usize(&key("block_count"))?,
        hidden_size,
        intermediate_size: md.usize(&key("feed_forward_length"))?,
        heads,
        kv_heads,
        head_dim,
        vocab_size,
        context_length: md.usize(&key("context_length"))?,
        rms_norm_eps: md
            .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: md.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
        rope_style: match architecture {
            Architecture::Llama => RopeStyle::Interleaved,
            Architecture::Qwen2 | Architecture::Qwen3 | Architecture::Gemma3 => RopeStyle::Halves,
        },
        rope_freq_scale: 1.0,
        sliding_window: None,
        query_scale: None,
        final_logit_softcapping: None,
    };
    if architecture == Architecture::Gemma3 {
        gemma3_config(&md, &mut config)?;
    }
    config
        .check()
        .map_err(|m| md.err(&key("attention.head_count"), m))?;
    let eps = config.rms_norm_eps as f32;

    let native = if device.is_cpu() && native_enabled() {
        let kernels = match options.cpu_kernels {
            Some(k) => k,
            None => crate::cpu_kernels()?,
        };
        let isa = crate::cpu::isa::Isa::new(kernels);
        crate::cpu::load_gguf(path, &gguf, tensors.reader, &config, options.threads, isa)?
            .map(|m| m.with_prompt_attention(options.prompt_attention))
    } else {
        None
    };
    let transformer = match native {
        Some(model) => Transformer::native(model),
        None if !crate::candle::runs(architecture) => {
            return Err(crate::candle::unsupported(path, architecture));
        }
        None => candle_transformer(&mut tensors, &config, eps, device)?,
    };

    let (vocab, bos_token_id, add_bos_token, tokenizer) = read_tokenizer(&md)?;

    // llama.cpp's end-of-generation rule (Gemma's `<end_of_turn>` as well as `<eos>`).
    let eos_token_ids = formwork_gguf::end_token_ids(md.meta);
    let token_text = |id: Option<usize>| id.and_then(|i| vocab.tokens.get(i).cloned());
    let info = ModelInfo {
        name: md
            .opt_str("general.name")
            .map(str::to_string)
            .unwrap_or_else(|| file_stem(path)),
        architecture,
        vocab_size: config.vocab_size,
        context_length: config.context_length,
        eos_token_ids,
        bos_token_id,
        add_bos_token,
        bos_token: token_text(bos_token_id.map(|x| x as usize)),
        eos_token: token_text(md.opt_usize("tokenizer.ggml.eos_token_id")?),
        chat_template: md.opt_str("tokenizer.chat_template").map(str::to_string),
        path: path.to_path_buf(),
    };
    Ok(LoadedModel {
        model: Arc::new(transformer),
        tokenizer,
        info,
    })
}

/// The vocabulary and tokenizer of a GGUF file's metadata, with the BOS id and whether
/// prompts start with it.
fn read_tokenizer(
    md: &Metadata<'_>,
) -> Result<(GgufVocab, Option<u32>, bool, Tokenizer), ModelError> {
    let tokens = md
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| md.err("tokenizer.ggml.tokens", "not in the metadata"))?;
    let token_types: Vec<u32> = md
        .numbers("tokenizer.ggml.token_type")?
        .map(|v| v.into_iter().map(|x| x as u32).collect())
        .unwrap_or_default();
    let vocab = GgufVocab {
        model: md
            .opt_str("tokenizer.ggml.model")
            .unwrap_or("gpt2")
            .to_string(),
        pre: md.opt_str("tokenizer.ggml.pre").map(str::to_string),
        tokens,
        token_types,
        merges: md.strings("tokenizer.ggml.merges")?.unwrap_or_default(),
        scores: md.numbers("tokenizer.ggml.scores")?.unwrap_or_default(),
        add_space_prefix: md.opt_bool("tokenizer.ggml.add_space_prefix"),
        unk_id: md
            .opt_usize("tokenizer.ggml.unknown_token_id")?
            .map(|x| x as u32),
    };
    let bos_token_id = md
        .opt_usize("tokenizer.ggml.bos_token_id")?
        .map(|x| x as u32);
    let add_bos_token = md.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(
        // llama.cpp's default: SentencePiece vocabularies add BOS, byte-level BPE ones do not.
        vocab.model == "llama",
    );
    let tokenizer = Tokenizer::from_gguf_vocab(&vocab, bos_token_id, add_bos_token)?;
    Ok((vocab, bos_token_id, add_bos_token, tokenizer))
}

/// The tokenizer of the GGUF model at `path`, from its metadata alone (the weights are not
/// read): [`Tokenizer::from_gguf`].
pub(crate) fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    let meta = formwork_gguf::Metadata::read(path).map_err(|e| gguf_error(path, e))?;
    let md = Metadata { path, meta: &meta };
    Ok(read_tokenizer(&md)?.3)
}

/// Gemma 3's hyper-parameters beyond the llama ones, as llama.cpp reads them
/// (`llama_model_gemma3::load_arch_hparams`): the sliding window and which layers use it
/// (every sixth layer global unless `attention.sliding_window_pattern` says otherwise), the
/// local rotary base (`rope.freq_base_swa`, else 10000), linear rotary scaling of the global
/// layers, the query scale (`1 / sqrt(head_dim)`, or `1 / sqrt(hidden / heads)` for the
/// 62-layer 27B model, as llama.cpp picks it by layer count) and the optional logit cap.
fn gemma3_config(md: &Metadata<'_>, config: &mut TransformerConfig) -> Result<(), ModelError> {
    let key = |k: &str| format!("gemma3.{k}");
    if let Some(window) = md.opt_usize(&key("attention.sliding_window"))?
        && window > 0
    {
        let pattern_key = key("attention.sliding_window_pattern");
        let local_layers = match md.get(&pattern_key) {
            None => SlidingWindow::periodic(config.layers, 6),
            Some(Value::Array(flags)) => flags
                .iter()
                .map(|f| f.as_bool())
                .collect::<Option<Vec<bool>>>()
                .filter(|f| f.len() == config.layers)
                .ok_or_else(|| md.err(&pattern_key, "not one boolean per layer"))?,
            Some(v) => SlidingWindow::periodic(
                config.layers,
                integer(v).ok_or_else(|| md.err(&pattern_key, "not a layer period"))?,
            ),
        };
        config.sliding_window = Some(SlidingWindow {
            window,
            local_layers,
            rope_theta: md.opt_f64(&key("rope.freq_base_swa"))?.unwrap_or(10_000.0),
        });
    }
    if let Some(factor) = md
        .opt_f64(&key("rope.scaling.factor"))?
        .filter(|&f| f != 0.0)
    {
        match md.opt_str(&key("rope.scaling.type")) {
            None | Some("linear") | Some("none") => {
                config.rope_freq_scale = f64::from(1.0f32 / factor as f32)
            }
            Some(other) => {
                return Err(md.err(
                    &key("rope.scaling.type"),
                    format!("rope scaling `{other}` is not supported (only linear)"),
                ));
            }
        }
    }
    let width = if config.layers == 62 {
        config.hidden_size / config.heads
    } else {
        config.head_dim
    };
    config.query_scale = Some(f64::from(1.0f32 / (width as f32).sqrt()));
    config.final_logit_softcapping = md
        .opt_f64(&key("final_logit_softcapping"))?
        .filter(|&c| c != 0.0);
    Ok(())
}

/// The candle transformer of a GGUF file (GPU devices, and formats the CPU backend lacks).
fn candle_transformer<R: Read + Seek>(
    tensors: &mut Tensors<'_, R>,
    config: &TransformerConfig,
    eps: f32,
    device: &Device,
) -> Result<Transformer, ModelError> {
    let embedding = Arc::new(tensors.get("token_embd.weight")?);
    let lm_head = if tensors.gguf.tensor("output.weight").is_some() {
        tensors.linear("output.weight", None)?
    } else {
        Linear::new(QMatMul::from_arc(embedding.clone())?, None)
    };
    let mut layers = Vec::with_capacity(config.layers);
    for i in 0..config.layers {
        let p = format!("blk.{i}");
        let bias = |name: &str| format!("{p}.{name}.bias");
        let qkv_bias = config.architecture == Architecture::Qwen2;
        let layer = Layer {
            attn_norm: tensors.norm(&format!("{p}.attn_norm.weight"), eps)?,
            q: tensors.linear(
                &format!("{p}.attn_q.weight"),
                qkv_bias.then(|| bias("attn_q")).as_deref(),
            )?,
            k: tensors.linear(
                &format!("{p}.attn_k.weight"),
                qkv_bias.then(|| bias("attn_k")).as_deref(),
            )?,
            v: tensors.linear(
                &format!("{p}.attn_v.weight"),
                qkv_bias.then(|| bias("attn_v")).as_deref(),
            )?,
            o: tensors.linear(&format!("{p}.attn_output.weight"), None)?,
            q_norm: if config.architecture.has_qk_norm() {
                Some(tensors.norm(&format!("{p}.attn_q_norm.weight"), eps)?)
            } else {
                None
            },
            k_norm: if config.architecture.has_qk_norm() {
                Some(tensors.norm(&format!("{p}.attn_k_norm.weight"), eps)?)
            } else {
                None
            },
            ffn_norm: tensors.norm(&format!("{p}.ffn_norm.weight"), eps)?,
            gate: tensors.linear(&format!("{p}.ffn_gate.weight"), None)?,
            up: tensors.linear(&format!("{p}.ffn_up.weight"), None)?,
            down: tensors.linear(&format!("{p}.ffn_down.weight"), None)?,
        };
        layers.push(layer);
    }
    let norm = tensors.norm("output_norm.weight", eps)?;
    let mut transformer = Transformer::candle(CandleModel::new(
        config.clone(),
        Embedding::Quantized(embedding),
        layers,
        norm,
        lm_head,
        device,
    )?);

    transformer.densify(dense_limit())?;
    Ok(transformer)
}

/// Whether GGUF models on the CPU run on Formwork's own kernels: yes unless
/// `FORMWORK_BACKEND=candle`.
pub(crate) fn native_enabled() -> bool {
    std::env::var("FORMWORK_BACKEND").map_or(true, |v| v != "candle")
}

/// The most memory [`Transformer::densify`] may add: `FORMWORK_DENSE_LIMIT_MB`, off (0) by
/// default. Dense f32 products make prefill about 4x faster on a CPU, but they skip the 8-bit
/// quantization of activations that llama.cpp's kernels (and ours) apply, so logits move by
/// up to ~0.5 in log-probability on small quantized models, and a sequence's tokens would
/// depend on what it was batched with.
pub(crate) fn dense_limit() -> usize {
    std::env::var("FORMWORK_DENSE_LIMIT_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map(|mb| mb << 20)
        .unwrap_or(0)
}

pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

struct Tensors<'a, R> {
    path: &'a Path,
    gguf: &'a GgufFile,
    reader: &'a mut R,
    device: &'a Device,
}

impl<R: Read + Seek> Tensors<'_, R> {
    fn err(&self, name: &str, message: impl Into<String>) -> ModelError {
        ModelError::Weight {
            path: PathBuf::from(self.path),
            name: name.to_string(),
            message: message.into(),
        }
    }

    fn get(&mut self, name: &str) -> Result<QTensor, ModelError> {
        let info = self
            .gguf
            .tensor(name)
            .ok_or_else(|| self.err(name, "missing"))?;
        qtensor(self.path, self.gguf, self.reader, info, self.device)
    }

    fn linear(&mut self, name: &str, bias: Option<&str>) -> Result<Linear, ModelError> {
        let weight = QMatMul::from_qtensor(self.get(name)?)?;
        let bias = match bias {
            Some(b) => Some(self.get(b)?.dequantize(self.device)?),
            None => None,
        };
        Ok(Linear::new(weight, bias))
    }

    fn norm(&mut self, name: &str, eps: f32) -> Result<RmsNorm, ModelError> {
        Ok(RmsNorm {
            weight: self.get(name)?.dequantize(self.device)?,
            eps,
        })
    }
}
