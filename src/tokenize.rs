//! Text → token ids (the model's `tokenizer.json`, truncated to `max_seq_length`, lower-cased
//! first when `do_lower_case`), and padded or packed [`TokenBatch`] tensors. Depends on
//! tokenizers, candle and `ops::Packed` (the packed layout).

use crate::ops::Packed;
use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use std::path::Path;
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// One batch of token ids: padded (every tensor `[B, S]` u32, right-padded) or packed (every
/// tensor `[1, T]`: the sequences back to back, no padding, `packed` says where each sits);
/// `lengths[i]` real tokens of sequence i.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// `input_ids` on the host, row-major `[B·S]` (position ids are made from them).
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
    /// Every token type id is 0 (single-sentence inputs): the encoder may add token-type row 0
    /// by broadcasting instead of a gather.
    pub single_segment: bool,
    /// Leading tokens of every row that are a prompt's (set by `encode`): pooling leaves them
    /// out when the model's Pooling has `include_prompt: false`.
    pub prompt_len: usize,
    /// The layout of a packed batch (none: padded).
    pub packed: Option<Arc<Packed>>,
}

impl TokenBatch {
    /// `B`, the number of sequences.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// The padded length `S` (of a packed batch: its longest sequence).
    pub fn seq(&self) -> Result<usize> {
        Ok(match &self.packed {
            Some(p) => p.seq(),
            None => self.input_ids.dims2()?.1,
        })
    }

    /// The `[B, S]` attention mask (a packed batch builds it from its lengths).
    pub fn padded_mask(&self) -> Result<Tensor> {
        match &self.packed {
            None => Ok(self.attention_mask.clone()),
            Some(p) => {
                let mask: Vec<u32> = p.padded_rows().iter().map(|r| r.is_some() as u32).collect();
                Tensor::from_vec(mask, (p.batch(), p.seq()), self.input_ids.device())
                    .context("building attention_mask")
            }
        }
    }
}

/// Bytes of text kept per token of max_seq_length before tokenizing (see `tokenize`).
pub const MAX_CHARS_PER_TOKEN: usize = 100;

/// One tokenized text: ids with special tokens, and whether truncation cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// Texts tokenized in one parallel call (bounds the tokenizer's transient memory).
const TOKENIZE_SLICE: usize = 4096;

