"""A weight-streaming GEMM for decode's few rows: y[M, N] = x[M, K] @ w[N, K]^T, M small (1-256).

Why: at decode batch 128 the no-attention step is 1.32x its physical floor on the H200, and cuBLAS's GEMMs are
where it goes (docs/benchmarks.md, "Where the decode step's remaining time goes"). They stream the 16 GB of
weights at 3.18 TB/s on average against 4.24 TB/s for a plain copy: the lm_head (128256 rows) reaches 3.85, the
small q/k/v and o projections 2.85 and 2.55. With M small, a GEMM is a weight copy with a little arithmetic per
byte, so its time is set by how many weight tiles are in flight and how evenly the multiprocessors share them.
This kernel makes those two things explicit knobs, to be measured against cuBLAS (tools/gemm_sweep.py):
- the weight is the MMA's "A" operand: one program owns a BLOCK_N x BLOCK_K weight tile per step and the batch is
  the MMA's narrow side (BLOCK_M down to 16), so few rows waste no tensor-core work on padding;
- split-K (SPLIT programs share one output tile, each summing K / SPLIT), so a projection with few output rows
  (o: 4096) still spreads over every multiprocessor; partials are written in fp32 and summed in a fixed order by
  a second kernel, so results do not depend on timing (no atomics);
- num_stages: how many weight tiles each program keeps in flight.

Measured on an H100 (docs/benchmarks.md, "The skinny GEMM on an H100"): 3-14% faster than cuBLAS per GEMM at
1-64 rows, 0.78-1.05x at 96-128; the step 4-7% faster at batches 8-32. Only the wins ship (gemm_tables/).

Numerics: products accumulate in fp32 and the output rounds once to x's dtype, as cuBLAS does; the two differ only
in the order of the fp32 sums. `linear_torch` (F.linear) is the reference of tests/test_skinny_gemm.py.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from prompt_tree.config import ModelConfig
from prompt_tree.kernels.launch import DirectLauncher
from prompt_tree.kernels.options import in_graph_path

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class SkinnyConfig:
    """One launch configuration. block_k * split must divide K (checked at the call)."""
    block_n: int = 128
    block_k: int = 64
    split: int = 1
    num_stages: int = 4
    num_warps: int = 4
    tma: bool = False  # fetch tiles with the bulk tensor copy engine (Hopper's TMA) instead of per-thread loads

    def __post_init__(self) -> None:
        for name in ("block_n", "block_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"SkinnyConfig.{name} must be a power of two >= 16, not {v!r}")
        if not isinstance(self.split, int) or self.split < 1:
            raise ValueError(f"SkinnyConfig.split must be an int >= 1, not {self.split!r}")
        if self.tma and max(self.block_n, self.block_k) > 256:
            raise ValueError(f"SkinnyConfig: a TMA tile side is at most 256 elements, not {self.block_n} x "
                             f"{self.block_k}")
        if self.num_stages not in range(1, 9) or self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"SkinnyConfig: num_stages 1-8 and num_warps a power of two up to 16, not "
                             f"{self.num_stages!r} / {self.num_warps!r}")


CONFIG_FIELDS = tuple(f.name for f in fields(SkinnyConfig))


def config_of(row: dict) -> SkinnyConfig:
    """The configuration named by a sweep row or a table entry (its CONFIG_FIELDS keys; a row without "tma",
    from a sweep before the TMA kernel, used pointer loads)."""
    return SkinnyConfig(**{f: bool(row.get(f, False)) if f == "tma" else row[f] for f in CONFIG_FIELDS})


def block_m_for(m: int) -> int:
    """The MMA's narrow side for m rows: the next power of two, at least 16 (the tensor cores' smallest), at most
    128 (more rows take several tiles; past a few hundred rows the GEMM is compute-bound and cuBLAS's)."""
    return min(128, max(16, triton.next_power_of_2(max(m, 1))))


@triton.jit
def _skinny_kernel(X, W, Y, M, N, K, k_per_split, stride_xm, stride_wn, stride_ys, stride_ym,
                   BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (n, s, m): acc[BLOCK_N, BLOCK_M] = w[n tile, K slice s] @ x[m tile, K slice s]^T, stored transposed
    into Y[s] (the output itself when there is one slice, else an fp32 partial)."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    n_ok = rn < N
    m_ok = rm < M
    k0 = pid_s * k_per_split
    w_ptrs = W + rn[:, None].to(tl.int64) * stride_wn + (k0 + rk)[None, :]
    x_ptrs = X + rm[None, :].to(tl.int64) * stride_xm + (k0 + rk)[:, None]
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for _ in range(0, k_per_split, BLOCK_K):  # k_per_split is a multiple of BLOCK_K (the wrapper checks)
        w = tl.load(w_ptrs, mask=n_ok[:, None], other=0.0)
        x = tl.load(x_ptrs, mask=m_ok[None, :], other=0.0)
        if X.dtype.element_ty == tl.float32:  # fp32 models: full fp32 products, as F.linear (no TF32)
            acc = tl.dot(w, x, acc, input_precision="ieee")
        else:
            acc = tl.dot(w, x, acc)
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
    y_ptrs = Y + pid_s.to(tl.int64) * stride_ys + rm[None, :].to(tl.int64) * stride_ym + rn[:, None]  # > 2^31 at large M
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=n_ok[:, None] & m_ok[None, :])


@triton.jit
def _skinny_tma_kernel(W_DESC, X_DESC, Y, M, N, k_per_split, stride_ys, stride_ym,
                       BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr):
    """_skinny_kernel with both tiles fetched by the bulk tensor copy engine (TMA descriptors made on the host):
    out-of-range weight rows and batch rows come back as zeros, so the loop has no masks."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    n0 = pid_n * BLOCK_N
    m0 = pid_m * BLOCK_M
    k0 = pid_s * k_per_split
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k in range(k0, k0 + k_per_split, BLOCK_K):
        w = W_DESC.load([n0, k])
        x = X_DESC.load([m0, k])
        if IEEE:  # fp32 inputs (the partials' dtype says nothing about the inputs')
            acc = tl.dot(w, x.T, acc, input_precision="ieee")
        else:
            acc = tl.dot(w, x.T, acc)
    rn = n0 + tl.arange(0, BLOCK_N)
    rm = m0 + tl.arange(0, BLOCK_M)
    y_ptrs = Y + pid_s.to(tl.int64) * stride_ys + rm[None, :].to(tl.int64) * stride_ym + rn[:, None]  # > 2^31 at large M
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=(rn < N)[:, None] & (rm < M)[None, :])


@triton.jit
def _split_sum_kernel(P, Y, M, N, stride_ps, stride_pm, stride_ym, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """Y[m, :] = sum over s of P[s, m, :], in slice order (fixed, so the result does not depend on timing)."""
    m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    p = P + m.to(tl.int64) * stride_pm + cols
    for _ in tl.static_range(SPLIT):
        acc += tl.load(p, mask=ok, other=0.0)
        p += stride_ps  # pointer arithmetic is 64-bit (stride_ps may be specialised to a constant 1)
    tl.store(Y + m.to(tl.int64) * stride_ym + cols, acc.to(Y.dtype.element_ty), mask=ok)


_LAUNCH_GEMM = DirectLauncher(_skinny_kernel)
_LAUNCH_SUM = DirectLauncher(_split_sum_kernel)
_LAUNCH_TMA = DirectLauncher(_skinny_tma_kernel)
SUM_BLOCK = 1024


def projection_shapes(c: ModelConfig) -> dict[str, tuple[int, int]]:
    """(N, K) of each decode GEMM of a model: the fused q/k/v and gate/up as the engine runs them."""
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    return {"qkv": (q + 2 * kv, c.hidden_size), "o": (c.hidden_size, q),
            "gate_up": (2 * c.intermediate_size, c.hidden_size), "down": (c.hidden_size, c.intermediate_size),
            "lm_head": (c.vocab_size, c.hidden_size)}


def linear_torch(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The reference: F.linear without bias. x: [M, K]; w: [N, K]. Returns [M, N] in x's dtype."""
    return F.linear(x, w)


def _tma_aligned(x: torch.Tensor, w: torch.Tensor) -> bool:
    """A TMA descriptor's rule: 16-byte aligned base addresses and row strides (x's rows, w's K)."""
    el = x.element_size()
    return not ((x.stride(0) * el) % 16 or (x.shape[1] * el) % 16 or x.data_ptr() % 16 or w.data_ptr() % 16)


def skinny_linear(x: torch.Tensor, w: torch.Tensor, config: SkinnyConfig = SkinnyConfig()) -> torch.Tensor:
    """x @ w^T by the Triton kernel. x: [M, K] with contiguous K; w: [N, K] contiguous; same dtype and device.

    Returns y [M, N] in x's dtype. On CPU it runs only under TRITON_INTERPRET=1 (tests)."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"skinny_linear takes x [M, K] and w [N, K], got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.dtype != w.dtype or x.dtype not in _DTYPES or x.device != w.device:
        raise ValueError(f"x and w must share a device and one of {_DTYPES}: got {x.dtype} on {x.device}, "
                         f"{w.dtype} on {w.device}")
    if x.stride(1) != 1 or not w.is_contiguous():
        raise ValueError(f"x needs contiguous features and w must be contiguous (strides {x.stride()}, "
                         f"{w.stride()})")
    M, K = x.shape
    N = w.shape[0]
    if K % (config.block_k * config.split):
        raise ValueError(f"K = {K} is not a multiple of block_k * split = {config.block_k * config.split}: "
                         f"pick a config whose K slices tile K exactly")
    if config.tma and not _tma_aligned(x, w):
        raise ValueError("tma=True needs 16-byte aligned rows and base addresses of x and w (a TMA descriptor's "
                         "rule): use tma=False for this layout")
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    bm = block_m_for(M)
    grid = (triton.cdiv(N, config.block_n), config.split, triton.cdiv(M, bm))
    consts = dict(BLOCK_N=config.block_n, BLOCK_M=bm, BLOCK_K=config.block_k)
    k_per_split = K // config.split
    out = y if config.split == 1 else torch.empty((config.split, M, N), dtype=torch.float32, device=x.device)
    stride_s = 0 if config.split == 1 else out.stride(0)
    launch = dict(num_warps=config.num_warps, num_stages=config.num_stages)
    if config.tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        w_desc = TensorDescriptor.from_tensor(w, [config.block_n, config.block_k])
        x_desc = TensorDescriptor.from_tensor(x, [bm, config.block_k])
        _LAUNCH_TMA(grid, (w_desc, x_desc, out, M, N, k_per_split, stride_s, out.stride(-2)),
                    dict(consts, IEEE=x.dtype == torch.float32), **launch)
    else:
        _LAUNCH_GEMM(grid, (x, w, out, M, N, K, k_per_split, x.stride(0), w.stride(0), stride_s, out.stride(-2)),
                     consts, **launch)
    if config.split == 1:
        return y
    part = out
    _LAUNCH_SUM((M, triton.cdiv(N, SUM_BLOCK)), (part, y, M, N, part.stride(0), part.stride(1), y.stride(0)),
                dict(SPLIT=config.split, BLOCK=SUM_BLOCK), num_warps=4, num_stages=1)
    return y


# ----- where it runs: a table of measured configurations per device, consulted by dense_linear

GEMM_MODES = ("auto", "cublas")
MAX_ROWS = 128  # past one row tile the weight would be streamed once per tile: cuBLAS's territory
TABLE_FORMAT = "prompt-tree gemm table 1"
SHIPPED_DIR = Path(__file__).with_name("gemm_tables")  # one table_document per device, from tools/gemm_sweep.py
_TABLES: dict[str, dict[tuple[int, int, int], SkinnyConfig]] = {}  # device name -> {(N, K, M): config}
_DEVICE_NAMES: dict[int, str] = {}
_shipped_loaded = False
_LOAD_LOCK = threading.Lock()


def register_table(device_name: str, entries: dict[tuple[int, int, int], SkinnyConfig]) -> None:
    """Run the GEMMs (N, K) at exactly M rows on the skinny kernel with these configurations on devices named
    `device_name` (torch.cuda.get_device_name); later entries replace earlier ones. Exact M: a configuration
    measured at 128 rows says nothing about 100 (cuBLAS picks another kernel there); decode batches are padded
    to graph buckets, so the sweep measures the buckets themselves."""
    for key, cfg in entries.items():
        if len(key) != 3 or not all(isinstance(v, int) and v > 0 for v in key) or not isinstance(cfg, SkinnyConfig):
            raise ValueError(f"a table entry is (N, K, M) -> SkinnyConfig, not {key!r} -> {cfg!r}")
        if key[1] % (cfg.block_k * cfg.split):
            raise ValueError(f"table entry {key}: K = {key[1]} is not a multiple of block_k * split of {cfg}")
    _TABLES.setdefault(device_name, {}).update(entries)


def clear_tables() -> None:
    """Forget every table, the shipped ones included: they are not loaded again in this process (the cuBLAS
    baseline of `--gemm-table none`) until reset_tables()."""
    global _shipped_loaded
    with _LOAD_LOCK:
        _TABLES.clear()
        _shipped_loaded = True


def reset_tables() -> None:
    """Forget every table; the shipped ones load again at the next lookup (as in a fresh process)."""
    global _shipped_loaded
    with _LOAD_LOCK:
        _TABLES.clear()
        _shipped_loaded = False


def load_shipped_tables() -> None:
    """Register the tables shipped in prompt_tree/gemm_tables/ (once per process; config_for and registered()
    call it). A table registered before or after (register_table, --gemm-table) wins over a shipped entry of the
    same shape. A shipped file that does not parse raises, naming it, and is tried again at the next lookup."""
    global _shipped_loaded
    if _shipped_loaded:
        return
    with _LOAD_LOCK:  # two threads' first lookups: the second waits for the whole table, not half of it
        if _shipped_loaded:
            return
        shipped: dict[str, dict[tuple[int, int, int], SkinnyConfig]] = {}
        for path in sorted(SHIPPED_DIR.glob("*.json")):
            name, entries = read_table_file(path)
            shipped.setdefault(name, {}).update(entries)
        mine = {name: dict(t) for name, t in _TABLES.items()}
        for name, entries in shipped.items():
            register_table(name, entries)  # its checks (K tiles, key shapes) hold for shipped files too
            register_table(name, mine.get(name, {}))  # what was registered before the first lookup stays on top
        _shipped_loaded = True


def registered() -> dict[str, int]:
    """Entries registered per device name, the shipped tables included (benchmarks record it beside their
    rows)."""
    load_shipped_tables()
    return {name: len(t) for name, t in _TABLES.items() if t}


def _wins(report: dict, min_gain: float) -> dict[tuple[int, int, int], tuple[SkinnyConfig, float]]:
    """Per (N, K, M) of a tools/gemm_sweep.py report: the fastest checked configuration and its gain over cuBLAS,
    where the gain is at least min_gain. Where the sweep re-timed its finalists against cuBLAS in alternation
    (rows marked `retimed`), only those rows decide: the fastest of ~100 noisy single timings is biased low."""
    retimed = {(r["N"], r["K"], r["M"]) for r in report["rows"] if r.get("retimed")}
    best: dict[tuple[int, int, int], dict] = {}
    cublas: dict[tuple[int, int, int], float] = {}
    for r in report["rows"]:
        key = (r["N"], r["K"], r["M"])
        if (key in retimed) != bool(r.get("retimed")):
            continue
        if r["variant"] == "cublas":
            cublas[key] = r["us"]
        elif r["variant"] == "skinny" and r.get("ok") and (key not in best or r["us"] < best[key]["us"]):
            best[key] = r
    out = {}
    for (N, K, M), r in best.items():
        gain = _gain(cublas.get((N, K, M)), r["us"])
        if M <= MAX_ROWS and gain >= min_gain:
            out[(N, K, M)] = (config_of(r), gain)
    return out


def table_from_sweep(report: dict, min_gain: float = 1.03) -> tuple[str, dict[tuple[int, int, int], SkinnyConfig]]:
    """(device name, entries) from tools/gemm_sweep.py's JSON: per (N, K, M), the fastest skinny configuration
    whose output passed the sweep's check, where it beat cuBLAS by at least `min_gain` (a smaller margin is
    inside the run-to-run spread and not worth leaving the vendor's kernel for)."""
    return report["device"], {key: cfg for key, (cfg, _) in _wins(report, min_gain).items()}


def table_document(report: dict, min_gain: float = 1.03) -> dict:
    """The table of a sweep as a file to ship or pass to --gemm-table: its wins (table_from_sweep) with their
    measured gains and the sweep's device and versions. JSON-ready."""
    entries = [{"N": N, "K": K, "M": M, "gain": round(gain, 4), **asdict(cfg)}
               for (N, K, M), (cfg, gain) in sorted(_wins(report, min_gain).items())]
    return {"format": TABLE_FORMAT, "device": report["device"], "torch": report.get("torch"),
            "triton": report.get("triton"), "min_gain": min_gain, "entries": entries}


def read_table(doc: dict) -> tuple[str, dict[tuple[int, int, int], SkinnyConfig]]:
    """(device name, entries) of a table document or of a tools/gemm_sweep.py report."""
    if "rows" in doc:
        return table_from_sweep(doc)
    if doc.get("format") != TABLE_FORMAT:
        raise ValueError(f"format is {doc.get('format')!r}, not {TABLE_FORMAT!r}")
    return doc["device"], {(e["N"], e["K"], e["M"]): config_of(e) for e in doc["entries"]}


def read_table_file(path: str | Path) -> tuple[str, dict[tuple[int, int, int], SkinnyConfig]]:
    """read_table of the JSON at `path`; ValueError naming the file when it is neither kind of file."""
    try:
        with open(path, encoding="utf-8") as f:
            return read_table(json.load(f))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a GEMM table (skinny_gemm.table_document) or a tools/gemm_sweep.py report "
                         f"({e})") from e


