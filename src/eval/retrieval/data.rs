//! Retrieval data: queries, a corpus and relevance judgments (qrels), from a BEIR-layout folder
//! (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) or three files. As
//! sentence-transformers' BEIR examples: a document's text is `(title + " " + text).strip()`, a
//! qrels score > 0 is relevant, queries without a relevant document are skipped; qrels naming
//! unknown queries or documents are counted and reported, not fatal. CRLF ends, a BOM and a
//! qrels file without its header row are read as they come. Depends on `data::read_table`.

use crate::data::{read_table, DataFormat, ReadOptions};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where the retrieval data is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum RetrievalSource {
    /// A BEIR folder and its qrels split.
    Beir { dir: PathBuf, split: String },
    /// Separate files.
    Files {
        queries: PathBuf,
        corpus: PathBuf,
        qrels: PathBuf,
    },
}

/// Queries, corpus and judgments, checked.
#[derive(Debug, Clone)]
pub struct RetrievalData {
    /// (id, text) of the judged queries, in file order.
    pub queries: Vec<(String, String)>,
    /// (id, text) of every document, sorted by id (so an index order is the id order, the tie
    /// order of sentence-transformers' ranking).
    pub corpus: Vec<(String, String)>,
    /// query id → document id → graded score (> 0: relevant).
    pub qrels: HashMap<String, HashMap<String, f64>>,
    /// What was skipped, for the user.
    pub notes: Vec<String>,
}

fn text_field(
    t: &crate::data::Table,
    row: &crate::data::Row,
    col: Option<usize>,
) -> Result<String> {
    match col {
        None => Ok(String::new()),
        Some(c) => match &row.cells[c] {
            serde_json::Value::Null => Ok(String::new()),
            _ => Ok(t.text(row, c)?.into_owned()),
        },
    }
}

/// `(id, text)` rows of a JSONL file with `_id` and `text` (and, for a corpus, `title`).
fn read_items(path: &Path, with_title: bool) -> Result<Vec<(String, String)>> {
    let t = read_table(path, Some(DataFormat::Jsonl), &ReadOptions::default())?;
    let id = t.column("_id")?;
    let text = t.columns.iter().position(|c| c == "text");
    let title = with_title
        .then(|| t.columns.iter().position(|c| c == "title"))
        .flatten();
    if text.is_none() && title.is_none() {
        bail!("{}: no \"text\" field", path.display());
    }
    let mut out = Vec::with_capacity(t.len());
    for r in &t.rows {
        let i = t.text(r, id)?.into_owned();
        let body = text_field(&t, r, text)?;
        let s = match title {
            Some(_) => format!("{} {body}", text_field(&t, r, title)?),
            None => body,
        };
        out.push((i, s.trim().to_string()));
    }
    Ok(out)
}

/// `query-id<TAB>corpus-id<TAB>score` lines; the header row is optional (a first row whose score
/// is not a number is the header).
fn read_qrels(path: &Path) -> Result<Vec<(String, String, f64, usize)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text =
        String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 {
            bail!(
                "{}:{}: expected query-id, corpus-id and score separated by tabs, got {line:?}",
                path.display(),
                i + 1
            );
        }
        // TREC style has 4 fields (query, 0, doc, score).
        let (q, d, s) = if f.len() >= 4 {
            (f[0], f[2], f[3])
        } else {
            (f[0], f[1], f[2])
        };
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => {
                out.push((q.trim().to_string(), d.trim().to_string(), v, i + 1))
            }
            _ if i == 0 => continue, // the header
            _ => bail!(
                "{}:{}: field score: expected a number, got {s:?}",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

impl RetrievalSource {
    fn paths(&self) -> (PathBuf, PathBuf, PathBuf) {
        match self {
            RetrievalSource::Beir { dir, split } => (
                dir.join("queries.jsonl"),
                dir.join("corpus.jsonl"),
                dir.join("qrels").join(format!("{split}.tsv")),
            ),
            RetrievalSource::Files {
                queries,
                corpus,
                qrels,
            } => (queries.clone(), corpus.clone(), qrels.clone()),
        }
    }

    /// The files the data is read from (for cache keys and messages).
    pub fn files(&self) -> [PathBuf; 3] {
        let (q, c, r) = self.paths();
        [q, c, r]
    }

    /// Reads and checks the data.
    pub fn load(&self) -> Result<RetrievalData> {
        let (qp, cp, rp) = self.paths();
        if let RetrievalSource::Beir { dir, split } = self {
            if !rp.is_file() {
                let have: Vec<String> = std::fs::read_dir(dir.join("qrels"))
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| {
                                e.file_name()
                                    .to_str()?
                                    .strip_suffix(".tsv")
                                    .map(String::from)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                bail!(
                    "{}: no qrels for split {split:?} (qrels/{split}.tsv){}",
                    dir.display(),
                    if have.is_empty() {
                        String::new()
                    } else {
                        format!("; splits here: {}", have.join(", "))
                    }
                );
            }
        }
        let queries = read_items(&qp, false)?;
        let mut corpus = read_items(&cp, true)?;
        if corpus.is_empty() {
            bail!("{}: the corpus is empty", cp.display());
        }
        corpus.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = corpus.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("{}: document id {:?} appears twice", cp.display(), w[0].0);
        }
        let doc_ids: HashSet<&str> = corpus.iter().map(|(i, _)| i.as_str()).collect();
        let query_ids: HashSet<&str> = queries.iter().map(|(i, _)| i.as_str()).collect();
        let (mut unknown_q, mut unknown_d) = (BTreeMap::<String, usize>::new(), 0usize);
        let mut qrels: HashMap<String, HashMap<String, f64>> = HashMap::new();
        for (q, d, s, _) in read_qrels(&rp)? {
            if !query_ids.contains(q.as_str()) {
                *unknown_q.entry(q).or_default() += 1;
                continue;
            }
            if !doc_ids.contains(d.as_str()) {
                unknown_d += 1;
                continue;
            }
            qrels.entry(q).or_default().insert(d, s);
        }
        let mut notes = Vec::new();
        if !unknown_q.is_empty() {
            notes.push(format!(
                "{}: {} judgments name {} query ids not in {} (skipped)",
                rp.display(),
                unknown_q.values().sum::<usize>(),
                unknown_q.len(),
                qp.display()
            ));
        }
        if unknown_d > 0 {
            notes.push(format!(
                "{}: {unknown_d} judgments name documents not in {} (skipped)",
                rp.display(),
                cp.display()
            ));
        }
        let judged = |id: &str| qrels.get(id).is_some_and(|m| m.values().any(|&s| s > 0.0));
        let before = queries.len();
        let queries: Vec<(String, String)> =
            queries.into_iter().filter(|(i, _)| judged(i)).collect();
        if queries.len() < before {
            notes.push(format!(
                "{} of {before} queries have no relevant document in {} and are skipped, as sentence-transformers does",
                before - queries.len(),
                rp.display()
            ));
        }
        if queries.is_empty() {
            bail!(
                "{}: no query has a relevant document (score > 0)",
                rp.display()
            );
        }
        Ok(RetrievalData {
            queries,
            corpus,
            qrels,
            notes,
        })
    }
}
