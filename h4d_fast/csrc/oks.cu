// Object keypoint similarity and OKS duplicate removal (CUDA; CuPy RawModule and nvcc).
//
// Definitions (h4d_fast/ops/_oks_torch.py, the oracle):
//   valid_k = (c_a,k > kpt_thr) & (c_b,k > kpt_thr)
//   area    = given, or the mean of the two keypoint-box areas (confident keypoints; 0 if none)
//   e_k     = |x_a,k - x_b,k|^2 / (2 sigma_k)^2 / (area + eps) / 2
//   OKS     = mean over valid k of exp(-e_k)   (0 when no keypoint is valid in both)
//
// h4d_oks_{f32,f64}: one thread per pose pair over all T * A * B pairs (T = flattened leading
// dims); a keypoint loop computes the two box areas (unless given), a second one the OKS.
//
// h4d_dedup_{f32,f64}: one warp per view-frame (kDedupWarps view-frames per block), lane i =
// detection slot i (D <= 32). Lane i computes row i of the OKS matrix (its own keypoints against
// every slot's; the other slot's keypoints are the same address for all lanes), thresholds it into
// a duplicate bitmask and then:
//   drop-both  keep = valid and no duplicate;
//   keep-best  the reference's rank loop: better[i] = bitmask of slots ranked before i (higher
//              score, ties to the lower slot), rank = popcount; for r = 0..D-1 the slots of rank r
//              are kept unless they duplicate a better slot already kept (one ballot per rank).
// Whole sequences run in one launch; arithmetic in T (float or double).
// A stand-alone hand-checkable test program of these kernels: kernels/test_oks.cu (CMake/ctest).
#include "common.cuh"

namespace h4d {

constexpr int kDedupWarps = 4;
constexpr double kEps = 2.220446049250313e-16;  // pycocotools' np.spacing(1)

// Keypoint-box area of one pose k[J, 3] (confident keypoints only; 0 if none).
template <typename T>
__device__ __forceinline__ T box_area(const T* __restrict__ k, int J, T kpt_thr) {
  T x1 = Num<T>::max(), y1 = Num<T>::max(), x2 = -Num<T>::max(), y2 = -Num<T>::max();
  bool any = false;
  for (int j = 0; j < J; ++j) {
    const T x = k[3 * j], y = k[3 * j + 1], c = k[3 * j + 2];
    if (c > kpt_thr) {
      any = true;
      x1 = x < x1 ? x : x1;
      x2 = x > x2 ? x : x2;
      y1 = y < y1 ? y : y1;
      y2 = y > y2 ? y : y2;
    }
  }
  return any ? (x2 - x1) * (y2 - y1) : T(0);
}

// OKS of poses a[J, 3] and b[J, 3] for a given area.
template <typename T>
__device__ __forceinline__ T oks_pair(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ var, int J,
                                      T area, T kpt_thr) {
  T s = T(0);
  int n = 0;
  const T den = area + T(kEps);
  for (int j = 0; j < J; ++j) {
    if (a[3 * j + 2] > kpt_thr && b[3 * j + 2] > kpt_thr) {
      const T dx = a[3 * j] - b[3 * j], dy = a[3 * j + 1] - b[3 * j + 1];
      const T e = (dx * dx + dy * dy) / var[j] / den / T(2);
      s += Num<T>::exp(-e);
      ++n;
    }
  }
  return n > 0 ? s / T(n) : T(0);
}

template <typename T>
__device__ __forceinline__ void oks_thread(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ areas,
                                           const T* __restrict__ var, long long total, int A, int B, int J, T kpt_thr,
                                           T* __restrict__ out) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const long long AB = (long long)A * B;
  const long long t = idx / AB;
  const int r = (int)(idx - t * AB);
  const int ia = r / B, ib = r - (r / B) * B;
  const T* pa = a + (t * A + ia) * J * 3;
  const T* pb = b + (t * B + ib) * J * 3;
  const T area = areas != nullptr ? areas[idx] : T(0.5) * (box_area(pa, J, kpt_thr) + box_area(pb, J, kpt_thr));
  out[idx] = oks_pair(pa, pb, var, J, area, kpt_thr);
}

