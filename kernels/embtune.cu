// embtune's own CUDA kernels (compiled to PTX by build.rs with the `cuda` feature, loaded at
// run time by src/cuda_ops.rs). Grid-stride loops, no dependencies beyond the CUDA headers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Sum of squares of g[0..n), added into *out (one float per tensor; the caller zeroes it).
extern "C" __global__ void embtune_sumsq_f32(const float* __restrict__ g,
                                             const unsigned long long n, float* out) {
  __shared__ float part[32];
  float s = 0.0f;
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    const float x = g[i];
    s += x * x;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffff, s, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = (lane < (blockDim.x + 31) / 32) ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffff, s, o);
    if (lane == 0) atomicAdd(out, s);
  }
}

// Embedding rows: out[i, :] = table[ids[i], :] (table [V, H], ids [N], out [N, H]).
extern "C" __global__ void embtune_gather_f32(const float* __restrict__ table,
                                              const unsigned int* __restrict__ ids,
                                              float* __restrict__ out, const unsigned long long n,
                                              const unsigned long long h) {
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n * h;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    const unsigned long long row = i / h, col = i % h;
    out[i] = table[(unsigned long long)ids[row] * h + col];
  }
}

// Backward of the gather: grad_table[ids[i], :] += grad[i, :], in parallel over all N*H
// elements with atomic adds (candle's index_add loops over the ids serially).
extern "C" __global__ void embtune_scatter_add_f32(const float* __restrict__ grad,
                                                   const unsigned int* __restrict__ ids,
                                                   float* out, const unsigned long long n,
                                                   const unsigned long long h) {
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n * h;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    const unsigned long long row = i / h, col = i % h;
    atomicAdd(&out[(unsigned long long)ids[row] * h + col], grad[i]);
  }
}

// Counter-based random bits: splitmix64 of (seed, index). Same seed, same mask.
__device__ __forceinline__ unsigned int embtune_hash(unsigned long long seed,
                                                     unsigned long long i) {
  unsigned long long z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return (unsigned int)(z >> 32);
}

// Inverted dropout, y = x · (scale where the random bits of element i exceed `threshold`
// (= p·2³²), else 0), multiplied in f32 and rounded once to T (as torch's fused dropout does
// for half types). The backward is the same kernel on the gradient with the same seed, so no
// mask is stored. Element i uses counter i: the same mask as the CPU (cpu_kernels::Dropout).
#define EMBTUNE_DROPOUT(NAME, T, TO_F, FROM_F)                                                   \
  extern "C" __global__ void NAME(const T* __restrict__ x, T* __restrict__ y,                    \
                                  const unsigned long long n, const unsigned long long seed,     \
                                  const unsigned int threshold, const float scale) {             \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += (unsigned long long)blockDim.x * gridDim.x) {                                      \
      const float f = embtune_hash(seed, i) > threshold ? scale : 0.0f;                          \
      y[i] = FROM_F(TO_F(x[i]) * f);                                                             \
    }                                                                                            \
  }
#define EMBTUNE_ID(x) (x)
EMBTUNE_DROPOUT(embtune_dropout_f32, float, EMBTUNE_ID, EMBTUNE_ID)
EMBTUNE_DROPOUT(embtune_dropout_bf16, __nv_bfloat16, __bfloat162float, __float2bfloat16)
EMBTUNE_DROPOUT(embtune_dropout_f16, __half, __half2float, __float2half)

// The same dropout on the rows of a packed batch (rows of `width`): element (r, c) uses counter
// base[r] + c, base[r] = the padded row of packed row r times width (ops::Packed), so a packed
// pass drops what the padded pass of the same seed drops.
#define EMBTUNE_DROPOUT_ROWS(NAME, T, TO_F, FROM_F)                                              \
  extern "C" __global__ void NAME(const T* __restrict__ x, const unsigned long long* base,       \
                                  T* __restrict__ y, const unsigned long long n,                 \
                                  const unsigned long long width, const unsigned long long seed, \
                                  const unsigned int threshold, const float scale) {             \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += (unsigned long long)blockDim.x * gridDim.x) {                                      \
      const unsigned long long c = base[i / width] + i % width;                                  \
      const float f = embtune_hash(seed, c) > threshold ? scale : 0.0f;                          \
      y[i] = FROM_F(TO_F(x[i]) * f);                                                             \
    }                                                                                            \
  }
