// Hash group-by. Keys are 8-byte words (int64, timestamp, boolean 0/1, utf8 codes of a sorted
// dictionary). A global open-addressing table of `cap` slots (a power of two) gives every row a
// slot; slot `cap` holds the null key and slot `cap + 1` the key equal to the EMPTY marker.
// The host numbers the used slots by first row (groups in order of first appearance, as on the
// CPU), then the aggregation kernels accumulate per dense group id. For few groups the count and
// sum kernels first aggregate in shared memory per block and add each block's partials once.

#define EMPTY 0xFFFFFFFFFFFFFFFFull
#define NO_ROW 0xFFFFFFFFu

__device__ __forceinline__ unsigned long long mix(unsigned long long k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

extern "C" __global__ void gb_insert(const unsigned long long* keys, const unsigned char* key_valid, unsigned int n,
                                     unsigned long long* table, unsigned int cap,
                                     unsigned int* slot_of_row, unsigned int* first_row, unsigned int* last_row) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        unsigned int slot;
        if (key_valid != nullptr && !key_valid[i]) {
            slot = cap;
        } else if (keys[i] == EMPTY) {
            slot = cap + 1;
        } else {
            unsigned long long k = keys[i];
            slot = (unsigned int)(mix(k) & (unsigned long long)(cap - 1));
            while (true) {
                unsigned long long seen = atomicCAS(&table[slot], EMPTY, k);
                if (seen == EMPTY || seen == k) break;
                slot = (slot + 1) & (cap - 1);
            }
        }
        slot_of_row[i] = slot;
        atomicMin(&first_row[slot], i);
        atomicMax(&last_row[slot], i);
    }
}

// `last_row` starts at 0 in the table; a slot is used iff its first_row is set.
extern "C" __global__ void gb_dense_ids(const unsigned int* slot_of_row, const unsigned int* slot_to_group,
                                        unsigned int n, unsigned int* group_of_row) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        group_of_row[i] = slot_to_group[slot_of_row[i]];
    }
}

// Rows (values may be null: `valid`) per group. With `count_all`, every row counts.
extern "C" __global__ void gb_count(const unsigned int* group_of_row, const unsigned char* valid, unsigned int n,
                                    unsigned long long* counts) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) atomicAdd(&counts[group_of_row[i]], 1ull);
    }
}

// Int64 sums split in 32-bit halves so that the host can add them exactly in 128 bits and
// report an overflow instead of wrapping: sum = hi * 2^32 + lo.
__device__ __forceinline__ void split(unsigned long long v, unsigned long long* lo, unsigned long long* hi) {
    *lo = v & 0xFFFFFFFFull;
    *hi = (unsigned long long)(((long long)v) >> 32);
}

extern "C" __global__ void gb_sum_i64(const unsigned int* group_of_row, const unsigned long long* values,
                                      const unsigned char* valid, unsigned int n,
                                      unsigned long long* lo_sums, unsigned long long* hi_sums, unsigned long long* counts) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) {
            unsigned int g = group_of_row[i];
            unsigned long long lo, hi;
            split(values[i], &lo, &hi);
            atomicAdd(&lo_sums[g], lo);
            atomicAdd(&hi_sums[g], hi);
            atomicAdd(&counts[g], 1ull);
        }
    }
}

// `as_int` converts int64 inputs to float64 first (mean of an int64 column).
extern "C" __global__ void gb_sum_f64(const unsigned int* group_of_row, const unsigned long long* values,
                                      const unsigned char* valid, unsigned int n, int as_int,
                                      double* sums, unsigned long long* counts) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) {
            unsigned int g = group_of_row[i];
            double x = as_int ? (double)(long long)values[i] : __longlong_as_double((long long)values[i]);
            atomicAdd(&sums[g], x);
            atomicAdd(&counts[g], 1ull);
        }
    }
}

// Low-cardinality variants: `groups` partial sums live in dynamic shared memory (the host
// checks they fit); each block folds its rows there and adds its partials to global memory once.
extern "C" __global__ void gb_sum_f64_shared(const unsigned int* group_of_row, const unsigned long long* values,
                                             const unsigned char* valid, unsigned int n, int as_int, unsigned int groups,
                                             double* sums, unsigned long long* counts) {
    extern __shared__ unsigned long long shared[];
    double* local_sums = (double*)shared;
    unsigned long long* local_counts = shared + groups;
    for (unsigned int g = threadIdx.x; g < groups; g += blockDim.x) {
        local_sums[g] = 0.0;
        local_counts[g] = 0ull;
    }
    __syncthreads();
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) {
            unsigned int g = group_of_row[i];
            double x = as_int ? (double)(long long)values[i] : __longlong_as_double((long long)values[i]);
            atomicAdd(&local_sums[g], x);
            atomicAdd(&local_counts[g], 1ull);
        }
    }
    __syncthreads();
    for (unsigned int g = threadIdx.x; g < groups; g += blockDim.x) {
        if (local_counts[g] != 0ull) {
            atomicAdd(&sums[g], local_sums[g]);
            atomicAdd(&counts[g], local_counts[g]);
        }
    }
}

