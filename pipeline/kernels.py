"""numba kernels: one cell's walkers from start to escape or budget. Pure arrays in and out.

The hot loop of every sweep. Walkers run in blocks of LANES interleaved lanes that step in
lock-step, so the inner loop over lanes has no branches and LLVM vectorises it (the exp
latency chains of different walkers overlap). Randomness is counter-free and per walker:
walker i of a cell owns a splitmix64 stream seeded by mix(key, i), and each 64-bit word of it
feeds floor(64 / B) minibatches (k = popcount of B bits ~ Binomial(B, 1/2)). So walker i's
escape step depends only on (key, i), never on the block it was computed in.

exp is our own (range reduction + degree-13 polynomial, no fastmath): it vectorises and gives
the same bits on every x86-64/ARM host, unlike libm or SVML.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

NOT_ESCAPED = -1  # censored: still in the pit after the whole budget
DIVERGED = -2  # W stopped being finite before escaping
LANES = 32

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -700.0  # exp(-700) ~ 1e-304: gradients there are zero for every purpose
_INV_FACT = tuple(1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(14))
(_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = _INV_FACT


@intrinsic
def _i64_as_f64(typingctx, x):
    """Reinterpret the bits of an int64 as a float64 (no conversion)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(inline="always")
def mix64(z):
    """splitmix64's finaliser: a bijective 64-bit hash (uint64 -> uint64)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(inline="always")
def walker_state(key, index):
    """Initial splitmix64 state of walker `index` of the cell with stream `key`."""
    return mix64(key ^ mix64(np.uint64(index) * _GAMMA + _GAMMA))


@njit(inline="always")
def exp_nonpos(x):
    """exp(x) for x <= 0 to ~1 ulp: x = n ln2 + r, |r| <= ln2/2, Taylor(13) in r, times 2^n."""
    x = max(x, _EXP_MIN)
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + _C1
    p = p * r + _C0
    return p * _i64_as_f64((np.int64(n) + 1023) << 52)


@njit(cache=True, nogil=True)
def escape_steps(T, steps, batch_size, depth, width, start, barrier, key, first, count):
    """Escape step of walkers first .. first+count-1 of one cell (int64 array of length count).

    Each value is the first step n in [1, steps] with W_n > barrier, NOT_ESCAPED (-1) if none,
    or DIVERGED (-2) if W stopped being finite. W_0 = start and
    W <- W - T (g0(W) + (k / B) gpit(W)), with k = popcount of B fresh random bits.
    """
    out = np.empty(count, np.int64)
    B = batch_size
    inv_w = 1.0 / width
    pit_coef = 2.0 * depth * inv_w / B  # gpit * (k/B) = k * pit_coef * d * exp(-d^2), d = (W-1)/w
    if B <= 64:
        per_word = 64 // B
        nwords = 1
    else:
        per_word = 1
        nwords = (B + 63) // 64
    tail_bits = B - 64 * (nwords - 1)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) if tail_bits == 64 else (np.uint64(1) << np.uint64(tail_bits)) - np.uint64(1)
    ub = np.uint64(B if B <= 64 else 0)

    w = np.empty(LANES)
    esc = np.empty(LANES, np.int64)
    state = np.empty(LANES, np.uint64)
    word = np.empty(LANES, np.uint64)
    kk = np.empty(LANES)
    for b0 in range(0, count, LANES):
        for j in range(LANES):
            w[j] = start
            esc[j] = NOT_ESCAPED
            state[j] = walker_state(key, first + b0 + j)
            word[j] = np.uint64(0)
        used = per_word  # forces a fresh word before the first step
        s = 0
        while s < steps:
            s_end = min(steps, s + 64)
            while s < s_end:
                s += 1
                if nwords == 1:
                    if used == per_word:
                        for j in range(LANES):
                            st = state[j] + _GAMMA
                            state[j] = st
                            word[j] = mix64(st)
                        used = 0
                    for j in range(LANES):
                        wd = word[j]
                        kk[j] = np.float64(_popcount(wd & mask))
                        word[j] = wd >> ub
                    used += 1
                else:
                    for j in range(LANES):
                        c = np.uint64(0)
                        st = state[j]
                        for q in range(nwords):
                            st += _GAMMA
                            z = mix64(st)
                            if q == nwords - 1:
                                z &= mask
                            c += _popcount(z)
                        state[j] = st
                        kk[j] = np.float64(c)
                for j in range(LANES):
                    x = w[j]
                    a = x - 2.0
                    d = (x - 1.0) * inv_w
                    g = 2.0 * a * exp_nonpos(-(a * a)) + kk[j] * pit_coef * d * exp_nonpos(-(d * d))
                    xn = x - T * g
                    w[j] = xn
                    esc[j] = s if (esc[j] < 0) & (xn > barrier) else esc[j]
            done = True
            for j in range(LANES):
                if esc[j] < 0:
                    done = False
            if done:
                break
        n = min(LANES, count - b0)
        for j in range(n):
            e = esc[j]
            if e < 0 and not np.isfinite(w[j]):
                e = DIVERGED
            out[b0 + j] = e
    return out
