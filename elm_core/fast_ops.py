"""The fast path of an ELM layer: sparse synapses and one autograd Function for a whole chunk of time steps.

Why it is fast, in one place:
- Synapses are a fixed sparse (branches x sources) matrix with int32 CSR indices: the (batch, N, k_c) synapse
  tensor is never materialised; the feed-forward share is one sparse matmul per block of time steps.
- The per-step loops run in C++ on the CPU (`step_kernels`): a neuron's whole step in registers, batch as the SIMD
  axis, no per-op dispatch.
- Every per-step tensor lives in a per-block buffer laid out (N, F, K, B): each neuron's (F, K*B) rows are
  contiguous, so its weight and synapse gradients are long dot products over a block's K*B (step, batch) pairs,
  computed once per block of K steps (`weight_grads_block`) instead of once per step.
- The backward pass is written by hand: only what the weight gradients need is kept, no autograd graph over time.
- On CPU, freed memory is kept for reuse (`keep_freed_memory_for_reuse`) instead of glibc's fresh mmap per large
  tensor, whose page faults cost more than the arithmetic.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from .step_kernels import ACTIVATION_CODES, TorchSteps, steps_for

MEMORY_GAIN = 1.7159  # LeCun's scaled tanh: 1.7159 * tanh(2x/3)
TANH_SCALE = 2.0 / 3.0
# Time steps x batch per block, the inner dimension of the weight-gradient bmm: large enough for MKL to run near peak,
# small enough that the per-block buffers keep an Enwik8-reference step under 1 GiB and stay in cache longer.
WEIGHT_GRAD_ROWS = 128

# Inputs at most this dense (one-hot characters: 1/204, SHD spikes: ~3 %) get their feed-forward share scattered from
# the nonzero inputs inside the C++ step loops, instead of a sparse-times-dense matmul over mostly zeros. The density
# is estimated on the chunk's first DENSITY_SAMPLE_STEPS steps (counting all of SHD's 5.6 M inputs costs ~5 ms).
SPARSE_INPUT_DENSITY = 0.1
DENSITY_SAMPLE_STEPS = 32


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


class LayerScan(torch.autograd.Function):
    """T steps of N ELM neurons (DESIGN §2) with a hand-written backward pass.

    Inputs: x (C, T, B) external sources, any strides; ff_values, rec_values the scaled synapse weights of the two
    patterns; kappa, gate_gain (N, d_m) with gate_gain = (1 - kappa_lambda) * 1.7159; w_y (N, d_m, 1); bias (N, 1);
    m0 (N, d_m, B), r0 and a0 (N, B); rec_keep (N, B) or None; then the MLP as alternating weights (N, out, in) and
    biases (N, out, 1). Outputs: activities (T, N, B), final memory (N, d_m, B), final high-pass state (N, B),
    mean |MLP output| of each neuron (N,).
    """

    @staticmethod
    def forward(ctx, spec: ScanSpec, x, ff_values, rec_values, kappa, gate_gain, w_y, bias, m0, r0, a0, rec_keep,
                *mlp):
        if x.device.type == "cpu":
            keep_freed_memory_for_reuse()
        steps_kernel = steps_for(x.device)
        n, d_m, batch, steps = spec.n, spec.d_m, m0.shape[2], x.shape[1]
        block = max(1, WEIGHT_GRAD_ROWS // batch)
        weights, biases = _scaled_last_layer(mlp)
        keep = None if rec_keep is None else rec_keep.contiguous()
        rec = [spec.rec.crow, spec.rec.col, rec_values.contiguous()] if spec.rec.nnz else []
        ff_sparse = (
            spec.ff.nnz > 0 and steps_kernel is not TorchSteps and not ctx.needs_input_grad[1]
            and inputs_are_sparse(x)
        )
        # Dense inputs step-major (T, C, B): free for the readout, whose inputs are the hidden activities.
        x_steps = None if ff_sparse or not spec.ff.nnz else x.permute(1, 0, 2).contiguous()
        if not spec.ff.nnz:
            ff = []
        elif ff_sparse:
            ff = [x, spec.ff.t_crow, spec.ff.t_col, ff_values[spec.ff.t_perm]]
        else:
            ff = [x_steps, spec.ff.crow, spec.ff.col, ff_values.contiguous()]

        m, r = m0.contiguous().clone(), r0.contiguous().clone()
        activity = x.new_empty(steps + 1, n, batch)  # step 0 is a0
        activity[0] = a0
        abs_sum = x.new_zeros(n)
        saved_h0, saved_z, saved_th, saved_m = [], [], [], []
        for t0 in range(0, steps, block):
            k_len = min(steps, t0 + block) - t0
            h0 = x.new_empty(n, spec.d_tree + d_m, k_len, batch)  # MLP inputs [beta ; m_tilde], filled per step
            zs = [x.new_empty(n, w.shape[1], k_len, batch) for w in weights[:-1]]
            th, m_blk = x.new_empty(n, d_m, k_len, batch), x.new_empty(n, d_m, k_len, batch)
            steps_kernel.forward_block(
                h0, zs, th, m_blk, activity, t0, m, r, abs_sum, rec, ff, ff_sparse, keep, kappa.contiguous(),
                gate_gain.contiguous(), w_y.contiguous(), bias.contiguous(), weights, biases,
                ACTIVATION_CODES[spec.activation], spec.high_pass, spec.rectify, spec.kappa_r,
            )
            saved_h0.append(h0)
            saved_z.append(zs)
            saved_th.append(th)
            saved_m.append(m_blk)

        ctx.spec, ctx.block, ctx.ff_sparse = spec, block, ff_sparse
        ctx.blocks = (saved_h0, saved_z, saved_th, saved_m)
        ctx.save_for_backward(x, x_steps, ff_values, rec_values, kappa, gate_gain, w_y, m0, rec_keep, activity, *mlp)
        mlp_abs = abs_sum / (TANH_SCALE * steps * batch * d_m)
        return activity[1:], m, r, mlp_abs

    @staticmethod
    def backward(ctx, grad_activity, grad_m, grad_r, grad_mlp_abs):
        spec, block, ff_sparse = ctx.spec, ctx.block, ctx.ff_sparse
        x, x_steps, ff_values, rec_values, kappa, gate_gain, w_y, m0, rec_keep, activity, *mlp = ctx.saved_tensors
        saved_h0, saved_z, saved_th, saved_m = ctx.blocks
        steps_kernel = steps_for(x.device)
        n, d_tree, d_m, batch, steps = spec.n, spec.d_tree, spec.d_m, m0.shape[2], x.shape[1]
        weights, biases = list(mlp[0::2]), list(mlp[1::2])
        weights_in = [w.contiguous() for w in weights[:-1]] + [weights[-1] * TANH_SCALE]  # what the forward used
        needs = ctx.needs_input_grad  # (spec, x, ff_values, rec_values, kappa, gate_gain, w_y, bias, m0, r0, a0, ...)
        learn_tau = needs[4] or needs[5]
        keep = None if rec_keep is None else rec_keep.contiguous()
        abs_scale = (grad_mlp_abs / (TANH_SCALE * steps * batch * d_m)).contiguous()  # (N,)
        grad_activity = grad_activity.contiguous()

        grad_weights = [w.new_zeros(w.shape) for w in weights]  # contiguous, whatever the parameters' strides
        grad_biases = [b.new_zeros(b.shape) for b in biases]
        grad_w_y = w_y.new_zeros(w_y.shape)
        grad_bias = x.new_zeros(n, 1)
        grad_kappa = torch.zeros_like(kappa)
        grad_gate_gain = torch.zeros_like(gate_gain)
        grad_ff = torch.zeros_like(ff_values)
        grad_rec = torch.zeros_like(rec_values)
        rec_t = [spec.rec.t_crow, spec.rec.t_col, rec_values[spec.rec.t_perm].contiguous()] if spec.rec.nnz else []
        # Synapse gradients of the dense-input patterns, per block: [crow, col, gradient, sources (T, C, B)]
        rec_grads = [spec.rec.crow, spec.rec.col, grad_rec, activity] if spec.rec.nnz else []
        ff_grads = [spec.ff.crow, spec.ff.col, grad_ff, x_steps] if x_steps is not None else []
        grad_x_steps = x.new_zeros(steps, x.shape[0], batch) if needs[1] else x.new_empty(0)
        if not spec.ff.nnz:
            ff = []
        elif ff_sparse:
            grad_ff_t = torch.zeros_like(ff_values)  # in the transposed pattern's order
            ff = [x, spec.ff.t_crow, spec.ff.t_col, grad_ff_t]
        else:
            ff = [spec.ff.t_crow, spec.ff.t_col, ff_values[spec.ff.t_perm].contiguous(), grad_x_steps]

        dm = grad_m.contiguous().clone()
        dr = grad_r.contiguous().clone()
        da_rec = x.new_zeros(n, batch)  # gradient reaching a_{t-1} through the recurrent synapses
        for index in reversed(range(len(saved_h0))):
            t0 = index * block
            h0, zs, th, m_blk = saved_h0[index], saved_z[index], saved_th[index], saved_m[index]
            saved_h0[index] = saved_z[index] = saved_th[index] = None  # freed as soon as this block is done
            k_len = h0.shape[2]
            d_h0 = torch.empty_like(h0)
            d_zs = [torch.empty_like(z) for z in zs]
            d_delta = torch.empty_like(th)
            d_y, d_pre = x.new_empty(n, k_len, batch), x.new_empty(n, k_len, batch)
            d_m_total = torch.empty_like(th) if learn_tau else None
            steps_kernel.backward_block(
                grad_activity, activity, t0, th, zs, d_h0, d_zs, d_delta, d_y, d_pre, d_m_total, dm, dr, da_rec,
                rec_t, ff, ff_sparse, keep, kappa.contiguous(), gate_gain.contiguous(), w_y.contiguous(), abs_scale,
                weights_in, ACTIVATION_CODES[spec.activation], spec.high_pass, spec.rectify, spec.kappa_r,
            )
            steps_kernel.weight_grads_block(
                h0, zs, d_zs, d_h0, d_delta, m_blk, d_y, d_pre, t0, grad_weights, grad_biases, grad_w_y, grad_bias,
                rec_grads, ff_grads, keep, ACTIVATION_CODES[spec.activation], TANH_SCALE,
            )
            if learn_tau:
                m_before = saved_m[index - 1][:, :, -1:] if index else m0.unsqueeze(2)
                m_prev = torch.cat((m_before, m_blk[:, :, :-1]), 2)  # (N, d_m, K, B): memory entering each step
                d_m_tilde = d_m_total + d_h0[:, d_tree:]
                grad_kappa += (d_m_tilde * m_prev).sum((2, 3))
                grad_gate_gain += (d_m_total * th).sum((2, 3))

        if ff_sparse:
            grad_ff[spec.ff.t_perm] = grad_ff_t
        grad_mlp = [g for pair in zip(grad_weights, grad_biases) for g in pair]
        grad_x = grad_x_steps.permute(1, 0, 2) if needs[1] else None  # (C, T, B)
        grad_r0 = dr if needs[9] else None
        return (None, grad_x, grad_ff, grad_rec, grad_kappa if learn_tau else None,
                grad_gate_gain if learn_tau else None, grad_w_y, grad_bias, dm, grad_r0, da_rec, None, *grad_mlp)


def _scaled_last_layer(mlp: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """MLP weights (N, out, in) and biases (N, out, 1), contiguous, the last layer times 2/3.

    Folding tanh's 2/3 into the last layer saves one elementwise pass per step.
    """
    weights = [w.contiguous() for w in mlp[0::2]]
    biases = [b.contiguous() for b in mlp[1::2]]
    weights[-1] = weights[-1] * TANH_SCALE
    biases[-1] = biases[-1] * TANH_SCALE
    return weights, biases


def inputs_are_sparse(x: torch.Tensor) -> bool:
    """Whether inputs x (C, T, B) are sparse enough to scatter, judged on their first DENSITY_SAMPLE_STEPS steps."""
    sample = x[:, :DENSITY_SAMPLE_STEPS]
    return torch.count_nonzero(sample).item() <= SPARSE_INPUT_DENSITY * sample.numel()
