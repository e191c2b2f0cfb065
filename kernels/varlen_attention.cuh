// Variable-length (packed) self-attention, f32, included by embtune.cu (one PTX module).
//
// A packed batch holds B sequences back to back in T rows; sequence b is rows
// offsets[b] .. offsets[b+1], and seq_of[r] is row r's sequence. qkv is [T, 3H] = [q | k | v]
// with H = heads · hd; each sequence attends over its own rows only:
//   z_ij = q_i · k_j · scale + bias[h, i, j]     (bias [heads, S, S], optional: MPNet)
//   p_ij = softmax_j(z_ij) over the keys j the row sees (all of its sequence, or with a window
//          only |i − j| ≤ w: ModernBERT's local layers)
//   out_i = Σ_j p_ij · f_ij · v_j                 (f: the dropout factor, scale or 0)
// f_ij uses counter ((b·heads + h)·S + i)·S + j of the padded [B, heads, S, S] probabilities
// (S = the longest sequence), so a packed pass drops what a padded one of the same seed drops.
//
// One warp per (row, head), blockIdx.x = row · heads + head; dynamic shared memory holds the
// row's scores (S floats, twice for the key-side backward) and one or two head vectors. The
// backward runs in two kernels without atomics: the query side (dq, the bias's gradient per
// sequence, and each row's softmax statistics and D_i = Σ_j p_ij f_ij dp_ij), then the key
// side (dk, dv), which reads those statistics. The CPU mirror of all three is
// src/ops/cuda/varlen.rs (the same loops, run by tests).

struct EmbtuneVarlen {
  unsigned int heads, hd, s_max;
  float scale;
  unsigned int has_bias, use_window, window, use_drop;
  unsigned long long seed;
  unsigned int threshold;
  float dscale;
};

// Whether query i sees key j.
__device__ __forceinline__ bool embtune_vl_sees(const EmbtuneVarlen& a, unsigned int i,
                                                unsigned int j) {
  if (!a.use_window) return true;
  const unsigned int d = i > j ? i - j : j - i;
  return d <= a.window;
}

// The dropout factor of probability (b, h, i, j).
__device__ __forceinline__ float embtune_vl_factor(const EmbtuneVarlen& a, unsigned int b,
                                                   unsigned int h, unsigned int i,
                                                   unsigned int j) {
  if (!a.use_drop) return 1.0f;
  const unsigned long long c =
      (((unsigned long long)b * a.heads + h) * a.s_max + i) * a.s_max + j;
  return embtune_hash(a.seed, c) > a.threshold ? a.dscale : 0.0f;
}

// Lane-strided dot product of two hd-vectors, summed over the warp (every lane gets it).
__device__ __forceinline__ float embtune_vl_dot(const float* x, const float* y,
                                                unsigned int hd, unsigned int lane) {
  float s = 0.0f;
  for (unsigned int d = lane; d < hd; d += 32) s += x[d] * y[d];
  return embtune_warp_sum(s);
}

// The scaled, biased scores z_ij of query row `ri` (position i of sequence b) into zs[0..len)
// (−inf where the window hides the key), and their max and 1 / Σ exp(z − max).
__device__ __forceinline__ void embtune_vl_scores(const EmbtuneVarlen& a, const float* qkv,
                                                  const float* bias, const float* q_sh,
                                                  unsigned int start, unsigned int len,
                                                  unsigned int i, unsigned int h,
                                                  unsigned int lane, float* zs, float& m,
                                                  float& inv) {
  const unsigned long long w3 = 3ull * a.heads * a.hd;
  const unsigned long long koff = (unsigned long long)a.heads * a.hd + h * a.hd;
  for (unsigned int j = 0; j < len; ++j) {
    float z = -INFINITY;
    if (embtune_vl_sees(a, i, j)) {
      z = embtune_vl_dot(q_sh, qkv + (start + j) * w3 + koff, a.hd, lane) * a.scale;
      if (a.has_bias) z += bias[((unsigned long long)h * a.s_max + i) * a.s_max + j];
    }
    if (lane == 0) zs[j] = z;
  }
  __syncwarp();
  m = -INFINITY;
  for (unsigned int j = lane; j < len; j += 32) m = fmaxf(m, zs[j]);
  m = embtune_warp_max(m);
  float s = 0.0f;
  for (unsigned int j = lane; j < len; j += 32) s += zs[j] == -INFINITY ? 0.0f : expf(zs[j] - m);
  inv = 1.0f / embtune_warp_sum(s);
}

