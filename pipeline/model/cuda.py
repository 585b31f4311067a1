"""CUDA backend: `kernels.escape_steps` on an NVIDIA GPU, bit-identical for every walker.

One thread per walker. Each thread does exactly what a CPU lane does for its walker: the same
splitmix64 stream, the same popcount minibatches, the same rounds of K steps (a walker that has
not escaped keeps stepping to the end of its round, so a W that stops being finite after the
budget but inside the last round is DIVERGED on both), the same exp. Bit-identity needs the same
IEEE operations in the same order: NVVM/ptxas fuse `a * b + c` into an FMA even without fastmath,
so every multiply and add here goes through libdevice's round-to-nearest `dmul_rn` / `dadd_rn`
(PTX `mul.rn.f64` / `add.rn.f64`, which are never contracted) and the only `fma.rn.f64` are the
explicit ones of `exp_nonpos` (`ptx_report` checks this).

Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, for tests without a GPU) the same kernel
source runs in Python; the primitives are then the CPU kernel's own numba functions (the
simulator's `cuda.fma` is not fused), so the simulator checks the algorithm, the GPU the codegen.
"""

from __future__ import annotations


import numpy as np

from . import kernels
from .kernels import (_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13, _EXP_MIN,
                      _GAMMA, _LN2_HI, _LN2_LO, _LOG2E, _M1, _M2, _S27, _S30, _S31, DIVERGED, LANES,
                      NOT_ESCAPED)

THREADS = 128  # threads per block on a GPU
BLOCKS_PER_SM = 16  # resident blocks per multiprocessor the grid asks for (2048 threads, the H100 maximum)
SIM_THREADS = 32  # the simulator runs one Python thread per CUDA thread: keep blocks small
FMAS_PER_STEP = 30  # explicit fused multiply-adds per step: 2 x exp_nonpos (2 range reduction + 13 Horner)

if not hasattr(np, "row_stack"):
    # numba-cuda <= 0.30.4 registers an overload for np.row_stack at import; numpy 2.5 removed it
    # (it was an alias of np.vstack). Without this alias `import numba.cuda` fails on numpy >= 2.5.
    np.row_stack = np.vstack

try:
    from numba import cuda
    from numba.core import config as _numba_config

    SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
    _IMPORT_ERROR = None
except Exception as e:  # numba-cuda missing or incompatible with this numba/numpy
    cuda = None
    SIMULATOR = False
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"


def unavailable_reason() -> str | None:
    """Why the cuda backend cannot run in this process (None when it can): one line."""
    if cuda is None:
        return (f"numba-cuda is not importable ({_IMPORT_ERROR}); install it with "
                "pip install 'escape-sweep[cuda]'")
    try:
        ok = cuda.is_available()
    except Exception as e:  # driver present but broken
        return f"no usable CUDA GPU ({type(e).__name__}: {e})"
    if not ok:
        return "no usable CUDA GPU in this process (numba.cuda.is_available() is False: no GPU or no driver)"
    return None


def is_available() -> bool:
    """The cuda backend can run here (a GPU, or the simulator)."""
    return unavailable_reason() is None


