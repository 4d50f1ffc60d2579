"""Recurrent layers with torch-layout parameters, over `lmjax.ops.recurrent`'s cells and length-aware scans.

    (h_t, c_t) = cell(x_t, (h_{t-1}, c_{t-1}))        t = 1..T, or T..1 with reverse (each row over its own length)
    y_t = h_t;  bidirectional: y_t = [h_fwd_t ; h_bwd_t]
    projection (LSTM cells; torch's proj_size, the LSTMP of Sak et al. 2014 that ELMo uses):
        h_t = W_hr (o_t * tanh(c_t)), W_hr [P, H]; h_t (width P) is both the output and what recurs
        with cell_clip / proj_clip (bilm-tf): c_t and h_t clipped to ±cell_clip, ±proj_clip
    stacked: x^1 = x,  x^{l+1} = D(y^l)  (+ x^l with residual, for l >= 1; ELMo)

Parameters are those of `torch.nn.LSTM` / `GRU` / `RNN` per layer and direction, so weights copy over unchanged:
w_ih [G*H, I], w_hh [G*H, P or H], b_ih, b_hh [G*H], w_hr [P, H] with a projection, peephole weights p_i, p_f, p_o
[H] for "peephole_lstm". Every parameter starts ~ U(-s, s), s = `init_scale`, by default 1/sqrt(H) as in torch.

`cell_params(module, ...)` declares one cell's parameters on the calling module under a name prefix (flat layouts
such as the seq2seq model's `enc_fwd_w_ih`); `RecurrentLayer` is one layer (one direction, or both with prefixes
fwd_ and bwd_); `StackedRecurrent` stacks them as layer_0, layer_1, ... With `lengths` [B], steps t >= lengths[b]
keep the carry and output zeros, and the backward direction runs over each row's own first lengths[b] steps, as
torch's packed sequences. Carries go in and come out, so a caller can carry state across batches (TBPTT).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.linear import param, uniform
from lmjax.ops import recurrent
from lmjax.ops.recurrent import Carry, Cell, Params


def cell_params(module: nn.Module, cell: str, input_size: int, hidden: int, *, prefix: str = "",
                init_scale: float | None = None, proj: int = 0) -> Params:
    """The parameters of one `cell` ({"w_ih", "w_hh", "b_ih", "b_hh", ...}), declared on `module` as prefix + name."""
    spec = recurrent.get_cell(cell)
    gates, state = spec.num_gates * hidden, proj or hidden
    shapes = {"w_ih": ((gates, input_size), ("gates", "embed")), "w_hh": ((gates, state), ("gates", "hidden")),
              "b_ih": ((gates,), ("gates",)), "b_hh": ((gates,), ("gates",))}
    if spec.name == "peephole_lstm":
        shapes |= {name: ((hidden,), ("hidden",)) for name in ("p_i", "p_f", "p_o")}
    if proj:
        shapes["w_hr"] = ((proj, hidden), ("embed", "hidden"))
    init = uniform(1.0 / math.sqrt(hidden) if init_scale is None else init_scale)
    return {name: param(module, prefix + name, shape, axes, init) for name, (shape, axes) in shapes.items()}


def projected(cell: Cell, cell_clip: float = 0.0, proj_clip: float = 0.0) -> Cell:
    """`cell` (one with a cell state) whose new h is W_hr h: the recurrent projection of torch's proj_size; with
    clips (the "lstm" cell only), c and the projected h are clipped to ±cell_clip, ±proj_clip (bilm-tf's LSTMP)."""
    if not cell.has_cell_state:
        raise ValueError(f"a projection needs a cell with a cell state (the LSTM family), not {cell.name!r}")
    if cell_clip or proj_clip:
        if cell.name != "lstm":
            raise ValueError(f"cell_clip and proj_clip are for the 'lstm' cell, not {cell.name!r}")

        def clipped(params, carry, gx):
            return recurrent.lstm_projected_step(params, carry, gx, cell_clip=cell_clip, proj_clip=proj_clip)

        return Cell("lstm_projected_clipped", cell.num_gates, True, clipped)

    def step(params, carry, gx):
        (h, c), _ = cell.step(params, carry, gx)
        h = h @ params["w_hr"].T
        return (h, c), h

    return Cell(f"{cell.name}_projected", cell.num_gates, True, step)


class RecurrentLayer(nn.Module):
    """xs [B, T, I], carry -> (final carry, outputs [B, T, D]), D = proj or hidden (twice that bidirectional).

    carry: h [B, D], or (h [B, D], c [B, hidden]) for the LSTM family; bidirectional, a (forward, backward) pair;
    None = `zero_state`. The backward final carry is the state after its last step, at t = 0.
    """

    cell: str
    hidden: int
    init_scale: float | None = None
    bidirectional: bool = False
    reverse: bool = False
    proj: int = 0
    cell_clip: float = 0.0  # with proj: clip c to ±cell_clip ("lstm" only; 0 = none)
    proj_clip: float = 0.0  # with proj: clip the projected h to ±proj_clip

    def zero_state(self, batch: int) -> Carry:
        h = jnp.zeros((batch, self.proj or self.hidden), jnp.float32)
        one = (h, jnp.zeros((batch, self.hidden), jnp.float32)) if recurrent.get_cell(self.cell).has_cell_state else h
        return (one, one) if self.bidirectional else one

    @nn.compact
    def __call__(self, xs: jax.Array, carry: Carry = None, *, lengths: jax.Array | None = None):
        cell = recurrent.get_cell(self.cell)
        if (self.cell_clip or self.proj_clip) and not self.proj:
            raise ValueError("cell_clip and proj_clip need a projection (proj > 0)")
        cell = projected(cell, self.cell_clip, self.proj_clip) if self.proj else cell
        carry = self.zero_state(xs.shape[0]) if carry is None else carry
        kw = dict(init_scale=self.init_scale, proj=self.proj)
        if not self.bidirectional:
            params = cell_params(self, self.cell, xs.shape[-1], self.hidden, **kw)
            return recurrent.scan(cell, params, xs, carry, lengths=lengths, reverse=self.reverse)
        if self.reverse:
            raise ValueError("reverse=True is for one direction: a bidirectional layer runs both")
        fwd = cell_params(self, self.cell, xs.shape[-1], self.hidden, prefix="fwd_", **kw)
        bwd = cell_params(self, self.cell, xs.shape[-1], self.hidden, prefix="bwd_", **kw)
        return recurrent.bidirectional(cell, fwd, bwd, xs, carry[0], carry[1], lengths=lengths)


class StackedRecurrent(nn.Module):
    """`num_layers` RecurrentLayers (layer_0, ...): xs [B, T, I], carries (one per layer) -> (finals, outputs).

    Dropout (train=True) acts between layers, as torch's `dropout`, never on the recurrent connections. outputs is
    the last layer's [B, T, D], or with all_layers=True the list of every layer's (ELMo mixes them).
    """

    cell: str
    hidden: int
    num_layers: int
    init_scale: float | None = None
    bidirectional: bool = False
    reverse: bool = False
    proj: int = 0
    dropout: float = 0.0
    residual: bool = False
    cell_clip: float = 0.0
    proj_clip: float = 0.0

    def zero_state(self, batch: int) -> tuple:
        layer = RecurrentLayer(self.cell, self.hidden, bidirectional=self.bidirectional, proj=self.proj, parent=None)
        return tuple(layer.zero_state(batch) for _ in range(self.num_layers))

    @nn.compact
    def __call__(self, xs: jax.Array, carry: tuple | None = None, *, lengths: jax.Array | None = None,
                 train: bool = False, all_layers: bool = False):
        carry = self.zero_state(xs.shape[0]) if carry is None else carry
        valid = None if lengths is None else (jnp.arange(xs.shape[1]) < lengths[:, None])[..., None]
        finals, outputs, x = [], [], xs
        for i in range(self.num_layers):
            layer = RecurrentLayer(self.cell, self.hidden, self.init_scale, self.bidirectional, self.reverse,
                                   self.proj, self.cell_clip, self.proj_clip, name=f"layer_{i}")
            final, y = layer(x, carry[i], lengths=lengths)
            if self.residual and i > 0:
                y = y + (x if valid is None else jnp.where(valid, x, 0.0))
            finals.append(final)
            outputs.append(y)
            if i + 1 < self.num_layers:
                x = nn.Dropout(self.dropout)(y, deterministic=not train)
        return tuple(finals), outputs if all_layers else outputs[-1]
