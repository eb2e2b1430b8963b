// Weighted DLT and fused RANSAC view-set triangulation (CUDA; CuPy RawModule and nvcc).
//
// Algorithm (the rule of h4d_fast/ops/_triangulate_torch.py, the oracle):
//   candidates  conf > conf_thr and finite xy (xy zeroed, weight 0 elsewhere)
//   hypotheses  every candidate view pair i < j in lexicographic order: 2-view weighted DLT through
//               the 3x3 normal equations, adjugate solve, the reference's singularity test
//   inliers     candidates with z > 0 and 0.5 |xy - pi(X)| < err_thr (tested as
//               |Xc_xy - xy z|^2 < (2 err_thr z)^2, no division); a hypothesis is void unless both
//               of its own views are inliers (in front of both cameras, the two rays meet)
//   winner      the largest inlier set, ties -> the earliest pair: key = count * 1024 + (1023 - pair)
//   final       weighted DLT on the inliers + refine_steps Huber IRLS Gauss-Newton steps
//               (refine_huber's formulas and damping); fewer than min_inliers inliers or a
//               non-finite result -> NaN, empty mask, n = 0.
//
// Launch layout of h4d_ransac_{f32,f64}: one warp per point, kRansacWarps points per block
// (grid = ceil(N / kRansacWarps), block = 32 * kRansacWarps). Lane v loads view v once (V <= 32)
// into shared memory together with the point's projection rows; the lanes then take the pairs
// c = lane, lane + 32, ... and evaluate them against all V views from shared memory; a butterfly
// arg-max over the packed keys (unique per pair, so the earliest pair wins ties) gives every lane
// the winner's inlier bitmask. The final DLT and each refinement step are spread over the lanes
// (lane v adds view v's terms, butterfly sums give all lanes the same 3x3 system). One launch, no
// host synchronisation. h4d_dlt_{f32,f64}: one thread per point, any number of views.
//
// Projections: P + p * p_stride is the point's [V, 3, 4] (p_stride = 0 for one shared rig).
// A stand-alone hand-checkable test program of these kernels: kernels/test_triangulate.cu (CMake/ctest).
#include "common.cuh"