if cuda is not None:
    if SIMULATOR:
        from numba import njit

        @njit
        def _fma(a, b, c):
            return kernels._fma(a, b, c)

        @njit
        def _mul(a, b):
            return a * b

        @njit
        def _add(a, b):
            return a + b

        @njit
        def _floor(x):
            return np.floor(x)

        @njit
        def _pow2(n):
            return kernels._i64_as_f64((np.int64(n) + 1023) << 52)

        def _popc(x):
            return int(x).bit_count()

        @njit
        def _isnan(x):
            return x != x

        @njit
        def _isfinite(x):
            return np.isfinite(x)

        # uint64 state as numpy scalars (numba boxes uint64 results as Python ints)
        def _next(st):
            return np.uint64((int(st) + int(_GAMMA)) & 0xFFFFFFFFFFFFFFFF)

        def _mix64(z):
            return np.uint64(kernels.mix64(np.uint64(z)))

        def _walker_state(key, index):
            return np.uint64(kernels.walker_state(np.uint64(key), np.int64(index)))

    else:
        from numba.cuda import libdevice

        _fma = libdevice.fma
        _mul = libdevice.dmul_rn
        _add = libdevice.dadd_rn
        _floor = libdevice.floor

        @cuda.jit(device=True, forceinline=True)
        def _pow2(n):
            return libdevice.longlong_as_double((np.int64(n) + 1023) << 52)

        @cuda.jit(device=True, forceinline=True)
        def _popc(x):
            return libdevice.popcll(np.int64(x))

        @cuda.jit(device=True, forceinline=True)
        def _isnan(x):
            return x != x

        @cuda.jit(device=True, forceinline=True)
        def _isfinite(x):
            return libdevice.isfinited(x) != 0

        @cuda.jit(device=True, forceinline=True)
        def _next(st):
            return st + _GAMMA

        @cuda.jit(device=True, forceinline=True)
        def _mix64(z):
            z = (z ^ (z >> _S30)) * _M1
            z = (z ^ (z >> _S27)) * _M2
            return z ^ (z >> _S31)

        @cuda.jit(device=True, forceinline=True)
        def _walker_state(key, index):
            return _mix64(key ^ _mix64(np.uint64(index) * _GAMMA + _GAMMA))

    _device = cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True)

    @_device
    def _exp_nonpos(x):
        """kernels.exp_nonpos with every operation explicit (no contraction possible)."""
        x = max(x, _EXP_MIN)
        n = _floor(_add(_mul(x, _LOG2E), 0.5))
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
        return _mul(p, _pow2(n))

    @_device
    def _step(x, kk, T, inv_w, pit_coef):
        """One SGD step, the CPU kernel's expression in its evaluation order:
        x - T * (2.0 * a * exp(-(a*a)) + kk * pit_coef * d * exp(-(d*d)))."""
        a = _add(x, -2.0)
        d = _mul(_add(x, -1.0), inv_w)
        g0 = _mul(_mul(2.0, a), _exp_nonpos(-_mul(a, a)))
        gp = _mul(_mul(_mul(kk, pit_coef), d), _exp_nonpos(-_mul(d, d)))
        return _add(x, -_mul(T, _add(g0, gp)))

    _kernel_opts = {} if SIMULATOR else {"cache": True}

    @cuda.jit(**_kernel_opts)
    def _escape_kernel(out, T, steps, start, barrier, inv_w, pit_coef, key, first, count,
                       per_word, nwords, K, mask, ub):
        """out[i] = escape step of walker first + i. Persistent threads: a thread whose walker is done
        takes walker i + gridsize (grid-stride), like a CPU lane's refill, so fast escapes free it."""
        for i in range(cuda.grid(1), count, cuda.gridsize(1)):
            _one_walker(out, i, T, steps, start, barrier, inv_w, pit_coef, key, first, per_word, nwords, K,
                        mask, ub)

    @_device
    def _one_walker(out, i, T, steps, start, barrier, inv_w, pit_coef, key, first, per_word, nwords, K, mask, ub):
        """Walker first + i from start to escape, budget or divergence: the CPU lane's exact steps."""
        state = _walker_state(key, first + i)
        x = start
        esc = NOT_ESCAPED
        done = 0
        nan = False
        word = np.uint64(0)
        left = 0  # steps the current word still feeds (a countdown: no 64-bit modulo on the GPU)
        while True:
            for t in range(K):
                if nwords == 1:
                    if left == 0:  # t % per_word == 0, as K is a multiple of per_word
                        state = _next(state)
                        word = _mix64(state)
                        left = per_word
                    left -= 1
                    kk = np.float64(_popc(word & mask))
                    word = word >> ub
                else:
                    c = 0
                    for q in range(nwords):
                        state = _next(state)
                        z = _mix64(state)
                        if q == nwords - 1:
                            z = z & mask
                        c += _popc(z)
                    kk = np.float64(c)
                x = _step(x, kk, T, inv_w, pit_coef)
                s = done + t + 1
                if x > barrier and s <= steps:
                    esc = s
                    break
                if _isnan(x):  # NaN is absorbing and never > barrier: DIVERGED, whatever follows
                    nan = True
                    break
            done += K
            if esc >= 0 or nan or done >= steps:
                break
        if esc < 0 and (nan or not _isfinite(x)):
            esc = DIVERGED
        out[i] = esc


