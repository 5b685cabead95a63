"""`prompt-tree bench`: end-to-end decode throughput of the engine against its baselines, the decode step
against its physical floor, and the sampling job with realistic lengths.

    workloads.py    the prompt trees (one shared prefix; few-shot -> problems -> samples) and the single-level copy
    limit.py        measured ceilings (copy bandwidth, matmul rate) and the roofline limit of a decode run
    hf_baseline.py  Hugging Face transformers `generate` on the engine's own weights
    e2e.py          which rows run in which order, running them, writing e2e.json as rows are produced
    report.py       e2e.md tables and PNG plots from e2e.json
    step.py         --workloads step: one decode step of the real job (sampled, stop strings) against its floor
    job.py          --workloads job: the job per engine (continuous / static / flat / ideal), length budgets
    bench_tokenizer.py  a real BPE tokenizer for the sampled rows (Llama 3's where installed, else trained here)
"""
