// Linear assignment (maximum-total-score one-to-one matching), one GPU thread per problem.
//
// Definition and algorithm: h4d_fast/ops/_assign_torch.py (the oracle). Input: the cleaned
// scores s'[B, R, C] (double; 0 = no match). Each thread runs the Hungarian method with
// potentials and shortest augmenting paths on cost = -s' for n = min(R, C) rows against
// m = max(R, C) columns (transposed reads when R > C), in the same order of operations as the
// reference and the numba backend, so all three return the same assignment, ties included.
// Scratch lives in local memory: n, m <= kMaxN.
#include "common.cuh"

namespace h4d {

constexpr int kMaxN = 64;

__device__ void assign_problem(const double* __restrict__ s, int R, int C, long long* __restrict__ out) {
  for (int r = 0; r < R; ++r) out[r] = -1;
  if (R == 0 || C == 0) return;
  const bool tr = R > C;
  const int n = tr ? C : R, m = tr ? R : C;
  double u[kMaxN + 1], v[kMaxN + 1], minv[kMaxN + 1];
  int p[kMaxN + 1], way[kMaxN + 1];
  bool used[kMaxN + 1];
  for (int j = 0; j <= m; ++j) { v[j] = 0.0; p[j] = 0; way[j] = 0; }
  for (int i = 0; i <= n; ++i) u[i] = 0.0;
  const double inf = __longlong_as_double(0x7ff0000000000000LL);  // +inf
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    for (int j = 0; j <= m; ++j) { minv[j] = inf; used[j] = false; }
    while (true) {
      used[j0] = true;
      const int i0 = p[j0];
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= m; ++j) {
        if (!used[j]) {
          // cost[i0-1][j-1] = -s'[i0-1][j-1], or -s'[j-1][i0-1] for the transposed problem
          const double c = tr ? -s[(long long)(j - 1) * C + (i0 - 1)] : -s[(long long)(i0 - 1) * C + (j - 1)];
          const double cur = c - u[i0] - v[j];
          if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
          if (minv[j] < delta) { delta = minv[j]; j1 = j; }
        }
      }
      for (int j = 0; j <= m; ++j) {
        if (used[j]) { u[p[j]] += delta; v[j] -= delta; }
        else minv[j] -= delta;
      }
      j0 = j1;
      if (p[j0] == 0) break;
    }
    while (true) {
      const int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
      if (j0 == 0) break;
    }
  }
  for (int j = 1; j <= m; ++j) {
    if (p[j] == 0) continue;
    const int a = p[j] - 1, b = j - 1;  // row a of the (possibly transposed) problem -> column b
    const int r = tr ? b : a, c = tr ? a : b;
    out[r] = s[(long long)r * C + c] > 0.0 ? c : -1;
  }
}

}  // namespace h4d

extern "C" __global__ void h4d_assign_f64(const double* s, long long B, int R, int C, long long* out) {
  const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  h4d::assign_problem(s + b * (long long)R * C, R, C, out + b * R);
}
