//! Source rules that keep user input from crashing the tool: no `unwrap()` / `expect(` in the
//! library and binary outside `#[cfg(test)]` code (errors carry context instead; issue 7).

use crate::common;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of non-test code that call `.unwrap()` or `.expect(`: everything from a file's first
/// `#[cfg(test)]` on is test code (our convention: test modules sit at the end of a file).
fn offenders(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| {
            let code = l.split("//").next().unwrap_or("");
            code.contains(".unwrap()") || code.contains(".expect(")
        })
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect()
}

#[test]
fn no_unwrap_or_expect_outside_tests() {
    let mut files = Vec::new();
    rust_files(&common::repo_root().join("src"), &mut files);
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        for (line, code) in offenders(&std::fs::read_to_string(f).unwrap()) {
            bad.push(format!("{}:{line}: {code}", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "unwrap/expect in non-test code:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_lint_sees_what_it_should() {
    let src = "fn a() { x.unwrap(); }\n// y.unwrap()\nfn b() { z.expect(\"m\"); }\n#[cfg(test)]\nmod tests { fn c() { w.unwrap(); } }\n";
    let got: Vec<usize> = offenders(src).into_iter().map(|(l, _)| l).collect();
    assert_eq!(got, vec![1, 3]);
}

/// Every kernel name src/ops/cuda/launch.rs and varlen_launch.rs load exists in kernels/embtune.cu
/// or the varlen_attention.cuh it includes (a `__global__`
/// function, or a macro instantiation's first argument), so a renamed kernel fails here and not
/// first on a rare GPU machine. Stems taken by the dtype dispatch (`"embtune_gelu_bias"`) get
/// each of `_f32`, `_bf16`, `_f16`.
#[test]
fn cuda_kernel_names_exist_in_the_kernel_source() {
    let root = common::repo_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let cu = read("kernels/embtune.cu") + &read("kernels/varlen_attention.cuh");
    assert!(cu.contains("#include \"varlen_attention.cuh\""));
    let rs = read("src/ops/cuda/launch.rs") + &read("src/ops/cuda/varlen_launch.rs");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut defined = std::collections::HashSet::new();
    for line in cu.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.split("__global__ void ").nth(1) {
            defined.insert(ident(rest.trim_start()));
        } else if t.starts_with("EMBTUNE_") && t.contains('(') && !t.starts_with("EMBTUNE_ID") {
            // EMBTUNE_X(name_a, name_b?, T, ...): names start with "embtune_".
            for arg in t.split_once('(').unwrap().1.split(',') {
                let a = ident(arg.trim());
                if a.starts_with("embtune_") {
                    defined.insert(a);
                }
            }
        }
    }
    let mut used = Vec::new();
    for piece in rs.split('"').skip(1).step_by(2) {
        if piece.starts_with("embtune_") && ident(piece) == piece {
            if piece.ends_with("_f32") || piece.ends_with("_bf16") || piece.ends_with("_f16") {
                used.push(piece.to_string());
            } else {
                used.extend(["f32", "bf16", "f16"].map(|s| format!("{piece}_{s}")));
            }
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|u| !defined.contains(*u)).collect();
    assert!(
        missing.is_empty(),
        "not in kernels/embtune.cu: {missing:?}; defined: {defined:?}"
    );
}
