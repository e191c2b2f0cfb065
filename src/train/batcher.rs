//! Which rows go in which batch: seeded shuffle per epoch (a pure function of seed and epoch, so
//! resume needs only the step), and sentence-transformers' no-duplicates sampler (no text twice in
//! a batch — a duplicate would be a false in-batch negative). Last partial batch kept.

use crate::rng::Rng;
use std::collections::HashSet;

/// Batches of row indices for one epoch.
pub fn epoch_batches(
    texts: &[Vec<String>],
    batch_size: usize,
    seed: u64,
    epoch: usize,
    shuffle: bool,
    no_duplicates: bool,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    if shuffle {
        Rng::with_stream(seed, 1_000 + epoch as u64).shuffle(&mut order);
    }
    if !no_duplicates {
        return order
            .chunks(batch_size.max(1))
            .map(|c| c.to_vec())
            .collect();
    }
    let mut remaining = order;
    let mut batches = Vec::new();
    while !remaining.is_empty() {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut batch = Vec::new();
        let mut rest = Vec::with_capacity(remaining.len());
        for &i in &remaining {
            let clash = texts[i].iter().any(|t| seen.contains(t.as_str()));
            if batch.len() < batch_size && !clash {
                seen.extend(texts[i].iter().map(|t| t.as_str()));
                batch.push(i);
            } else {
                rest.push(i);
            }
        }
        batches.push(batch);
        remaining = rest;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[(&str, &str)]) -> Vec<Vec<String>> {
        v.iter()
            .map(|(a, b)| vec![a.to_string(), b.to_string()])
            .collect()
    }

    #[test]
    fn shuffle_is_seeded_and_covers_every_row_once() {
        let t = rows(&[("a", "b"), ("c", "d"), ("e", "f"), ("g", "h"), ("i", "j")]);
        let a = epoch_batches(&t, 2, 42, 0, true, false);
        assert_eq!(a, epoch_batches(&t, 2, 42, 0, true, false));
        assert_ne!(a, epoch_batches(&t, 2, 42, 1, true, false));
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        assert_eq!(a.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert_eq!(epoch_batches(&t, 2, 42, 0, false, false)[0], vec![0, 1]);
    }

    #[test]
    fn no_duplicate_text_within_a_batch() {
        let t = rows(&[("a", "x"), ("a", "y"), ("b", "x"), ("c", "z"), ("d", "w")]);
        let batches = epoch_batches(&t, 3, 1, 0, true, true);
        for b in &batches {
            let mut seen = HashSet::new();
            for &i in b {
                for s in &t[i] {
                    assert!(seen.insert(s.clone()), "{s} twice in {b:?}");
                }
            }
        }
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }
}
