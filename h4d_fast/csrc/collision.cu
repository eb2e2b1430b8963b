// Two-person interpenetration (collision) loss: the CUDA kernels of the CuPy backend.
//
// Method: h4d_fast/ops/collision.py ("Kernel method"); the Triton twin is
// h4d_fast/ops/_collision_triton.py and uses the same buffers. float32 only. Per direction p (owner
// p's inside-only distance grid, sampled at the other person's vertices) four launches, all with a
// 1-D grid, no host synchronisation:
//
//   h4d_collision_raster  one thread per face (a warp = a cluster of 32 faces): the cluster AABB
//                         (warp min/max) and the parity rows -- the face is rasterised onto the
//                         G x G rows along -x with watertight edge functions (canonical vertex
//                         order + symbolic perturbation, no FMA contraction) and each hit toggles
//                         (atomicXor) the bits of the row's grid points beyond the crossing.
//   h4d_collision_mark    one thread per sampled vertex: for each in-range corner whose parity bit
//                         is set, atomicOr a "needed" bit; the thread that turns a word non-zero
//                         appends it to the work list.
//   h4d_collision_dist    persistent warps over the work list: for each needed grid point, the exact
//                         nearest-face distance by best-first search over the cluster AABBs: each
//                         round takes the kDistK clusters of smallest lower bound (warp argmins over
//                         the bounds kept in shared memory; lane = face of each cluster) and the
//                         search stops when the smallest remaining bound >= the best distance.
//   h4d_collision_sample  one thread per sampled vertex: trilinear sample (align_corners=True, zero
//                         padding) of the needed values, d(sample)/d(vertex), a per-block sum
//                         (fixed-order tree, deterministic).
//
// is_signed (field="signed"): mark sets the bits of all in-range corners of a vertex with an inside
// corner, dist stores minus the distance at outside grid points, sample keeps relu of the sample
// (plus margin / s where a corner is inside). taper > 0 (inside field): mark and dist as for is_signed
// (the host passes is_signed = 1 to them); sample interpolates the inside-only values and the signed ones
// and weights the first by clamp((signed + r) / r, 0, 1), r = taper / s.
//
// Buffers (host side: h4d_fast/ops/_collision_cupy.py): parity and needed bits [2, B, G, G, W] int32
// (W = ceil(G / 32), zeroed), counters [2], work lists [2, list_cap], cluster AABBs [2, B, 6, CP2]
// (lo xyz, hi xyz; normalised units), distance cache [2, B, G^3] (only needed entries are written
// and read), block sums [B, nblk], gradients [B, Nq, 3].
#include "common.cuh"

