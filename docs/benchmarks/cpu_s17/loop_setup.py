"""The generate loop at a GSM8K-like shape on CPU, for host_gc.py and host_parts.py: argv P S MEDIAN CAP [SOURCE]."""
import math, random, sys
import torch

sys.path.insert(0, sys.argv[5] if len(sys.argv) > 5 else "/work/main")
from prompt_tree.benchmark.step import APPS_STOPS  # noqa: E402
from prompt_tree.config import get_preset, replace  # noqa: E402
from prompt_tree.engine import Engine  # noqa: E402
from prompt_tree.loading import random_model  # noqa: E402
from prompt_tree.sampling import SamplingParams  # noqa: E402
from prompt_tree.tokenizer import ByteTokenizer  # noqa: E402
from prompt_tree.tree import PromptTree  # noqa: E402


def setup(few_tokens: int, problem_tokens: int):
    """-> (P, S, engine, tree, params, budget): a tiny 1-layer model, the APPS stop strings, lognormal budgets."""
    torch.set_num_threads(2)
    config = replace(get_preset("tiny"), num_layers=1)
    model = random_model(config, seed=0, std=0.1, device="cpu", dtype=torch.float32)
    P, S, med, cap = (int(x) for x in sys.argv[1:5])
    rng = random.Random(0)
    tree = PromptTree()
    few = tree.root.add([256] + [rng.randrange(256) for _ in range(few_tokens)], key="few")
    for p in range(P):
        few.add([rng.randrange(256) for _ in range(problem_tokens)], key=f"p{p}").add([], samples=S, key=f"s{p}")
    table = {}

    def budget(key, s):
        return table.setdefault((key, s), max(1, min(cap, int(round(math.exp(rng.gauss(math.log(med), 0.6)))))))

    params = SamplingParams(max_new_tokens=cap, temperature=0.8, top_p=0.95, seed=1, stop=APPS_STOPS)
    return P, S, Engine(model, config, ByteTokenizer(), eos_ids=()), tree, params, budget
