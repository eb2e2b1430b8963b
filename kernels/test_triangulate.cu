// Stand-alone test program of h4d_fast/csrc/triangulate.cu (built by the top-level CMakeLists.txt,
// run by ctest): a hand-checkable case computed on the GPU, printing PASS or FAIL.
#include "triangulate.cu"
// A hand-checkable case: three cameras looking down +z (identity rotations) at x = -1, 0, +1 m and a
// fourth one with an outlier observation. X = (0.1, -0.2, 3): view k sees ((0.1 - t_k) / 3, -0.2 / 3).
#include <cmath>
#include <cstdio>

#define CHECK_CUDA(x)                                                      \
  do {                                                                     \
    cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess) {                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      return 2;                                                            \
    }                                                                      \
  } while (0)

int main() {
  const int V = 4, C = 6;
  const float cx[V] = {-1.f, 0.f, 1.f, 0.5f};  // camera centres on the x axis, t = -centre
  float P[V * 12], xy[V * 2], conf[V] = {0.9f, 0.8f, 0.95f, 0.9f};
  const float X[3] = {0.1f, -0.2f, 3.f};
  for (int v = 0; v < V; ++v) {
    const float Pv[12] = {1, 0, 0, -cx[v], 0, 1, 0, 0, 0, 0, 1, 0};
    for (int k = 0; k < 12; ++k) P[12 * v + k] = Pv[k];
    xy[2 * v] = (X[0] - cx[v]) / X[2];
    xy[2 * v + 1] = X[1] / X[2];
  }
  xy[2 * 3] += 0.2f;  // view 3 is an outlier (600 px at f = 3000)
  const int pairs[2 * C] = {0, 1, 0, 2, 0, 3, 1, 2, 1, 3, 2, 3};
  float *d_xy, *d_conf, *d_P, *d_X, *d_Xd;
  int* d_pairs;
  unsigned char* d_inl;
  long long* d_n;
  CHECK_CUDA(cudaMalloc(&d_xy, sizeof(xy)));
  CHECK_CUDA(cudaMalloc(&d_conf, sizeof(conf)));
  CHECK_CUDA(cudaMalloc(&d_P, sizeof(P)));
  CHECK_CUDA(cudaMalloc(&d_pairs, sizeof(pairs)));
  CHECK_CUDA(cudaMalloc(&d_X, 3 * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&d_Xd, 3 * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&d_inl, V));
  CHECK_CUDA(cudaMalloc(&d_n, sizeof(long long)));
  CHECK_CUDA(cudaMemcpy(d_xy, xy, sizeof(xy), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_conf, conf, sizeof(conf), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_P, P, sizeof(P), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_pairs, pairs, sizeof(pairs), cudaMemcpyHostToDevice));
  h4d_ransac_f32<<<1, 32 * h4d::kRansacWarps>>>(d_xy, d_conf, d_P, 0, d_pairs, 1, V, C, 0.5f, 0.01f, 2, 3, 0.005f, d_X,
                                                d_inl, d_n);
  CHECK_CUDA(cudaGetLastError());
  h4d_dlt_f32<<<1, 32>>>(d_xy, d_conf, d_P, 0, 1, 3, d_Xd);  // DLT on the first three (clean) views
  CHECK_CUDA(cudaGetLastError());
  float Xr[3], Xd[3];
  unsigned char inl[V];
  long long n;
  CHECK_CUDA(cudaMemcpy(Xr, d_X, sizeof(Xr), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(Xd, d_Xd, sizeof(Xd), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(inl, d_inl, V, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(&n, d_n, sizeof(n), cudaMemcpyDeviceToHost));
  std::printf("ransac X = (%.6f, %.6f, %.6f), inliers = %d%d%d%d, n = %lld\n", Xr[0], Xr[1], Xr[2], inl[0], inl[1], inl[2],
              inl[3], n);
  std::printf("dlt    X = (%.6f, %.6f, %.6f)\n", Xd[0], Xd[1], Xd[2]);
  bool ok = n == 3 && inl[0] && inl[1] && inl[2] && !inl[3];
  for (int k = 0; k < 3; ++k) ok = ok && std::fabs(Xr[k] - X[k]) < 1e-4f && std::fabs(Xd[k] - X[k]) < 1e-4f;
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
