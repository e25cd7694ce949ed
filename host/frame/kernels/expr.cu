// Row-wise expressions, fused: the host compiles an expression tree (already type-checked with
// the CPU backend's rules) to a postfix program; one launch evaluates the whole tree per row on a
// small stack, so `(a + b) * 2 > c` reads each column once and writes one result column.
//
// A program is `len` instructions of three int64s: opcode, argument, immediate.
// Values are 8-byte words: int64, float64 bits, booleans 0/1, utf8 dictionary codes.
// Arithmetic that the CPU backend refuses (int64 overflow, float -> int of NaN or out of range)
// sets bit 0 of `*status`: the host then runs the operation on the CPU, which reports the error.

#define STACK 16

enum Op {
    OP_LOAD = 0,       // push column `arg`
    OP_CONST = 1,      // push `imm`
    OP_NULL = 2,       // push null
    OP_ADD_I = 3, OP_SUB_I = 4, OP_MUL_I = 5,
    OP_DIV_I = 6,      // int / int -> float64; divisor 0 -> null
    OP_REM_I = 7,      // divisor 0 -> null
    OP_ADD_F = 8, OP_SUB_F = 9, OP_MUL_F = 10, OP_DIV_F = 11, OP_REM_F = 12,
    OP_I2F = 13,       // top int64 -> float64
    OP_F2I = 14,       // top float64 -> int64, truncating; NaN/out of range -> status
    OP_TO_BOOL_I = 15, // int64 != 0
    OP_TO_BOOL_F = 16, // float64 != 0.0
    OP_CMP_I = 17,     // arg: 0 ==, 1 !=, 2 <, 3 <=, 4 >, 5 >=  (signed int64; booleans, codes)
    OP_CMP_F = 18,     // same on float64 in IEEE total order (NaN largest, -0.0 < 0.0)
    OP_AND = 19, OP_OR = 20, // Kleene logic
    OP_NOT = 21,
    OP_IS_NULL = 22,
    OP_FILL = 23,      // replace a null top by `imm`
    OP_UTF8_CMP = 24,  // top code vs threshold `imm` (see the host's compiler); arg as OP_CMP_I
    OP_UTF8_EQ = 25,   // top code == imm (imm < 0: the literal is not in the dictionary)
    OP_UTF8_NE = 26,
    OP_BOOL_TO_F = 27  // 0/1 -> 0.0/1.0
};

__device__ __forceinline__ long long float_order(unsigned long long bits) {
    long long s = (long long)bits;
    return s ^ (long long)(((unsigned long long)(s >> 63)) >> 1);
}

__device__ __forceinline__ bool compare(int how, long long a, long long b) {
    switch (how) {
        case 0: return a == b;
        case 1: return a != b;
        case 2: return a < b;
        case 3: return a <= b;
        case 4: return a > b;
        default: return a >= b;
    }
}

