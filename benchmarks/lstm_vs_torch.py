"""The scanned LSTM of `lmjax.ops.recurrent` against PyTorch's `nn.LSTM`, forward + backward, in one run.

    python benchmarks/lstm_vs_torch.py            # Zaremba small: 2 layers x 200, batch 20, 35 steps
    python benchmarks/lstm_vs_torch.py --quick --out /tmp/lstm.json   # 2 x 16, batch 4, 6 steps, 2 rounds of 2

Both compute the same thing: a 2-layer LSTM over x [B, T, H] from a zero state, loss = Σ outputs², and the
gradients of every weight and of x. lmjax's is one jit-compiled function (`recurrent.scan` per layer, the input
projection hoisted out of the time loop); torch runs eagerly on its CPU kernels. The two are timed alternately,
`--rounds` rounds of `--iters` calls each (torch both at its default thread count and at one thread), and the medians of the per-round means are compared, so load from other
jobs on the machine hits both alike. Writes experiments/results/lstm_vs_torch.json (ms_per_step,
torch_ms_per_step, speedup = torch / lmjax).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 x 16, batch 4, 6 steps, 2 rounds of 2 calls")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments/results/lstm_vs_torch.json",
                   help="results JSON (default experiments/results/lstm_vs_torch.json)")
    args = p.parse_args()
    if args.quick:
        args.batch, args.steps, args.hidden, args.layers, args.iters, args.rounds = 4, 6, 16, 2, 2, 2

    from lmjax.results import write_results
    from lmjax.runtime import use_ynn_fusion

    use_ynn_fusion()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from lmjax.ops import recurrent

    B, T, H, L = args.batch, args.steps, args.hidden, args.layers
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(H, H, num_layers=L, batch_first=True)
    x_np = np.random.default_rng(0).standard_normal((B, T, H)).astype(np.float32)
    x_t = torch.from_numpy(x_np).requires_grad_(True)
    params = [{"w_ih": jnp.asarray(getattr(lstm, f"weight_ih_l{i}").detach().numpy()),
               "w_hh": jnp.asarray(getattr(lstm, f"weight_hh_l{i}").detach().numpy()),
               "b_ih": jnp.asarray(getattr(lstm, f"bias_ih_l{i}").detach().numpy()),
               "b_hh": jnp.asarray(getattr(lstm, f"bias_hh_l{i}").detach().numpy())} for i in range(L)]

    def loss(params, x):
        for layer in params:
            _, x = recurrent.scan(recurrent.lstm_cell, layer, x, recurrent.zero_carry("lstm", B, H))
        return jnp.sum(x * x)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    x = jnp.asarray(x_np)

    def run_jax():
        jax.block_until_ready(grad(params, x))

    def run_torch():
        lstm.zero_grad(set_to_none=True)
        x_t.grad = None
        out, _ = lstm(x_t)
        (out * out).sum().backward()

    # Same numbers first: the comparison is only meaningful if both compute the same gradients.
    value, (g_params, g_x) = grad(params, x)
    run_torch()
    np.testing.assert_allclose(float(value), float((lstm(x_t)[0] ** 2).sum().detach()), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(g_x), x_t.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g_params[0]["w_hh"]), lstm.weight_hh_l0.grad.numpy(), rtol=1e-3, atol=1e-4)

    # torch at its default thread count and at one thread (on a loaded machine its thread pool can lose to one
    # thread); torch_ms_per_step is the faster of the two.
    threads = torch.get_num_threads()
    variants = {"jax": (run_jax, threads), f"torch_{threads}_threads": (run_torch, threads),
                "torch_1_thread": (run_torch, 1)}
    times = {name: [] for name in variants}
    for fn, n in variants.values():
        torch.set_num_threads(n)
        for _ in range(3):
            fn()  # warm-up
    for _ in range(args.rounds):
        for name, (fn, n) in variants.items():
            torch.set_num_threads(n)
            t = time.perf_counter()
            for _ in range(args.iters):
                fn()
            times[name].append(1000 * (time.perf_counter() - t) / args.iters)
    medians = {name: float(np.median(v)) for name, v in times.items()}
    ms, torch_ms = medians["jax"], min(v for k, v in medians.items() if k.startswith("torch"))
    result = {
        "ms_per_step": ms, "torch_ms_per_step": torch_ms, "speedup": torch_ms / ms, "median_ms": medians,
        "shape": {"batch": B, "steps": T, "hidden": H, "layers": L}, "rounds_ms": times,
        "torch": torch.__version__, "jax": jax.__version__,
    }
    print(json.dumps(result, indent=1))
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
