"""The fast path of an ELM layer: sparse synapses and one autograd Function for a whole chunk of time steps.

Why it is fast, in one place:
- Synapses are a fixed sparse (branches x sources) matrix with int32 CSR indices: the (batch, N, k_c) synapse
  tensor is never materialised; the feed-forward share is one sparse matmul per block of time steps.
- Per step the per-neuron MLPs are batch-first bmm calls, (N, B, in) @ (N, in, out), which MKL runs about twice as
  fast as the weight-first layout for tiny B.
- The backward pass is written by hand: only the per-step tensors the weight gradients need are kept (stacked once
  per block, not per step), the weight gradients are one bmm per block of K steps (inner dimension K*B instead of B)
  and the synapse gradients one sampled dense-dense product (SDDMM) per block.
- No autograd graph over the time loop: a step costs a dozen kernel launches forward and backward, not hundreds.
- On CPU, freed memory is kept for reuse (`keep_freed_memory_for_reuse`) instead of glibc's fresh mmap per large
  tensor, whose page faults cost more than the arithmetic.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MEMORY_GAIN = 1.7159  # LeCun's scaled tanh: 1.7159 * tanh(2x/3)
TANH_SCALE = 2.0 / 3.0
# Time steps x batch per weight-gradient bmm: large enough for MKL to run near peak, small enough that the per-block
# buffers of the backward pass keep an Enwik8-reference step under 1 GiB (256 rows: ~5 % faster, +290 MB).
WEIGHT_GRAD_ROWS = 128


@functools.cache
def keep_freed_memory_for_reuse() -> bool:
    """Make glibc serve large tensors from its heap and keep freed memory, once per process.

    By default every tensor above 32 MB is a fresh mmap, so each training step page-faults its whole working set
    again (measured: filling a new 52 MB tensor 35 ms, a reused one 5 ms; a whole Enwik8 step ~1.5x slower).
    Returns False where the C library has no mallopt (not glibc); nothing changes then.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