extern "C" __global__ void eval_program(const long long* program, int len,
                                        const unsigned long long* const* columns,
                                        const unsigned char* const* validity,
                                        unsigned int n, unsigned long long* out, unsigned char* out_valid,
                                        unsigned int* status) {
    for (unsigned int row = blockIdx.x * blockDim.x + threadIdx.x; row < n; row += gridDim.x * blockDim.x) {
        unsigned long long v[STACK];
        bool ok[STACK];
        int top = -1;
        bool failed = false;
        for (int pc = 0; pc < len; pc++) {
            int op = (int)program[3 * pc];
            int arg = (int)program[3 * pc + 1];
            long long imm = program[3 * pc + 2];
            switch (op) {
                case OP_LOAD: {
                    top++;
                    v[top] = columns[arg][row];
                    ok[top] = validity[arg] == nullptr || validity[arg][row] != 0;
                    break;
                }
                case OP_CONST: top++; v[top] = (unsigned long long)imm; ok[top] = true; break;
                case OP_NULL: top++; v[top] = 0ull; ok[top] = false; break;
                case OP_NOT: v[top] = v[top] ? 0ull : 1ull; break;
                case OP_IS_NULL: v[top] = ok[top] ? 0ull : 1ull; ok[top] = true; break;
                case OP_FILL: if (!ok[top]) { v[top] = (unsigned long long)imm; ok[top] = true; } break;
                case OP_I2F: v[top] = (unsigned long long)__double_as_longlong((double)(long long)v[top]); break;
                case OP_BOOL_TO_F: v[top] = (unsigned long long)__double_as_longlong(v[top] ? 1.0 : 0.0); break;
                case OP_F2I: {
                    if (ok[top]) {
                        double x = __longlong_as_double((long long)v[top]);
                        // The int64 range is [-2^63, 2^63): NaN fails both comparisons.
                        if (!(x >= -9223372036854775808.0 && x < 9223372036854775808.0)) {
                            failed = true;
                            ok[top] = false;
                        } else {
                            v[top] = (unsigned long long)(long long)x;
                        }
                    }
                    break;
                }
                case OP_TO_BOOL_I: v[top] = v[top] != 0ull ? 1ull : 0ull; break;
                case OP_TO_BOOL_F: v[top] = __longlong_as_double((long long)v[top]) != 0.0 ? 1ull : 0ull; break;
                case OP_UTF8_CMP: v[top] = compare(arg, (long long)v[top], imm) ? 1ull : 0ull; break;
                case OP_UTF8_EQ: v[top] = (imm >= 0 && (long long)v[top] == imm) ? 1ull : 0ull; break;
                case OP_UTF8_NE: v[top] = (imm >= 0 && (long long)v[top] == imm) ? 0ull : 1ull; break;
                default: {
                    // Binary operators: rhs on top, lhs below it.
                    unsigned long long rb = v[top], lb = v[top - 1];
                    bool rok = ok[top], lok = ok[top - 1];
                    top--;
                    if (op == OP_AND || op == OP_OR) {
                        bool l = lb != 0ull, r = rb != 0ull;
                        bool dominant = op == OP_AND ? false : true;
                        // Kleene: a known dominant operand decides, else null if any is null.
                        if ((lok && l == dominant) || (rok && r == dominant)) {
                            v[top] = dominant ? 1ull : 0ull;
                            ok[top] = true;
                        } else {
                            v[top] = (op == OP_AND) ? 1ull : 0ull;
                            ok[top] = lok && rok;
                        }
                        break;
                    }
                    bool both = lok && rok;
                    ok[top] = both;
                    long long li = (long long)lb, ri = (long long)rb;
                    double lf = __longlong_as_double(li), rf = __longlong_as_double(ri);
                    unsigned long long result = 0ull;
                    switch (op) {
                        case OP_ADD_I: {
                            long long r = (long long)(lb + rb);
                            if (both && ((li ^ r) & (ri ^ r)) < 0) failed = true;
                            result = (unsigned long long)r;
                            break;
                        }
                        case OP_SUB_I: {
                            long long r = (long long)(lb - rb);
                            if (both && ((li ^ ri) & (li ^ r)) < 0) failed = true;
                            result = (unsigned long long)r;
                            break;
                        }
                        case OP_MUL_I: {
                            long long lo = (long long)(lb * rb);
                            long long hi = __mul64hi(li, ri);
                            if (both && hi != (lo >> 63)) failed = true;
                            result = (unsigned long long)lo;
                            break;
                        }
                        case OP_DIV_I:
                            if (ri == 0) ok[top] = false;
                            else result = (unsigned long long)__double_as_longlong((double)li / (double)ri);
                            break;
                        case OP_REM_I:
                            if (ri == 0) ok[top] = false;
                            else if (ri == -1) result = 0ull;  // also i64::MIN % -1, which the CPU refuses
                            else result = (unsigned long long)(li % ri);
                            if (both && ri == -1 && li == (long long)0x8000000000000000ull) failed = true;
                            break;
                        case OP_ADD_F: result = (unsigned long long)__double_as_longlong(lf + rf); break;
                        case OP_SUB_F: result = (unsigned long long)__double_as_longlong(lf - rf); break;
                        case OP_MUL_F: result = (unsigned long long)__double_as_longlong(lf * rf); break;
                        case OP_DIV_F: result = (unsigned long long)__double_as_longlong(lf / rf); break;
                        case OP_REM_F: result = (unsigned long long)__double_as_longlong(fmod(lf, rf)); break;
                        case OP_CMP_I: result = compare(arg, li, ri) ? 1ull : 0ull; break;
                        case OP_CMP_F: result = compare(arg, float_order(lb), float_order(rb)) ? 1ull : 0ull; break;
                        default: failed = true; break;
                    }
                    v[top] = result;
                    break;
                }
            }
        }
        out[row] = ok[0] ? v[0] : 0ull;
        out_valid[row] = ok[0] ? 1 : 0;
        if (failed) atomicOr(status, 1u);
    }
}