/// The model's tokenizer with sentence-transformers' Transformer-module settings applied.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_seq_length: usize,
    lowercase: bool,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; `max_seq_length` caps every text (special tokens included).
    pub fn from_file(
        path: &Path,
        max_seq_length: usize,
        lowercase: bool,
        fallback_pad_id: u32,
    ) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: not a valid tokenizer.json: {e}", path.display()))?;
        Self::new(inner, max_seq_length, lowercase, fallback_pad_id)
    }

    /// A BERT WordPiece tokenizer from a `vocab.txt` (one token per line, id = line number), as
    /// transformers' BertTokenizerFast builds it: BERT normalizer (clean text, Chinese
    /// characters spaced, accents stripped when lower-casing), BERT pre-tokenizer, `[CLS] … [SEP]`.
    pub fn from_vocab_txt(
        vocab: &Path,
        max_seq_length: usize,
        lowercase: bool,
        fallback_pad_id: u32,
    ) -> Result<Self> {
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::bert::BertProcessing;
        let path = vocab.to_string_lossy().into_owned();
        let map = WordPiece::read_file(&path)
            .map_err(|e| anyhow!("{}: not a readable vocab.txt: {e}", vocab.display()))?;
        let id = |t: &str| {
            map.get(t)
                .copied()
                .with_context(|| format!("{}: no {t} token", vocab.display()))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[UNK]")?;
        let wp = WordPiece::builder()
            .vocab(map)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| anyhow!("{}: {e}", vocab.display()))?;
        let mut tok = Tokenizer::new(wp);
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .map_err(|e| anyhow!("{}: {e}", vocab.display()))?;
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        tok.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        // Lower-casing is the normalizer's job here.
        Self::new(tok, max_seq_length, false, fallback_pad_id)
    }

    /// The tokenizer as a `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| anyhow!("serializing the tokenizer: {e}"))
    }

    pub fn new(
        mut inner: Tokenizer,
        max_seq_length: usize,
        lowercase: bool,
        fallback_pad_id: u32,
    ) -> Result<Self> {
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(fallback_pad_id);
        // We pad ourselves (per batch, after sorting by length).
        inner.with_padding(None);
        let mut t = Self {
            inner,
            max_seq_length,
            lowercase,
            pad_id,
        };
        t.set_max_seq_length(max_seq_length)?;
        Ok(t)
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn set_max_seq_length(&mut self, n: usize) -> Result<()> {
        self.max_seq_length = n;
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length: n,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("setting truncation to {n} tokens: {e}"))?;
        Ok(())
    }

    /// Tokenizes texts (in parallel), without padding. Like sentence-transformers, surrounding
    /// whitespace is stripped first. A text longer than [`MAX_CHARS_PER_TOKEN`] × max_seq_length
    /// bytes is cut there first (and counted as truncated): the tokenizer's work stays bounded on
    /// a huge line, and nothing that fits in max_seq_length tokens is lost (a WordPiece token
    /// covers at most 100 characters).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokenized>> {
        let cap = self
            .max_seq_length
            .saturating_mul(MAX_CHARS_PER_TOKEN)
            .max(1);
        let cut: Vec<(&str, bool)> = texts
            .iter()
            .map(|t| {
                let t = t.trim();
                if t.len() <= cap {
                    return (t, false);
                }
                let mut end = cap;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                (&t[..end], true)
            })
            .collect();
        let owned: Vec<String>;
        let inputs: Vec<&str> = if self.lowercase {
            owned = cut.iter().map(|(t, _)| t.to_lowercase()).collect();
            owned.iter().map(|s| s.as_str()).collect()
        } else {
            cut.iter().map(|(t, _)| *t).collect()
        };
        // A slice at a time: the tokenizer's full encodings (tokens, offsets, masks) of only
        // TOKENIZE_SLICE texts exist at once, whatever the number of texts.
        let mut out = Vec::with_capacity(inputs.len());
        for (slice, cuts) in inputs
            .chunks(TOKENIZE_SLICE)
            .zip(cut.chunks(TOKENIZE_SLICE))
        {
            let enc = self
                .inner
                .encode_batch_fast(slice.to_vec(), true)
                .map_err(|e| anyhow!("tokenizing: {e}"))?;
            out.extend(
                enc.into_iter()
                    .zip(cuts)
                    .map(|(e, (_, pre_cut))| Tokenized {
                        truncated: *pre_cut || !e.get_overflowing().is_empty(),
                        ids: e.get_ids().to_vec(),
                    }),
            );
        }
        Ok(out)
    }

    /// Right-pads token id lists into a [`TokenBatch`] on `device`.
    pub fn pad(&self, items: &[&[u32]], device: &Device) -> Result<TokenBatch> {
        pad_batch(items, self.pad_id, device)
    }

    /// Packs token id lists back to back into a [`TokenBatch`] on `device` ([`pack_batch`]).
    pub fn pack(&self, items: &[&[u32]], device: &Device) -> Result<TokenBatch> {
        pack_batch(items, device)
    }

    /// Tokenize + pad in one call.
    pub fn encode(&self, texts: &[&str], device: &Device) -> Result<TokenBatch> {
        let toks = self.tokenize(texts)?;
        let refs: Vec<&[u32]> = toks.iter().map(|t| t.ids.as_slice()).collect();
        self.pad(&refs, device)
    }
}

/// Right-pads id lists with `pad_id`; token types are all 0 (single-sentence inputs).
pub fn pad_batch(items: &[&[u32]], pad_id: u32, device: &Device) -> Result<TokenBatch> {
    let b = items.len();
    let s = items.iter().map(|i| i.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad_id; b * s];
    let mut mask = vec![0u32; b * s];
    for (r, item) in items.iter().enumerate() {
        ids[r * s..r * s + item.len()].copy_from_slice(item);
        mask[r * s..r * s + item.len()]
            .iter_mut()
            .for_each(|m| *m = 1);
    }
    let lengths = items.iter().map(|i| i.len()).collect();
    single_segment(ids, (b, s), Some(mask), lengths, None, device)
}

/// Packs id lists back to back into one `[1, T]` [`TokenBatch`] on `device` (no padding);
/// token types are all 0 (single-sentence inputs).
pub fn pack_batch(items: &[&[u32]], device: &Device) -> Result<TokenBatch> {
    let lengths: Vec<usize> = items.iter().map(|i| i.len()).collect();
    let packed = Arc::new(Packed::new(&lengths));
    let ids: Vec<u32> = items.iter().flat_map(|i| i.iter().copied()).collect();
    let t = ids.len();
    single_segment(ids, (1, t), None, lengths, Some(packed), device)
}

/// A batch of single-sentence inputs (token types 0) from host ids of `shape`; `mask` none:
/// every position is a token.
fn single_segment(
    ids: Vec<u32>,
    shape: (usize, usize),
    mask: Option<Vec<u32>>,
    lengths: Vec<usize>,
    packed: Option<Arc<Packed>>,
    device: &Device,
) -> Result<TokenBatch> {
    let input_ids = Tensor::from_vec(ids.clone(), shape, device).context("building input_ids")?;
    let attention_mask = match mask {
        Some(m) => Tensor::from_vec(m, shape, device).context("building attention_mask")?,
        None => input_ids.ones_like()?,
    };
    let token_type_ids = input_ids.zeros_like()?;
    Ok(TokenBatch {
        input_ids,
        attention_mask,
        token_type_ids,
        ids,
        lengths,
        single_segment: true,
        prompt_len: 0,
        packed,
    })
}
