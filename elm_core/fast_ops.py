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
from typing import NamedTuple

import torch

from .step_kernels import (
    TANH_SCALE,
    Block,
    BlockGrads,
    Chunk,
    ChunkGrads,
    DenseInputGrads,
    DenseInputs,
    NeuronSpec,
    ParamGrads,
    PatternGrad,
    SourceGrads,
    Sources,
    SparseInputGrads,
    SparseInputs,
    StepWeights,
    Synapses,
    steps_for,
)

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

    def by_branch(self, values: torch.Tensor) -> Synapses:
        """The pattern with its values (in the pattern's order): rows = branches, columns = sources."""
        return Synapses(self.crow, self.col, values.contiguous())

    def by_source(self, values: torch.Tensor) -> Synapses:
        """The pattern transposed, with the same values reordered: rows = sources, columns = branches."""
        return Synapses(self.t_crow, self.t_col, values[self.t_perm])


def _compressed(sorted_index: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int32, device=sorted_index.device)
    crow[1:] = torch.cumsum(torch.bincount(sorted_index, minlength=n), 0)
    return crow


@dataclass(frozen=True)
class ScanSpec:
    """What a layer scan needs besides tensors: its wiring and which nonlinearities its neurons use."""

    ff: SynapsePattern
    rec: SynapsePattern
    neuron: NeuronSpec


class LayerParams(NamedTuple):
    """A layer's parameters as the scan takes them."""

    ff_values: torch.Tensor  # (nnz_ff,) synapse weights times input_scale, feed-forward pattern order
    rec_values: torch.Tensor  # (nnz_rec,)
    kappa: torch.Tensor  # (N, d_m) kappa_m
    gate_gain: torch.Tensor  # (N, d_m) (1 - kappa_lambda) * 1.7159
    w_y: torch.Tensor  # (N, d_m, 1)
    bias: torch.Tensor  # (N, 1)
    mlp_weights: tuple[torch.Tensor, ...]  # (N, out, in) per layer
    mlp_biases: tuple[torch.Tensor, ...]  # (N, out, 1) per layer


class ScanArgs(NamedTuple):
    """Everything LayerScan differentiates; also the shape of its gradients and of its needs_input_grad flags."""

    x: torch.Tensor  # (C, T, B) external sources, any strides
    m0: torch.Tensor  # (N, d_m, B)
    r0: torch.Tensor  # (N, B)
    a0: torch.Tensor  # (N, B)
    params: LayerParams

    def flat(self) -> tuple:
        """Function.apply's positional arguments (and backward's return values), in one fixed order."""
        p = self.params
        return (self.x, self.m0, self.r0, self.a0, p.ff_values, p.rec_values, p.kappa, p.gate_gain, p.w_y, p.bias,
                *p.mlp_weights, *p.mlp_biases)

    @classmethod
    def from_flat(cls, flat) -> ScanArgs:
        x, m0, r0, a0, ff_values, rec_values, kappa, gate_gain, w_y, bias, *mlp = flat
        n_layers = len(mlp) // 2
        params = LayerParams(ff_values, rec_values, kappa, gate_gain, w_y, bias, tuple(mlp[:n_layers]),
                             tuple(mlp[n_layers:]))
        return cls(x, m0, r0, a0, params)


class ScanOutput(NamedTuple):
    activity: torch.Tensor  # (T, N, B)
    m: torch.Tensor  # (N, d_m, B) final memory
    r: torch.Tensor  # (N, B) final high-pass state
    mlp_abs: torch.Tensor  # (N,) mean |MLP output| of each neuron over the chunk


def scan_layer(spec: ScanSpec, x: torch.Tensor, state, params: LayerParams, rec_keep: torch.Tensor | None):
    """T steps of a layer of ELM neurons (DESIGN §2) with the hand-written backward pass.

    x (C, T, B) external sources, any strides; state (m, r, a) batch-last; rec_keep (N, B) or None.
    """
    args = ScanArgs(x, state.m, state.r, state.a, params)
    return ScanOutput(*LayerScan.apply(spec, rec_keep, *args.flat()))


