// Shared device helpers of the h4d_fast CUDA kernels (triangulate.cu, oks.cu).
//
// Self-contained on purpose: no standard or CUDA headers, so the same text compiles under NVRTC
// (CuPy RawModule, which inlines this file into each kernel source) and under nvcc (CMake's
// ahead-of-time fatbin and the per-kernel test programs). Everything is templated on the data type
// T (float or double); arithmetic happens in T.
#pragma once

namespace h4d {

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
struct Num;

template <>
struct Num<float> {
  static __device__ __forceinline__ float nan() { return __int_as_float(0x7fc00000); }
  static __device__ __forceinline__ float max() { return 3.402823466e+38f; }
  static __device__ __forceinline__ float sqrt(float x) { return sqrtf(x); }
  static __device__ __forceinline__ float exp(float x) { return expf(x); }
  static __device__ __forceinline__ float abs(float x) { return fabsf(x); }
};

template <>
struct Num<double> {
  static __device__ __forceinline__ double nan() { return __longlong_as_double(0x7ff8000000000000LL); }
  static __device__ __forceinline__ double max() { return 1.7976931348623157e+308; }
  static __device__ __forceinline__ double sqrt(double x) { return ::sqrt(x); }
  static __device__ __forceinline__ double exp(double x) { return ::exp(x); }
  static __device__ __forceinline__ double abs(double x) { return ::fabs(x); }
};

// false for +-inf and NaN (NaN compares false)
template <typename T>
__device__ __forceinline__ bool finite(T x) {
  return Num<T>::abs(x) <= Num<T>::max();
}

// One row of a 3x4 projection matrix, aligned so shared-memory reads are single vector loads.
template <typename T>
struct alignas(4 * sizeof(T)) Row4 {
  T x, y, z, w;
};

// Butterfly sum over the 32 lanes of a warp. Every lane ends with the bitwise-same value (each
// step adds the same two operands on both partner lanes), so later per-lane solves agree.
template <typename T, int K>
__device__ __forceinline__ void warp_sum(T (&v)[K]) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] += __shfl_xor_sync(kFullMask, v[k], off);
  }
}

}  // namespace h4d