namespace h4d {
namespace coll {

constexpr int kCS = 32;                  // faces per cluster (= warp size)
constexpr int kBlock = 256;              // threads per block of raster / mark / sample
constexpr int kDistWarps = 4;            // warps per block of dist (one grid point per warp)
constexpr int kDistK = 4;                // clusters per round of the best-first search
constexpr int kMaxSharedClusters = 1024; // larger meshes keep the bounds in global scratch
constexpr float kEpsRow = 1e-3f;         // rows this close (in cells) to a face's (y, z) box are tested

__device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }

// (v - c) / s, never contracted, so every use of a vertex sees bitwise the same value
__device__ __forceinline__ float nrm(float v, float c, float s) { return __fdiv_rn(__fsub_rn(v, c), s); }

// grid-point coordinate -1 + (i + off) h
__device__ __forceinline__ float coord(float i, float off, float h) { return __fadd_rn(-1.f, __fmul_rn(__fadd_rn(i, off), h)); }

// Watertight edge function of the (y, z) projection: evaluated on the endpoints in canonical
// order (lower vertex index first), exact zeros broken as for the ray moved by (e, e^2).
__device__ __forceinline__ void edge(int ia, int ib, float ay, float az, float by, float bz, float cy, float cz,
                                     float& e, float& s) {
  const bool swap = ia > ib;
  const float py = swap ? by : ay, pz = swap ? bz : az;
  const float qy = swap ? ay : by, qz = swap ? az : bz;
  const float dy = __fsub_rn(qy, py), dz = __fsub_rn(qz, pz);
  const float ev = __fsub_rn(__fmul_rn(dy, __fsub_rn(cz, pz)), __fmul_rn(dz, __fsub_rn(cy, py)));
  float sv;
  if (ev > 0.f) sv = 1.f;
  else if (ev < 0.f) sv = -1.f;
  else if (dz != 0.f) sv = dz > 0.f ? -1.f : 1.f;
  else sv = dy > 0.f ? 1.f : (dy < 0.f ? -1.f : 0.f);
  e = swap ? -ev : ev;
  s = swap ? -sv : sv;
}

__device__ __forceinline__ float sq3(float x, float y, float z) { return x * x + y * y + z * z; }

// Squared point-triangle distance (Ericson's Voronoi-region cascade).
__device__ __forceinline__ float pt_tri_d2(float px, float py, float pz, float ax, float ay, float az, float bx,
                                           float by, float bz, float cx, float cy, float cz) {
  const float abx = bx - ax, aby = by - ay, abz = bz - az;
  const float acx = cx - ax, acy = cy - ay, acz = cz - az;
  const float apx = px - ax, apy = py - ay, apz = pz - az;
  const float d1 = abx * apx + aby * apy + abz * apz, d2 = acx * apx + acy * apy + acz * apz;
  if (d1 <= 0.f && d2 <= 0.f) return sq3(apx, apy, apz);
  const float bpx = px - bx, bpy = py - by, bpz = pz - bz;
  const float d3 = abx * bpx + aby * bpy + abz * bpz, d4 = acx * bpx + acy * bpy + acz * bpz;
  if (d3 >= 0.f && d4 <= d3) return sq3(bpx, bpy, bpz);
  const float vc = d1 * d4 - d3 * d2;
  if (vc <= 0.f && d1 >= 0.f && d3 <= 0.f) {
    const float den = d1 - d3, v = den != 0.f ? d1 / den : 0.f;
    return sq3(apx - v * abx, apy - v * aby, apz - v * abz);
  }
  const float cpx = px - cx, cpy = py - cy, cpz = pz - cz;
  const float d5 = abx * cpx + aby * cpy + abz * cpz, d6 = acx * cpx + acy * cpy + acz * cpz;
  if (d6 >= 0.f && d5 <= d6) return sq3(cpx, cpy, cpz);
  const float vb = d5 * d2 - d1 * d6;
  if (vb <= 0.f && d2 >= 0.f && d6 <= 0.f) {
    const float den = d2 - d6, w = den != 0.f ? d2 / den : 0.f;
    return sq3(apx - w * acx, apy - w * acy, apz - w * acz);
  }
  const float va = d3 * d6 - d5 * d4;
  if (va <= 0.f && (d4 - d3) >= 0.f && (d5 - d6) >= 0.f) {
    const float den = (d4 - d3) + (d5 - d6), w = den != 0.f ? (d4 - d3) / den : 0.f;
    return sq3(bpx - w * (cx - bx), bpy - w * (cy - by), bpz - w * (cz - bz));
  }
  const float den = va + vb + vc;
  const float v = den != 0.f ? vb / den : 0.f, w = den != 0.f ? vc / den : 0.f;
  return sq3(apx - v * abx - w * acx, apy - v * aby - w * acy, apz - v * abz - w * acz);
}

// Continuous grid index of a world coordinate: ((x - c) / s + 1) * (G - 1) / 2, never contracted
// (mark and sample must find the same corners).
__device__ __forceinline__ float grid_pos(float x, float c, float s, float hg) {
  return __fmul_rn(__fadd_rn(nrm(x, c, s), 1.f), hg);
}

}  // namespace coll
}  // namespace h4d

using namespace h4d::coll;

