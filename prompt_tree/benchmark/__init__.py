"""`prompt-tree bench`: end-to-end decode throughput of the engine against its baselines (issue 6).

    workloads.py    the prompt trees (one shared prefix; few-shot -> problems -> samples) and the single-level copy
    limit.py        measured ceilings (copy bandwidth, matmul rate) and the roofline limit of a decode run
    hf_baseline.py  Hugging Face transformers `generate` on the engine's own weights
    runner.py       which rows run in which order, running them, writing e2e.json as rows are produced
    report.py       e2e.md tables and PNG plots from e2e.json
"""
