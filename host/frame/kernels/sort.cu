// Stable sort by one column (top-k takes a prefix): a bitonic sort of (key, null flag, row)
// triples over a power-of-two padding. The row number as the last key makes the order stable;
// nulls sort last in both directions, as on the CPU; padding sorts after nulls.
// Float64 keys use IEEE total order (NaN largest), as Arrow's sort does.

__device__ __forceinline__ unsigned long long ordered(unsigned long long v, int kind) {
    if (kind == 1) {  // float64
        long long s = (long long)v;
        s ^= (long long)(((unsigned long long)(s >> 63)) >> 1);
        return (unsigned long long)s ^ 0x8000000000000000ull;
    }
    return v ^ 0x8000000000000000ull;  // int64, booleans, codes: signed order
}

// k1: order key; k2: (null flag << 32) | row, flag 0 value, 1 null, 2 padding.
extern "C" __global__ void sort_keys(const unsigned long long* values, const unsigned char* valid, unsigned int n,
                                     int kind, int descending, unsigned int padded,
                                     unsigned long long* k1, unsigned long long* k2) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < padded; i += gridDim.x * blockDim.x) {
        if (i >= n) {
            k1[i] = 0ull;
            k2[i] = (2ull << 32) | i;
        } else if (valid != nullptr && !valid[i]) {
            k1[i] = 0ull;
            k2[i] = (1ull << 32) | i;
        } else {
            unsigned long long k = ordered(values[i], kind);
            k1[i] = descending ? ~k : k;
            k2[i] = (unsigned long long)i;
        }
    }
}

__device__ __forceinline__ bool before(unsigned long long a1, unsigned long long a2,
                                       unsigned long long b1, unsigned long long b2) {
    unsigned long long fa = a2 >> 32, fb = b2 >> 32;
    if (fa != fb) return fa < fb;
    if (a1 != b1) return a1 < b1;
    return (a2 & 0xFFFFFFFFull) < (b2 & 0xFFFFFFFFull);
}

extern "C" __global__ void bitonic_step(unsigned long long* k1, unsigned long long* k2, unsigned int padded,
                                        unsigned int j, unsigned int k) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < padded; i += gridDim.x * blockDim.x) {
        unsigned int l = i ^ j;
        if (l <= i) continue;
        bool ascending = (i & k) == 0;
        bool swap = ascending ? before(k1[l], k2[l], k1[i], k2[i]) : before(k1[i], k2[i], k1[l], k2[l]);
        if (swap) {
            unsigned long long t1 = k1[i], t2 = k2[i];
            k1[i] = k1[l]; k2[i] = k2[l];
            k1[l] = t1; k2[l] = t2;
        }
    }
}

extern "C" __global__ void sort_rows(const unsigned long long* k2, unsigned int m, unsigned int* rows) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < m; i += gridDim.x * blockDim.x) {
        rows[i] = (unsigned int)(k2[i] & 0xFFFFFFFFull);
    }
}