EMBTUNE_DROPOUT_ROWS(embtune_dropout_rows_f32, float, EMBTUNE_ID, EMBTUNE_ID)
EMBTUNE_DROPOUT_ROWS(embtune_dropout_rows_bf16, __nv_bfloat16, __bfloat162float, __float2bfloat16)
EMBTUNE_DROPOUT_ROWS(embtune_dropout_rows_f16, __half, __half2float, __float2half)

// AdamW, torch.optim.AdamW semantics (decoupled decay, bias correction), updating the parameter
// and both moments in place. The gradient is multiplied by *gscale_ptr first (global-norm
// clipping, computed on the GPU, so the step needs no copy to the host).
extern "C" __global__ void embtune_adamw_f32(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, const unsigned long long n, const float decay, const float step,
    const float b1, const float b2, const float eps, const float bc2_sqrt,
    const float* __restrict__ gscale_ptr) {
  const float gscale = *gscale_ptr;
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)blockDim.x * gridDim.x) {
    const float gi = g[i] * gscale;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

// One warp per row: `row` and `lane` of this thread; warps past the last row leave together
// (so the full-mask shuffles below always have 32 lanes).
#define EMBTUNE_WARP_ROW(rows)                                                                  \
  const unsigned long long row =                                                                \
      ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;                         \
  const unsigned int lane = threadIdx.x % 32;                                                   \
  if (row >= (rows)) return

// Warp-wide sum and max (all 32 lanes active).
__device__ __forceinline__ float embtune_warp_sum(float s) {
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
  return s;
}
__device__ __forceinline__ float embtune_warp_max(float s) {
  for (int o = 16; o > 0; o >>= 1) s = fmaxf(s, __shfl_xor_sync(0xffffffff, s, o));
  return s;
}

// Mean and 1/√(biased variance + eps) of a row of h floats, by the 32 lanes of a warp (two
// passes, as torch); every lane gets both.
__device__ __forceinline__ void embtune_row_stats(const float* xr, const unsigned int h,
                                                  const float eps, const unsigned int lane,
                                                  float& mean, float& rstd) {
  float s = 0.0f;
  for (unsigned int j = lane; j < h; j += 32) s += xr[j];
  mean = embtune_warp_sum(s) / h;
  float v = 0.0f;
  for (unsigned int j = lane; j < h; j += 32) {
    const float d = xr[j] - mean;
    v += d * d;
  }
  rstd = 1.0f / sqrtf(embtune_warp_sum(v) / h + eps);
}

// LayerNorm over the last dim (torch semantics, biased variance), one warp per row, f32.
extern "C" __global__ void embtune_layer_norm_f32(const float* __restrict__ x,
                                                  const float* __restrict__ w,
                                                  const float* __restrict__ b,
                                                  float* __restrict__ y,
                                                  const unsigned long long rows,
                                                  const unsigned int h, const float eps) {
  EMBTUNE_WARP_ROW(rows);
  const float* xr = x + row * h;
  float mean, rstd;
  embtune_row_stats(xr, h, eps, lane, mean, rstd);
  float* yr = y + row * h;
  for (unsigned int j = lane; j < h; j += 32) yr[j] = (xr[j] - mean) * rstd * w[j] + b[j];
}


// Backward of embtune_layer_norm_f32, one warp per row: out[0] = dx, out[1] = g·x̂ (its row
// sums are the weight's gradient; g's are the bias's), out being [2, rows, h].
//   dx = (g·w − mean(g·w) − x̂·mean(g·w·x̂)) · rstd
extern "C" __global__ void embtune_layer_norm_bwd_f32(const float* __restrict__ x,
                                                      const float* __restrict__ w,
                                                      const float* __restrict__ g,
                                                      float* __restrict__ out,
                                                      const unsigned long long rows,
                                                      const unsigned int h, const float eps) {
  EMBTUNE_WARP_ROW(rows);
  const float* xr = x + row * h;
  const float* gr = g + row * h;
  float mean, rstd;
  embtune_row_stats(xr, h, eps, lane, mean, rstd);
  float s1 = 0.0f, s2 = 0.0f;
  for (unsigned int j = lane; j < h; j += 32) {
    const float xhat = (xr[j] - mean) * rstd;
    const float gw = gr[j] * w[j];
    s1 += gw;
    s2 += gw * xhat;
  }
  const float m1 = embtune_warp_sum(s1) / h;
  const float m2 = embtune_warp_sum(s2) / h;
  float* dx = out + row * h;
  float* gx = out + rows * h + row * h;
  for (unsigned int j = lane; j < h; j += 32) {
    const float xhat = (xr[j] - mean) * rstd;
    dx[j] = (gr[j] * w[j] - m1 - xhat * m2) * rstd;
    gx[j] = gr[j] * xhat;
  }
}

// Exact (erf) GELU and its derivative, computed in f32 for every storage type.
__device__ __forceinline__ float embtune_gelu(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float embtune_gelu_grad(float x) {
  return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) +
         x * 0.39894228040143268f * expf(-0.5f * x * x);
}

// GELU of x + bias (bias [h] over rows of h): the intermediate layer's bias add and activation
// in one kernel, and its backward dx = g · gelu'(x + bias) (the bias's gradient is dx's row sum).
#define EMBTUNE_GELU_BIAS(FWD, BWD, T, TO_F, FROM_F)                                             \
  extern "C" __global__ void FWD(const T* __restrict__ x, const T* __restrict__ bias,            \
                                 T* __restrict__ y, const unsigned long long n,                  \
                                 const unsigned long long h) {                                   \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += (unsigned long long)blockDim.x * gridDim.x)                                        \
      y[i] = FROM_F(embtune_gelu(TO_F(x[i]) + TO_F(bias[i % h])));                               \
  }                                                                                              \
  extern "C" __global__ void BWD(const T* __restrict__ x, const T* __restrict__ bias,            \
                                 const T* __restrict__ g, T* __restrict__ dx,                    \
                                 const unsigned long long n, const unsigned long long h) {       \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += (unsigned long long)blockDim.x * gridDim.x)                                        \
      dx[i] = FROM_F(TO_F(g[i]) * embtune_gelu_grad(TO_F(x[i]) + TO_F(bias[i % h])));           \
  }
