//! The GBNF and Lark readers against Python's `lark` as an oracle: every string sampled from
//! every grammar in `tests/data/` must be accepted by lark (and by our own recognizer), and
//! on random byte edits of those strings, ours and lark's verdicts must agree.
//!
//! Needs Python with `lark` 1.3.1: `FORMWORK_PYTHON` names the interpreter (`cargo xtask
//! test` sets it to a venv under `target/oracle-venv`), else `python3`. Without lark the
//! tests fail and say how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use formwork_grammar::{Grammar, GrammarConfig, gbnf, lark};

/// Samples per grammar, their soft length limit, and byte edits per sample.
const SAMPLES: u64 = 30;
const SOFT_LIMIT: usize = 80;
const MUTANTS: usize = 3;

fn data(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gbnf" || x == "lark"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no grammars in {}", dir.display());
    files
}

fn python() -> String {
    std::env::var("FORMWORK_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Lark's verdict on each string (`--gbnf` or `--lark`).
fn oracle(flag: &str, grammar: &Path, strings: &[String]) -> Vec<bool> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/grammar_oracle.py");
    let input = std::env::temp_dir().join(format!(
        "formwork-oracle-{}-{}.jsonl",
        std::process::id(),
        grammar.file_name().unwrap().to_string_lossy()
    ));
    let lines: Vec<String> = strings
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = Command::new(python())
        .arg(&script)
        .arg(flag)
        .arg(grammar)
        .arg(&input)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` (set FORMWORK_PYTHON to a Python with lark 1.3.1): {e}",
                python()
            )
        });
    let _ = std::fs::remove_file(&input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "Python lark is missing: `pip install lark==1.3.1`, or run `cargo xtask test` \
         (it makes target/oracle-venv) or set FORMWORK_PYTHON to a Python that has it.\n{stderr}"
    );
    assert!(
        out.status.success(),
        "{}: the oracle failed: {stderr}",
        grammar.display()
    );
    let verdicts: Vec<bool> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim() == "1")
        .collect();
    assert_eq!(verdicts.len(), strings.len(), "{}", grammar.display());
    verdicts
}

/// A small deterministic generator for the byte edits.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

/// Valid UTF-8 edits of `s`: a byte deleted, inserted or replaced (bytes from `s` itself
/// or a few that grammars care about).
fn mutants(s: &[u8], rng: &mut Lcg) -> Vec<String> {
    const EXTRA: &[u8] = b" \n\"\\{}[]()0aZ,;-+";
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < MUTANTS && tries < 50 {
        tries += 1;
        let mut m = s.to_vec();
        let pick = |rng: &mut Lcg| -> u8 {
            if !s.is_empty() && rng.below(2) == 0 {
                s[rng.below(s.len())]
            } else {
                EXTRA[rng.below(EXTRA.len())]
            }
        };
        match rng.below(3) {
            0 if !m.is_empty() => {
                m.remove(rng.below(m.len()));
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = pick(rng);
            }
            _ => {
                let i = rng.below(m.len() + 1);
                let b = pick(rng);
                m.insert(i, b);
            }
        }
        if let Ok(text) = String::from_utf8(m)
            && text.as_bytes() != s
        {
            out.push(text);
        }
    }
    out
}

/// Samples `grammar`, checks ours and lark accept every sample, and that both agree on
/// edits of them; returns what went wrong.
fn check(flag: &str, path: &Path, grammar: &Grammar) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut problems = Vec::new();
    let mut samples = Vec::new();
    for seed in 0..SAMPLES {
        let bytes = grammar.sample(seed, SOFT_LIMIT).unwrap();
        let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        if !grammar.matches(text.as_bytes()).unwrap() {
            problems.push(format!("{name}: ours rejects its own sample {text:?}"));
        }
        samples.push(text);
    }
    let mut rng = Lcg(0x5eed);
    let edits: Vec<String> = samples
        .iter()
        .flat_map(|s| mutants(s.as_bytes(), &mut rng))
        .collect();
    let all: Vec<String> = samples.iter().chain(&edits).cloned().collect();
    let verdicts = oracle(flag, path, &all);
    for (s, ok) in samples.iter().zip(&verdicts) {
        if !ok {
            problems.push(format!("{name}: lark rejects the sample {s:?}"));
        }
    }
    let mut accepted = 0;
    for (s, &theirs) in edits.iter().zip(&verdicts[samples.len()..]) {
        let ours = grammar.matches(s.as_bytes()).unwrap();
        accepted += usize::from(ours);
        if ours != theirs {
            problems.push(format!(
                "{name}: on the edit {s:?} ours says {ours}, lark says {theirs}"
            ));
        }
    }
    eprintln!(
        "{name}: {} samples, {} edits ({accepted} in the language)",
        samples.len(),
        edits.len()
    );
    problems
}

#[test]
fn gbnf_grammars_agree_with_lark() {
    let mut problems = Vec::new();
    for path in data("gbnf") {
        let text = std::fs::read_to_string(&path).unwrap();
        let (rules, root) = gbnf(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let grammar = rules
            .compile(root, &GrammarConfig::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        problems.extend(check("--gbnf", &path, &grammar));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn lark_grammars_agree_with_lark() {
    let mut problems = Vec::new();
    for path in data("lark") {
        let text = std::fs::read_to_string(&path).unwrap();
        let (rules, start) = lark(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let grammar = rules
            .compile(start, &GrammarConfig::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        problems.extend(check("--lark", &path, &grammar));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