class SynapsePattern:
    """A fixed sparse (rows x sources) pattern: row = neuron * d_tree + branch, one entry per synapse.

    Duplicated (row, source) entries are kept apart (sources are drawn with replacement); the matmul sums them.
    Indices are int32: the CSR matmul reads fewer bytes per synapse and runs ~25 % faster than with int64.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
        self.shape = (n_rows, n_cols)
        self.nnz = rows.numel()
        self.crow = _compressed(rows, n_rows)
        self.col = cols.to(torch.int32)
        order = torch.argsort(cols, stable=True)  # the transposed pattern, for the backward pass
        self.t_perm = order
        self.t_crow = _compressed(cols[order], n_cols)
        self.t_col = rows[order].to(torch.int32)

    def to(self, device: torch.device) -> SynapsePattern:
        for name in ("crow", "col", "t_perm", "t_crow", "t_col"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.t_crow, self.t_col, values[self.t_perm], self.shape[::-1], check_invariants=False
        )


def _compressed(sorted_index: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int32, device=sorted_index.device)
    crow[1:] = torch.cumsum(torch.bincount(sorted_index, minlength=n), 0)
    return crow


@dataclass(frozen=True)
class ScanSpec:
    """What a layer scan needs besides tensors: wiring, sizes and which nonlinearities the layer uses."""

    ff: SynapsePattern
    rec: SynapsePattern
    n: int
    d_m: int
    d_tree: int
    activation: str
    high_pass: bool
    rectify: bool
    kappa_r: float


def activate(z: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu2":
        return torch.square(F.relu(z))
    if name == "relu":
        return F.relu(z)
    return F.silu(z)


def activation_slope(z: torch.Tensor, name: str) -> torch.Tensor:
    """d activate(z) / dz, for a whole block at once."""
    if name == "relu2":
        return 2.0 * F.relu(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


class LayerScan(torch.autograd.Function):
    """T steps of N ELM neurons (DESIGN §2) with a hand-written backward pass.

    Inputs (internal layouts, batch B inside each neuron): x (C, T*B) external sources; ff_values, rec_values the
    scaled synapse weights of the two patterns; kappa, gate_gain (N, 1, d_m) with gate_gain = (1 - kappa_lambda) *
    1.7159; w_y (N, d_m, 1); bias (N, 1); m0 (N, B, d_m), r0 and a0 (N, B); rec_keep (N, B) or None; then the MLP
    as alternating weights (N, out, in) and biases (N, out, 1).
    Outputs: activities (T, N, B), final memory (N, B, d_m), final high-pass state (N, B), mean |MLP output| (N,).
    """

    @staticmethod
    def forward(ctx, spec: ScanSpec, x, ff_values, rec_values, kappa, gate_gain, w_y, bias, m0, r0, a0, rec_keep,
                *mlp):
        if x.device.type == "cpu":
            keep_freed_memory_for_reuse()
        n, d_tree, batch = spec.n, spec.d_tree, m0.shape[1]
        steps = x.shape[1] // batch
        block = max(1, WEIGHT_GRAD_ROWS // batch)
        weights_t, biases_t = _forward_weights(mlp)
        ff_mat = spec.ff.matrix(ff_values) if spec.ff.nnz else None
        rec_mat = spec.rec.matrix(rec_values) if spec.rec.nnz else None
        n_hidden_layers = len(weights_t) - 1
        kappa_r = spec.kappa_r

        m, r = m0, r0.clone()
        activities = [a0]
        abs_sum = x.new_zeros(n)
        saved_h0, saved_z, saved_th, saved_m = [], [], [], []
        for t0 in range(0, steps, block):
            t1 = min(steps, t0 + block)
            h0_blk = _block_inputs(ff_mat, x, t0, t1, batch, n, d_tree, spec.d_m)  # (N, K, B, d_tree + d_m)
            zs, ths, ms, deltas = [[] for _ in range(n_hidden_layers)], [], [], []
            for k in range(t1 - t0):
                h0 = h0_blk[:, k]  # (N, B, d_tree + d_m), beta already holds the feed-forward share
                if rec_mat is not None:
                    a_in = activities[-1] if rec_keep is None else activities[-1] * rec_keep
                    h0[..., :d_tree] += (rec_mat @ a_in).view(n, d_tree, batch).transpose(1, 2)
                m_tilde = torch.mul(m, kappa, out=h0[..., d_tree:])
                h = h0
                for layer in range(n_hidden_layers):
                    z = torch.baddbmm(biases_t[layer], h, weights_t[layer])
                    zs[layer].append(z)
                    h = activate(z, spec.activation)
                delta = torch.baddbmm(biases_t[-1], h, weights_t[-1])  # (N, B, d_m), already times 2/3
                th = torch.tanh(delta)
                m = torch.addcmul(m_tilde, gate_gain, th)
                y = torch.bmm(m, w_y).view(n, batch)
                if spec.high_pass:
                    y_minus_r = y - r
                    r = r + (1.0 - kappa_r) * y_minus_r
                    pre = torch.add(bias, y_minus_r, alpha=kappa_r)  # y - r_t + b
                else:
                    pre = y + bias
                activities.append(F.relu(pre) if spec.rectify else pre)
                ths.append(th)
                ms.append(m)
                deltas.append(delta)
            abs_sum += torch.stack(deltas, 1).abs().sum((1, 2, 3))
            saved_h0.append(h0_blk)
            saved_z.append([torch.stack(z, 1) for z in zs])  # (N, K, B, d_mlp) per hidden layer
            saved_th.append(torch.stack(ths, 1))  # (N, K, B, d_m)
            saved_m.append(torch.stack(ms, 1))  # (N, K, B, d_m)

        activity = torch.stack(activities)  # (T + 1, N, B), step 0 is a0
        ctx.spec, ctx.block, ctx.batch, ctx.steps = spec, block, batch, steps
        ctx.blocks = (saved_h0, saved_z, saved_th, saved_m)
        ctx.save_for_backward(x, ff_values, rec_values, kappa, gate_gain, w_y, m0, rec_keep, activity, *mlp)
        mlp_abs = abs_sum / (TANH_SCALE * steps * batch * spec.d_m)
        return activity[1:], m, r, mlp_abs

    @staticmethod
    def backward(ctx, grad_activity, grad_m, grad_r, grad_mlp_abs):
        spec, block, batch, steps = ctx.spec, ctx.block, ctx.batch, ctx.steps
        x, ff_values, rec_values, kappa, gate_gain, w_y, m0, rec_keep, activity, *mlp = ctx.saved_tensors
        saved_h0, saved_z, saved_th, saved_m = ctx.blocks
        n, d_tree, d_m = spec.n, spec.d_tree, spec.d_m
        weights, biases = list(mlp[0::2]), list(mlp[1::2])
        weights_in = weights[:-1] + [weights[-1] * TANH_SCALE]  # the forward used the last layer times 2/3
        n_hidden_layers = len(weights) - 1
        kappa_r = spec.kappa_r
        needs = ctx.needs_input_grad  # (spec, x, ff_values, rec_values, kappa, gate_gain, w_y, bias, m0, r0, a0, ...)
        rec_t = spec.rec.transposed(rec_values) if spec.rec.nnz else None
        ff_mat = spec.ff.matrix(ff_values) if spec.ff.nnz else None
        rec_mat = spec.rec.matrix(rec_values) if spec.rec.nnz else None

        grad_weights = [torch.zeros_like(w) for w in weights]
        grad_biases = [torch.zeros_like(b) for b in biases]
        grad_w_y = torch.zeros_like(w_y)
        grad_bias = x.new_zeros(n, 1)
        grad_kappa = torch.zeros_like(kappa)
        grad_gate_gain = torch.zeros_like(gate_gain)
        grad_ff = torch.zeros_like(ff_values)
        grad_rec = torch.zeros_like(rec_values)
        grad_x = torch.zeros_like(x) if needs[1] else None
        learn_tau = needs[4] or needs[5]
        abs_scale = grad_mlp_abs / (TANH_SCALE * steps * batch * d_m)  # (N,)
        rectified = activity[1:] > 0 if spec.rectify else None

        dm = grad_m.clone()
        dr = grad_r.clone()
        da_rec = torch.zeros_like(m0[..., 0])  # (N, B): gradient reaching a_{t-1} through the recurrent synapses
        for index in reversed(range(len(saved_h0))):
            t0 = index * block
            h0_blk, z_blk, th_blk, m_blk = saved_h0[index], saved_z[index], saved_th[index], saved_m[index]
            saved_h0[index] = saved_z[index] = saved_th[index] = None  # freed as soon as this block is done
            k_len = h0_blk.shape[1]
            tanh_slope = gate_gain.unsqueeze(1) * (1.0 - th_blk * th_blk)  # (N, K, B, d_m)
            abs_grad = abs_scale.view(n, 1, 1, 1) * torch.sign(th_blk)
            slopes = [activation_slope(z, spec.activation) for z in z_blk]
            d_delta, d_z, d_y, d_pre, d_beta = [], [[] for _ in range(n_hidden_layers)], [], [], []
            d_m_total, d_m_tilde = [], []
            for k in reversed(range(k_len)):
                t = t0 + k
                da = grad_activity[t] + da_rec
                dpre = da * rectified[t] if spec.rectify else da
                if spec.high_pass:
                    # pre = y - r_t + b with r_t = kappa_r r_{t-1} + (1 - kappa_r) y
                    dy = torch.add(dpre * kappa_r, dr, alpha=1.0 - kappa_r)
                    dr = (dr - dpre) * kappa_r
                else:
                    dy = dpre
                dm_total = torch.addcmul(dm, w_y.view(n, 1, d_m), dy.unsqueeze(-1))  # (N, B, d_m)
                dd = torch.addcmul(abs_grad[:, k], dm_total, tanh_slope[:, k])
                grad_h = dd
                for layer in reversed(range(n_hidden_layers + 1)):
                    grad_h = torch.bmm(grad_h, weights_in[layer])  # (N, B, in)
                    if layer > 0:
                        grad_h = grad_h * slopes[layer - 1][:, k]
                        d_z[layer - 1].append(grad_h)
                dm_tilde = dm_total + grad_h[..., d_tree:]
                dm = dm_tilde * kappa
                dbeta = grad_h[..., :d_tree]  # (N, B, d_tree)
                if rec_t is not None:
                    da_rec = (rec_t @ dbeta.transpose(1, 2).reshape(n * d_tree, batch)).view(n, batch)
                    if rec_keep is not None:
                        da_rec = da_rec * rec_keep
                d_delta.append(dd)
                d_y.append(dy)
                d_pre.append(dpre)
                d_beta.append(dbeta)
                if learn_tau:
                    d_m_total.append(dm_total)
                    d_m_tilde.append(dm_tilde)

            rows = k_len * batch
            inputs = [h0_blk] + [activate(z, spec.activation) for z in z_blk]
            grads_out = [_in_time_order(dz) for dz in d_z] + [_in_time_order(d_delta)]
            for layer, (inp, g) in enumerate(zip(inputs, grads_out)):
                g_rows = g.view(n, rows, -1)
                scale = TANH_SCALE if layer == n_hidden_layers else 1.0
                grad_weights[layer].baddbmm_(g_rows.transpose(1, 2), inp.reshape(n, rows, -1), alpha=scale)
                grad_biases[layer].add_(g_rows.sum(1).unsqueeze(-1), alpha=scale)
            grad_w_y += torch.bmm(m_blk.reshape(n, rows, d_m).transpose(1, 2), _in_time_order(d_y).view(n, rows, 1))
            grad_bias += _in_time_order(d_pre).sum((1, 2)).unsqueeze(-1)
            if learn_tau:
                m_prev = torch.cat((saved_m[index - 1][:, -1:] if index else m0.unsqueeze(1), m_blk[:, :-1]), 1)
                grad_kappa += (_in_time_order(d_m_tilde) * m_prev).sum((1, 2)).unsqueeze(1)
                grad_gate_gain += (_in_time_order(d_m_total) * th_blk).sum((1, 2)).unsqueeze(1)
            d_beta_rows = _in_time_order(d_beta).permute(0, 3, 1, 2).reshape(n * d_tree, rows)  # (N*d_tree, K*B)
            x_blk = x[:, t0 * batch:t0 * batch + rows]
            if ff_mat is not None:
                grad_ff += torch.sparse.sampled_addmm(ff_mat, d_beta_rows, x_blk.T, beta=0.0).values()
                if grad_x is not None:
                    grad_x[:, t0 * batch:t0 * batch + rows] = spec.ff.transposed(ff_values) @ d_beta_rows
            if rec_mat is not None:
                a_in = activity[t0:t0 + k_len]  # (K, N, B): a_{t-1} for the block's steps
                if rec_keep is not None:
                    a_in = a_in * rec_keep
                a_cols = a_in.permute(1, 0, 2).reshape(n, rows)
                grad_rec += torch.sparse.sampled_addmm(rec_mat, d_beta_rows, a_cols.T, beta=0.0).values()

        grad_mlp = [g for pair in zip(grad_weights, grad_biases) for g in pair]
        grad_r0 = dr if needs[9] else None
        return (None, grad_x, grad_ff, grad_rec, grad_kappa if learn_tau else None,
                grad_gate_gain if learn_tau else None, grad_w_y, grad_bias, dm, grad_r0, da_rec, None, *grad_mlp)


def _in_time_order(reversed_steps: list[torch.Tensor]) -> torch.Tensor:
    """Per-step tensors collected backwards in time, stacked in time order along a new axis 1."""
    return torch.stack(reversed_steps[::-1], 1)


def _forward_weights(mlp: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """MLP weights as (N, in, out) for batch-first bmm and biases as (N, 1, out); the last layer times 2/3.

    Folding tanh's 2/3 into the last layer saves one elementwise pass per step.
    """
    weights, biases = list(mlp[0::2]), list(mlp[1::2])
    weights[-1] = weights[-1] * TANH_SCALE
    biases[-1] = biases[-1] * TANH_SCALE
    return [w.transpose(1, 2).contiguous() for w in weights], [b.transpose(1, 2) for b in biases]


def _block_inputs(ff_mat, x: torch.Tensor, t0: int, t1: int, batch: int, n: int, d_tree: int, d_m: int):
    """MLP inputs [beta ; m_tilde] of steps t0..t1 (N, K, B, d_tree + d_m), beta holding its feed-forward share.

    The feed-forward share depends only on the inputs: one sparse matmul for the block, written straight into the
    buffer the steps fill in and the weight gradients read, so no per-step concatenation or per-block stacking.
    """
    steps = t1 - t0
    h0 = x.new_empty(n, steps, batch, d_tree + d_m)
    if ff_mat is None:
        h0[..., :d_tree] = 0.0
    else:
        beta_ff = ff_mat @ x[:, t0 * batch:t1 * batch].contiguous()  # (N*d_tree, K*B)
        h0[..., :d_tree] = beta_ff.view(n, d_tree, steps, batch).permute(0, 2, 3, 1)
    return h0
