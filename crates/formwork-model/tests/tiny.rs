//! Every backend on tiny random-weight models written by the test: GGUF files of the llama,
//! qwen2 and qwen3 layouts (the CPU backend), and a Hugging Face safetensors folder (candle).
//! Batched forward passes equal one-by-one passes, caches grow, clone and refuse other models
//! as documented, and the folder's tokenizer.json encodes like the tokenizer rebuilt from GGUF
//! metadata.

use formwork_model::testing::{TinySpec, write_tiny_gguf, write_tiny_hf_folder};
use formwork_model::{
    Architecture, BatchItem, CpuKernels, Device, KvCache, LoadOptions, LoadedModel, ModelError,
    PromptAttention, load, load_with,
};

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("formwork-model-tiny-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn argmax(l: &[f32]) -> u32 {
    (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32
}

/// Greedy tokens of three prompts decoded together equal each decoded alone.
fn check_batching(m: &LoadedModel) {
    let prompts: Vec<Vec<u32>> = ["hello there", "the name is", "{\"a\": 10, \"b\": true}"]
        .iter()
        .map(|p| m.tokenizer.encode(p, true).unwrap())
        .collect();
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut cache = m.model.new_cache();
            let mut input = p.clone();
            let mut out = Vec::new();
            for _ in 0..6 {
                let l = m
                    .model
                    .forward(&mut [BatchItem {
                        tokens: &input,
                        cache: &mut cache,
                    }])
                    .unwrap();
                let t = argmax(&l[0]);
                out.push(t);
                input = vec![t];
            }
            assert_eq!(cache.len(), p.len() + 5);
            out
        })
        .collect();
    let mut caches: Vec<_> = prompts.iter().map(|_| m.model.new_cache()).collect();
    let mut inputs = prompts.clone();
    let mut together = vec![Vec::new(); 3];
    for _ in 0..6 {
        let mut batch: Vec<BatchItem> = inputs
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| BatchItem { tokens: t, cache })
            .collect();
        let logits = m.model.forward(&mut batch).unwrap();
        for (i, l) in logits.iter().enumerate() {
            assert_eq!(l.len(), m.info.vocab_size);
            let t = argmax(l);
            together[i].push(t);
            inputs[i] = vec![t];
        }
    }
    assert_eq!(alone, together);
}

#[test]
fn every_gguf_layout_loads_and_batches() {
    for arch in [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Qwen3,
    ] {
        let path = dir("gguf").join(format!("{}.gguf", arch.as_str()));
        write_tiny_gguf(
            &path,
            &TinySpec {
                architecture: arch,
                ..TinySpec::default()
            },
        )
        .unwrap();
        let m = load(&path, &Device::Cpu).unwrap();
        assert_eq!(m.info.architecture, arch);
        assert_eq!(m.info.eos_token_ids, vec![0, 2]);
        check_batching(&m);
    }
}

#[test]
fn a_hugging_face_folder_loads_and_tokenizes_like_the_gguf() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let folder = dir(&format!("hf-{}", arch.as_str()));
        let spec = TinySpec {
            architecture: arch,
            ..TinySpec::default()
        };
        write_tiny_hf_folder(&folder, &spec).unwrap();
        let hf = load(&folder, &Device::Cpu).unwrap();
        let gguf_path = dir("hf-gguf").join(format!("{}.gguf", arch.as_str()));
        write_tiny_gguf(&gguf_path, &spec).unwrap();
        let gguf = load(&gguf_path, &Device::Cpu).unwrap();
        assert_eq!(hf.info.eos_token_ids, vec![0, 2]);
        assert!(hf.info.chat_template.is_some());
        for text in [
            "<|im_start|>user\nhello, the name is Paris<|im_end|>",
            "{\"age\": 20}",
            "été 日本 😀",
        ] {
            assert_eq!(
                hf.tokenizer.encode(text, true).unwrap(),
                gguf.tokenizer.encode(text, true).unwrap(),
                "{text}"
            );
        }
        check_batching(&hf);
    }
}

#[test]
fn bad_files_are_typed_errors_naming_the_file() {
    let d = dir("bad");
    let missing = d.join("missing.gguf");
    assert!(matches!(
        load(&missing, &Device::Cpu),
        Err(ModelError::Io { .. })
    ));
    let corrupt = d.join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let err = load(&corrupt, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, ModelError::Gguf { .. }) && err.to_string().contains("corrupt.gguf"),
        "{err}"
    );
    // A file cut inside the weights names the tensor that runs past its end.
    let cut = d.join("cut.gguf");
    write_tiny_gguf(&cut, &TinySpec::default()).unwrap();
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = load(&cut, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::Weight { name, .. } if name == "blk.1.ffn_down.weight")
            && err.to_string().contains("cut.gguf")
            && err.to_string().contains("past the end of the file"),
        "{err}"
    );
    let text = d.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    assert!(matches!(
        load(&text, &Device::Cpu),
        Err(ModelError::NotAModel { .. })
    ));
    let empty_dir = dir("empty-folder");
    assert!(matches!(
        load(&empty_dir, &Device::Cpu),
        Err(ModelError::NotAModel { .. })
    ));
    assert!(matches!(
        formwork_model::device("tpu"),
        Err(ModelError::Device { .. })
    ));
}

