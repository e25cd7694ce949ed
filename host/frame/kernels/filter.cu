// Filter: stream compaction of the rows where a boolean column is true (null counts as false).
// Three launches: per-block counts, one exclusive scan of the counts, then every block writes its
// selected row indices at its offset, in row order (a ballot per warp keeps order inside a block).
// Blocks are FILTER_BLOCK threads, one row per thread.

#define FILTER_BLOCK 256
#define WARPS (FILTER_BLOCK / 32)

__device__ __forceinline__ bool selected(const unsigned long long* values, const unsigned char* valid,
                                         unsigned int n, unsigned int i) {
    return i < n && values[i] != 0ull && (valid == nullptr || valid[i] != 0);
}

extern "C" __global__ void filter_count(const unsigned long long* values, const unsigned char* valid,
                                        unsigned int n, unsigned int* block_counts) {
    __shared__ unsigned int warp_counts[WARPS];
    unsigned int i = blockIdx.x * FILTER_BLOCK + threadIdx.x;
    unsigned int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned int ballot = __ballot_sync(0xFFFFFFFFu, selected(values, valid, n, i));
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int total = 0;
        for (int w = 0; w < WARPS; w++) total += warp_counts[w];
        block_counts[blockIdx.x] = total;
    }
}

// Exclusive prefix sum of `counts` into `offsets` (n + 1 entries: the last is the total), by one
// block of 1024 threads walking the array in tiles with a running carry.
extern "C" __global__ void exclusive_scan_u32(const unsigned int* counts, unsigned int n, unsigned int* offsets) {
    __shared__ unsigned int tile[1024];
    __shared__ unsigned int carry;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (unsigned int base = 0; base < n; base += 1024) {
        unsigned int i = base + threadIdx.x;
        unsigned int v = i < n ? counts[i] : 0;
        tile[threadIdx.x] = v;
        __syncthreads();
        // Hillis-Steele inclusive scan of the tile.
        for (unsigned int d = 1; d < 1024; d <<= 1) {
            unsigned int add = threadIdx.x >= d ? tile[threadIdx.x - d] : 0;
            __syncthreads();
            tile[threadIdx.x] += add;
            __syncthreads();
        }
        if (i < n) offsets[i] = carry + tile[threadIdx.x] - v;
        __syncthreads();
        if (threadIdx.x == 1023) carry += tile[1023];
        __syncthreads();
    }
    if (threadIdx.x == 0) offsets[n] = carry;
}

extern "C" __global__ void filter_compact(const unsigned long long* values, const unsigned char* valid,
                                          unsigned int n, const unsigned int* block_offsets, unsigned int* out_rows) {
    __shared__ unsigned int warp_base[WARPS];
    unsigned int i = blockIdx.x * FILTER_BLOCK + threadIdx.x;
    unsigned int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    bool keep = selected(values, valid, n, i);
    unsigned int ballot = __ballot_sync(0xFFFFFFFFu, keep);
    if (lane == 0) warp_base[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int running = block_offsets[blockIdx.x];
        for (int w = 0; w < WARPS; w++) {
            unsigned int c = warp_base[w];
            warp_base[w] = running;
            running += c;
        }
    }
    __syncthreads();
    if (keep) {
        unsigned int before = __popc(ballot & ((1u << lane) - 1u));
        out_rows[warp_base[warp] + before] = i;
    }
}
