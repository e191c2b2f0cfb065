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
