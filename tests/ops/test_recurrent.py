import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.ops import CELLS, bidirectional, get_cell, init_cell_params, scan, zero_carry

# One compiled program per call signature keeps the suite fast (eager mode compiles every op separately).
jscan = jax.jit(scan, static_argnums=0, static_argnames=("reverse", "time_major", "unroll"))

B, T, IN, H = 3, 6, 5, 4
NAMES = sorted(CELLS)
GATES = {"rnn": 1, "lstm": 4, "peephole_lstm": 4, "coupled_lstm": 3, "gru": 3}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_step(name, p, carry, x):
    """One float64 step written from the papers / the torch.nn.LSTM and torch.nn.GRU docs."""
    if name == "gru":
        h = carry
        w_ir, w_iz, w_in = np.split(p["w_ih"], 3)
        w_hr, w_hz, w_hn = np.split(p["w_hh"], 3)
        b_ir, b_iz, b_in = np.split(p["b_ih"], 3)
        b_hr, b_hz, b_hn = np.split(p["b_hh"], 3)
        r = sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        z = sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        n = np.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
        h = (1 - z) * n + z * h
        return h, h
    if name == "rnn":
        h = np.tanh(x @ p["w_ih"].T + p["b_ih"] + carry @ p["w_hh"].T + p["b_hh"])
        return h, h
    h, c = carry
    pre = x @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
    if name == "lstm":
        i, f, g, o = np.split(pre, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    elif name == "peephole_lstm":
        i, f, g, o = np.split(pre, 4, axis=-1)
        i, f = sigmoid(i + p["p_i"] * c), sigmoid(f + p["p_f"] * c)
        c = f * c + i * np.tanh(g)
        h = sigmoid(o + p["p_o"] * c) * np.tanh(c)
    else:  # coupled_lstm: the forget gate is 1 - i
        i, g, o = np.split(pre, 3, axis=-1)
        i = sigmoid(i)
        c = (1 - i) * c + i * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    return (h, c), h


def np_run(name, p, xs, carry):
    """Python loop over time, batch-major xs [B, T, IN]."""
    outs = []
    for t in range(xs.shape[1]):
        carry, y = np_step(name, p, carry, xs[:, t])
        outs.append(y)
    return carry, np.stack(outs, axis=1)


def make_params(name, seed=0):
    rng = np.random.default_rng(seed)
    g = GATES[name] * H
    shapes = {"w_ih": (g, IN), "w_hh": (g, H), "b_ih": (g,), "b_hh": (g,)}
    if name == "peephole_lstm":
        shapes |= {"p_i": (H,), "p_f": (H,), "p_o": (H,)}
    return {k: rng.uniform(-0.7, 0.7, s) for k, s in shapes.items()}


def make_carry(name, seed=1):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((B, H))
    return (h, rng.standard_normal((B, H))) if name in ("lstm", "peephole_lstm", "coupled_lstm") else h


def f32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def close(actual, expected, tol=2e-5):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(np.asarray(a), e, rtol=tol, atol=tol), actual, expected)


XS = np.random.default_rng(2).standard_normal((B, T, IN))
LENGTHS = np.array([T, 2, 4])


def test_every_cell_step_matches_numpy():
    params = {n: f32(make_params(n)) for n in NAMES}
    carries = {n: f32(make_carry(n)) for n in NAMES}
    steps = jax.jit(lambda p, c, x: {n: get_cell(n)(p[n], c[n], x) for n in NAMES})(params, carries, f32(XS[:, 0]))
    for name in NAMES:
        close(steps[name], np_step(name, make_params(name), make_carry(name), XS[:, 0]))


def np_run_rows(name, p, xs, carry, lengths, reverse=False):
    """Each row alone at its own length (reversed within it if asked), padded with zeros: the packed-sequence RNN."""
    finals, ys = [], np.zeros(xs.shape[:2] + (H,))
    for b, n in enumerate(lengths):
        row = xs[b : b + 1, :n][:, ::-1] if reverse else xs[b : b + 1, :n]
        final, out = np_run(name, p, row, jax.tree.map(lambda a, b=b: a[b : b + 1], carry))
        ys[b, :n] = out[0, ::-1] if reverse else out[0]
        finals.append(final)
    return jax.tree.map(lambda *rows: np.concatenate(rows), *finals), ys


@pytest.mark.parametrize("name", NAMES)
def test_scan_matches_python_loop(name):
    p, carry = make_params(name), make_carry(name)
    final, ys = jscan(get_cell(name), f32(p), f32(XS), f32(carry))
    close((final, ys), np_run(name, p, XS, carry))


