//! `embtune similarity`: pair cosine, and search that ranks a planted near-duplicate first, with
//! the corpus embeddings cached and reused.

use crate::common::{self, embtune};
use serde_json::Value;

#[test]
fn pair_cosine_matches_the_library() {
    let out = embtune(&[
        "similarity",
        "-m",
        common::REAL_MODEL,
        "a man is playing a guitar .",
        "a man plays the guitar .",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let model = common::load_real();
    let e = embtune::encode::encode(
        &model,
        &["a man is playing a guitar .", "a man plays the guitar ."],
        &Default::default(),
    )
    .unwrap();
    let want = embtune::similarity::cosine(e.row(0), e.row(1));
    assert!((v["cosine"].as_f64().unwrap() - want).abs() < 1e-6);
    assert!(want > 0.8);
}

#[test]
fn search_ranks_the_planted_near_duplicate_first_and_caches_the_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.txt");
    let mut lines: Vec<String> =
        std::fs::read_to_string(common::repo_root().join("data/stsbenchmark/sts-test.csv"))
            .unwrap()
            .lines()
            .take(200)
            .map(|l| l.split('\t').nth(6).unwrap().to_string())
            .collect();
    lines.insert(
        137,
        "a small brown dog is chasing a red ball across the wet grass .".into(),
    );
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let query = "a little brown dog chases a red ball over wet grass .";
    let search = || {
        let out = embtune(&[
            "similarity",
            "-m",
            common::REAL_MODEL,
            "--query",
            query,
            "--corpus",
            corpus.to_str().unwrap(),
            "--top-k",
            "3",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let hits = search();
    assert_eq!(hits.as_array().unwrap().len(), 3);
    assert_eq!(hits[0]["index"], 137);
    assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap());
    let cache_dir = tmp.path().join("corpus.txt.embtune-cache");
    let cached: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "one cache file");
    let mtime = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(search(), hits, "same answer from the cache");
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        mtime,
        "cache reused, not rewritten"
    );
    // A changed corpus gets a new cache entry.
    std::fs::write(&corpus, format!("{}\nanother line .", lines.join("\n"))).unwrap();
    search();
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 2);
}
