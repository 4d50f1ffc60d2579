"""Bengio's NNLM on Penn Treebank with the lmjax engine, alone and interpolated with a modified-KN 5-gram.

    .venv/bin/python experiments/ptb_nnlm.py [--set key=value ...] [--out PATH]
    .venv/bin/python experiments/ptb_nnlm.py --quick --out /tmp/nnlm.json   # 16-d, 32 units, 20 steps

Trains the `nnlm_ptb` preset with `lmjax.train.loop.train` (overrides as on the lmjax command line), then scores
every token of PTB valid and test (words and `<eos>`, contexts across sentences) exactly, with the parameters of the
checkpoint that scored best on valid (early stopping's model selection; `best_step` in the JSON). The KN5 model is
`NGramModel.fit` on the same train split (PTB's `<unk>` as the word `UNK`, as in experiments/ptb_ngram.py); the
interpolation p = l p_NNLM + (1 - l) p_KN5 takes l from a grid on valid and reports test. Also prints the learned
vectors' nearest neighbours by cosine similarity (one-hot vectors: 0 for every pair). Anchors (Mikolov et al. 2011):
feed-forward NNLM 140.2 test, interpolated with KN5 116.7. Writes experiments/results/ptb_nnlm.json.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = ["monday", "president", "money", "three", "bank", "japan", "buy", "said", "good", "stock"]


def token_logprobs(model, params, stream: np.ndarray, context: int, pad_id: int, batch: int = 1024) -> np.ndarray:
    """Natural-log p(w_t | previous `context` words) for every token of the stream."""
    from lmjax.models.nnlm import eval_contexts

    @jax.jit
    def score(inputs, targets):
        logp = jax.nn.log_softmax(model.apply({"params": params}, inputs).astype(jnp.float32))
        return jnp.take_along_axis(logp, targets[:, None], axis=1)[:, 0]

    out = [np.asarray(score(b["inputs"], b["targets"]))[b["mask"] > 0] for b in
           eval_contexts(stream, context, batch, pad_id)]
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", nargs="*", default=[], dest="overrides")
    p.add_argument("--quick", action="store_true", help="a smoke run: a 16-d, 32-unit NNLM for 20 steps, its run "
                                                        "directory beside --out")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "ptb_nnlm.json",
                   help="results JSON (default experiments/results/ptb_nnlm.json)")
    args = p.parse_args()
    if args.quick:
        args.overrides = ["model.embed_dim=16", "model.hidden=32", "data.batch_size=64", "train.steps=20",
                          "train.eval_every=10", "train.eval_batches=2", "train.checkpoint_every=10",
                          "train.log_every=10", "train.progress=false",
                          f"train.workdir={args.out.parent.resolve() / 'runs' / 'nnlm_ptb_quick'}", *args.overrides]
    from lmjax.results import write_results
    from lmjax.runtime import use_ynn_fusion

    use_ynn_fusion()  # XLA's fused CPU kernels; before the first computation
    from lmjax.config import get_preset
    from lmjax.data import lm_corpus
    from lmjax.data.builders import load_text
    from lmjax.models.ngram import NGramModel
    from lmjax.models.nnlm import nearest_neighbours
    from lmjax.train.checkpoint import Checkpointer
    from lmjax.train.engine import Engine
    from lmjax.train.loop import train

    cfg = get_preset("nnlm_ptb", ["train.resume=false", *args.overrides])
    engine = Engine(cfg)
    t0 = time.perf_counter()
    result = train(cfg, engine=engine)
    wall = time.perf_counter() - t0
    # Model selection on valid, as in early stopping: the kept checkpoint with the lowest eval (valid) loss.
    with Checkpointer(result.workdir / "checkpoints", keep=cfg.train.keep_checkpoints) as ckpt:
        best_step = ckpt.best_step() or result.step
        params = ckpt.restore(engine.abstract_state(), best_step)[1].params
    corpus = lm_corpus(cfg.data)
    tok, context = corpus.tokenizer, cfg.model.context
    model = engine.task.model
    nn_logp = {s: token_logprobs(model, params, getattr(corpus, s), context, tok.eos_id) for s in ("valid", "test")}

    kn_lines = {s: load_text("ptb", split, data_dir=cfg.data.data_dir or None).replace("<unk>", "UNK").splitlines()
                for s, split in (("train", "train"), ("valid", "validation"), ("test", "test"))}
    kn = NGramModel.fit(kn_lines["train"], 5)
    kn_logp = {s: kn.token_logprobs(kn_lines[s])[0].astype(np.float64) * math.log(10) for s in ("valid", "test")}
    for s in ("valid", "test"):
        if len(kn_logp[s]) != len(nn_logp[s]):
            sys.exit(f"error: {s}: KN5 scored {len(kn_logp[s])} tokens, the NNLM {len(nn_logp[s])}")
    ppl = lambda logp: float(np.exp(-np.mean(logp)))  # noqa: E731
    mix = lambda s, lam: np.logaddexp(np.log(lam) + nn_logp[s], np.log1p(-lam) + kn_logp[s])  # noqa: E731
    lam = min(np.arange(0.05, 1.0, 0.05), key=lambda lam: ppl(mix("valid", lam)))

    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    report = {
        "valid_ppl": ppl(nn_logp["valid"]), "test_ppl": ppl(nn_logp["test"]),
        "interpolated_test_ppl": ppl(mix("test", lam)), "params": n_params,
        "epochs": cfg.train.steps * cfg.data.batch_size * cfg.optim.grad_accum / len(corpus.train),
        "wall_s": wall, "interpolated_valid_ppl": ppl(mix("valid", lam)), "interpolation_weight": float(lam),
        "kn5_valid_ppl": ppl(kn_logp["valid"]), "kn5_test_ppl": ppl(kn_logp["test"]),
        "steps": cfg.train.steps, "best_step": best_step, "batch_size": cfg.data.batch_size,
        "tokens_per_s": result.tokens_per_s,
        "model": {k: getattr(cfg.model, k) for k in ("context", "embed_dim", "hidden", "direct", "tied", "dropout",
                                                      "word_dropout")},
        "nearest_neighbours": nearest_neighbours(params, tok, WORDS),
        "one_hot_cosine": 0.0,
    }
    for k, v in report.items():
        print(f"{k:>24}: {v}")
    print(f"wrote {write_results(args.out, report)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