extern "C" __global__ void gb_sum_i64_shared(const unsigned int* group_of_row, const unsigned long long* values,
                                             const unsigned char* valid, unsigned int n, unsigned int groups,
                                             unsigned long long* lo_sums, unsigned long long* hi_sums,
                                             unsigned long long* counts) {
    extern __shared__ unsigned long long shared[];
    unsigned long long* local_lo = shared;
    unsigned long long* local_hi = shared + groups;
    unsigned long long* local_counts = shared + 2 * groups;
    for (unsigned int g = threadIdx.x; g < groups; g += blockDim.x) {
        local_lo[g] = 0ull;
        local_hi[g] = 0ull;
        local_counts[g] = 0ull;
    }
    __syncthreads();
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) {
            unsigned int g = group_of_row[i];
            unsigned long long lo, hi;
            split(values[i], &lo, &hi);
            atomicAdd(&local_lo[g], lo);
            atomicAdd(&local_hi[g], hi);
            atomicAdd(&local_counts[g], 1ull);
        }
    }
    __syncthreads();
    for (unsigned int g = threadIdx.x; g < groups; g += blockDim.x) {
        if (local_counts[g] != 0ull) {
            atomicAdd(&lo_sums[g], local_lo[g]);
            atomicAdd(&hi_sums[g], local_hi[g]);
            atomicAdd(&counts[g], local_counts[g]);
        }
    }
}

extern "C" __global__ void gb_count_shared(const unsigned int* group_of_row, const unsigned char* valid, unsigned int n,
                                           unsigned int groups, unsigned long long* counts) {
    extern __shared__ unsigned long long shared[];
    for (unsigned int g = threadIdx.x; g < groups; g += blockDim.x) shared[g] = 0ull;
    __syncthreads();
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) atomicAdd(&shared[group_of_row[i]], 1ull);
    }
    __syncthreads();
    for (unsigned int g = threadIdx.x; g < groups; g += blockDim.x) {
        if (shared[g] != 0ull) atomicAdd(&counts[g], shared[g]);
    }
}

// min/max follow the CPU backend exactly: a group's result is its earliest row holding the
// smallest (largest) non-null value under `<`, except that a NaN first value is kept (nothing
// compares below or above it). `is_float` selects float64 order; -0.0 and 0.0 compare equal.
__device__ __forceinline__ long long order_key(unsigned long long v, int is_float, bool* nan) {
    *nan = false;
    if (!is_float) return (long long)v;
    double x = __longlong_as_double((long long)v);
    if (x != x) { *nan = true; return 0; }
    if (x == 0.0) v = 0ull;
    long long s = (long long)v;
    return s ^ (long long)(((unsigned long long)(s >> 63)) >> 1);
}

extern "C" __global__ void gb_extreme_value(const unsigned int* group_of_row, const unsigned long long* values,
                                            const unsigned char* valid, unsigned int n, int is_float, int want_max,
                                            long long* best, unsigned int* first_valid) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid != nullptr && !valid[i]) continue;
        unsigned int g = group_of_row[i];
        atomicMin(&first_valid[g], i);
        bool nan;
        long long k = order_key(values[i], is_float, &nan);
        if (nan) continue;
        if (want_max) atomicMax(&best[g], k); else atomicMin(&best[g], k);
    }
}

extern "C" __global__ void gb_extreme_row(const unsigned int* group_of_row, const unsigned long long* values,
                                          const unsigned char* valid, unsigned int n, int is_float,
                                          const long long* best, unsigned int* best_row) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid != nullptr && !valid[i]) continue;
        unsigned int g = group_of_row[i];
        bool nan;
        long long k = order_key(values[i], is_float, &nan);
        if (!nan && k == best[g]) atomicMin(&best_row[g], i);
    }
}

// The row whose value a group's min/max takes: NO_ROW (null) without values, the first value
// when it is NaN, else the earliest extreme row.
extern "C" __global__ void gb_pick_extreme(const unsigned int* first_valid, const unsigned int* best_row,
                                           const unsigned long long* values, int is_float, unsigned int groups,
                                           unsigned int* rows) {
    for (unsigned int g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += gridDim.x * blockDim.x) {
        unsigned int f = first_valid[g];
        if (f == NO_ROW) {
            rows[g] = NO_ROW;
        } else {
            double x = __longlong_as_double((long long)values[f]);
            rows[g] = (is_float && x != x) ? f : best_row[g];
        }
    }
}