class LayerScan(torch.autograd.Function):
    """The autograd Function behind scan_layer; arguments: spec, rec_keep, then ScanArgs.flat()."""

    @staticmethod
    def forward(ctx, spec: ScanSpec, rec_keep, *flat):
        args = ScanArgs.from_flat(flat)
        x, params = args.x, args.params
        needs = ScanArgs.from_flat(ctx.needs_input_grad[2:])
        if x.device.type == "cpu":
            keep_freed_memory_for_reuse()
        steps_kernel = steps_for(x.device)
        (n, d_m), (batch, steps) = params.kappa.shape, (x.shape[2], x.shape[1])
        d_in = params.mlp_weights[0].shape[2]  # d_tree + d_m
        block_len = max(1, WEIGHT_GRAD_ROWS // batch)
        weights = _step_weights(params)
        keep = None if rec_keep is None else rec_keep.contiguous()
        rec = spec.rec.by_branch(params.rec_values) if spec.rec.nnz else None
        ff_sparse = (
            spec.ff.nnz > 0 and steps_kernel.scatters_sparse_inputs and not needs.x and inputs_are_sparse(x)
        )
        x_steps = None  # dense inputs step-major (T, C, B): free for the readout, whose inputs are hidden activities
        if not spec.ff.nnz:
            ff = None
        elif ff_sparse:
            ff = SparseInputs(x, spec.ff.by_source(params.ff_values))
        else:
            x_steps = x.permute(1, 0, 2).contiguous()
            ff = DenseInputs(x_steps, spec.ff.by_branch(params.ff_values))
        sources = Sources(rec, ff, keep)

        activity = x.new_empty(steps + 1, n, batch)  # step 0 is a0
        activity[0] = args.a0
        chunk = Chunk(activity, args.m0.contiguous().clone(), args.r0.contiguous().clone(), x.new_zeros(n))
        blocks = []
        for t0 in range(0, steps, block_len):
            k_len = min(steps, t0 + block_len) - t0
            block = Block(
                t0,
                h0=x.new_empty(n, d_in, k_len, batch),
                zs=[x.new_empty(n, w.shape[1], k_len, batch) for w in weights.mlp_weights[:-1]],
                th=x.new_empty(n, d_m, k_len, batch),
                m=x.new_empty(n, d_m, k_len, batch),
            )
            steps_kernel.forward_block(block, chunk, sources, weights, spec.neuron)
            blocks.append(block)

        ctx.spec, ctx.ff_sparse, ctx.blocks = spec, ff_sparse, blocks
        ctx.save_for_backward(rec_keep, activity, x_steps, *flat)
        mlp_abs = chunk.abs_sum / (TANH_SCALE * steps * batch * d_m)
        return activity[1:], chunk.m, chunk.r, mlp_abs

    @staticmethod
    def backward(ctx, grad_activity, grad_m, grad_r, grad_mlp_abs):
        spec, blocks = ctx.spec, ctx.blocks
        rec_keep, activity, x_steps, *flat = ctx.saved_tensors
        args = ScanArgs.from_flat(flat)
        x, params = args.x, args.params
        needs = ScanArgs.from_flat(ctx.needs_input_grad[2:])
        learn_tau = needs.params.kappa or needs.params.gate_gain
        steps_kernel = steps_for(x.device)
        (n, d_m), (batch, steps) = params.kappa.shape, (x.shape[2], x.shape[1])
        d_tree = params.mlp_weights[0].shape[2] - d_m
        weights = _step_weights(params)
        keep = None if rec_keep is None else rec_keep.contiguous()

        grad_ff = torch.zeros_like(params.ff_values)
        grad_rec = torch.zeros_like(params.rec_values)
        param_grads = ParamGrads(
            mlp_weights=[w.new_zeros(w.shape) for w in params.mlp_weights],  # contiguous, whatever the strides
            mlp_biases=[b.new_zeros(b.shape) for b in params.mlp_biases],
            w_y=params.w_y.new_zeros(params.w_y.shape),
            bias=x.new_zeros(n, 1),
            rec=PatternGrad(spec.rec.by_branch(grad_rec), activity) if spec.rec.nnz else None,
            ff=PatternGrad(spec.ff.by_branch(grad_ff), x_steps) if x_steps is not None else None,
        )
        grad_kappa = torch.zeros_like(params.kappa)
        grad_gate_gain = torch.zeros_like(params.gate_gain)
        grad_x_steps = x.new_zeros(steps, x.shape[0], batch) if needs.x else None
        rec_by_source = spec.rec.by_source(params.rec_values) if spec.rec.nnz else None
        if ctx.ff_sparse:
            grad_ff_by_source = torch.zeros_like(params.ff_values)
            ff = SparseInputGrads(x, Synapses(spec.ff.t_crow, spec.ff.t_col, grad_ff_by_source))
        elif spec.ff.nnz and grad_x_steps is not None:
            ff = DenseInputGrads(grad_x_steps, spec.ff.by_source(params.ff_values))
        else:
            ff = None
        sources = SourceGrads(rec_by_source, ff, keep)
        chunk = ChunkGrads(
            activity, grad_activity.contiguous(), (grad_mlp_abs / (TANH_SCALE * steps * batch * d_m)).contiguous(),
            dm=grad_m.contiguous().clone(), dr=grad_r.contiguous().clone(), da_rec=x.new_zeros(n, batch),
        )

        for index in reversed(range(len(blocks))):
            block = blocks[index]
            blocks[index] = block._replace(h0=None, zs=None, th=None)  # freed as soon as this block is done
            grads = BlockGrads(
                d_h0=torch.empty_like(block.h0),
                d_zs=[torch.empty_like(z) for z in block.zs],
                d_delta=torch.empty_like(block.th),
                d_y=x.new_empty(n, block.th.shape[2], batch),
                d_pre=x.new_empty(n, block.th.shape[2], batch),
                d_m_total=torch.empty_like(block.th) if learn_tau else None,
            )
            steps_kernel.backward_block(block, grads, chunk, sources, weights, spec.neuron)
            steps_kernel.weight_grads_block(block, grads, param_grads, keep, spec.neuron)
            if learn_tau:
                m_before = blocks[index - 1].m[:, :, -1:] if index else args.m0.unsqueeze(2)
                m_prev = torch.cat((m_before, block.m[:, :, :-1]), 2)  # (N, d_m, K, B): memory entering each step
                d_m_tilde = grads.d_m_total + grads.d_h0[:, d_tree:]
                grad_kappa += (d_m_tilde * m_prev).sum((2, 3))
                grad_gate_gain += (grads.d_m_total * block.th).sum((2, 3))

        if ctx.ff_sparse:
            grad_ff[spec.ff.t_perm] = grad_ff_by_source
        grads = ScanArgs(
            x=grad_x_steps.permute(1, 0, 2) if needs.x else None,  # (C, T, B)
            m0=chunk.dm,
            r0=chunk.dr if needs.r0 else None,
            a0=chunk.da_rec,
            params=LayerParams(
                grad_ff, grad_rec, grad_kappa if learn_tau else None, grad_gate_gain if learn_tau else None,
                param_grads.w_y, param_grads.bias, tuple(param_grads.mlp_weights), tuple(param_grads.mlp_biases),
            ),
        )
        return (None, None, *grads.flat())


def _step_weights(params: LayerParams) -> StepWeights:
    """The weights contiguous, the MLP's last layer times 2/3: folding tanh's 2/3 in saves a pass per step."""
    weights = [w.contiguous() for w in params.mlp_weights]
    biases = [b.contiguous() for b in params.mlp_biases]
    weights[-1] = weights[-1] * TANH_SCALE
    biases[-1] = biases[-1] * TANH_SCALE
    return StepWeights(
        params.kappa.contiguous(), params.gate_gain.contiguous(), params.w_y.contiguous(), params.bias.contiguous(),
        weights, biases,
    )


def inputs_are_sparse(x: torch.Tensor) -> bool:
    """Whether inputs x (C, T, B) are sparse enough to scatter, judged on their first DENSITY_SAMPLE_STEPS steps."""
    sample = x[:, :DENSITY_SAMPLE_STEPS]
    return torch.count_nonzero(sample).item() <= SPARSE_INPUT_DENSITY * sample.numel()
