//! Loading a Hugging Face model folder: `config.json`, `*.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json` (and `generation_config.json` for extra EOS ids).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::candle::{CandleModel, Embedding, Layer, Linear, RmsNorm};
use crate::config::{Architecture, RopeStyle, TransformerConfig};
use crate::info::{ModelInfo, eos_ids_by_name};
use crate::tokenizer::Tokenizer;
use crate::transformer::Transformer;
use crate::{LoadedModel, ModelError};

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
        path: path.to_path_buf(),
        key: "(file)".into(),
        message: format!("not valid JSON: {e}"),
    })
}

fn read_optional_json(path: &Path) -> Result<Option<Value>, ModelError> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A token given in a config as `"<s>"` or `{"content": "<s>", ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Ids given as a number or a list of numbers.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Loads a Hugging Face folder.
pub(crate) fn load(dir: &Path, device: &Device) -> Result<LoadedModel, ModelError> {
    let config_path = dir.join("config.json");
    let config = read_json(&config_path)?;
    let field_err = |key: &str, message: &str| ModelError::Metadata {
        path: config_path.clone(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let usize_field = |key: &str| -> Result<usize, ModelError> {
        config
            .get(key)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| field_err(key, "missing or not an unsigned integer"))
    };
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| field_err("model_type", "missing or not a string"))?;
    let architecture =
        Architecture::from_name(model_type).ok_or_else(|| ModelError::UnsupportedArchitecture {
            path: dir.to_path_buf(),
            architecture: model_type.to_string(),
            supported: Architecture::SUPPORTED,
        })?;
    if !crate::candle::runs(architecture) {
        return Err(crate::candle::unsupported(dir, architecture));
    }
    let hidden_size = usize_field("hidden_size")?;
    let heads = usize_field("num_attention_heads")?;
    let cfg = TransformerConfig {
        architecture,
        layers: usize_field("num_hidden_layers")?,
        hidden_size,
        intermediate_size: usize_field("intermediate_size")?,
        heads,
        kv_heads: usize_field("num_key_value_heads").unwrap_or(heads),
        head_dim: usize_field("head_dim").unwrap_or(hidden_size / heads.max(1)),
        vocab_size: usize_field("vocab_size")?,
        context_length: usize_field("max_position_embeddings")?,
        rms_norm_eps: config
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-6),
        rope_theta: config
            .get("rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0),
        rope_style: RopeStyle::Halves,
        rope_freq_scale: 1.0,
        sliding_window: None,
        query_scale: None,
        final_logit_softcapping: None,
    };
    cfg.check()
        .map_err(|m| field_err("num_attention_heads", &m))?;
    let tied = config
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::NotAModel {
            path: dir.to_path_buf(),
        });
    }
    let weights = mmap(&files).map_err(|e| ModelError::Weight {
        path: dir.to_path_buf(),
        name: "(safetensors)".into(),
        message: e.to_string(),
    })?;
    let get = |name: &str| -> Result<Tensor, ModelError> {
        weights
            .load(name, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| ModelError::Weight {
                path: dir.to_path_buf(),
                name: name.to_string(),
                message: e.to_string(),
            })
    };
    let linear = |name: &str, bias: bool| -> Result<Linear, ModelError> {
        Ok(Linear::new(
            QMatMul::Tensor(get(&format!("{name}.weight"))?),
            if bias {
                Some(get(&format!("{name}.bias"))?)
            } else {
                None
            },
        ))
    };
    let eps = cfg.rms_norm_eps as f32;
    let norm = |name: &str| -> Result<RmsNorm, ModelError> {
        Ok(RmsNorm {
            weight: get(name)?,
            eps,
        })
    };
    let embed = get("model.embed_tokens.weight")?;
    let lm_head = if tied || weights.get("lm_head.weight").is_err() {
        Linear::new(QMatMul::Tensor(embed.clone()), None)
    } else {
        linear("lm_head", false)?
    };
    let qkv_bias = architecture == Architecture::Qwen2;
    let qk_norm = architecture.has_qk_norm();
    let mut layers = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let p = format!("model.layers.{i}");
        layers.push(Layer {
            attn_norm: norm(&format!("{p}.input_layernorm.weight"))?,
            q: linear(&format!("{p}.self_attn.q_proj"), qkv_bias)?,
            k: linear(&format!("{p}.self_attn.k_proj"), qkv_bias)?,
            v: linear(&format!("{p}.self_attn.v_proj"), qkv_bias)?,
            o: linear(&format!("{p}.self_attn.o_proj"), false)?,
            q_norm: if qk_norm {
                Some(norm(&format!("{p}.self_attn.q_norm.weight"))?)
            } else {
                None
            },
            k_norm: if qk_norm {
                Some(norm(&format!("{p}.self_attn.k_norm.weight"))?)
            } else {
                None
            },
            ffn_norm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
            gate: linear(&format!("{p}.mlp.gate_proj"), false)?,
            up: linear(&format!("{p}.mlp.up_proj"), false)?,
            down: linear(&format!("{p}.mlp.down_proj"), false)?,
        });
    }
    let final_norm = norm("model.norm.weight")?;
    let transformer = Transformer::candle(CandleModel::new(
        cfg.clone(),
        Embedding::Dense(embed),
        layers,
        final_norm,
        lm_head,
        device,
    )?);

    let tok_config = read_optional_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let generation =
        read_optional_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.exists() {
        return Err(ModelError::Tokenizer(format!(
            "{}: missing tokenizer.json",
            dir.display()
        )));
    }
    let bos_token = token_text(tok_config.get("bos_token"));
    let eos_token = token_text(tok_config.get("eos_token"));
    let probe = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
    let bos_token_id = bos_token
        .as_deref()
        .and_then(|t| probe.token_to_id(t))
        .or_else(|| ids(config.get("bos_token_id")).first().copied());
    let add_bos_token = tok_config
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tokenizer = Tokenizer::from_file(&tokenizer_path, bos_token_id, add_bos_token)?;

    let mut eos_token_ids = ids(config.get("eos_token_id"));
    eos_token_ids.extend(ids(generation.get("eos_token_id")));
    if let Some(id) = eos_token.as_deref().and_then(|t| probe.token_to_id(t)) {
        eos_token_ids.push(id);
    }
    let added = probe.get_added_tokens_decoder();
    eos_token_ids.extend(eos_ids_by_name(
        added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (*id, t.content.as_str())),
    ));
    eos_token_ids.sort_unstable();
    eos_token_ids.dedup();

    let chat_template = match tok_config.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| named.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
    .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());

    let info = ModelInfo {
        name: crate::gguf::file_stem(dir),
        architecture,
        vocab_size: cfg.vocab_size,
        context_length: cfg.context_length,
        eos_token_ids,
        bos_token_id,
        add_bos_token: tokenizer.adds_bos(),
        bos_token,
        eos_token,
        chat_template,
        path: dir.to_path_buf(),
    };
    Ok(LoadedModel {
        model: Arc::new(transformer),
        tokenizer,
        info,
    })
}

#[allow(unsafe_code)]
fn mmap(files: &[PathBuf]) -> candle_core::Result<MmapedSafetensors> {
    // SAFETY: the files are mapped read-only; like every safetensors loader we rely on them
    // not being modified while the model is loaded.
    unsafe { MmapedSafetensors::multi(files) }
}
