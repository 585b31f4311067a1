"""numba kernels: one cell's walkers from start to escape or budget. Pure arrays in and out.

The hot loop of every sweep. LANES walkers are interleaved and step in lock-step, so the
inner loop over lanes has no branches and LLVM vectorises it (the exp latency chains of
different walkers overlap); a lane whose walker is finished takes the next one. Randomness is counter-free and per walker:
walker i of a cell owns a splitmix64 stream seeded by mix(key, i), and each 64-bit word of it
feeds floor(64 / B) minibatches (k = popcount of B bits ~ Binomial(B, 1/2)). So walker i's
escape step depends only on (key, i), never on the block it was computed in.

exp is our own (range reduction + degree-13 polynomial with explicit fused multiply-adds, no
fastmath): it vectorises and gives the same bits on every host, unlike libm or SVML.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

NOT_ESCAPED = -1  # censored: still in the pit after the whole budget
DIVERGED = -2  # W stopped being finite before escaping
LANES = 64

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
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (IEEE fused multiply-add: the same bits on every host)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(fn, args)

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
    r = _fma(-n, _LN2_LO, _fma(-n, _LN2_HI, x))
    p = _C13
    p = _fma(p, r, _C12)
    p = _fma(p, r, _C11)
    p = _fma(p, r, _C10)
    p = _fma(p, r, _C9)
    p = _fma(p, r, _C8)
    p = _fma(p, r, _C7)
    p = _fma(p, r, _C6)
    p = _fma(p, r, _C5)
    p = _fma(p, r, _C4)
    p = _fma(p, r, _C3)
    p = _fma(p, r, _C2)
    p = _fma(p, r, _C1)
    p = _fma(p, r, _C0)
    return p * _i64_as_f64((np.int64(n) + 1023) << 52)


@njit(inline="always")
def gradient(x, k, pit_coef, inv_w):
    """Minibatch gradient g0(W) + (k / B) gpit(W) with pit_coef = 2 depth / (width B), inv_w = 1 / width:
    2 (W - 2) exp(-(W - 2)^2) + k pit_coef d exp(-d^2), d = (W - 1) / width (landscape.g0, gpit)."""
    a = x - 2.0
    d = (x - 1.0) * inv_w
    return 2.0 * a * exp_nonpos(-(a * a)) + k * pit_coef * d * exp_nonpos(-(d * d))


@njit(cache=True, nogil=True)
def escape_steps(T, steps, batch_size, depth, width, start, barrier, key, first, count):
    """Escape step of walkers first .. first+count-1 of one cell (int64 array of length count).

    Each value is the first step n in [1, steps] with W_n > barrier, NOT_ESCAPED (-1) if none,
    or DIVERGED (-2) if W stopped being finite. W_0 = start and
    W <- W - T (g0(W) + (k / B) gpit(W)), with k = popcount of B fresh random bits.

    LANES walkers step together in rounds of K steps (K a multiple of the steps one random word
    feeds, so every lane draws its words at the same moments and the loop stays branch-free); the
    last round is cut to the budget when no busy lane's walker would step past it.
    After each round, lanes whose walker escaped or used up the budget take the next walker, so
    a slow walker never holds the others back.
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
    K = per_word * ((64 + per_word - 1) // per_word)
    tail_bits = B - 64 * (nwords - 1)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) if tail_bits == 64 else (np.uint64(1) << np.uint64(tail_bits)) - np.uint64(1)
    ub = np.uint64(B if B <= 64 else 0)

    w = np.empty(LANES)
    esc = np.empty(LANES, np.int64)
    done_steps = np.zeros(LANES, np.int64)  # steps the lane's walker had made before this round
    wid = np.full(LANES, -1, np.int64)  # walker in the lane (index into out), -1 = idle
    state = np.zeros(LANES, np.uint64)
    word = np.zeros(LANES, np.uint64)
    kk = np.empty(LANES)
    nxt = 0
    active = 0
    for j in range(LANES):
        w[j] = start
        esc[j] = NOT_ESCAPED
        if nxt < count:
            wid[j] = nxt
            state[j] = walker_state(key, first + nxt)
            nxt += 1
            active += 1
    # |step| <= T * 0.86 * (1 + depth / width): with these bounds W stays finite forever, so a walker
    # can only be DIVERGED at T ~ 1e300-style inputs; only there must a round run to its end (below)
    can_cut = T < 1e50 and depth * inv_w < 1e50 and inv_w < 1e50
    while active > 0:
        # a round is K steps, or fewer when every busy lane's walker reaches its budget within it:
        # then no lane carries on past the round, so no random word is split and no step is wasted.
        # (A walker not escaped is DIVERGED if W is not finite at the end of its last whole round:
        # where W provably stays finite, cutting that round changes nothing.)
        R = K
        if can_cut:
            R = 0
            for j in range(LANES):
                if wid[j] >= 0:
                    R = max(R, steps - done_steps[j])
            R = min(R, K)
        for t in range(R):
            if nwords == 1:
                if t % per_word == 0:
                    for j in range(LANES):
                        st = state[j] + _GAMMA
                        state[j] = st
                        word[j] = mix64(st)
                for j in range(LANES):
                    wd = word[j]
                    kk[j] = np.float64(_popcount(wd & mask))
                    word[j] = wd >> ub
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
                xn = x - T * gradient(x, kk[j], pit_coef, inv_w)
                w[j] = xn
                s = done_steps[j] + t + 1
                esc[j] = s if (esc[j] < 0) & (xn > barrier) & (s <= steps) else esc[j]
        for j in range(LANES):
            done_steps[j] += R
            if wid[j] >= 0 and (esc[j] >= 0 or done_steps[j] >= steps):
                e = esc[j]
                if e < 0 and not np.isfinite(w[j]):
                    e = DIVERGED
                out[wid[j]] = e
                if nxt < count:
                    wid[j] = nxt
                    state[j] = walker_state(key, first + nxt)
                    nxt += 1
                else:
                    wid[j] = -1
                    active -= 1
                w[j] = start
                esc[j] = NOT_ESCAPED
                done_steps[j] = 0
    return out


