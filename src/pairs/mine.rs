//! Negatives for (anchor, positive) pairs: random, or hard negatives mined with a model —
//! sentence-transformers' `mine_hard_negatives` semantics: the corpus is the deduplicated
//! `--corpus` texts then positives; candidates are the top-k by cosine; a candidate is dropped
//! when it is one of the anchor's positives (or the anchor itself), when
//! `score + margin > pos`, when `score > pos − |pos|·relative_margin` (pos = the lowest score among
//! the anchor's positives), above `--max-score` or below `--min-score`; then the first
//! `range_max` survivors are kept, the first `range_min` of them skipped, and the next
//! `num_negatives` taken. The `--corpus` file is read as a stream, a chunk at a time: each
//! chunk's new texts are embedded, scored against every anchor into per-anchor top-k heaps (`topk.rs`) and
//! dropped, so memory holds the anchors, the heaps and a 16-byte hash per corpus text (for
//! deduplication, ≈ 50–60 bytes with its index), never the corpus's embeddings or texts; a
//! second pass fetches the texts of the negatives chosen. Random negatives use the same corpus
//! index.

use super::output::{NegativeFormat, Rows};
use super::topk::TopK;
use super::{PairsConfig, PairsReport};
use crate::data::Table;
use crate::encode::encode;
use crate::model::SentenceEncoder;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Anchors with their positives (duplicate anchors merged).
struct Grouped {
    rows: Vec<(String, String)>,
    anchors: Vec<String>,
    /// anchor index → its positives (indices into `positive_texts`)
    positives: Vec<Vec<usize>>,
    /// The distinct positive texts.
    positive_texts: Vec<String>,
}

fn group(t: &Table, c: &[usize]) -> Result<Grouped> {
    let mut rows = Vec::new();
    for r in &t.rows {
        rows.push((t.text(r, c[0])?.into_owned(), t.text(r, c[1])?.into_owned()));
    }
    let mut positive_texts = Vec::new();
    let mut pindex: HashMap<&str, usize> = HashMap::new();
    let mut anchors = Vec::new();
    let mut aindex: HashMap<&str, usize> = HashMap::new();
    let mut positives: Vec<Vec<usize>> = Vec::new();
    for (a, p) in &rows {
        let i = *aindex.entry(a.as_str()).or_insert_with(|| {
            anchors.push(a.clone());
            positives.push(Vec::new());
            anchors.len() - 1
        });
        let pi = *pindex.entry(p.as_str()).or_insert_with(|| {
            positive_texts.push(p.clone());
            positive_texts.len() - 1
        });
        if !positives[i].contains(&pi) {
            positives[i].push(pi);
        }
    }
    Ok(Grouped {
        rows,
        anchors,
        positives,
        positive_texts,
    })
}

/// A text's identity for deduplication (the first 16 bytes of its sha256).
fn text_hash(s: &str) -> u128 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    u128::from_le_bytes(d[..16].try_into().unwrap_or([0; 16]))
}

/// The candidate corpus — the `--corpus` texts deduplicated, then the positives not among them
/// (sentence-transformers' order) — as hashes; texts are fetched again when needed.
struct Corpus {
    path: Option<std::path::PathBuf>,
    hashes: Vec<u128>,
    /// Corpus indices below this come from the `--corpus` file.
    from_file: usize,
    /// positive text index → corpus index.
    positive_index: Vec<usize>,
    /// Corpus index → positive text index, for the indices past `from_file`.
    tail: Vec<usize>,
}