namespace h4d {

constexpr int kRansacWarps = 4;
constexpr int kMaxViews = 32;

// w^2 (r1 r1^T + r2 r2^T) (6 unique entries) and w^2 (r1[:3] r1[3] + r2[:3] r2[3]) (3) into m[9].
template <typename T>
__device__ __forceinline__ void add_view_terms(T x, T y, T w, const Row4<T>& p0, const Row4<T>& p1, const Row4<T>& p2, T (&m)[9]) {
  if (!(w > T(0))) {  // the reference zeroes xy where w <= 0
    x = T(0);
    y = T(0);
  }
  const T w2 = w * w;
  const T a0 = x * p2.x - p0.x, a1 = x * p2.y - p0.y, a2 = x * p2.z - p0.z, a3 = x * p2.w - p0.w;
  const T b0 = y * p2.x - p1.x, b1 = y * p2.y - p1.y, b2 = y * p2.z - p1.z, b3 = y * p2.w - p1.w;
  m[0] += w2 * (a0 * a0 + b0 * b0);
  m[1] += w2 * (a0 * a1 + b0 * b1);
  m[2] += w2 * (a0 * a2 + b0 * b2);
  m[3] += w2 * (a1 * a1 + b1 * b1);
  m[4] += w2 * (a1 * a2 + b1 * b2);
  m[5] += w2 * (a2 * a2 + b2 * b2);
  m[6] += w2 * (a0 * a3 + b0 * b3);
  m[7] += w2 * (a1 * a3 + b1 * b3);
  m[8] += w2 * (a2 * a3 + b2 * b3);
}

// Adjugate solve of the symmetric [[a, b, c], [b, d, e], [c, e, f]] x = r; returns det.
template <typename T>
__device__ __forceinline__ T solve3(T a, T b, T c, T d, T e, T f, T r0, T r1, T r2, T& x0, T& x1, T& x2) {
  const T A00 = d * f - e * e, A01 = c * e - b * f, A02 = b * e - c * d;
  const T A11 = a * f - c * c, A12 = b * c - a * e, A22 = a * d - b * b;
  const T det = a * A00 + b * A01 + c * A02;
  x0 = (A00 * r0 + A01 * r1 + A02 * r2) / det;
  x1 = (A01 * r0 + A11 * r1 + A12 * r2) / det;
  x2 = (A02 * r0 + A12 * r1 + A22 * r2) / det;
  return det;
}

// M X = -s from m[9] with the reference's singularity test; false (and NaN) when singular.
template <typename T>
__device__ __forceinline__ bool dlt_solve(const T (&m)[9], T& x0, T& x1, T& x2) {
  const T det = solve3(m[0], m[1], m[2], m[3], m[4], m[5], -m[6], -m[7], -m[8], x0, x1, x2);
  const T t = (m[0] + m[3] + m[5]) / T(3);
  const T scale = t * t * t;
  const bool good = Num<T>::abs(det) > T(1e-10) * Num<T>::abs(scale) && finite(x0) && finite(x1) && finite(x2);
  if (!good) x0 = x1 = x2 = Num<T>::nan();
  return good;
}

template <typename T>
__device__ __forceinline__ void project(const Row4<T>& p0, const Row4<T>& p1, const Row4<T>& p2, T X0, T X1, T X2, T& cx, T& cy, T& z) {
  cx = p0.x * X0 + p0.y * X1 + p0.z * X2 + p0.w;
  cy = p1.x * X0 + p1.y * X1 + p1.z * X2 + p1.w;
  z = p2.x * X0 + p2.y * X1 + p2.z * X2 + p2.w;
}

template <typename T>
__device__ __forceinline__ void ransac_warp(const T* __restrict__ xy, const T* __restrict__ conf, const T* __restrict__ P,
                                            long long p_stride, const int* __restrict__ pairs, long long N, int V, int C,
                                            T conf_thr, T err_thr, int min_inliers, int refine_steps, T delta,
                                            T* __restrict__ X_out, unsigned char* __restrict__ inl_out, long long* __restrict__ n_out) {
  __shared__ Row4<T> sP[kRansacWarps][kMaxViews * 3];  // the point's projection rows
  __shared__ T sx[kRansacWarps][kMaxViews], sy[kRansacWarps][kMaxViews], sw[kRansacWarps][kMaxViews];
  const int lane = threadIdx.x & 31;
  const int wp = threadIdx.x >> 5;
  const long long p = (long long)blockIdx.x * kRansacWarps + wp;
  if (p >= N) return;  // warp-uniform

  // ---- load the point once: projection rows and view v on lane v
  const T* Pp = P + p * p_stride;
  for (int k = lane; k < V * 3; k += 32) {
    Row4<T> r;
    r.x = Pp[4 * k];
    r.y = Pp[4 * k + 1];
    r.z = Pp[4 * k + 2];
    r.w = Pp[4 * k + 3];
    sP[wp][k] = r;
  }
  bool cand = false;
  T my_w = T(0);
  if (lane < V) {
    const T x = xy[(p * V + lane) * 2], y = xy[(p * V + lane) * 2 + 1], c = conf[p * V + lane];
    cand = c > conf_thr && finite(x) && finite(y);
    my_w = cand ? c : T(0);
    sx[wp][lane] = cand ? x : T(0);
    sy[wp][lane] = cand ? y : T(0);
    sw[wp][lane] = my_w;
  }
  const unsigned cmask = __ballot_sync(kFullMask, cand);
  __syncwarp();
  const T* X = sx[wp];
  const T* Y = sy[wp];
  const T* W = sw[wp];
  const Row4<T>* R = sP[wp];
  const T thr4 = err_thr > T(0) ? T(4) * err_thr * err_thr : T(0);

  // ---- hypotheses: pairs spread over the lanes
  int best_key = -1;
  unsigned best_bits = 0u;
  for (int c = lane; c < C; c += 32) {
    const int i = pairs[2 * c], j = pairs[2 * c + 1];
    if (!((cmask >> i) & 1u) || !((cmask >> j) & 1u)) continue;
    T m[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    add_view_terms(X[i], Y[i], W[i], R[3 * i], R[3 * i + 1], R[3 * i + 2], m);
    add_view_terms(X[j], Y[j], W[j], R[3 * j], R[3 * j + 1], R[3 * j + 2], m);
    T X0, X1, X2;
    if (!dlt_solve(m, X0, X1, X2)) continue;
    int cnt = 0;
    unsigned bits = 0u;
    bool live = true;
    for (int v = 0; v < V; ++v) {
      T cx, cy, z;
      project(R[3 * v], R[3 * v + 1], R[3 * v + 2], X0, X1, X2, cx, cy, z);
      const T dx = cx - X[v] * z, dy = cy - Y[v] * z;
      const bool hit = ((cmask >> v) & 1u) && z > T(0) && dx * dx + dy * dy < thr4 * z * z;
      if (!hit && (v == i || v == j)) {  // own view behind the camera or off by >= err_thr: void
        live = false;
        break;
      }
      cnt += hit ? 1 : 0;
      bits |= (hit ? 1u : 0u) << v;
    }
    if (!live) continue;
    const int key = cnt * 1024 + (1023 - c);
    if (key > best_key) {
      best_key = key;
      best_bits = bits;
    }
  }
  // warp arg-max; keys are unique per pair, so every lane ends with the same winner
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const int k2 = __shfl_xor_sync(kFullMask, best_key, off);
    const unsigned b2 = __shfl_xor_sync(kFullMask, best_bits, off);
    if (k2 > best_key) {
      best_key = k2;
      best_bits = b2;
    }
  }

  // ---- final weighted DLT on the inliers: lane v adds view v
  const bool mine = lane < V && ((best_bits >> lane) & 1u);
  const T wf = mine ? my_w : T(0);
  T m[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  if (mine) add_view_terms(X[lane], Y[lane], wf, R[3 * lane], R[3 * lane + 1], R[3 * lane + 2], m);
  warp_sum(m);
  T X0, X1, X2;
  dlt_solve(m, X0, X1, X2);

  // ---- Huber IRLS Gauss-Newton (refine_huber): H (6) and g (3) summed over the lanes
  for (int s = 0; s < refine_steps; ++s) {
    T h[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    if (wf > T(0)) {
      const Row4<T> p0 = R[3 * lane], p1 = R[3 * lane + 1], p2 = R[3 * lane + 2];
      T cx, cy, z;
      project(p0, p1, p2, X0, X1, X2, cx, cy, z);
      if (z > T(1e-9)) {
        const T px = cx / z, py = cy / z;
        const T rx = px - X[lane], ry = py - Y[lane];
        const T e = Num<T>::sqrt(rx * rx + ry * ry);
        const T hub = e <= delta ? T(1) : delta / (e > T(1e-30) ? e : T(1e-30));
        const T wv = wf * hub;
        const T iz = T(1) / z;
        const T ja = iz * (p0.x - px * p2.x), jb = iz * (p0.y - px * p2.y), jc = iz * (p0.z - px * p2.z);
        const T ka = iz * (p1.x - py * p2.x), kb = iz * (p1.y - py * p2.y), kc = iz * (p1.z - py * p2.z);
        h[0] = wv * (ja * ja + ka * ka);
        h[1] = wv * (ja * jb + ka * kb);
        h[2] = wv * (ja * jc + ka * kc);
        h[3] = wv * (jb * jb + kb * kb);
        h[4] = wv * (jb * jc + kb * kc);
        h[5] = wv * (jc * jc + kc * kc);
        h[6] = wv * (ja * rx + ka * ry);
        h[7] = wv * (jb * rx + kb * ry);
        h[8] = wv * (jc * rx + kc * ry);
      }
    }
    warp_sum(h);
    const T damp = T(1e-9) * (h[0] + h[3] + h[5]) + T(1e-30);
    T d0, d1, d2;
    const T det = solve3(h[0] + damp, h[1], h[2], h[3] + damp, h[4], h[5] + damp, -h[6], -h[7], -h[8], d0, d1, d2);
    if (finite(d0) && finite(d1) && finite(d2) && Num<T>::abs(det) > T(0)) {
      X0 += d0;
      X1 += d1;
      X2 += d2;
    }
  }

  // ---- outputs
  const int n = __popc(best_bits);
  const bool ok = n >= min_inliers && finite(X0) && finite(X1) && finite(X2);
  if (lane == 0) {
    X_out[3 * p] = ok ? X0 : Num<T>::nan();
    X_out[3 * p + 1] = ok ? X1 : Num<T>::nan();
    X_out[3 * p + 2] = ok ? X2 : Num<T>::nan();
    n_out[p] = ok ? n : 0;
  }
  if (lane < V) inl_out[p * V + lane] = (ok && mine) ? 1 : 0;
}

template <typename T>
__device__ __forceinline__ void dlt_thread(const T* __restrict__ xy, const T* __restrict__ w, const T* __restrict__ P,
                                           long long p_stride, long long N, int V, T* __restrict__ X_out) {
  const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= N) return;
  const T* Pp = P + p * p_stride;
  T m[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  for (int v = 0; v < V; ++v) {
    const T* q = Pp + 12 * v;
    const Row4<T> p0 = {q[0], q[1], q[2], q[3]}, p1 = {q[4], q[5], q[6], q[7]}, p2 = {q[8], q[9], q[10], q[11]};
    add_view_terms(xy[(p * V + v) * 2], xy[(p * V + v) * 2 + 1], w[p * V + v], p0, p1, p2, m);
  }
  T X0, X1, X2;
  dlt_solve(m, X0, X1, X2);
  X_out[3 * p] = X0;
  X_out[3 * p + 1] = X1;
  X_out[3 * p + 2] = X2;
}

}  // namespace h4d

// ------------------------------------------------------------------------------- entry points
#define H4D_RANSAC_ENTRY(NAME, T)                                                                                         \
  extern "C" __global__ void __launch_bounds__(32 * h4d::kRansacWarps)                                                   \
      NAME(const T* xy, const T* conf, const T* P, long long p_stride, const int* pairs, long long N, int V, int C,       \
           T conf_thr, T err_thr, int min_inliers, int refine_steps, T delta, T* X_out, unsigned char* inl_out,          \
           long long* n_out) {                                                                                            \
    h4d::ransac_warp<T>(xy, conf, P, p_stride, pairs, N, V, C, conf_thr, err_thr, min_inliers, refine_steps, delta,    \
                        X_out, inl_out, n_out);                                                                           \
  }
H4D_RANSAC_ENTRY(h4d_ransac_f32, float)
H4D_RANSAC_ENTRY(h4d_ransac_f64, double)

#define H4D_DLT_ENTRY(NAME, T)                                                                                  \
  extern "C" __global__ void NAME(const T* xy, const T* w, const T* P, long long p_stride, long long N, int V, \
                                  T* X_out) {                                                                 \
    h4d::dlt_thread<T>(xy, w, P, p_stride, N, V, X_out);                                                      \
  }
H4D_DLT_ENTRY(h4d_dlt_f32, float)
H4D_DLT_ENTRY(h4d_dlt_f64, double)
