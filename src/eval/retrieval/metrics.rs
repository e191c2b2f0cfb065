//! Retrieval metrics of ranked hit lists, with sentence-transformers' names and formulas
//! (InformationRetrievalEvaluator): accuracy@k (a relevant document in the top k), precision@k,
//! recall@k, MRR@k, nDCG@k with binary relevance (score > 0, ideal DCG over the relevant count),
//! MAP@k (precision at each hit, over min(k, relevant)); beside them graded nDCG@k with the
//! score as linear gain (as pytrec_eval). Pure functions. Depends on std.

use std::collections::HashMap;

/// The ks of each metric: sentence-transformers' defaults, and precision/recall@100 beside them
/// (first-stage retrieval is judged by recall@100; the shared reference was run with them).
pub const ACCURACY_AT: [usize; 4] = [1, 3, 5, 10];
pub const PRECISION_RECALL_AT: [usize; 5] = [1, 3, 5, 10, 100];
pub const MRR_AT: usize = 10;
pub const NDCG_AT: usize = 10;
pub const MAP_AT: usize = 100;

/// The largest k any metric needs.
pub const MAX_K: usize = 100;

fn dcg(gains: impl Iterator<Item = f64>) -> f64 {
    gains
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum()
}

/// One query's metric values (name without the score-function prefix → value).
pub fn query_metrics(ranked: &[&str], judged: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let rel = |d: &str| judged.get(d).is_some_and(|&s| s > 0.0);
    let n_rel = judged.values().filter(|&&s| s > 0.0).count().max(1);
    let mut out = Vec::new();
    for k in ACCURACY_AT {
        let hit = ranked.iter().take(k).any(|d| rel(d));
        out.push((format!("accuracy@{k}"), if hit { 1.0 } else { 0.0 }));
    }
    for k in PRECISION_RECALL_AT {
        let c = ranked.iter().take(k).filter(|d| rel(d)).count() as f64;
        out.push((format!("precision@{k}"), c / k as f64));
    }
    for k in PRECISION_RECALL_AT {
        let c = ranked.iter().take(k).filter(|d| rel(d)).count() as f64;
        out.push((format!("recall@{k}"), c / n_rel as f64));
    }
    let rr = ranked
        .iter()
        .take(MRR_AT)
        .position(|d| rel(d))
        .map_or(0.0, |r| 1.0 / (r + 1) as f64);
    out.push((format!("mrr@{MRR_AT}"), rr));
    let k = NDCG_AT;
    let got = dcg(ranked
        .iter()
        .take(k)
        .map(|d| if rel(d) { 1.0 } else { 0.0 }));
    let ideal = dcg(std::iter::repeat_n(1.0, n_rel.min(k)));
    out.push((format!("ndcg@{k}"), got / ideal));
    let mut grades: Vec<f64> = judged.values().copied().filter(|&s| s > 0.0).collect();
    grades.sort_by(|a, b| b.total_cmp(a));
    let got = dcg(ranked
        .iter()
        .take(k)
        .map(|d| judged.get(*d).copied().unwrap_or(0.0).max(0.0)));
    let ideal = dcg(grades.into_iter().take(k));
    out.push((
        format!("ndcg_graded@{k}"),
        if ideal > 0.0 { got / ideal } else { 0.0 },
    ));
    let (mut hits, mut sum) = (0usize, 0.0);
    for (i, d) in ranked.iter().take(MAP_AT).enumerate() {
        if rel(d) {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    out.push((format!("map@{MAP_AT}"), sum / n_rel.min(MAP_AT) as f64));
    out
}

/// The mean of each metric over queries (each query's list in the same order).
pub fn mean(per_query: &[Vec<(String, f64)>]) -> Vec<(String, f64)> {
    let Some(first) = per_query.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let s: f64 = per_query.iter().map(|q| q[i].1).sum();
            (name.clone(), s / per_query.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    fn get(m: &[(String, f64)], k: &str) -> f64 {
        m.iter().find(|(n, _)| n == k).unwrap().1
    }

    /// Relevant d1 (grade 2) and d3 (grade 1), d9 judged 0; ranked d3, d2, d1, ….
    #[test]
    fn hand_computed_query() {
        let j = judged(&[("d1", 2.0), ("d3", 1.0), ("d9", 0.0)]);
        let m = query_metrics(&["d3", "d2", "d1", "d9", "d4"], &j);
        assert_eq!(get(&m, "accuracy@1"), 1.0);
        assert!((get(&m, "precision@3") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(get(&m, "recall@1"), 0.5);
        assert_eq!(get(&m, "recall@3"), 1.0);
        assert_eq!(get(&m, "mrr@10"), 1.0);
        // DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3).
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((get(&m, "ndcg@10") - 1.5 / ideal).abs() < 1e-12);
        // Graded: DCG = 1/1 + 2/2 = 2; ideal = 2/1 + 1/log2(3).
        assert!((get(&m, "ndcg_graded@10") - 2.0 / (2.0 + 1.0 / 3f64.log2())).abs() < 1e-12);
        // MAP: hits at ranks 1 and 3 → (1/1 + 2/3) / 2.
        assert!((get(&m, "map@100") - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    /// No relevant document in the ranking: every metric 0.
    #[test]
    fn a_query_whose_relevant_document_is_not_retrieved() {
        let j = judged(&[("d7", 1.0)]);
        let m = query_metrics(&["d1", "d2", "d3"], &j);
        for (k, v) in &m {
            assert_eq!(*v, 0.0, "{k}");
        }
        let mut hit = vec!["x"; 10];
        hit.push("d7"); // at rank 11: outside @10, inside map@100
        let m = query_metrics(&hit, &j);
        assert_eq!(get(&m, "mrr@10"), 0.0);
        assert!((get(&m, "map@100") - 1.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn means_are_per_metric() {
        let a = vec![("x".to_string(), 1.0), ("y".to_string(), 0.0)];
        let b = vec![("x".to_string(), 0.0), ("y".to_string(), 1.0)];
        assert_eq!(mean(&[a, b]), vec![("x".into(), 0.5), ("y".into(), 0.5)]);
    }
}