def test_time_major_and_unroll_change_nothing():
    p, carry = make_params("lstm"), make_carry("lstm")
    final, ys = jscan(get_cell("lstm"), f32(p), f32(XS.swapaxes(0, 1)), f32(carry), time_major=True, unroll=3)
    ref_final, ref_ys = np_run("lstm", p, XS, carry)
    close((final, ys), (ref_final, ref_ys.swapaxes(0, 1)))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_lengths_match_each_row_run_alone(name, reverse):
    """Padding outputs 0 and freezes the carry; reverse == flip within length, scan forward, flip back."""
    p, carry = make_params(name), make_carry(name)
    final, ys = jscan(get_cell(name), f32(p), f32(XS), f32(carry), lengths=jnp.asarray(LENGTHS), reverse=reverse)
    close((final, ys), np_run_rows(name, p, XS, carry, LENGTHS, reverse))
    for b, n in enumerate(LENGTHS):
        assert np.all(np.asarray(ys[b, n:]) == 0.0)


def test_reverse_without_lengths_flips_whole_sequence():
    p, carry = make_params("gru"), make_carry("gru")
    final, ys = jscan(get_cell("gru"), f32(p), f32(XS), f32(carry), reverse=True)
    ref_final, ref_ys = np_run("gru", p, XS[:, ::-1], carry)
    close((final, ys), (ref_final, ref_ys[:, ::-1]))


def test_bidirectional_concatenates_forward_and_reverse():
    pf, pb, cf, cb = make_params("lstm", 0), make_params("lstm", 1), make_carry("lstm", 2), make_carry("lstm", 3)
    finals, ys = jax.jit(bidirectional, static_argnums=0)(
        get_cell("lstm"), f32(pf), f32(pb), f32(XS), f32(cf), f32(cb), lengths=jnp.asarray(LENGTHS)
    )
    assert ys.shape == (B, T, 2 * H)
    ref_f = np_run_rows("lstm", pf, XS, cf, LENGTHS)
    ref_b = np_run_rows("lstm", pb, XS, cb, LENGTHS, reverse=True)
    close((finals, ys), ((ref_f[0], ref_b[0]), np.concatenate([ref_f[1], ref_b[1]], axis=-1)))


def test_plain_function_cell_is_stepped_on_raw_inputs():
    def running_sum(params, carry, x):
        carry = carry + params["scale"] * x
        return carry, carry

    final, ys = jscan(running_sum, {"scale": jnp.float32(2.0)}, f32(XS), jnp.zeros((B, IN)), lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(ys[b, :n], 2 * np.cumsum(XS[b, :n], axis=0), rtol=1e-5)
        np.testing.assert_allclose(final[b], 2 * XS[b, :n].sum(0), rtol=1e-5)


def test_jit_and_grad_are_finite():
    name = "peephole_lstm"
    cell = get_cell(name)
    p, carry = f32(make_params(name)), f32(make_carry(name))

    @jax.jit
    def loss(p, xs):
        (h, c), ys = scan(cell, p, xs, carry, lengths=jnp.asarray(LENGTHS), reverse=True)
        return jnp.sum(ys**2) + jnp.sum(c)

    grads = jax.grad(loss, argnums=(0, 1))(p, f32(XS))
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g))
    # Padded inputs cannot influence anything.
    for b, n in enumerate(LENGTHS):
        assert np.all(np.asarray(grads[1])[b, n:] == 0.0)
    assert np.any(np.asarray(grads[0]["p_i"]) != 0.0)


def test_init_and_zero_carry():
    key = jax.random.key(0, impl="rbg")  # compiles ~5x faster than threefry on CPU; any key type works
    for name in NAMES:  # shapes of every cell without compiling the PRNG five times
        shapes = jax.eval_shape(lambda k, name=name: init_cell_params(k, name, IN, H), key)
        assert {k: v.shape for k, v in shapes.items()} == {k: v.shape for k, v in make_params(name).items()}
        carry = zero_carry(name, B, H)
        assert jax.tree.structure(carry) == jax.tree.structure(make_carry(name))
        assert all(np.all(np.asarray(c) == 0) and c.shape == (B, H) for c in jax.tree.leaves(carry))
    hidden = 64
    params = jax.jit(lambda k: init_cell_params(k, "peephole_lstm", 32, hidden))(key)
    bound = 1 / np.sqrt(hidden)
    for v in params.values():  # U(-bound, bound) as torch: std bound / sqrt(3)
        assert v.dtype == jnp.float32 and np.all(np.abs(v) <= bound)
        np.testing.assert_allclose(np.std(v), bound / np.sqrt(3), rtol=0.25)
    assert not np.allclose(params["b_ih"], params["b_hh"])


def test_unknown_cell_name_raises():
    with pytest.raises(ValueError, match="choose one of"):
        zero_carry("lstmm", B, H)
