//! Statistics behind the evaluators, as scipy/sklearn/sentence-transformers compute them:
//! Pearson, Spearman (average ranks for ties), average precision, and the best accuracy/F1
//! thresholds of sentence-transformers' BinaryClassificationEvaluator. Pure functions.

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx.sqrt() * syy.sqrt())
    }
}

/// 1-based ranks, ties get the average of their ranks (scipy's `rankdata(method="average")`).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (Pearson of average ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// Rows sorted by score, highest first.
fn sorted_desc(scores: &[f64], labels: &[bool]) -> Vec<(f64, bool)> {
    let mut rows: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows
}

/// Best accuracy over thresholds between consecutive sorted scores, and that threshold
/// (sentence-transformers' `find_best_acc_and_threshold`, higher score = more similar).
pub fn best_accuracy(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let rows = sorted_desc(scores, labels);
    let n = labels.len() as f64;
    let (mut best, mut threshold) = (0.0, -1.0);
    let mut positives = 0usize;
    let mut remaining_negatives = labels.iter().filter(|l| !**l).count();
    for i in 0..rows.len().saturating_sub(1) {
        if rows[i].1 {
            positives += 1;
        } else {
            remaining_negatives -= 1;
        }
        let acc = (positives + remaining_negatives) as f64 / n;
        if acc > best {
            best = acc;
            threshold = (rows[i].0 + rows[i + 1].0) / 2.0;
        }
    }
    (best, threshold)
}

/// Best F1 with its precision, recall and threshold (`find_best_f1_and_threshold`).
pub fn best_f1(scores: &[f64], labels: &[bool]) -> (f64, f64, f64, f64) {
    let rows = sorted_desc(scores, labels);
    let total_pos = labels.iter().filter(|l| **l).count() as f64;
    let (mut f1b, mut pb, mut rb, mut th) = (0.0, 0.0, 0.0, 0.0);
    let (mut extracted, mut correct) = (0usize, 0usize);
    for i in 0..rows.len().saturating_sub(1) {
        extracted += 1;
        if rows[i].1 {
            correct += 1;
        }
        if correct > 0 {
            let p = correct as f64 / extracted as f64;
            let r = correct as f64 / total_pos;
            let f1 = 2.0 * p * r / (p + r);
            if f1 > f1b {
                (f1b, pb, rb) = (f1, p, r);
                th = (rows[i].0 + rows[i + 1].0) / 2.0;
            }
        }
    }
    (f1b, pb, rb, th)
}

/// Average precision as sklearn's `average_precision_score`: Σ (Rₙ − Rₙ₋₁)·Pₙ over distinct
/// score thresholds, highest first.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let rows = sorted_desc(scores, labels);
    let total_pos = labels.iter().filter(|l| **l).count() as f64;
    if total_pos == 0.0 {
        return 0.0;
    }
    let (mut tp, mut fp, mut prev_recall, mut ap) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < rows.len() {
        let s = rows[i].0;
        while i < rows.len() && rows[i].0 == s {
            if rows[i].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let recall = tp / total_pos;
        let precision = tp / (tp + fp);
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_uses_average_ranks() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1,2,3,4,5],[5,6,7,8,7]) = 0.8207826816681233
        assert!(
            (spearman(&[1., 2., 3., 4., 5.], &[5., 6., 7., 8., 7.]) - 0.8207826816681233).abs()
                < 1e-12
        );
    }

    #[test]
    fn pearson_known_value() {
        // numpy.corrcoef([1,2,3,4],[2,4,5,4])[0,1] = 3.5 / sqrt(5 * 4.75) = 0.7181848464596079
        assert!((pearson(&[1., 2., 3., 4.], &[2., 4., 5., 4.]) - 0.7181848464596079).abs() < 1e-12);
    }

    #[test]
    fn average_precision_matches_sklearn() {
        // sklearn.metrics.average_precision_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.8333333333333333
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert!((ap - 0.8333333333333333).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn thresholds_separate_a_separable_set() {
        let s = [0.9, 0.8, 0.3, 0.2];
        let l = [true, true, false, false];
        let (acc, th) = best_accuracy(&s, &l);
        assert_eq!(acc, 1.0);
        assert!((th - 0.55).abs() < 1e-12);
        let (f1, p, r, th) = best_f1(&s, &l);
        assert_eq!((f1, p, r), (1.0, 1.0, 1.0));
        assert!((th - 0.55).abs() < 1e-12);
    }
}
