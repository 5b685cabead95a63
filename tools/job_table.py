"""Print a job.json's rows as a short table (the last lines of a device call).

    python3 tools/job_table.py $OUT/job.json
"""
import json
import sys


def jit(row: dict) -> str:
    """Triton compiles during the captures' eager steps (capture_log's fourth field; '-' where not logged)."""
    log = row.get("capture_log") or []
    return str(sum(len(c[3]) for c in log)) if log and all(len(c) > 3 for c in log) else "-"


def pjit(row: dict) -> str:
    """Triton compiles inside prefill calls and first tokens ('-' where not logged)."""
    return "-" if row.get("prefill_compiles") is None else str(len(row["prefill_compiles"]))


def gib(row: dict, key: str) -> str:
    return "-" if row.get(key) is None else f"{row[key] / 2**30:.1f}"


def main(path: str) -> None:
    rows = json.load(open(path, encoding="utf-8"))["rows"]
    print(f"{'model':13s} {'shape':6s} {'lengths':9s} {'engine':16s} {'logits':6s} {'P x S':>9s} {'sec':>7s} {'nocap':>7s} "
          f"{'tok/s':>8s} {'batch':>6s} {'occ':>5s} {'pre':>4s} {'cap':>4s} {'dev_s':>7s} {'fill_s':>6s} "
          f"{'host_s':>6s} "
          f"{'jit':>4s} {'pjit':>4s} {'calls':>5s} {'rebld':>5s} {'rb_s':>5s} {'kv_GiB':>6s} {'bud_GiB':>7s} {'ws_GiB':>6s}")
    for r in rows:
        def f(k, d=1):
            v = r.get(k)
            return "-" if v is None else f"{v:.{d}f}"
        print(f"{r['model']:13s} {r['shape']:6s} {r['lengths']:9s} {r['engine']:16s} {r.get('logits', 'flat'):6s} "
              f"{str(r['problems']) + 'x' + str(r['samples']):>9s} {f('seconds'):>7s} {f('seconds_no_captures'):>7s} "
              f"{f('tokens_per_s', 0):>8s} {f('mean_batch', 0):>6s} {f('kv_occupancy', 2):>5s} "
              f"{str(r.get('preemptions')):>4s} {str(r.get('captures')):>4s} {f('decode_device_s'):>7s} "
              f"{f('prefill_s'):>6s} {f('host_s'):>6s} {jit(r):>4s} {pjit(r):>4s} "
              f"{str(r.get('prefill_calls', '-')):>5s} "
              f"{str(r.get('rebuilds', '-')):>5s} {f('rebuild_s'):>5s} "
              f"{gib(r, 'kv_bytes'):>6s} {gib(r, 'budget_bytes'):>7s} {gib(r, 'workspace_bytes'):>6s}"
              f"{'  ' + r['skipped'][:60] if r.get('skipped') else ''}")


if __name__ == "__main__":
    main(sys.argv[1])
