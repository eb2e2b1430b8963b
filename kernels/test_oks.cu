// Stand-alone test program of h4d_fast/csrc/oks.cu (built by the top-level CMakeLists.txt,
// run by ctest): a hand-checkable case computed on the GPU, printing PASS or FAIL.
#include "oks.cu"
// Hand-checkable cases with J = 1 (sigma = 0.026, the COCO nose):
//   OKS of two poses 5 px apart with area 40000 = exp(-25 / (2 * 0.026)^2 / 40000 / 2) ~= 0.890859
//   dedup of [p, exact copy of p, far] (J = 1: the keypoint box has area 0, so only exact copies match): drop-both keeps [0, 0, 1]; keep-best with scores (0.9, 0.8, 0.7) keeps [1, 0, 1]
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
  const double a[3] = {100.0, 100.0, 0.9}, b[3] = {103.0, 104.0, 0.9}, area = 40000.0;
  const double var = (2 * 0.026) * (2 * 0.026);
  const double k[9] = {100.0, 100.0, 0.9, 100.0, 100.0, 0.9, 400.0, 300.0, 0.9};  // [D = 3, J = 1, 3]
  const unsigned char valid[3] = {1, 1, 1};
  const double scores[3] = {0.9, 0.8, 0.7};
  double *d_a, *d_b, *d_area, *d_var, *d_out, *d_k, *d_scores;
  unsigned char *d_valid, *d_keep;
  CHECK_CUDA(cudaMalloc(&d_a, sizeof(a)));
  CHECK_CUDA(cudaMalloc(&d_b, sizeof(b)));
  CHECK_CUDA(cudaMalloc(&d_area, sizeof(double)));
  CHECK_CUDA(cudaMalloc(&d_var, sizeof(double)));
  CHECK_CUDA(cudaMalloc(&d_out, sizeof(double)));
  CHECK_CUDA(cudaMalloc(&d_k, sizeof(k)));
  CHECK_CUDA(cudaMalloc(&d_scores, sizeof(scores)));
  CHECK_CUDA(cudaMalloc(&d_valid, sizeof(valid)));
  CHECK_CUDA(cudaMalloc(&d_keep, 6));
  CHECK_CUDA(cudaMemcpy(d_a, a, sizeof(a), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_b, b, sizeof(b), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_area, &area, sizeof(double), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_var, &var, sizeof(double), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_k, k, sizeof(k), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_scores, scores, sizeof(scores), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_valid, valid, sizeof(valid), cudaMemcpyHostToDevice));
  h4d_oks_f64<<<1, 32>>>(d_a, d_b, d_area, d_var, 1, 1, 1, 1, 0.2, d_out);
  h4d_dedup_f64<<<1, 32 * h4d::kDedupWarps>>>(d_k, d_valid, d_scores, d_var, 1, 3, 1, 0.2, 0.7, 0, d_keep);
  h4d_dedup_f64<<<1, 32 * h4d::kDedupWarps>>>(d_k, d_valid, d_scores, d_var, 1, 3, 1, 0.2, 0.7, 1, d_keep + 3);
  CHECK_CUDA(cudaGetLastError());
  double o;
  unsigned char keep[6];
  CHECK_CUDA(cudaMemcpy(&o, d_out, sizeof(double), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(keep, d_keep, 6, cudaMemcpyDeviceToHost));
  const double expect = std::exp(-25.0 / var / (area + 2.220446049250313e-16) / 2.0);
  std::printf("oks = %.9f (expected %.9f)\n", o, expect);
  std::printf("drop-both keep = %d%d%d, keep-best keep = %d%d%d\n", keep[0], keep[1], keep[2], keep[3], keep[4], keep[5]);
  const bool ok = std::fabs(o - expect) < 1e-12 && std::fabs(o - 0.890859) < 1e-6 && !keep[0] && !keep[1] && keep[2] && keep[3] && !keep[4] && keep[5];
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
