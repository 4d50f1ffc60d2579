import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lmjax.layers import RecurrentLayer, StackedRecurrent, cell_params

B, T, I, H = 3, 6, 5, 4
LENGTHS = np.asarray([6, 2, 4])


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_run(rnn: torch.nn.RNNBase, x, lengths, h0=None):
    """(outputs [B, T, D] zero-padded, h_n, c_n or None) of a torch RNN over packed, unsorted rows."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True,
                                                     enforce_sorted=False)
    with torch.no_grad():
        out, state = rnn(packed, h0)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    h, c = state if isinstance(state, tuple) else (state, None)
    return out.numpy(), h.numpy(), None if c is None else c.numpy()


def copy_into(rnn: torch.nn.RNNBase, params_of):
    """Copy our params into torch's: params_of(layer, reverse) -> {"w_ih", ...}."""
    names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh", "w_hr": "weight_hr"}
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            for reverse in range(1 + rnn.bidirectional):
                for ours, value in params_of(layer, reverse).items():
                    theirs = f"{names[ours]}_l{layer}" + ("_reverse" if reverse else "")
                    getattr(rnn, theirs).copy_(torch.from_numpy(np.array(value)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_layer_matches_torch_with_packed_lengths(cell):
    layer = RecurrentLayer(cell, H, bidirectional=True)
    x = rand(B, T, I)
    params = jax.tree.map(np.asarray, nn.meta.unbox(layer.init(jax.random.key(0), x, lengths=LENGTHS))["params"])
    assert set(params) == {f"{d}_{n}" for d in ("fwd", "bwd") for n in ("w_ih", "w_hh", "b_ih", "b_hh")}
    assert np.abs(params["fwd_w_hh"]).max() <= 1 / np.sqrt(H)  # torch's U(-1/sqrt(H), 1/sqrt(H))
    final, out = jax.jit(lambda p, x, n: layer.apply({"params": p}, x, lengths=n))(params, x, LENGTHS)

    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True, bidirectional=True)
    copy_into(rnn, lambda _, reverse: {k[4:]: v for k, v in params.items()
                                       if k.startswith("bwd_" if reverse else "fwd_")})
    want, h_n, c_n = torch_run(rnn, x, LENGTHS)
    np.testing.assert_allclose(out, want, atol=1e-5)
    for direction in range(2):
        h = final[direction][0] if cell == "lstm" else final[direction]
        np.testing.assert_allclose(h, h_n[direction], atol=1e-5)
        if cell == "lstm":
            np.testing.assert_allclose(final[direction][1], c_n[direction], atol=1e-5)


def test_stacked_bidirectional_lstm_matches_torch_from_a_given_carry():
    stack = StackedRecurrent("lstm", H, num_layers=2, bidirectional=True)
    x = rand(B, T, I)
    h0, c0 = rand(4, B, H, seed=1), rand(4, B, H, seed=2)  # torch's [layers * directions, B, H]
    carry = tuple(((h0[2 * l], c0[2 * l]), (h0[2 * l + 1], c0[2 * l + 1])) for l in range(2))
    params = jax.tree.map(np.asarray, nn.meta.unbox(stack.init(jax.random.key(0), x, carry))["params"])
    assert set(params) == {"layer_0", "layer_1"} and params["layer_1"]["fwd_w_ih"].shape == (4 * H, 2 * H)
    finals, out = jax.jit(lambda p, x, c, n: stack.apply({"params": p}, x, c, lengths=n))(params, x, carry, LENGTHS)

    rnn = torch.nn.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=True)
    copy_into(rnn, lambda layer, reverse: {k[4:]: v for k, v in params[f"layer_{layer}"].items()
                                           if k.startswith("bwd_" if reverse else "fwd_")})
    want, h_n, c_n = torch_run(rnn, x, LENGTHS, (torch.from_numpy(h0), torch.from_numpy(c0)))
    np.testing.assert_allclose(out, want, atol=1e-5)
    for l in range(2):
        for d in range(2):
            np.testing.assert_allclose(finals[l][d][0], h_n[2 * l + d], atol=1e-5)
            np.testing.assert_allclose(finals[l][d][1], c_n[2 * l + d], atol=1e-5)


def test_projected_lstm_matches_torch_proj_size():
    layer = RecurrentLayer("lstm", H, proj=3)
    x = rand(B, T, I)
    params = jax.tree.map(np.asarray, nn.meta.unbox(layer.init(jax.random.key(0), x))["params"])
    assert params["w_hh"].shape == (4 * H, 3) and params["w_hr"].shape == (3, H)
    (h, c), out = jax.jit(lambda p, x, n: layer.apply({"params": p}, x, lengths=n))(params, x, LENGTHS)
    rnn = torch.nn.LSTM(I, H, batch_first=True, proj_size=3)
    copy_into(rnn, lambda *_: params)
    want, h_n, c_n = torch_run(rnn, x, LENGTHS)
    assert out.shape == (B, T, 3)
    np.testing.assert_allclose(out, want, atol=1e-5)
    np.testing.assert_allclose(h, h_n[0], atol=1e-5)
    np.testing.assert_allclose(c, c_n[0], atol=1e-5)


def test_reverse_layer_is_the_backward_half_of_a_bidirectional_one():
    x = rand(B, T, I)
    bi = RecurrentLayer("gru", H, bidirectional=True)
    params = nn.meta.unbox(bi.init(jax.random.key(0), x))["params"]
    (_, last), both = bi.apply({"params": params}, x, lengths=LENGTHS)
    backward = {k[4:]: v for k, v in params.items() if k.startswith("bwd_")}
    final, out = RecurrentLayer("gru", H, reverse=True).apply({"params": backward}, x, lengths=LENGTHS)
    np.testing.assert_allclose(out, both[..., H:], atol=1e-6)
    np.testing.assert_allclose(final, last, atol=1e-6)


def test_residual_stack_adds_each_later_layers_input_and_keeps_padding_zero():
    x = rand(B, T, I)
    stack = StackedRecurrent("lstm", I, num_layers=2, residual=True)  # widths match: I -> I -> I
    params = nn.meta.unbox(stack.init(jax.random.key(0), x))["params"]
    _, (y0, y1) = stack.apply({"params": params}, x, lengths=LENGTHS, all_layers=True)
    _, plain = RecurrentLayer("lstm", I).apply({"params": params["layer_1"]}, y0, lengths=LENGTHS)
    valid = (np.arange(T)[None] < LENGTHS[:, None])[..., None]
    np.testing.assert_allclose(y1, plain + np.where(valid, y0, 0), atol=1e-6)
    assert np.all(np.asarray(y1)[~np.broadcast_to(valid, y1.shape)] == 0)


def test_cell_params_declare_flat_prefixed_params_on_the_caller():
    class Model(nn.Module):
        @nn.compact
        def __call__(self):
            return cell_params(self, "peephole_lstm", 3, 2, prefix="enc_", init_scale=0.05)

    variables = Model().init(jax.random.key(0))["params"]
    assert set(variables) == {f"enc_{n}" for n in ("w_ih", "w_hh", "b_ih", "b_hh", "p_i", "p_f", "p_o")}
    assert variables["enc_w_ih"].names == ("gates", "embed") and variables["enc_p_i"].names == ("hidden",)
    assert max(float(jnp.abs(v.value).max()) for v in variables.values()) <= 0.05


def test_projection_needs_a_cell_state():
    with pytest.raises(ValueError, match="cell state"):
        RecurrentLayer("gru", H, proj=2).init(jax.random.key(0), jnp.ones((1, 2, I)))
