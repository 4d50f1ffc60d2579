"""Zaremba et al.'s PTB LSTMs trained with truncated BPTT, the hidden state carried across consecutive batches.

    python experiments/ptb_lstm.py                              # zaremba_small, 13 epochs -> results/ptb_lstm_small.json
    python experiments/ptb_lstm.py --preset zaremba_medium --time-steps 50   # time 50 steps, project the full run

The Engine builds the mesh, the model, the sharded initial parameters and the data; this script runs the TBPTT epoch
loop the engine lacks (its Task contract has no state between batches) with `rnn.make_tbptt_step`, one jit call of
`train.steps_per_call` steps at a time, and evaluates with `rnn.stream_loss`: per epoch on validation in B=20
contiguous rows (as Zaremba's code does), at the end on validation and test as one stream (batch 1, every token
with its full left context). Perplexity = exp(mean token cross entropy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="zaremba_small")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR", "/work/shared/data"))
    p.add_argument("--time-steps", type=int, default=0, help="only time this many steps and project the full run")
    p.add_argument("--out", default="", help="results JSON (default experiments/results/ptb_lstm_<size>.json)")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="shorter epochs, for a quick check (0 = full)")
    args = p.parse_args()

    from lmjax.train.peak import hardware_summary, use_ynn_fusion

    use_ynn_fusion()
    import jax
    import numpy as np

    from lmjax.config import get_preset
    from lmjax.data import ContiguousStream, eval_windows, lm_corpus
    from lmjax.models import rnn
    from lmjax.train.engine import Engine
    from lmjax.train.task import Data

    cfg = get_preset(args.preset, [f"data.data_dir={args.data_dir}", *args.set])
    d, m = cfg.data, cfg.model
    corpus = lm_corpus(d)
    steps_per_epoch = args.steps_per_epoch or (len(corpus.train) // d.batch_size - 1) // d.seq_len
    engine = Engine(cfg, data=Data(corpus.tokenizer, corpus.tokenizer.vocab_size,
                                   train=lambda i, n: ContiguousStream(corpus.train, d.batch_size, d.seq_len,
                                                                       process_index=i, process_count=n)),
                    total_steps=m.epochs * steps_per_epoch)
    model = engine.task.model
    stream = engine.data.train(jax.process_index(), jax.process_count())
    tx, schedule = rnn.make_optimizer(cfg, steps_per_epoch)
    state = engine.init_state()
    state = state.replace(opt_state=tx.init(state.params))
    n_params = rnn.count_params(state.params)
    train_calls = jax.jit(rnn.make_tbptt_step(model, tx, schedule), donate_argnums=0)
    evaluate = jax.jit(lambda params, windows: rnn.stream_loss(model, params, windows))

    def ppl(tokens, batch):
        windows = list(eval_windows(tokens, batch, d.seq_len))
        stacked = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
        with engine.activate():
            loss_sum, count = evaluate(state.params, stacked)
        return math.exp(float(loss_sum) / float(count))

    carry = rnn.init_carry(m, d.batch_size)
    k = max(cfg.train.steps_per_call, 1)
    total = args.time_steps or m.epochs * steps_per_epoch
    print(f"{cfg.name}: {n_params:,} parameters, {steps_per_epoch} steps per epoch, {total} steps", flush=True)

    out = pathlib.Path(args.out or ROOT / "experiments/results" /
                       f"ptb_lstm_{cfg.name.removeprefix('zaremba_')}{'_timing' if args.time_steps else ''}.json")
    progress = out.with_suffix(".progress.json")  # per-epoch numbers while the run goes on
    history, t_start, step, eval_s = [], time.perf_counter(), 0, 0.0
    t_epoch, t_warm = t_start, None
    while step < total:
        n = min(k, total - step, steps_per_epoch - step % steps_per_epoch)
        batches = [next(stream) for _ in range(n)]
        stacked = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
        with engine.activate():
            state, carry, metrics = train_calls(state, carry, stacked)
        step += n
        if step == min(k, total):  # the first call compiles: time the rest
            jax.block_until_ready(metrics)
            t_warm = time.perf_counter()
        if args.time_steps:
            continue
        if step % 100 < n:
            print(f"  step {step} loss {float(metrics['loss'][-1]):.3f} lr {float(metrics['lr'][-1]):.4g}", flush=True)
        if step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            train_ppl = math.exp(float(np.mean(metrics["loss"])))
            t_eval = time.perf_counter()
            valid, test = ppl(corpus.valid, d.batch_size), ppl(corpus.test, d.batch_size)
            now = time.perf_counter()
            eval_s += now - t_eval
            history.append({"epoch": epoch, "valid_ppl_b20": valid, "test_ppl_b20": test, "epoch_s": now - t_epoch,
                            "lr": float(metrics["lr"][-1])})
            print(f"epoch {epoch}: valid/test ppl (20 rows) {valid:.2f}/{test:.2f}, last-call train ppl "
                  f"{train_ppl:.1f}, {now - t_epoch:.1f} s", flush=True)
            progress.write_text(json.dumps({"preset": cfg.name, "history": history}, indent=1) + "\n")
            t_epoch = now
    jax.block_until_ready(state.params)
    wall = time.perf_counter() - t_start
    ms_per_step = 1000 * (time.perf_counter() - t_warm - eval_s) / max(total - min(k, total), 1)  # training only
    common = {"preset": cfg.name, "params": n_params, "steps_per_epoch": steps_per_epoch,
              "hardware": hardware_summary(), "load_avg_1m": os.getloadavg()[0],
              "command": "python " + " ".join([f"experiments/{pathlib.Path(__file__).name}", *sys.argv[1:]]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if args.time_steps:
        result = {**common, "timed_steps": total, "ms_per_step": ms_per_step,
                  "epoch_s_projected": ms_per_step * steps_per_epoch / 1000,
                  "total_s_projected": ms_per_step * steps_per_epoch * m.epochs / 1000, "epochs": m.epochs}
    else:
        result = {"valid_ppl": ppl(corpus.valid, 1), "test_ppl": ppl(corpus.test, 1), "epochs": m.epochs,
                  "wall_s": wall, **common, "ms_per_step": ms_per_step,
                  "epoch_s_mean": float(np.mean([h["epoch_s"] for h in history])), "history": history}
    print(json.dumps(result, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