// Forward: out [T, H].
extern "C" __global__ void embtune_varlen_attn_f32(const float* __restrict__ qkv,
                                                   const unsigned int* __restrict__ offsets,
                                                   const unsigned int* __restrict__ seq_of,
                                                   const float* __restrict__ bias,
                                                   float* __restrict__ out, const EmbtuneVarlen a) {
  extern __shared__ float sh[];
  const unsigned int h = blockIdx.x % a.heads, lane = threadIdx.x;
  const unsigned long long r = blockIdx.x / a.heads;
  const unsigned int b = seq_of[r], start = offsets[b], len = offsets[b + 1] - start;
  const unsigned int i = (unsigned int)(r - start);
  const unsigned long long hh = (unsigned long long)a.heads * a.hd, w3 = 3 * hh;
  float* zs = sh;
  float* q_sh = sh + a.s_max;
  for (unsigned int d = lane; d < a.hd; d += 32) q_sh[d] = qkv[r * w3 + h * a.hd + d];
  __syncwarp();
  float m, inv;
  embtune_vl_scores(a, qkv, bias, q_sh, start, len, i, h, lane, zs, m, inv);
  for (unsigned int j = lane; j < len; j += 32)
    zs[j] = zs[j] == -INFINITY ? 0.0f : expf(zs[j] - m) * inv * embtune_vl_factor(a, b, h, i, j);
  __syncwarp();
  for (unsigned int d = lane; d < a.hd; d += 32) {
    float acc = 0.0f;
    for (unsigned int j = 0; j < len; ++j) acc += zs[j] * qkv[(start + j) * w3 + 2 * hh + h * a.hd + d];
    out[r * hh + h * a.hd + d] = acc;
  }
}

// Backward, query side: dq into dqkv's q columns; stats [T, heads, 3] = (max, 1/sum, D_i); with
// a bias, dbias [B, heads, S, S] (right after dqkv's n_qkv floats, zeroed by the caller) gets
// dz_ij of sequence b.
extern "C" __global__ void embtune_varlen_attn_bwd_q_f32(
    const float* __restrict__ qkv, const float* __restrict__ g,
    const unsigned int* __restrict__ offsets, const unsigned int* __restrict__ seq_of,
    const float* __restrict__ bias, float* __restrict__ dqkv, float* __restrict__ stats,
    const unsigned long long n_qkv, const EmbtuneVarlen a) {
  float* dbias = dqkv + n_qkv;  // [B, heads, S, S] after the T·3H of dqkv (with a bias)
  extern __shared__ float sh[];
  const unsigned int h = blockIdx.x % a.heads, lane = threadIdx.x;
  const unsigned long long r = blockIdx.x / a.heads;
  const unsigned int b = seq_of[r], start = offsets[b], len = offsets[b + 1] - start;
  const unsigned int i = (unsigned int)(r - start);
  const unsigned long long hh = (unsigned long long)a.heads * a.hd, w3 = 3 * hh;
  float* zs = sh;
  float* q_sh = sh + a.s_max;
  float* g_sh = q_sh + a.hd;
  for (unsigned int d = lane; d < a.hd; d += 32) {
    q_sh[d] = qkv[r * w3 + h * a.hd + d];
    g_sh[d] = g[r * hh + h * a.hd + d];
  }
  __syncwarp();
  float m, inv;
  embtune_vl_scores(a, qkv, bias, q_sh, start, len, i, h, lane, zs, m, inv);
  // zs[j] ← p_ij; fd[j] ← f_ij · dp_ij with dp_ij = g_i · v_j; D = Σ_j p f dp; then
  // zs[j] ← dz_ij = p_ij (f_ij dp_ij − D).
  float* fd = g_sh + a.hd;
  for (unsigned int j = lane; j < len; j += 32)
    zs[j] = zs[j] == -INFINITY ? 0.0f : expf(zs[j] - m) * inv;
  for (unsigned int j = 0; j < len; ++j) {
    const float dp = embtune_vl_dot(g_sh, qkv + (start + j) * w3 + 2 * hh + h * a.hd, a.hd, lane);
    if (lane == 0) fd[j] = embtune_vl_factor(a, b, h, i, j) * dp;
  }
  __syncwarp();
  float dsum = 0.0f;
  for (unsigned int j = lane; j < len; j += 32) dsum += zs[j] * fd[j];
  const float D = embtune_warp_sum(dsum);
  for (unsigned int j = lane; j < len; j += 32) zs[j] = zs[j] * (fd[j] - D);
  __syncwarp();
  if (lane == 0) {
    stats[(r * a.heads + h) * 3] = m;
    stats[(r * a.heads + h) * 3 + 1] = inv;
    stats[(r * a.heads + h) * 3 + 2] = D;
  }
  if (a.has_bias)
    for (unsigned int j = lane; j < len; j += 32)
      dbias[(((unsigned long long)b * a.heads + h) * a.s_max + i) * a.s_max + j] = zs[j];
  for (unsigned int d = lane; d < a.hd; d += 32) {
    float acc = 0.0f;
    for (unsigned int j = 0; j < len; ++j) acc += zs[j] * qkv[(start + j) * w3 + hh + h * a.hd + d];
    dqkv[r * w3 + h * a.hd + d] = a.scale * acc;
  }
}