def round_plan(batch_size: int) -> tuple[int, int, int, np.uint64, np.uint64]:
    """(per_word, nwords, K, mask, shift) exactly as `kernels.escape_steps` derives them."""
    B = int(batch_size)
    if B <= 64:
        per_word, nwords = 64 // B, 1
    else:
        per_word, nwords = 1, (B + 63) // 64
    K = per_word * ((LANES + per_word - 1) // per_word)
    tail_bits = B - 64 * (nwords - 1)
    mask = np.uint64(0xFFFFFFFFFFFFFFFF) if tail_bits == 64 else np.uint64((1 << tail_bits) - 1)
    # the CPU shifts by B (64 for B = 64: that word is never read again); a shift by 64 is
    # undefined in LLVM, so use 0 there -- the value is dead either way
    ub = np.uint64(B if B < 64 else 0)
    return per_word, nwords, K, mask, ub


def _resident_blocks() -> int:
    """Blocks that keep every multiprocessor busy (BLOCKS_PER_SM each); threads then loop over walkers."""
    if SIMULATOR:
        return 4
    return BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT


def _args(T, steps, batch_size, depth, width, start, barrier, key, first, count):
    inv_w = 1.0 / float(width)
    pit_coef = 2.0 * float(depth) * inv_w / int(batch_size)  # as the CPU kernel computes it
    per_word, nwords, K, mask, ub = round_plan(batch_size)
    return (np.float64(T), np.int64(steps), np.float64(start), np.float64(barrier), np.float64(inv_w),
            np.float64(pit_coef), np.uint64(key), np.int64(first), np.int64(count), np.int64(per_word),
            np.int64(nwords), np.int64(K), mask, ub)


def escape_steps(T, steps, batch_size, depth, width, start, barrier, key, first, count):
    """`kernels.escape_steps` on the GPU: the same int64 array (walkers first .. first+count-1)."""
    if cuda is None:
        raise RuntimeError(unavailable_reason())
    count = int(count)
    if count <= 0:
        return np.empty(max(count, 0), np.int64)
    threads = SIM_THREADS if SIMULATOR else THREADS
    out = cuda.device_array(count, np.int64)
    blocks = min((count + threads - 1) // threads, _resident_blocks())
    _escape_kernel[blocks, threads](out, *_args(T, steps, batch_size, depth, width, start, barrier, key,
                                                first, count))
    return out.copy_to_host()


def ptx(cc=(9, 0)) -> str:
    """PTX of the kernel for compute capability `cc` (needs libNVVM, not a GPU; not under the simulator)."""
    if cuda is None or SIMULATOR:
        raise RuntimeError("PTX needs numba-cuda with NVVM, not the simulator")
    from numba import types

    argtypes = (types.int64[::1], types.float64, types.int64, types.float64, types.float64, types.float64,
                types.float64, types.uint64, types.int64, types.int64, types.int64, types.int64, types.int64,
                types.uint64, types.uint64)
    import contextlib
    from unittest import mock

    from numba.cuda import dispatcher

    try:
        cuda.get_current_device()
        patch = contextlib.nullcontext()
    except Exception:  # no GPU here: device functions ask the current device only for its cc
        patch = mock.patch.object(dispatcher, "get_current_device",
                                  lambda: type("Device", (), {"compute_capability": cc})())
    with patch:
        text, _ = cuda.compile_ptx(_escape_kernel.py_func, argtypes, cc=cc)
    return text


def ptx_report(text: str) -> dict:
    """Floating-point instructions of the PTX: every f64 add/mul must carry .rn (so ptxas cannot
    fuse them) and the fma.rn.f64 count must be a multiple of the explicit FMAs of one step."""
    import re

    plain = re.findall(r"^\s*(?:@%p\d+\s+)?((?:add|sub|mul)\.f64)\b", text, re.M)
    rn = re.findall(r"\b((?:add|sub|mul)\.rn\.f64)\b", text)
    fma = len(re.findall(r"\bfma\.rn\.f64\b", text))
    other_fma = re.findall(r"\b(fma\.r[zmp]\.f64|mad\.\w*f64)\b", text)
    ok = not plain and not other_fma and fma > 0 and fma % FMAS_PER_STEP == 0
    return dict(ok=ok, fma_rn_f64=fma, explicit_fmas_per_step=FMAS_PER_STEP, rn_add_mul=len(rn),
                plain_add_mul_f64=len(plain), other_fma=len(other_fma))
