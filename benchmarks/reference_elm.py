"""A plain reference of the ELM Network, written from DESIGN.md §2-3 one neuron at a time.

It shares parameters and wiring with an `elm_core.ELMNetwork` (so results can be compared number for number) but
computes every neuron in a Python loop with a plain gather: slow by design, kept only to check the fast path
(tests) and to measure how much faster the fast path is (benchmarks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from elm_core.model import LAMBDA, MEMORY_GAIN, ELMLayer, ELMNetwork


def neuron_step(layer: ELMLayer, i: int, z: torch.Tensor, m: torch.Tensor, r: torch.Tensor):
    """One time step of neuron i. z: (B, sources) = [inputs ; layer's previous outputs]; m: (B, d_m); r: (B,)."""
    u = z[:, layer.sources[i]]  # (B, k_c)
    weighted = layer.input_scale * u * layer.w_syn[i]
    beta = weighted.view(-1, layer.d_tree, layer.d_branch).sum(-1)  # (B, d_tree)
    tau_m = layer.log_tau_m[i].exp()
    kappa_m = torch.exp(-1.0 / tau_m)
    kappa_lambda = torch.exp(-LAMBDA / tau_m)
    m_tilde = kappa_m * m
    h = torch.cat((beta, m_tilde), dim=1)
    n_layers = len(layer.mlp_w)
    for j in range(n_layers):
        h = h @ layer.mlp_w[j][i].T + layer.mlp_b[j][i, :, 0]
        if j < n_layers - 1:
            h = {"relu2": lambda v: F.relu(v) ** 2, "relu": F.relu, "silu": F.silu}[layer.activation](h)
    delta = h
    m_new = m_tilde + (1 - kappa_lambda) * MEMORY_GAIN * torch.tanh(2 * delta / 3)
    y = m_new @ layer.w_y[i, :, 0]
    kappa_r = math.exp(-1.0 / layer_tau_r(layer))
    if layer.high_pass:
        r_new = kappa_r * r + (1 - kappa_r) * y
        pre = y - r_new + layer.bias[i, 0]
    else:
        r_new = r
        pre = y + layer.bias[i, 0]
    a = F.relu(pre) if layer.rectify else pre
    return m_new, r_new, a, delta


def layer_tau_r(layer: ELMLayer) -> float:
    return -1.0 / math.log(layer.kappa_r)


def reference_forward(net: ELMNetwork, x: torch.Tensor, state=None):
    """Logits (B, T, n_out) and the final per-layer states [(m, r, a)] computed neuron by neuron, step by step.

    state: None or the fast path's ELMState (batch-last), converted here to batch-first per neuron.
    """
    emb = net.embed(x)  # (B, T, C)
    batch, steps, _ = emb.shape
    layers = (net.hidden, net.readout)
    states = []
    for k, layer in enumerate(layers):
        if state is None:
            m = [torch.zeros(batch, layer.d_m) for _ in range(layer.n)]
            r = [torch.zeros(batch) for _ in range(layer.n)]
            a = torch.zeros(batch, layer.n)
        else:
            s = state[k]
            m = [s.m[i].T for i in range(layer.n)]
            r = [s.r[i] for i in range(layer.n)]
            a = s.a.T
        states.append([m, r, a])
    logits = []
    for t in range(steps):
        hidden_state, readout_state = states
        z = torch.cat((emb[:, t], hidden_state[2]), dim=1)
        new_a = []
        for i in range(net.hidden.n):
            hidden_state[0][i], hidden_state[1][i], a_i, _ = neuron_step(
                net.hidden, i, z, hidden_state[0][i], hidden_state[1][i]
            )
            new_a.append(a_i)
        hidden_state[2] = torch.stack(new_a, dim=1)  # (B, N)
        z_out = hidden_state[2]  # the readout reads only the hidden layer's current activity
        out_a = []
        for i in range(net.readout.n):
            readout_state[0][i], readout_state[1][i], a_i, _ = neuron_step(
                net.readout, i, z_out, readout_state[0][i], readout_state[1][i]
            )
            out_a.append(a_i)
        readout_state[2] = torch.stack(out_a, dim=1)
        logits.append(net.output(readout_state[2]))
    return torch.stack(logits, dim=1), states
