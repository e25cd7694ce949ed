// Slice/concat/gather family. Every column on the device is 8-byte values (int64, float64 bits,
// booleans as 0/1, utf8 as codes into a sorted host dictionary) plus one validity byte per row.
// A row index of 0xFFFFFFFF gathers a null.

#define NO_ROW 0xFFFFFFFFu

extern "C" __global__ void gather_u64(const unsigned long long* src, const unsigned char* src_valid,
                                      const unsigned int* rows, unsigned int m,
                                      unsigned long long* dst, unsigned char* dst_valid) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < m; i += gridDim.x * blockDim.x) {
        unsigned int r = rows[i];
        if (r == NO_ROW) {
            dst[i] = 0ull;
            dst_valid[i] = 0;
        } else {
            dst[i] = src[r];
            dst_valid[i] = src_valid == nullptr ? 1 : src_valid[r];
        }
    }
}

// Rewrites utf8 codes through `mapping` (old code -> code in a merged dictionary), for concat.
extern "C" __global__ void remap_codes(unsigned long long* codes, const unsigned char* valid, unsigned int n,
                                       const unsigned long long* mapping) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (valid == nullptr || valid[i]) {
            codes[i] = mapping[codes[i]];
        }
    }
}

extern "C" __global__ void fill_u32(unsigned int* dst, unsigned int n, unsigned int value) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dst[i] = value;
    }
}

extern "C" __global__ void fill_u64(unsigned long long* dst, unsigned int n, unsigned long long value) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dst[i] = value;
    }
}

// Validity of every row set (for a column uploaded without nulls that must be concatenated with
// one that has them).
extern "C" __global__ void fill_u8(unsigned char* dst, unsigned int n, unsigned char value) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dst[i] = value;
    }
}