EMBTUNE_GELU_BIAS(embtune_gelu_bias_f32, embtune_gelu_bias_bwd_f32, float, EMBTUNE_ID, EMBTUNE_ID)
EMBTUNE_GELU_BIAS(embtune_gelu_bias_bf16, embtune_gelu_bias_bwd_bf16, __nv_bfloat16,
                  __bfloat162float, __float2bfloat16)
EMBTUNE_GELU_BIAS(embtune_gelu_bias_f16, embtune_gelu_bias_bwd_f16, __half, __half2float,
                  __float2half)

// A sublayer's end in one kernel, one warp per row (f32): y = LayerNorm(drop(x + bias) + res)
// with p = [bias | w | b] ([3h]); drop multiplies element i = row·h + j by `scale` where
// embtune_hash(seed, i) > threshold, else 0 (the dropout op's mask; threshold 0xffffffff with
// scale 1 would drop all, so `use_drop` = 0 turns dropout off). With `base` (not null: a packed
// batch) element (row, j) uses counter base[row] + j instead (see embtune_dropout_rows).
__device__ __forceinline__ float embtune_bdr(const float* xr, const float* rr, const float* bias,
                                             unsigned long long i, unsigned int j,
                                             unsigned int use_drop, unsigned long long seed,
                                             unsigned int threshold, float scale) {
  float t = xr[j] + bias[j];
  if (use_drop) t *= embtune_hash(seed, i) > threshold ? scale : 0.0f;
  return t + rr[j];
}

extern "C" __global__ void embtune_bias_dropout_add_ln_f32(
    const float* __restrict__ x, const float* __restrict__ res, const float* __restrict__ p,
    float* __restrict__ y, const unsigned long long rows, const unsigned int h, const float eps,
    const unsigned int use_drop, const unsigned long long seed, const unsigned int threshold,
    const float scale, const unsigned long long* base) {
  EMBTUNE_WARP_ROW(rows);
  const float *xr = x + row * h, *rr = res + row * h, *bias = p, *w = p + h, *b = p + 2 * h;
  const unsigned long long c0 = base ? base[row] : row * h;
  float* yr = y + row * h;
  // The pre-norm sum goes to y first, then is normalized in place (each lane its own columns).
  for (unsigned int j = lane; j < h; j += 32)
    yr[j] = embtune_bdr(xr, rr, bias, c0 + j, j, use_drop, seed, threshold, scale);
  __syncwarp();
  float mean, rstd;
  embtune_row_stats(yr, h, eps, lane, mean, rstd);
  for (unsigned int j = lane; j < h; j += 32) yr[j] = (yr[j] - mean) * rstd * w[j] + b[j];
}