@njit(cache=True, nogil=True)
def summarize_into(esc, budgets, edges, c, n_diverged, n_escaped, exposure, hist):
    """Add one cell's walkers (esc, from escape_steps) into row c of the additive counts; return the
    walker-steps simulated, sum of min(escape step, max budget) (censored and diverged: the budget).

    n_escaped[c, s] = #(1 <= esc <= budgets[s]); exposure[c, s] = sum min(esc, budgets[s]) over the
    non-diverged walkers; hist[c, i] = #(edges[i] <= esc < edges[i+1]). No sort, no np.histogram."""
    nb = budgets.size
    nh = edges.size - 1
    smax = 0
    for s in range(nb):
        smax = max(smax, budgets[s])
    ws = 0
    for i in range(esc.size):
        e = esc[i]
        if e > 0:
            ws += min(e, smax)
            for s in range(nb):
                b = budgets[s]
                if e <= b:
                    n_escaped[c, s] += 1
                    exposure[c, s] += e
                else:
                    exposure[c, s] += b
            if nh > 0 and edges[0] <= e < edges[nh]:
                hist[c, np.searchsorted(edges, e, side="right") - 1] += 1
        else:
            ws += smax
            if e == DIVERGED:
                n_diverged[c] += 1
            else:
                for s in range(nb):
                    exposure[c, s] += budgets[s]
    return ws


@njit(cache=True, nogil=True)
def run_cells(T, batch_size, depth, width, start, barrier, keys, first, count, budgets, edges):
    """Walkers first .. first+count-1 of every cell (arrays over cells), summarized as they come:
    (n_diverged[c], n_escaped[c, s], exposure[c, s], hist[c, i], walker_steps). One call per task,
    no Python between cells and no GIL held, so worker threads run in parallel."""
    n = T.size
    nb = budgets.size
    nh = max(edges.size - 1, 0)
    smax = 0
    for s in range(nb):
        smax = max(smax, budgets[s])
    n_diverged = np.zeros(n, np.int64)
    n_escaped = np.zeros((n, nb), np.int64)
    exposure = np.zeros((n, nb), np.int64)
    hist = np.zeros((n, nh), np.int64)
    ws = 0
    for c in range(n):
        esc = escape_steps(T[c], smax, batch_size[c], depth[c], width[c], start[c], barrier[c], keys[c],
                           first, count)
        ws += summarize_into(esc, budgets, edges, c, n_diverged, n_escaped, exposure, hist)
    return n_diverged, n_escaped, exposure, hist, ws