impl Corpus {
    /// Streams the `--corpus` file (if any), then the positives; `each(texts, first_index)` gets
    /// every run of texts new to the corpus (to embed and score them).
    fn build(
        path: Option<&Path>,
        g: &Grouped,
        mut each: impl FnMut(&[String], usize) -> Result<()>,
    ) -> Result<Corpus> {
        let mut index: HashMap<u128, usize> = HashMap::new();
        let mut hashes = Vec::new();
        if let Some(p) = path {
            let mut stream = crate::data::CorpusTexts::open(p)?;
            loop {
                let chunk = stream.next_chunk(crate::data::texts::corpus_chunk())?;
                if chunk.is_empty() {
                    break;
                }
                let first = hashes.len();
                let mut new = Vec::new();
                for t in chunk {
                    let h = text_hash(&t);
                    if let std::collections::hash_map::Entry::Vacant(e) = index.entry(h) {
                        e.insert(hashes.len());
                        hashes.push(h);
                        new.push(t);
                    }
                }
                if !new.is_empty() {
                    each(&new, first)?;
                }
            }
        }
        let from_file = hashes.len();
        let (mut positive_index, mut tail, mut new) = (Vec::new(), Vec::new(), Vec::new());
        for (pi, t) in g.positive_texts.iter().enumerate() {
            let h = text_hash(t);
            let j = *index.entry(h).or_insert_with(|| {
                hashes.push(h);
                tail.push(pi);
                new.push(t.clone());
                hashes.len() - 1
            });
            positive_index.push(j);
        }
        if !new.is_empty() {
            each(&new, from_file)?;
        }
        Ok(Corpus {
            path: path.map(Path::to_path_buf),
            hashes,
            from_file,
            positive_index,
            tail,
        })
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The texts of corpus indices `wanted` (a second pass over the `--corpus` file for those
    /// that come from it).
    fn texts(&self, g: &Grouped, wanted: &HashSet<usize>) -> Result<HashMap<usize, String>> {
        let mut out = HashMap::new();
        for &j in wanted {
            if j >= self.from_file {
                out.insert(j, g.positive_texts[self.tail[j - self.from_file]].clone());
            }
        }
        if let (Some(p), true) = (&self.path, wanted.iter().any(|&j| j < self.from_file)) {
            let mut seen: HashSet<u128> = HashSet::new();
            let mut stream = crate::data::CorpusTexts::open(p)?;
            loop {
                let chunk = stream.next_chunk(crate::data::texts::corpus_chunk())?;
                if chunk.is_empty() {
                    break;
                }
                for t in chunk {
                    let h = text_hash(&t);
                    if seen.insert(h) {
                        let j = seen.len() - 1;
                        if wanted.contains(&j) {
                            out.insert(j, t);
                        }
                    }
                }
                if out.len() == wanted.len() {
                    break; // every wanted text found: the rest of the file is not needed
                }
            }
        }
        Ok(out)
    }
}

/// `--from pairs`: adds negatives, random or mined.
pub fn add_negatives(
    t: &Table,
    c: &[usize],
    cfg: &PairsConfig,
    report: &mut PairsReport,
) -> Result<Rows> {
    let n = cfg.negatives.num_negatives;
    if n == 0 {
        bail!("--num-negatives must be at least 1");
    }
    let g = group(t, c)?;
    let path = cfg.negatives.corpus.as_deref();
    let (corpus, negatives) = if cfg.negatives.mined {
        let spec = cfg
            .model
            .as_ref()
            .context("hard-negative mining needs --model")?;
        let model = SentenceEncoder::load_for_inference(spec)?;
        mine(&model, &g, path, cfg)?
    } else {
        let corpus = Corpus::build(path, &g, |_, _| Ok(()))?;
        let negs = random(&g, &corpus, n, cfg.seed);
        (corpus, negs)
    };
    let wanted: HashSet<usize> = negatives.iter().flatten().copied().collect();
    let texts = corpus.texts(&g, &wanted)?;
    if texts.len() != wanted.len() {
        bail!(
            "{}: the corpus changed while it was being read (fewer texts on the second pass)",
            path.map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(layout(
        &g,
        &negatives,
        &texts,
        n,
        cfg.negatives.format,
        report,
    ))
}

fn random(g: &Grouped, corpus: &Corpus, n: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::with_stream(seed, 9);
    g.anchors
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let excluded: HashSet<usize> = g.positives[i]
                .iter()
                .map(|&p| corpus.positive_index[p])
                .collect();
            let ah = text_hash(a);
            let mut pool: Vec<usize> = (0..corpus.len())
                .filter(|j| !excluded.contains(j) && corpus.hashes[*j] != ah)
                .collect();
            rng.shuffle(&mut pool);
            pool.truncate(n);
            pool
        })
        .collect()
}

fn mine(
    model: &SentenceEncoder,
    g: &Grouped,
    path: Option<&Path>,
    cfg: &PairsConfig,
) -> Result<(Corpus, Vec<Vec<usize>>)> {
    let o = &cfg.negatives;
    let mut enc = cfg.encode.clone();
    enc.normalize = true;
    let max_pos = g.positives.iter().map(|p| p.len()).max().unwrap_or(1);
    let filtered = o.margin.is_some() || o.relative_margin.is_some() || o.max_score.is_some();
    let range_max = o
        .range_max
        .unwrap_or(o.range_min + if filtered { 10 } else { 1 } * o.num_negatives + max_pos);
    if o.range_min >= range_max || o.num_negatives > range_max - o.range_min {
        bail!(
            "--range-min {} / --range-max {range_max} leave no room for {} negatives",
            o.range_min,
            o.num_negatives
        );
    }
    let a_refs: Vec<&str> = g.anchors.iter().map(|s| s.as_str()).collect();
    let p_refs: Vec<&str> = g.positive_texts.iter().map(|s| s.as_str()).collect();
    let ae = encode(model, &a_refs, &enc)?;
    let pe = encode(model, &p_refs, &enc)?;
    let mut heaps = TopK::new(g.anchors.len(), range_max + max_pos + 1);
    let corpus = Corpus::build(path, g, |texts, first| {
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let ce = encode(model, &refs, &enc)?;
        for start in (0..ce.len()).step_by(4096) {
            let end = (start + 4096).min(ce.len());
            heaps.add(
                model.device(),
                &ae,
                &ce.data[start * ce.dim..end * ce.dim],
                first + start,
            )?;
        }
        Ok(())
    })?;
    let cands = heaps.finish();
    let dot = |i: usize, p: usize| -> f64 {
        ae.row(i)
            .iter()
            .zip(pe.row(p))
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum()
    };
    let mut out = Vec::with_capacity(g.anchors.len());
    for (i, list) in cands.into_iter().enumerate() {
        let pos = g.positives[i]
            .iter()
            .map(|&p| dot(i, p))
            .fold(f64::INFINITY, f64::min);
        let own: Vec<usize> = g.positives[i]
            .iter()
            .map(|&p| corpus.positive_index[p])
            .collect();
        let ah = text_hash(&g.anchors[i]);
        let survivors: Vec<usize> = list
            .into_iter()
            .filter(|&(s, j)| {
                let s = s as f64;
                !own.contains(&j)
                    && corpus.hashes[j] != ah
                    && o.margin.is_none_or(|m| s + m <= pos)
                    && o.relative_margin.is_none_or(|m| s <= pos - pos.abs() * m)
                    && o.max_score.is_none_or(|m| s <= m)
                    && o.min_score.is_none_or(|m| s >= m)
            })
            .map(|(_, j)| j)
            .take(range_max)
            .skip(o.range_min)
            .take(o.num_negatives)
            .collect();
        out.push(survivors);
    }
    Ok((corpus, out))
}

/// Lays the negatives out as rows (one per original (anchor, positive) row).
fn layout(
    g: &Grouped,
    negs: &[Vec<usize>],
    texts: &HashMap<usize, String>,
    n: usize,
    format: NegativeFormat,
    report: &mut PairsReport,
) -> Rows {
    let aindex: HashMap<&str, usize> = g
        .anchors
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();
    let mut rows = match format {
        NegativeFormat::Triplet => Rows::new(&["anchor", "positive", "negative"]),
        NegativeFormat::LabeledPair => Rows::new(&["sentence1", "sentence2", "label"]),
        NegativeFormat::NTuple => {
            let mut cols = vec!["anchor".to_string(), "positive".to_string()];
            cols.extend((1..=n).map(|k| format!("negative_{k}")));
            Rows {
                columns: cols,
                rows: Vec::new(),
            }
        }
    };
    for (a, p) in &g.rows {
        let ns = &negs[aindex[a.as_str()]];
        if ns.is_empty() {
            *report
                .skipped
                .entry("no negative found".into())
                .or_default() += 1;
            continue;
        }
        match format {
            NegativeFormat::Triplet => {
                for &j in ns {
                    rows.push(vec![json!(a), json!(p), json!(texts[&j])]);
                }
            }
            NegativeFormat::LabeledPair => {
                rows.push(vec![json!(a), json!(p), json!(1)]);
                for &j in ns {
                    rows.push(vec![json!(a), json!(texts[&j]), json!(0)]);
                }
            }
            NegativeFormat::NTuple => {
                if ns.len() < n {
                    *report
                        .skipped
                        .entry("fewer negatives than --num-negatives".into())
                        .or_default() += 1;
                    continue;
                }
                let mut r = vec![json!(a), json!(p)];
                r.extend(ns.iter().map(|&j| json!(texts[&j])));
                rows.push(r);
            }
        }
    }
    rows
}