extern "C" __global__ void __launch_bounds__(kBlock)
    h4d_collision_raster(const float* __restrict__ v, const int* __restrict__ f, int n_verts, int n_faces,
                         int n_clusters, int B, int p, const float* __restrict__ cen, const float* __restrict__ half,
                         const int* __restrict__ act, float* __restrict__ aabb, int* __restrict__ par, float off,
                         int G, int W, int CP2, int nblk) {
  const int b = blockIdx.x / nblk, blk = blockIdx.x % nblk;
  const long long pb = (long long)p * B + b;
  if (!act[pb]) return;
  const int fo = blk * kBlock + threadIdx.x;
  const int cl = fo / kCS;
  if (cl >= n_clusters) return;  // whole warps (padded faces complete the last cluster)
  const int lane = threadIdx.x & 31;
  const int i0 = f[3 * fo], i1 = f[3 * fo + 1], i2 = f[3 * fo + 2];
  const float cx = cen[3 * pb], cy = cen[3 * pb + 1], cz = cen[3 * pb + 2], s = half[pb];
  const float* vb = v + (long long)b * n_verts * 3;
  const float x0 = nrm(vb[3 * i0], cx, s), y0 = nrm(vb[3 * i0 + 1], cy, s), z0 = nrm(vb[3 * i0 + 2], cz, s);
  const float x1 = nrm(vb[3 * i1], cx, s), y1 = nrm(vb[3 * i1 + 1], cy, s), z1 = nrm(vb[3 * i1 + 2], cz, s);
  const float x2 = nrm(vb[3 * i2], cx, s), y2 = nrm(vb[3 * i2 + 1], cy, s), z2 = nrm(vb[3 * i2 + 2], cz, s);
  float lo[3] = {fminf(fminf(x0, x1), x2), fminf(fminf(y0, y1), y2), fminf(fminf(z0, z1), z2)};
  float hi[3] = {fmaxf(fmaxf(x0, x1), x2), fmaxf(fmaxf(y0, y1), y2), fmaxf(fmaxf(z0, z1), z2)};
  const float ymin = lo[1], ymax = hi[1], zmin = lo[2], zmax = hi[2];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      lo[k] = fminf(lo[k], __shfl_xor_sync(h4d::kFullMask, lo[k], o));
      hi[k] = fmaxf(hi[k], __shfl_xor_sync(h4d::kFullMask, hi[k], o));
    }
  }
  if (lane == 0) {
    float* ab = aabb + pb * 6 * CP2 + cl;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      ab[k * CP2] = lo[k];
      ab[(3 + k) * CP2] = hi[k];
    }
  }
  if (fo >= n_faces) return;

  const float h = 2.f / (float)(G - 1);
  const int jlo = max((int)ceilf((ymin + 1.f) / h - off - kEpsRow), 0);
  const int jhi = min((int)floorf((ymax + 1.f) / h - off + kEpsRow), G - 1);
  const int klo = max((int)ceilf((zmin + 1.f) / h - off - kEpsRow), 0);
  const int khi = min((int)floorf((zmax + 1.f) / h - off + kEpsRow), G - 1);
  for (int k = klo; k <= khi; ++k) {
    const float zc = coord((float)k, off, h);
    for (int j = jlo; j <= jhi; ++j) {
      const float yc = coord((float)j, off, h);
      float e0, s0, e1, s1, e2, s2;
      edge(i1, i2, y1, z1, y2, z2, yc, zc, e0, s0);
      edge(i2, i0, y2, z2, y0, z0, yc, zc, e1, s1);
      edge(i0, i1, y0, z0, y1, z1, yc, zc, e2, s2);
      if (s0 == 0.f || s0 != s1 || s1 != s2) continue;
      const float den = e0 + e1 + e2;
      const float xc = den != 0.f ? (e0 * x0 + e1 * x1 + e2 * x2) / den : x0;
      const float first = fminf(fmaxf(floorf((xc + 1.f) / h - off) + 1.f, 0.f), (float)G);
      const int fi = (int)first;
      unsigned* row = reinterpret_cast<unsigned*>(par) + ((pb * G + k) * G + j) * W;
      for (int w = 0; w < W; ++w) {
        const int lo_bit = fi - 32 * w;
        const unsigned bits = lo_bit <= 0 ? 0xffffffffu : (lo_bit >= 32 ? 0u : ~((1u << lo_bit) - 1u));
        if (bits) atomicXor(row + w, bits);
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(kBlock)
    h4d_collision_mark(const float* __restrict__ q, int n_q, int B, int p, const float* __restrict__ cen,
                       const float* __restrict__ half, const int* __restrict__ act, const int* __restrict__ par,
                       int* __restrict__ need, int* __restrict__ cnt, int* __restrict__ list, long long list_cap,
                       int G, int W, int nblk, int is_signed) {
  const int b = blockIdx.x / nblk, blk = blockIdx.x % nblk;
  const long long pb = (long long)p * B + b;
  const int vo = blk * kBlock + threadIdx.x;
  if (vo >= n_q || !act[pb]) return;
  const float cx = cen[3 * pb], cy = cen[3 * pb + 1], cz = cen[3 * pb + 2], s = half[pb];
  const float hg = 0.5f * (float)(G - 1);
  const float* qv = q + ((long long)b * n_q + vo) * 3;
  const float fx = grid_pos(qv[0], cx, s, hg), fy = grid_pos(qv[1], cy, s, hg), fz = grid_pos(qv[2], cz, s, hg);
  if (!(fx > -1.f && fx < (float)G && fy > -1.f && fy < (float)G && fz > -1.f && fz < (float)G)) return;
  const int ix0 = (int)floorf(fx), iy0 = (int)floorf(fy), iz0 = (int)floorf(fz);
  const long long dir = (long long)p * B * G * G * W;
  bool any_in = false;  // signed field: a vertex with an inside corner needs all its corners
  if (is_signed) {
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int ix = ix0 + (c & 1), iy = iy0 + ((c >> 1) & 1), iz = iz0 + (c >> 2);
      if (ix < 0 || ix >= G || iy < 0 || iy >= G || iz < 0 || iz >= G) continue;
      const long long wl = (((long long)b * G + iz) * G + iy) * W + (ix >> 5);
      any_in = any_in || ((unsigned)par[dir + wl] & (1u << (ix & 31))) != 0u;
    }
  }
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int ix = ix0 + (c & 1), iy = iy0 + ((c >> 1) & 1), iz = iz0 + (c >> 2);
    if (ix < 0 || ix >= G || iy < 0 || iy >= G || iz < 0 || iz >= G) continue;
    const long long wl = (((long long)b * G + iz) * G + iy) * W + (ix >> 5);
    const unsigned bit = 1u << (ix & 31);
    if (!any_in && !((unsigned)par[dir + wl] & bit)) continue;
    const unsigned old = atomicOr(reinterpret_cast<unsigned*>(need) + dir + wl, bit);
    if (old == 0u) list[p * list_cap + atomicAdd(cnt + p, 1)] = (int)wl;
  }
}

extern "C" __global__ void __launch_bounds__(32 * kDistWarps)
    h4d_collision_dist(const float* __restrict__ v, const int* __restrict__ f, int n_verts, int n_clusters, int B,
                       int p, const float* __restrict__ cen, const float* __restrict__ half,
                       const float* __restrict__ aabb, const int* __restrict__ need, const int* __restrict__ cnt,
                       const int* __restrict__ list, long long list_cap, float* __restrict__ phi,
                       float* __restrict__ lb_global, float off, int G, int W, int CP2,
                       const int* __restrict__ par, int is_signed) {
  __shared__ float lb_shared[kDistWarps][kMaxSharedClusters];
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const long long gw = (long long)blockIdx.x * kDistWarps + wib, nw = (long long)gridDim.x * kDistWarps;
  float* lb = n_clusters <= kMaxSharedClusters ? lb_shared[wib] : lb_global + gw * n_clusters;
  const int n = cnt[p];
  const float h = 2.f / (float)(G - 1);
  const long long dir = (long long)p * B * G * G * W;
  for (long long t = gw; t < n; t += nw) {
    const long long wl = list[p * list_cap + t];
    const unsigned word = (unsigned)need[dir + wl];
    const unsigned inside_bits = (unsigned)par[dir + wl];  // signed field: the sign of each distance
    const int w = (int)(wl % W);
    long long r = wl / W;
    const int iy = (int)(r % G);
    r /= G;
    const int iz = (int)(r % G);
    const long long b = r / G;
    const long long pb = (long long)p * B + b;
    const float cx = cen[3 * pb], cy = cen[3 * pb + 1], cz = cen[3 * pb + 2], s = half[pb];
    const float* ab = aabb + pb * 6 * CP2;
    const float* vb = v + b * n_verts * 3;
    const float qy = coord((float)iy, off, h), qz = coord((float)iz, off, h);
    for (unsigned rest = word; rest != 0u; rest &= rest - 1u) {
      const int ix = w * 32 + (__ffs(rest) - 1);
      const float qx = coord((float)ix, off, h);
      for (int c = lane; c < n_clusters; c += 32) {
        const float ex = fmaxf(fmaxf(ab[c] - qx, qx - ab[3 * CP2 + c]), 0.f);
        const float ey = fmaxf(fmaxf(ab[CP2 + c] - qy, qy - ab[4 * CP2 + c]), 0.f);
        const float ez = fmaxf(fmaxf(ab[2 * CP2 + c] - qz, qz - ab[5 * CP2 + c]), 0.f);
        lb[c] = ex * ex + ey * ey + ez * ez;
      }
      __syncwarp();
      float best = inf();
      while (true) {
        // the kDistK clusters of smallest bound (warp argmins), removed from the bounds
        int sel[kDistK];
        float sel_lb[kDistK];
#pragma unroll
        for (int k = 0; k < kDistK; ++k) {
          float m = inf();
          int mi = 0x7fffffff;
          for (int c = lane; c < n_clusters; c += 32) {
            const float x = lb[c];
            if (x < m) {
              m = x;
              mi = c;
            }
          }
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) {
            const float m2 = __shfl_xor_sync(h4d::kFullMask, m, o);
            const int i2 = __shfl_xor_sync(h4d::kFullMask, mi, o);
            if (m2 < m || (m2 == m && i2 < mi)) {
              m = m2;
              mi = i2;
            }
          }
          sel[k] = mi;
          sel_lb[k] = m;
          __syncwarp();
          if (lane == 0 && m < inf()) lb[mi] = inf();
          __syncwarp();
        }
        if (!(sel_lb[0] < best)) break;  // warp-uniform: no remaining bound below the best distance
        float d2 = inf();
#pragma unroll
        for (int k = 0; k < kDistK; ++k) {
          if (!(sel_lb[k] < best)) continue;
          const int fo = sel[k] * kCS + lane;
          const int i0 = f[3 * fo], i1 = f[3 * fo + 1], i2 = f[3 * fo + 2];
          d2 = fminf(d2, pt_tri_d2(qx, qy, qz, nrm(vb[3 * i0], cx, s), nrm(vb[3 * i0 + 1], cy, s),
                                   nrm(vb[3 * i0 + 2], cz, s), nrm(vb[3 * i1], cx, s), nrm(vb[3 * i1 + 1], cy, s),
                                   nrm(vb[3 * i1 + 2], cz, s), nrm(vb[3 * i2], cx, s), nrm(vb[3 * i2 + 1], cy, s),
                                   nrm(vb[3 * i2 + 2], cz, s)));
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) d2 = fminf(d2, __shfl_xor_sync(h4d::kFullMask, d2, o));
        best = fminf(best, d2);
      }
      if (lane == 0) {
        const float d = sqrtf(best);
        phi[((pb * G + iz) * G + iy) * G + ix] = (is_signed && !(inside_bits & (1u << (ix & 31)))) ? -d : d;
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(kBlock)
    h4d_collision_sample(const float* __restrict__ q, int n_q, int B, int p, const float* __restrict__ cen,
                         const float* __restrict__ half, const int* __restrict__ act, const int* __restrict__ need,
                         const float* __restrict__ phi, float* __restrict__ part, float* __restrict__ grad,
                         int need_grad, int G, int W, int nblk, int is_signed, const int* __restrict__ par,
                         float margin, float taper) {
  __shared__ float red[kBlock / 32];
  const int b = blockIdx.x / nblk, blk = blockIdx.x % nblk;
  const long long pb = (long long)p * B + b;
  const int vo = blk * kBlock + threadIdx.x;
  const bool ok = vo < n_q;
  float val = 0.f, gx = 0.f, gy = 0.f, gz = 0.f;
  float vs = 0.f, gsx = 0.f, gsy = 0.f, gsz = 0.f;  // taper: the signed interpolation
  const float hg = 0.5f * (float)(G - 1);
  const float s = half[pb];
  if (ok && act[pb]) {
    const float cx = cen[3 * pb], cy = cen[3 * pb + 1], cz = cen[3 * pb + 2];
    const float* qv = q + ((long long)b * n_q + vo) * 3;
    const float fx = grid_pos(qv[0], cx, s, hg), fy = grid_pos(qv[1], cy, s, hg), fz = grid_pos(qv[2], cz, s, hg);
    if (fx > -1.f && fx < (float)G && fy > -1.f && fy < (float)G && fz > -1.f && fz < (float)G) {
      const float x0 = floorf(fx), y0 = floorf(fy), z0 = floorf(fz);
      const float tx = fx - x0, ty = fy - y0, tz = fz - z0;
      const int ix0 = (int)x0, iy0 = (int)y0, iz0 = (int)z0;
      bool any_in = false;  // signed field: some corner inside
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int dx = c & 1, dy = (c >> 1) & 1, dz = c >> 2;
        const int ix = ix0 + dx, iy = iy0 + dy, iz = iz0 + dz;
        if (ix < 0 || ix >= G || iy < 0 || iy >= G || iz < 0 || iz >= G) continue;
        const long long wl = ((pb * G + iz) * G + iy) * W + (ix >> 5);
        if (is_signed || taper > 0.f) any_in = any_in || ((unsigned)par[wl] & (1u << (ix & 31))) != 0u;
        if (!((unsigned)need[wl] & (1u << (ix & 31)))) continue;
        float ph = phi[((pb * G + iz) * G + iy) * G + ix];
        const float wx = dx ? tx : 1.f - tx, wy = dy ? ty : 1.f - ty, wz = dz ? tz : 1.f - tz;
        if (taper > 0.f) {
          vs += wx * wy * wz * ph;
          gsx += (dx ? 1.f : -1.f) * wy * wz * ph;
          gsy += (dy ? 1.f : -1.f) * wx * wz * ph;
          gsz += (dz ? 1.f : -1.f) * wx * wy * ph;
          ph = fmaxf(ph, 0.f);  // the inside-only value
        }
        val += wx * wy * wz * ph;
        gx += (dx ? 1.f : -1.f) * wy * wz * ph;
        gy += (dy ? 1.f : -1.f) * wx * wz * ph;
        gz += (dz ? 1.f : -1.f) * wx * wy * ph;
      }
      if (taper > 0.f) {  // weight min(1, (signed + r) / r), 0 from r outside on
        const float r = taper / s, wt = fminf(fmaxf((vs + r) / r, 0.f), 1.f);
        if (wt > 0.f && wt < 1.f) {
          gx = wt * gx + val / r * gsx;
          gy = wt * gy + val / r * gsy;
          gz = wt * gz + val / r * gsz;
        } else {
          gx *= wt;
          gy *= wt;
          gz *= wt;
        }
        val *= wt;
      }
      if (is_signed) {
        if (any_in) val += margin / s;
        if (!(val > 0.f)) val = gx = gy = gz = 0.f;  // relu of the sample
      }
    }
  }
  if (need_grad && ok) {
    const float gs = hg / s;
    float* g = grad + ((long long)b * n_q + vo) * 3;
    g[0] = gx * gs;
    g[1] = gy * gs;
    g[2] = gz * gs;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) val += __shfl_xor_sync(h4d::kFullMask, val, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = val;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < kBlock / 32 ? red[threadIdx.x] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(h4d::kFullMask, t, o);
    if (threadIdx.x == 0) part[(long long)b * nblk + blk] = t;
  }
}
