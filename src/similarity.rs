//! Pairwise similarity and distance of embedding rows (plain f32 slices, f64 accumulation):
//! cosine, dot, euclidean, manhattan. Depends on nothing in the crate.

/// Closed set of scoring functions, as sentence-transformers' `SimilarityFunction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimilarityFn {
    Cosine,
    Dot,
    Euclidean,
    Manhattan,
}

impl SimilarityFn {
    pub const ALL: [SimilarityFn; 4] = [
        SimilarityFn::Cosine,
        SimilarityFn::Euclidean,
        SimilarityFn::Manhattan,
        SimilarityFn::Dot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SimilarityFn::Cosine => "cosine",
            SimilarityFn::Dot => "dot",
            SimilarityFn::Euclidean => "euclidean",
            SimilarityFn::Manhattan => "manhattan",
        }
    }

    /// A score where larger means more similar: distances are negated, as sentence-transformers does.
    pub fn score(self, a: &[f32], b: &[f32]) -> f64 {
        match self {
            SimilarityFn::Cosine => cosine(a, b),
            SimilarityFn::Dot => dot(a, b),
            SimilarityFn::Euclidean => -euclidean(a, b),
            SimilarityFn::Manhattan => -manhattan(a, b),
        }
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

pub fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d = norm(a) * norm(b);
    if d == 0.0 {
        0.0
    } else {
        dot(a, b) / d
    }
}

pub fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

pub fn manhattan(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum()
}

/// L2-normalises a vector in place (zero stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 2.0];
        assert_eq!(cosine(&a, &b), 0.0);
        assert!((cosine(&a, &[3.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((euclidean(&a, &b) - 5f64.sqrt()).abs() < 1e-12);
        assert_eq!(manhattan(&a, &b), 3.0);
        assert_eq!(SimilarityFn::Euclidean.score(&a, &b), -(5f64.sqrt()));
    }
}