// Its backward: out = [3, rows, h] = [d(pre-norm sum) (= the residual's gradient); that times
// the dropout mask (= x's gradient); g·x̂]. Row sums of the 2nd, 3rd and of g are the
// gradients of bias, w and b.
extern "C" __global__ void embtune_bias_dropout_add_ln_bwd_f32(
    const float* __restrict__ x, const float* __restrict__ res, const float* __restrict__ p,
    const float* __restrict__ g, float* __restrict__ out, const unsigned long long rows,
    const unsigned int h, const float eps, const unsigned int use_drop,
    const unsigned long long seed, const unsigned int threshold, const float scale,
    const unsigned long long* base) {
  EMBTUNE_WARP_ROW(rows);
  const float *xr = x + row * h, *rr = res + row * h, *gr = g + row * h, *bias = p, *w = p + h;
  const unsigned long long c0 = base ? base[row] : row * h;
  float* ds = out + row * h;
  float* dx = out + rows * h + row * h;
  float* gx = out + 2 * rows * h + row * h;
  // Recompute the pre-norm sum into gx (scratch), then its statistics.
  for (unsigned int j = lane; j < h; j += 32)
    gx[j] = embtune_bdr(xr, rr, bias, c0 + j, j, use_drop, seed, threshold, scale);
  __syncwarp();
  float mean, rstd;
  embtune_row_stats(gx, h, eps, lane, mean, rstd);
  float s1 = 0.0f, s2 = 0.0f;
  for (unsigned int j = lane; j < h; j += 32) {
    const float xhat = (gx[j] - mean) * rstd;
    const float gw = gr[j] * w[j];
    s1 += gw;
    s2 += gw * xhat;
  }
  const float m1 = embtune_warp_sum(s1) / h;
  const float m2 = embtune_warp_sum(s2) / h;
  for (unsigned int j = lane; j < h; j += 32) {
    const float xhat = (gx[j] - mean) * rstd;
    const float d = (gr[j] * w[j] - m1 - xhat * m2) * rstd;
    ds[j] = d;
    float f = 1.0f;
    if (use_drop) f = embtune_hash(seed, c0 + j) > threshold ? scale : 0.0f;
    dx[j] = d * f;
    gx[j] = gr[j] * xhat;
  }
}

// Attention probabilities in one kernel, one warp per row of scores [B, heads, S, n] (f32):
// y = drop(softmax(x·scale + mask[b])) with the additive mask [B, n] of the row's sentence
// b = row / rows_per_batch, and the dropout op's hash mask on element row·n + j.
__device__ __forceinline__ void embtune_attn_row_stats(const float* xr, const float* mr,
                                                       const unsigned int n, const float scale,
                                                       const unsigned int lane, float& m,
                                                       float& inv) {
  m = -INFINITY;
  for (unsigned int j = lane; j < n; j += 32) m = fmaxf(m, xr[j] * scale + mr[j]);
  m = embtune_warp_max(m);
  float s = 0.0f;
  for (unsigned int j = lane; j < n; j += 32) s += expf(xr[j] * scale + mr[j] - m);
  inv = 1.0f / embtune_warp_sum(s);
}

extern "C" __global__ void embtune_attn_softmax_f32(
    const float* __restrict__ x, const float* __restrict__ mask, float* __restrict__ y,
    const unsigned long long rows, const unsigned int n, const unsigned long long rows_per_batch,
    const float scale, const unsigned int use_drop, const unsigned long long seed,
    const unsigned int threshold, const float dscale) {
  EMBTUNE_WARP_ROW(rows);
  const float* xr = x + row * n;
  const float* mr = mask + (row / rows_per_batch) * n;
  float m, inv;
  embtune_attn_row_stats(xr, mr, n, scale, lane, m, inv);
  float* yr = y + row * n;
  for (unsigned int j = lane; j < n; j += 32) {
    float p = expf(xr[j] * scale + mr[j] - m) * inv;
    if (use_drop) p *= embtune_hash(seed, row * n + j) > threshold ? dscale : 0.0f;
    yr[j] = p;
  }
}