// Backward, key side (row r = key j of sequence b): dk and dv into dqkv's k and v columns, from
// each query's statistics.
extern "C" __global__ void embtune_varlen_attn_bwd_kv_f32(
    const float* __restrict__ qkv, const float* __restrict__ g,
    const unsigned int* __restrict__ offsets, const unsigned int* __restrict__ seq_of,
    const float* __restrict__ bias, const float* __restrict__ stats, float* __restrict__ dqkv,
    const EmbtuneVarlen a) {
  extern __shared__ float sh[];
  const unsigned int h = blockIdx.x % a.heads, lane = threadIdx.x;
  const unsigned long long r = blockIdx.x / a.heads;
  const unsigned int b = seq_of[r], start = offsets[b], len = offsets[b + 1] - start;
  const unsigned int j = (unsigned int)(r - start);
  const unsigned long long hh = (unsigned long long)a.heads * a.hd, w3 = 3 * hh;
  float* dz = sh;             // dz_ij over queries i
  float* pf = sh + a.s_max;   // p_ij · f_ij over queries i
  float* k_sh = pf + a.s_max;
  float* v_sh = k_sh + a.hd;
  for (unsigned int d = lane; d < a.hd; d += 32) {
    k_sh[d] = qkv[r * w3 + hh + h * a.hd + d];
    v_sh[d] = qkv[r * w3 + 2 * hh + h * a.hd + d];
  }
  __syncwarp();
  for (unsigned int i = 0; i < len; ++i) {
    float dzi = 0.0f, pfi = 0.0f;
    if (embtune_vl_sees(a, i, j)) {
      const unsigned long long ri = start + i;
      float z = embtune_vl_dot(qkv + ri * w3 + h * a.hd, k_sh, a.hd, lane) * a.scale;
      if (a.has_bias) z += bias[((unsigned long long)h * a.s_max + i) * a.s_max + j];
      const float* st = stats + (ri * a.heads + h) * 3;
      const float p = expf(z - st[0]) * st[1];
      const float dp = embtune_vl_dot(g + ri * hh + h * a.hd, v_sh, a.hd, lane);
      const float f = embtune_vl_factor(a, b, h, i, j);
      dzi = p * (f * dp - st[2]);
      pfi = p * f;
    }
    if (lane == 0) {
      dz[i] = dzi;
      pf[i] = pfi;
    }
  }
  __syncwarp();
  for (unsigned int d = lane; d < a.hd; d += 32) {
    float dk = 0.0f, dv = 0.0f;
    for (unsigned int i = 0; i < len; ++i) {
      const unsigned long long ri = start + i;
      dk += dz[i] * qkv[ri * w3 + h * a.hd + d];
      dv += pf[i] * g[ri * hh + h * a.hd + d];
    }
    dqkv[r * w3 + hh + h * a.hd + d] = a.scale * dk;
    dqkv[r * w3 + 2 * hh + h * a.hd + d] = dv;
  }
}