template <typename T>
__device__ __forceinline__ void dedup_warp(const T* __restrict__ k, const unsigned char* __restrict__ valid,
                                           const T* __restrict__ scores, const T* __restrict__ var, long long Tn, int D,
                                           int J, T kpt_thr, T thr, int keep_best, unsigned char* __restrict__ keep) {
  const int lane = threadIdx.x & 31;
  const long long t = (long long)blockIdx.x * kDedupWarps + (threadIdx.x >> 5);
  if (t >= Tn) return;  // warp-uniform
  const bool in = lane < D;
  const T* ki = k + (t * D + (in ? lane : 0)) * J * 3;
  const bool vi = in && valid[t * D + lane] != 0;
  T area = T(0), score = T(0);
  if (in) {
    area = box_area(ki, J, kpt_thr);
    if (scores != nullptr) {
      score = scores[t * D + lane];
    } else {  // detection_scores: mean confidence of the confident keypoints
      T cs = T(0);
      int cn = 0;
      for (int j = 0; j < J; ++j) {
        const T c = ki[3 * j + 2];
        if (c > kpt_thr) {
          cs += c;
          ++cn;
        }
      }
      score = cs / T(cn > 0 ? cn : 1);
    }
  }
  const unsigned vmask = __ballot_sync(kFullMask, vi);
  // duplicate bitmask of row i, and (keep-best) the slots ranked before i
  unsigned dup = 0u, better = 0u;
  for (int m = 0; m < D; ++m) {
    const T area_m = __shfl_sync(kFullMask, area, m);
    const T score_m = __shfl_sync(kFullMask, score, m);
    if (!in) continue;
    if (score_m > score || (score_m == score && m < lane)) better |= 1u << m;
    if (vi && m != lane && ((vmask >> m) & 1u)) {
      const T* km = k + (t * D + m) * J * 3;
      if (oks_pair(ki, km, var, J, T(0.5) * (area + area_m), kpt_thr) > thr) dup |= 1u << m;
    }
  }
  bool kept_me;
  if (!keep_best) {
    kept_me = vi && dup == 0u;
  } else {
    const int rank = __popc(better);
    unsigned kept = 0u;
    for (int r = 0; r < D; ++r) {
      const bool add = vi && rank == r && (dup & better & kept) == 0u;
      kept |= __ballot_sync(kFullMask, add);
    }
    kept_me = (kept >> lane) & 1u;
  }
  if (in) keep[t * D + lane] = kept_me ? 1 : 0;
}

}  // namespace h4d

// ------------------------------------------------------------------------------- entry points
#define H4D_OKS_ENTRY(NAME, T)                                                                                    \
  extern "C" __global__ void NAME(const T* a, const T* b, const T* areas, const T* var, long long total, int A,   \
                                  int B, int J, T kpt_thr, T* out) {                                            \
    h4d::oks_thread<T>(a, b, areas, var, total, A, B, J, kpt_thr, out);                                         \
  }
H4D_OKS_ENTRY(h4d_oks_f32, float)
H4D_OKS_ENTRY(h4d_oks_f64, double)

#define H4D_DEDUP_ENTRY(NAME, T)                                                                                        \
  extern "C" __global__ void __launch_bounds__(32 * h4d::kDedupWarps)                                                  \
      NAME(const T* k, const unsigned char* valid, const T* scores, const T* var, long long Tn, int D, int J,          \
           T kpt_thr, T thr, int keep_best, unsigned char* keep) {                                                      \
    h4d::dedup_warp<T>(k, valid, scores, var, Tn, D, J, kpt_thr, thr, keep_best, keep);                               \
  }
H4D_DEDUP_ENTRY(h4d_dedup_f32, float)
H4D_DEDUP_ENTRY(h4d_dedup_f64, double)