def register_sweep(path: str) -> tuple[str, int]:
    """Register the table at `path` (a tools/gemm_sweep.py report, of which its clear wins, or a table document)
    and return (device name, entries registered). ValueError naming the file when it is neither."""
    try:
        name, entries = read_table_file(path)
        register_table(name, entries)
    except ValueError as e:
        raise ValueError(f"--gemm-table {e}") from e
    return name, len(entries)


def _gain(cublas_us: float | None, skinny_us: float) -> float:
    """cuBLAS time / skinny time (0 where cuBLAS was not measured)."""
    return 0.0 if cublas_us is None else cublas_us / skinny_us


def _device_name(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DEVICE_NAMES:
        _DEVICE_NAMES[index] = torch.cuda.get_device_name(index)
    return _DEVICE_NAMES[index]


def config_for(x: torch.Tensor, w: torch.Tensor) -> SkinnyConfig | None:
    """The table's configuration for x @ w^T on x's device, or None (cuBLAS): CUDA, fp16/bf16, at most MAX_ROWS
    rows, on the launch path of a CUDA graph (under capture, or in the warm-up before one inside
    kernels.cuda_graph_path(), which compiles the kernel outside the capture), and an entry for (N, K, M) on a
    device of this name.

    Only there: the table was measured inside graphs, where a launch's host time is paid once. Called eagerly
    (prefill, an engine with cuda_graphs=False) one launch costs tens of microseconds of host time against a few
    for cuBLAS's, more than the one to four microseconds of GPU time it saves per GEMM. So a warm-up before a
    capture must run inside cuda_graph_path() to compile the kernel there (an eager warm-up would leave the
    compilation to the capture), as the engine's model runner and tools/bench_dense.py do."""
    if not x.is_cuda or x.dtype not in (torch.float16, torch.bfloat16) or x.shape[0] > MAX_ROWS:
        return None
    if not (in_graph_path() or torch.cuda.is_current_stream_capturing()):
        return None
    load_shipped_tables()
    if not _TABLES:
        return None
    table = _TABLES.get(_device_name(x.device))
    if not table:
        return None
    return table.get((w.shape[0], w.shape[1], x.shape[0]))


def dense_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, mode: str = "auto"
                 ) -> torch.Tensor:
    """F.linear(x, w, bias), on the skinny kernel where mode is "auto" and the table has a configuration for it
    (config_for) and there is no bias (cuBLAS adds a bias before its one rounding; adding it after ours would
    round twice). x: [M, K]; w: [N, K]. Returns [M, N]."""
    if mode != "cublas" and bias is None and x.dim() == 2:
        cfg = config_for(x, w)
        if cfg is not None and x.stride(1) == 1 and w.is_contiguous() and (not cfg.tma or _tma_aligned(x, w)):
            return skinny_linear(x, w, cfg)
    return F.linear(x, w, bias)
