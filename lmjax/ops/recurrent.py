"""Recurrent cells and a scan over time that hoists the input projection out of the loop.

Parameters are plain dicts stored as in PyTorch (`w_ih` [G*H, I], `w_hh` [G*H, H], `b_ih`, `b_hh` [G*H], gate blocks
stacked in torch's order), so loading torch weights is a copy. Every cell is callable as
`cell(params, carry, x) -> (new_carry, output)`; inside `scan` the input projection x @ w_ih^T + b_ih of all time
steps is one matmul before the loop, and only the recurrent matmul h @ w_hh^T runs per step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]
Carry = Any  # h, or (h, c) for the LSTM family


@dataclasses.dataclass(frozen=True)
class Cell:
    """A recurrent cell split into the input projection (hoistable) and the recurrent step.

    `step(params, carry, gx) -> (new_carry, output)` takes gx = x @ w_ih^T + b_ih, [..., num_gates*H].
    """

    name: str
    num_gates: int
    has_cell_state: bool
    step: Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]

    def __call__(self, params: Params, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
        return self.step(params, carry, project_input(params, x))


def project_input(params: Params, x: jax.Array) -> jax.Array:
    """x @ w_ih^T + b_ih: [..., I] -> [..., G*H]."""
    return x @ params["w_ih"].T + params["b_ih"]


def _recurrent(params: Params, h: jax.Array) -> jax.Array:
    return h @ params["w_hh"].T + params["b_hh"]


def _rnn_step(params, h, gx):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    h = jnp.tanh(gx + _recurrent(params, h))
    return h, h


def _lstm_step(params, carry, gx):
    """torch.nn.LSTM: [i, f, g, o] = [σ, σ, tanh, σ](W_ih x + b_ih + W_hh h + b_hh); c' = f c + i g; h' = o tanh(c')."""
    h, c = carry
    i, f, g, o = jnp.split(gx + _recurrent(params, h), 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def _peephole_lstm_step(params, carry, gx):
    """Gers & Schmidhuber peepholes (diagonal p_i, p_f, p_o [H]): i, f also see c_{t-1}; o sees c_t.

    i = σ(a_i + p_i c), f = σ(a_f + p_f c), c' = f c + i tanh(a_g), o = σ(a_o + p_o c'), h' = o tanh(c').
    """
    h, c = carry
    a_i, a_f, a_g, a_o = jnp.split(gx + _recurrent(params, h), 4, axis=-1)
    i = jax.nn.sigmoid(a_i + params["p_i"] * c)
    f = jax.nn.sigmoid(a_f + params["p_f"] * c)
    c = f * c + i * jnp.tanh(a_g)
    h = jax.nn.sigmoid(a_o + params["p_o"] * c) * jnp.tanh(c)
    return (h, c), h


def _coupled_lstm_step(params, carry, gx):
    """Coupled input/forget gate (f = 1 - i), gates [i, g, o]: c' = (1 - i) c + i g; h' = o tanh(c')."""
    h, c = carry
    a_i, a_g, a_o = jnp.split(gx + _recurrent(params, h), 3, axis=-1)
    i = jax.nn.sigmoid(a_i)
    c = c + i * (jnp.tanh(a_g) - c)
    h = jax.nn.sigmoid(a_o) * jnp.tanh(c)
    return (h, c), h


def _gru_step(params, h, gx):
    """torch.nn.GRU, gates [r, z, n]: r, z = σ(x_r + h_r), σ(x_z + h_z); n = tanh(x_n + r h_n); h' = (1-z) n + z h.

    x_* = W_i* x + b_i*, h_* = W_h* h + b_h* (b_hn stays inside the reset product, as in torch).
    """
    x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(_recurrent(params, h), 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h = n + z * (h - n)
    return h, h


def lstm_projected_step(params, carry, gx, *, cell_clip: float = 0.0, proj_clip: float = 0.0):
    """LSTMP (Sak et al. 2014; torch's proj_size; bilm-tf's LSTMCell with num_proj and clipping):

    [i, f, g, o] = W_ih x + b_ih + W_hh h + b_hh;  c' = clip(σ(f) c + σ(i) tanh(g), ±cell_clip)
    h' = clip(W_hr (σ(o) tanh(c')), ±proj_clip)             (a clip of 0 is none)
    h [B, P] is both the output and what recurs; c [B, H]. Without clips this is torch.nn.LSTM(proj_size=P)."""
    h, c = carry
    i, f, g, o = jnp.split(gx + _recurrent(params, h), 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    if cell_clip:
        c = jnp.clip(c, -cell_clip, cell_clip)
    h = (jax.nn.sigmoid(o) * jnp.tanh(c)) @ params["w_hr"].T
    if proj_clip:
        h = jnp.clip(h, -proj_clip, proj_clip)
    return (h, c), h


rnn_cell = Cell("rnn", 1, False, _rnn_step)
lstm_cell = Cell("lstm", 4, True, _lstm_step)
peephole_lstm_cell = Cell("peephole_lstm", 4, True, _peephole_lstm_step)
coupled_lstm_cell = Cell("coupled_lstm", 3, True, _coupled_lstm_step)
gru_cell = Cell("gru", 3, False, _gru_step)
CELLS: dict[str, Cell] = {c.name: c for c in (rnn_cell, lstm_cell, peephole_lstm_cell, coupled_lstm_cell, gru_cell)}


def get_cell(name: str) -> Cell:
    """The cell registered under `name` (one of CELLS)."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; choose one of {sorted(CELLS)}")
    return CELLS[name]


def init_cell_params(
    key: jax.Array, cell_name: str, input_size: int, hidden_size: int, dtype: Any = jnp.float32
) -> Params:
    """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), as torch initialises its RNN modules."""
    cell = get_cell(cell_name)
    gh = cell.num_gates * hidden_size
    shapes = {"w_ih": (gh, input_size), "w_hh": (gh, hidden_size), "b_ih": (gh,), "b_hh": (gh,)}
    if cell.name == "peephole_lstm":
        shapes |= {"p_i": (hidden_size,), "p_f": (hidden_size,), "p_o": (hidden_size,)}
    bound = 1.0 / math.sqrt(hidden_size)
    keys = jax.random.split(key, len(shapes))
    return {
        name: jax.random.uniform(k, shape, dtype, -bound, bound)
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def zero_carry(cell_name: str, batch: int, hidden: int, dtype: Any = jnp.float32) -> Carry:
    """Zeros of shape [batch, hidden]: h, or (h, c) for the LSTM family."""
    h = jnp.zeros((batch, hidden), dtype)
    return (h, h) if get_cell(cell_name).has_cell_state else h


def _reverse_within_lengths(xs: jax.Array, lengths: jax.Array) -> jax.Array:
    """Time-major [T, B, ...]: row b's first lengths[b] steps reversed, padding left in place (an involution)."""
    t = jnp.arange(xs.shape[0])[:, None]
    src = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # [T, B]
    return jnp.take_along_axis(xs, src.reshape(src.shape + (1,) * (xs.ndim - 2)), axis=0)


def reverse_within_lengths(xs: jax.Array, lengths: jax.Array) -> jax.Array:
    """Batch-major [B, T, ...]: row b's first lengths[b] steps reversed, the padding after them left in place."""
    return jnp.swapaxes(_reverse_within_lengths(jnp.swapaxes(xs, 0, 1), jnp.asarray(lengths)), 0, 1)


def _where_rows(ok: jax.Array, on: jax.Array, off: jax.Array) -> jax.Array:
    """Row-wise select: on[b] where ok[b] else off[b]; ok [B], on [B, ...]."""
    return jnp.where(ok.reshape(ok.shape + (1,) * (on.ndim - 1)), on, off)


def scan(
    cell: Cell | Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]],
    params: Params,
    xs: jax.Array,
    carry: Carry,
    *,
    lengths: jax.Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool = 1,
) -> tuple[Carry, jax.Array]:
    """Runs `cell` over time: xs [B, T, I] ([T, B, I] if time_major) -> (final_carry, outputs [B, T, H]).

    With a `Cell`, x @ w_ih^T + b_ih for all steps is one matmul before the loop; any other
    `cell(params, carry, x)` function is stepped on raw inputs. `lengths` [B]: steps t >= lengths[b] keep the carry
    and output 0, so final_carry is the carry after each row's last valid step. `reverse` runs each row backwards
    over its own first lengths[b] steps (a packed-sequence reverse RNN) and returns outputs at their original
    positions. `unroll` is passed to `lax.scan`.
    """
    xs = xs if time_major else jnp.swapaxes(xs, 0, 1)  # the loop runs over the leading axis
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if reverse:
            xs = _reverse_within_lengths(xs, lengths)
    if isinstance(cell, Cell):
        inputs, step = project_input(params, xs), cell.step
    else:
        inputs, step = xs, cell

    if lengths is None:

        def body(c, x):
            return step(params, c, x)

        carry, ys = jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)
    else:
        valid = jnp.arange(inputs.shape[0])[:, None] < lengths[None, :]  # [T, B]

        def body(c, x_and_valid):
            x, ok = x_and_valid
            new_c, y = step(params, c, x)
            # Padding steps freeze the carry and emit zeros.
            new_c = jax.tree.map(lambda n, o: _where_rows(ok, n, o), new_c, c)
            return new_c, _where_rows(ok, y, jnp.zeros((), y.dtype))

        carry, ys = jax.lax.scan(body, carry, (inputs, valid), unroll=unroll)
        if reverse:
            ys = _reverse_within_lengths(ys, lengths)
    return carry, ys if time_major else jnp.swapaxes(ys, 0, 1)


def bidirectional(
    cell: Cell | Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]],
    params_fwd: Params,
    params_bwd: Params,
    xs: jax.Array,
    carry_fwd: Carry,
    carry_bwd: Carry,
    *,
    lengths: jax.Array | None = None,
    time_major: bool = False,
    unroll: int | bool = 1,
) -> tuple[tuple[Carry, Carry], jax.Array]:
    """A forward and a (length-aware) backward `scan`: ((final_fwd, final_bwd), concat(out_fwd, out_bwd) [.., 2H])."""
    kw = dict(lengths=lengths, time_major=time_major, unroll=unroll)
    final_fwd, out_fwd = scan(cell, params_fwd, xs, carry_fwd, **kw)
    final_bwd, out_bwd = scan(cell, params_bwd, xs, carry_bwd, reverse=True, **kw)
    return (final_fwd, final_bwd), jnp.concatenate([out_fwd, out_bwd], axis=-1)
