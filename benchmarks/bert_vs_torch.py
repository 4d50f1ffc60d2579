"""BERT training steps in lmjax's engine and in Hugging Face's PyTorch BERT, same sizes and weights, in one run.

    python benchmarks/bert_vs_torch.py                       # BERT-Mini: pre-training 64 x 128, fine-tuning 32 x 64
    python benchmarks/bert_vs_torch.py --quick --out /tmp/bert_bench.json   # a 2 x 32 model, seconds long

Two workloads, each a full AdamW training step (forward, backward, update; dropout 0.1 on in both):

- pre-training: `BertForPreTraining`, batch 64 x 128 tokens, 20 masked positions per row, MLM + NSP loss. lmjax's
  engine (task `pretrain`) computes the MLM head at the masked positions only, as google-research/bert does; HF's
  model computes it at every position and ignores the labels -100 (its forward has no masked-positions input), which
  is what a user of `transformers` runs.
- fine-tuning: `BertForSequenceClassification`, batch 32 x 64, 2 labels.

The torch model gets lmjax's initial weights (`lmjax.interop.hf_bert`), and both losses on the first batch (dropout
off) are checked equal before timing. Then `--rounds` alternating rounds of `--steps` steps each (torch at
`--torch-threads`, default 2, and at 1 thread; its faster is the figure); tokens/s = batch x length / median step
time. Writes benchmarks/results/bert_vs_torch.json (speedup = lmjax tokens/s / torch tokens/s, per workload, and
`speedup`, the pre-training one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="mini")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks/results/bert_vs_torch.json")
    args = p.parse_args()

    from lmjax.runtime import use_ynn_fusion

    use_ynn_fusion()
    import jax
    import numpy as np
    import torch
    import transformers

    from lmjax.config import get_preset
    from lmjax.interop.hf_bert import config_to_hf, params_to_hf
    from lmjax.models import bert
    from lmjax.results import write_results
    from lmjax.train.engine import Engine
    from lmjax.train.task import Data

    V = 8192
    size = "smoke" if args.quick else args.size
    if args.quick:
        args.steps, args.rounds = 2, 2
    workloads = {"pretrain": (64, 128) if not args.quick else (8, 32), "classify": (32, 64) if not args.quick else (8, 16)}
    rng = np.random.default_rng(0)
    results = {}
    for kind, (B, T) in workloads.items():
        base = get_preset("bert_imdb_mini" if kind == "pretrain" else "bert_sst2_finetune")
        model_cfg = bert.bert_config(size, vocab_size=V, max_position=128)
        cfg = dataclasses.replace(
            base, model=model_cfg,
            data=dataclasses.replace(base.data, seq_len=T, batch_size=B),
            optim=dataclasses.replace(base.optim, freeze=(), warmup_steps=0, schedule="constant"),
            train=dataclasses.replace(base.train, steps_per_call=1, init_from="", init_target="", init_source=""))
        P = model_cfg.max_predictions
        tokens = rng.integers(5, V, (B, T)).astype(np.int32)
        batch = {"tokens": tokens, "segments": (np.arange(T) >= T // 2).astype(np.int32)[None].repeat(B, 0),
                 "mask": np.ones((B, T), np.int32)}
        if kind == "pretrain":
            positions = np.sort(np.stack([rng.choice(np.arange(1, T), P, replace=False) for _ in range(B)]), 1)
            batch |= {"masked_positions": positions.astype(np.int32),
                      "masked_ids": rng.integers(5, V, (B, P)).astype(np.int32),
                      "masked_weights": np.ones((B, P), np.float32),
                      "nsp_labels": rng.integers(0, 2, B).astype(np.int32), "real": np.ones(B, np.int32)}
            build = bert.make_pretraining_task
            info = {}
        else:
            batch["labels"] = rng.integers(0, 2, B).astype(np.int32)
            build = bert.make_classifier_task
            info = {"num_classes": 2}
        data = Data(tokenizer=None, vocab_size=V, train=None, info=info)
        task = build(cfg, data)
        engine = Engine(cfg, data=data, task=task)
        state = engine.init_state()
        params = jax.device_get(state.params)

        architecture = "BertForPreTraining" if kind == "pretrain" else "BertForSequenceClassification"
        hf_cfg = transformers.BertConfig(**config_to_hf(model_cfg, architecture, num_labels=2))
        hf_cls = getattr(transformers, architecture)
        torch.manual_seed(0)
        tm = hf_cls(hf_cfg)
        missing, unexpected = tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                                  params_to_hf(params, model_cfg).items()}, strict=False)
        if unexpected or any("decoder" not in k for k in missing):
            raise RuntimeError(f"weights did not map: missing {missing}, unexpected {unexpected}")
        tm.tie_weights()
        t_in = {"input_ids": torch.from_numpy(tokens).long(), "token_type_ids": torch.from_numpy(batch["segments"]).long(),
                "attention_mask": torch.from_numpy(batch["mask"]).long()}
        if kind == "pretrain":
            labels = np.full((B, T), -100, np.int64)
            np.put_along_axis(labels, batch["masked_positions"], batch["masked_ids"], 1)
            t_in |= {"labels": torch.from_numpy(labels), "next_sentence_label": torch.from_numpy(batch["nsp_labels"]).long()}
        else:
            t_in["labels"] = torch.from_numpy(batch["labels"]).long()

        # the same numbers first (dropout off)
        tm.eval()
        with torch.no_grad():
            torch_loss = float(tm(**t_in).loss)
        loss_sum, count, _ = task.loss_fn(state.params, batch, None, False)
        ours = float(loss_sum) / float(count)
        if not np.isclose(ours, torch_loss, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"{kind}: lmjax loss {ours} vs torch {torch_loss}: not the same model")
        tm.train()
        o = cfg.optim
        opt = torch.optim.AdamW(tm.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps, weight_decay=o.weight_decay)

        def torch_step():
            opt.zero_grad(set_to_none=True)
            loss = tm(**t_in).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tm.parameters(), o.clip_norm)
            opt.step()

        host = {k: v[None, None] for k, v in batch.items()}  # [K=1, A=1, B, ...]

        def lmjax_step():
            nonlocal state
            state, metrics = engine.train_steps(state, host)
            jax.block_until_ready(metrics)

        threads = args.torch_threads
        variants = {"lmjax": (lmjax_step, threads), f"torch_{threads}_threads": (torch_step, threads),
                    "torch_1_thread": (torch_step, 1)}
        for fn, n in variants.values():
            torch.set_num_threads(n)
            for _ in range(2):
                fn()  # compile / warm up
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (fn, n) in variants.items():
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times[name].append((time.perf_counter() - t0) / args.steps)
        median = {name: float(np.median(v)) for name, v in times.items()}
        torch_s = min(v for k, v in median.items() if k.startswith("torch"))
        results[kind] = {"batch": B, "length": T, "lmjax_tokens_per_s": B * T / median["lmjax"],
                         "torch_tokens_per_s": B * T / torch_s, "speedup": torch_s / median["lmjax"],
                         "median_s_per_step": median, "rounds_s_per_step": times, "loss_check": [ours, torch_loss],
                         "flops_per_token": task.flops_per_token}
        print(f"{kind}: lmjax {B * T / median['lmjax']:,.0f} tokens/s, torch {B * T / torch_s:,.0f} tokens/s, "
              f"{torch_s / median['lmjax']:.2f}x", flush=True)
    report = {"size": size, "speedup": results["pretrain"]["speedup"],
              "pretrain_speedup": results["pretrain"]["speedup"], "classify_speedup": results["classify"]["speedup"],
              "workloads": results, "torch": torch.__version__, "transformers": transformers.__version__,
              "jax": jax.__version__}
    print(f"wrote {write_results(args.out, report)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from lmjax.runtime import run_script

    run_script(main)
