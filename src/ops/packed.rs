//! The layout of a packed batch: the tokens of `B` sequences one after another in one stream of
//! `T` rows (no padding), with sequence offsets `cu_seqlens [B+1]`. Per-token ops do not care;
//! attention runs per sequence over its rows; dropout uses the counters the same sequences
//! would have in one right-padded `[B, S]` batch (`S` = the longest), so a packed and a padded
//! pass of one seed drop the same elements ([`Packed::padded_row`]); rotary positions count from
//! each sequence's start ([`Packed::positions`]). Depends on nothing.

/// Where each sequence of a packed batch sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// `cu_seqlens`: sequence `b` is rows `offsets[b]..offsets[b + 1]`; `offsets[B]` = T.
    offsets: Vec<usize>,
    /// The longest sequence: the `S` of the padded batch whose dropout counters are used.
    seq: usize,
    /// Each row's position in its sequence (`[T]`: 0, 1, … from every sequence's start).
    positions: Vec<u32>,
}

impl Packed {
    /// The layout of sequences of these lengths, in this order.
    pub fn new(lengths: &[usize]) -> Self {
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        offsets.push(0);
        for &l in lengths {
            offsets.push(offsets.last().copied().unwrap_or(0) + l);
        }
        let positions = lengths.iter().flat_map(|&l| 0..l as u32).collect();
        Self {
            offsets,
            seq: lengths.iter().copied().max().unwrap_or(0).max(1),
            positions,
        }
    }

    /// Each row's position in its sequence, `[T]`.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// Number of sequences B.
    pub fn batch(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of rows T (real tokens).
    pub fn tokens(&self) -> usize {
        self.offsets[self.batch()]
    }

    /// `S`: the longest sequence (the padded length of the same batch).
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// The first row of sequence `b`.
    pub fn start(&self, b: usize) -> usize {
        self.offsets[b]
    }

    /// The length of sequence `b`.
    pub fn len(&self, b: usize) -> usize {
        self.offsets[b + 1] - self.offsets[b]
    }

    /// `cu_seqlens` `[B+1]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The row of the padded `[B·S]` layout that sequence `b`'s token `i` has: `b·S + i`.
    pub fn padded_row(&self, b: usize, i: usize) -> usize {
        b * self.seq + i
    }

    /// For each packed row (`[T]`), the first dropout counter of its elements when rows are
    /// `width` wide: its padded row (`b·S + i`) times `width` — what the CUDA path's kernels
    /// and their CPU mirrors add a column to.
    pub fn counter_bases(&self, width: usize) -> Vec<u64> {
        (0..self.batch())
            .flat_map(|b| (0..self.len(b)).map(move |i| (self.padded_row(b, i) * width) as u64))
            .collect()
    }

    /// For each padded row (`[B·S]`), the packed row it holds, or `None` for padding.
    pub fn padded_rows(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.batch() * self.seq];
        for b in 0..self.batch() {
            for i in 0..self.len(b) {
                out[self.padded_row(b, i)] = Some(self.start(b) + i);
            }
        }
        out
    }

    /// Splits a buffer of `T` rows of `width` values into one mutable slice per sequence.
    pub fn split_rows_mut<'a, T>(&self, buf: &'a mut [T], width: usize) -> Vec<&'a mut [T]> {
        let mut out = Vec::with_capacity(self.batch());
        let mut rest = buf;
        for b in 0..self.batch() {
            let (head, tail) = rest.split_at_mut(self.len(b) * width);
            out.push(head);
            rest = tail;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_padded_rows_and_splits_follow_the_lengths() {
        let p = Packed::new(&[3, 1, 2]);
        assert_eq!(p.offsets(), &[0, 3, 4, 6]);
        assert_eq!((p.batch(), p.tokens(), p.seq()), (3, 6, 3));
        assert_eq!((p.start(2), p.len(2), p.padded_row(2, 1)), (4, 2, 7));
        assert_eq!(p.positions(), &[0, 1, 2, 0, 0, 1]);
        // Rows of width 2: sequence 1 starts at padded row 3, sequence 2 at row 6.
        assert_eq!(p.counter_bases(2), vec![0, 2, 4, 6, 12, 14]);
        let rows = p.padded_rows();
        assert_eq!(
            rows,
            vec![
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                None,
                None,
                Some(4),
                Some(5),
                None
            ]
        );
        let mut buf: Vec<usize> = (0..12).collect();
        let parts = p.split_rows_mut(&mut buf, 2);
        assert_eq!(parts.iter().map(|s| s.len()).collect::<Vec<_>>(), [6, 2, 4]);
        assert_eq!(parts[1], &[6, 7]);
    }
}