// Its backward: with p the softmax (recomputed) and g' = g·mask,
// dx = scale · p · (g' − Σ g'·p).
extern "C" __global__ void embtune_attn_softmax_bwd_f32(
    const float* __restrict__ x, const float* __restrict__ mask, const float* __restrict__ g,
    float* __restrict__ dx, const unsigned long long rows, const unsigned int n,
    const unsigned long long rows_per_batch, const float scale, const unsigned int use_drop,
    const unsigned long long seed, const unsigned int threshold, const float dscale) {
  EMBTUNE_WARP_ROW(rows);
  const float* xr = x + row * n;
  const float* mr = mask + (row / rows_per_batch) * n;
  const float* gr = g + row * n;
  float m, inv;
  embtune_attn_row_stats(xr, mr, n, scale, lane, m, inv);
  float dot = 0.0f;
  for (unsigned int j = lane; j < n; j += 32) {
    const float p = expf(xr[j] * scale + mr[j] - m) * inv;
    float gj = gr[j];
    if (use_drop) gj *= embtune_hash(seed, row * n + j) > threshold ? dscale : 0.0f;
    dot += gj * p;
  }
  dot = embtune_warp_sum(dot);
  float* dr = dx + row * n;
  for (unsigned int j = lane; j < n; j += 32) {
    const float p = expf(xr[j] * scale + mr[j] - m) * inv;
    float gj = gr[j];
    if (use_drop) gj *= embtune_hash(seed, row * n + j) > threshold ? dscale : 0.0f;
    dr[j] = scale * p * (gj - dot);
  }
}

// q/k/v head layout with the bias added: x [B, S, nh·hd] + bias → y [B, nh, S, hd], or with
// `kt` = 1 y [B, nh, hd, S] (keys, transposed for the scores product). The backward moves the
// gradient back to x's layout (a gather, no atomics); the bias's gradient is its row sum.
__device__ __forceinline__ unsigned long long embtune_heads_src(
    unsigned long long i, unsigned long long s_len, unsigned long long nh, unsigned long long hd,
    unsigned int kt) {
  unsigned long long s, d, hh, b;
  if (kt) {
    s = i % s_len;
    d = (i / s_len) % hd;
    hh = (i / (s_len * hd)) % nh;
    b = i / (s_len * hd * nh);
  } else {
    d = i % hd;
    s = (i / hd) % s_len;
    hh = (i / (hd * s_len)) % nh;
    b = i / (hd * s_len * nh);
  }
  return (b * s_len + s) * (nh * hd) + hh * hd + d;
}
#define EMBTUNE_HEADS(FWD, BWD, T, TO_F, FROM_F)                                                 \
  extern "C" __global__ void FWD(const T* __restrict__ x, const T* __restrict__ bias,            \
                                 T* __restrict__ y, const unsigned long long n,                  \
                                 const unsigned long long h, const unsigned long long s_len,     \
                                 const unsigned long long nh, const unsigned int kt) {           \
    const unsigned long long hd = h / nh;                                                        \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += (unsigned long long)blockDim.x * gridDim.x) {                                      \
      const unsigned long long src = embtune_heads_src(i, s_len, nh, hd, kt);                    \
      y[i] = FROM_F(TO_F(x[src]) + TO_F(bias[src % h]));                                         \
    }                                                                                            \
  }                                                                                              \
  extern "C" __global__ void BWD(const T* __restrict__ g, T* __restrict__ dx,                    \
                                 const unsigned long long n, const unsigned long long h,         \
                                 const unsigned long long s_len, const unsigned long long nh,    \
                                 const unsigned int kt) {                                        \
    const unsigned long long hd = h / nh;                                                        \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
         i += (unsigned long long)blockDim.x * gridDim.x)                                        \
      dx[embtune_heads_src(i, s_len, nh, hd, kt)] = g[i];                                        \
  }
EMBTUNE_HEADS(embtune_bias_heads_f32, embtune_heads_back_f32, float, EMBTUNE_ID, EMBTUNE_ID)
EMBTUNE_HEADS(embtune_bias_heads_bf16, embtune_heads_back_bf16, __nv_bfloat16, __bfloat162float,
              __float2bfloat16)
EMBTUNE_HEADS(embtune_bias_heads_f16, embtune_heads_back_f16, __half, __half2float, __float2half)

#include "varlen_attention.cuh"