/// The tiny llama of `spec` as a GGUF file (the CPU backend) and as a Hugging Face folder
/// (candle).
fn both_backends(name: &str, spec: &TinySpec) -> (LoadedModel, LoadedModel) {
    let gguf = dir(name).join("tiny.gguf");
    write_tiny_gguf(&gguf, spec).unwrap();
    let folder = dir(&format!("{name}-hf"));
    write_tiny_hf_folder(&folder, spec).unwrap();
    let native = load(&gguf, &Device::Cpu).unwrap();
    let candle = load(&folder, &Device::Cpu).unwrap();
    assert_eq!(native.model.backend_name(), "cpu-native");
    assert_eq!(candle.model.backend_name(), "candle");
    (native, candle)
}

fn step(m: &LoadedModel, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, ModelError> {
    m.model
        .forward(&mut [BatchItem { tokens, cache }])
        .map(|mut l| l.remove(0))
}

#[test]
fn a_cache_runs_only_on_a_model_of_its_backend_and_shape() {
    let (native, candle) = both_backends("foreign-cache", &TinySpec::default());
    let prompt = native.tokenizer.encode("the name is", true).unwrap();
    for (made_by, run_on) in [(&native, &candle), (&candle, &native)] {
        // Fresh and filled caches alike.
        let mut cache = made_by.model.new_cache();
        for _ in 0..2 {
            let err = step(run_on, &prompt, &mut cache).unwrap_err();
            assert!(
                matches!(&err, ModelError::Cache { message } if message.contains("another backend")),
                "{err}"
            );
            step(made_by, &prompt, &mut cache).unwrap();
        }
        assert_eq!(
            cache.len(),
            2 * prompt.len(),
            "a refused pass grows nothing"
        );
    }
    let deeper = dir("foreign-cache").join("three-layers.gguf");
    let spec = TinySpec {
        layers: 3,
        ..TinySpec::default()
    };
    write_tiny_gguf(&deeper, &spec).unwrap();
    let deeper = load(&deeper, &Device::Cpu).unwrap();
    let mut cache = native.model.new_cache();
    let err = step(&deeper, &prompt, &mut cache).unwrap_err();
    assert!(
        matches!(&err, ModelError::Cache { message } if message.contains("another shape")),
        "{err}"
    );
}

#[test]
fn a_cloned_cache_grows_apart_from_its_original_on_every_backend() {
    let (native, candle) = both_backends("clone", &TinySpec::default());
    for m in [&native, &candle] {
        let prompt = m
            .tokenizer
            .encode("{\"a\": 10, \"b\": true}", true)
            .unwrap();
        let mut original = m.model.new_cache();
        original.set_prompt_len(prompt.len());
        let first = step(m, &prompt, &mut original).unwrap();
        let mut copy = original.try_clone().unwrap();
        assert_eq!(copy.len(), prompt.len());
        assert_eq!(copy.prompt_len(), Some(prompt.len()));
        assert!(copy.memory_usage() > 0);
        // The copy runs ahead on other tokens; the original then sees none of them.
        let mut token = argmax(&first);
        for _ in 0..4 {
            token = argmax(&step(m, &[(token + 1) % 256], &mut copy).unwrap());
        }
        assert_eq!(copy.len(), prompt.len() + 4);
        assert_eq!(original.len(), prompt.len());
        let a = step(m, &[argmax(&first)], &mut original).unwrap();
        let mut fresh = m.model.new_cache();
        fresh.set_prompt_len(prompt.len());
        step(m, &prompt, &mut fresh).unwrap();
        let b = step(m, &[argmax(&first)], &mut fresh).unwrap();
        assert_eq!(a, b, "{}", m.model.backend_name());
        // A clone after a truncation holds only the kept tokens.
        copy.truncate(prompt.len());
        let mut again = copy.try_clone().unwrap();
        let c = step(m, &[argmax(&first)], &mut again).unwrap();
        assert_eq!(a, c, "{}", m.model.backend_name());
    }
}

#[test]
fn load_options_set_the_cpu_backend_threads() {
    let path = dir("threads").join("tiny.gguf");
    write_tiny_gguf(&path, &TinySpec::default()).unwrap();
    let three = load_with(&path, &LoadOptions::new(Device::Cpu).with_threads(3)).unwrap();
    assert_eq!(three.model.threads(), Some(3));
    let one = load_with(&path, &LoadOptions::default().with_threads(1)).unwrap();
    assert_eq!(one.model.threads(), Some(1));
    // The same logits whatever the thread count.
    let prompt = one.tokenizer.encode("hello there", true).unwrap();
    assert_eq!(
        step(&three, &prompt, &mut three.model.new_cache()).unwrap(),
        step(&one, &prompt, &mut one.model.new_cache()).unwrap()
    );
    assert!(matches!(
        load_with(&path, &LoadOptions::default().with_threads(0)),
        Err(ModelError::Device { .. })
    ));
}

/// Every kernel set this CPU runs gives the logits of the portable code, bit for bit: a
/// prompt of more than 64 tokens (the tiled attention, under llama.cpp's kernel choice; the
/// row kernel by default) and decode steps (the attention row kernel), through Q8_0 matrix
/// tiles, on a head width of 32 (the SIMD attention's smallest).
#[test]
fn every_cpu_kernel_set_gives_the_logits_of_the_portable_code() {
    for prompt_attention in [PromptAttention::LlamaCpp, PromptAttention::RowByRow] {
        every_cpu_kernel_set_gives_the_portable_logits(prompt_attention);
    }
}

fn every_cpu_kernel_set_gives_the_portable_logits(prompt_attention: PromptAttention) {
    let spec = TinySpec {
        hidden_size: 128,
        intermediate_size: 256,
        ..TinySpec::default()
    };
    let path = dir("kernels").join("tiny.gguf");
    write_tiny_gguf(&path, &spec).unwrap();
    let run = |kernels: CpuKernels| {
        let options = LoadOptions::default()
            .with_cpu_kernels(kernels)
            .with_prompt_attention(prompt_attention);
        let m = load_with(&path, &options).unwrap();
        let ran = m.model.cpu_kernels().expect("the native backend");
        assert_eq!(ran, kernels.min(CpuKernels::detected()));
        let mut cache = m.model.new_cache();
        let text =
            "{\"name\": \"a tiny model\", \"layers\": 2, \"heads\": 4, \"kernels\": [1, 2, 3]}";
        let mut tokens = m.tokenizer.encode(&text.repeat(2), true).unwrap();
        assert!(tokens.len() >= 64, "{} prompt tokens", tokens.len());
        let mut bits = Vec::new();
        for _ in 0..4 {
            let l = step(&m, &tokens, &mut cache).unwrap();
            tokens = vec![argmax(&l)];
            bits.push(l.iter().map(|x| x.to_bits()).collect::<Vec<u32>>());
        }
        (ran, bits)
    };
    let (ran, portable) = run(CpuKernels::Scalar);
    assert_eq!(ran, CpuKernels::Scalar);
    for kernels in [
        CpuKernels::Avx2,
        CpuKernels::Avx2Vnni,
        CpuKernels::Avx2VnniWide,
    ] {
        let (ran, bits) = run(kernels);
        eprintln!("{ran} against scalar");
        assert!(
            bits == portable,
            "{ran} logits differ from the portable code's"
        );
    }
}

/// `FORMWORK_CPU_KERNELS=scalar` makes models load with the portable code, and an unknown
/// value is a typed error naming the variable. Each case runs in a child process of this
/// test binary, so the variable is set for it alone.
#[test]
fn formwork_cpu_kernels_picks_the_kernels_models_load_with() {
    const NAME: &str = "formwork_cpu_kernels_picks_the_kernels_models_load_with";
    let path = dir("kernels-env").join("tiny.gguf");
    match std::env::var(formwork_model::CPU_KERNELS_ENV).as_deref() {
        Ok("scalar") => {
            write_tiny_gguf(&path, &TinySpec::default()).unwrap();
            assert_eq!(formwork_model::cpu_kernels().unwrap(), CpuKernels::Scalar);
            let m = load(&path, &Device::Cpu).unwrap();
            assert_eq!(m.model.cpu_kernels(), Some(CpuKernels::Scalar));
            println!("child checked scalar");
        }
        Ok("sse9") => {
            write_tiny_gguf(&path, &TinySpec::default()).unwrap();
            let err = load(&path, &Device::Cpu).expect_err("an unknown value");
            assert!(matches!(err, ModelError::Device { .. }), "{err:?}");
            assert!(err.to_string().contains("FORMWORK_CPU_KERNELS"), "{err}");
            println!("child checked sse9");
        }
        _ => {
            for value in ["scalar", "sse9"] {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                    .env(formwork_model::CPU_KERNELS_ENV, value)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && stdout.contains(&format!("child checked {value}")),
                    "{value}: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn candle_refuses_gemma3_with_a_typed_error() {
    // Gemma 3 runs only on the native CPU backend; a Hugging Face folder (always candle) of
    // one is refused before any weight is read, naming the backend.
    let d = dir("gemma3-folder");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "gemma3", "hidden_size": 640, "num_attention_heads": 4}"#,
    )
    .unwrap();
    let err = load(&d, &Device::Cpu).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::UnsupportedOnBackend {
                architecture: "gemma3",
                backend: "candle",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        Architecture::from_name("gemma3"),
        Some(Architecture::Gemma3)
    );
    assert!(Architecture::SUPPORTED.contains("gemma3"));
}
