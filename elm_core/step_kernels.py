"""The per-step loops of an ELM layer scan, one call per block of K time steps, in two interchangeable backends.

- `CppSteps` (CPU): `csrc/layer_scan.cpp`, each neuron's whole step in C++ with the batch as the SIMD axis; built
  once per machine with torch's JIT extension builder and cached (~1 min the first time).
- `TorchSteps` (any device; the CPU fallback where no C++ compiler is found): the same loops as torch ops.

Both take the named structures below, fill the same block buffers (layouts in layer_scan.cpp's header), update the
chunk's carried tensors in place and accumulate a block's parameter gradients from those buffers
(`weight_grads_block`); `fast_ops.LayerScan` chains the blocks of a chunk.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("csrc") / "layer_scan.cpp"
# A build takes about a minute; a lock file older than this was left by a process killed while building.
STALE_BUILD_LOCK_S = 600
# tanh(2 delta / 3): the step loops take the MLP's last layer already times 2/3 (one elementwise pass less per step).
TANH_SCALE = 2.0 / 3.0

ACTIVATIONS = {"relu2": lambda z: torch.square(F.relu(z)), "relu": F.relu, "silu": F.silu}


def activate(z: torch.Tensor, name: str) -> torch.Tensor:
    return ACTIVATIONS[name](z)


def activation_slope(z: torch.Tensor, name: str) -> torch.Tensor:
    """d activate(z) / dz."""
    if name == "relu2":
        return 2.0 * F.relu(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


# --- what the step loops take ------------------------------------------------------------------------------------


class Synapses(NamedTuple):
    """A fixed sparse synapse pattern in CSR form (int32 indices) with one value per synapse, in the pattern's order."""

    crow: torch.Tensor  # (rows + 1,)
    col: torch.Tensor  # (nnz,)
    values: torch.Tensor  # (nnz,)

    def matrix(self, n_cols: int) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.crow, self.col, self.values, (self.crow.numel() - 1, n_cols), check_invariants=False
        )


class DenseInputs(NamedTuple):
    """Feed-forward inputs of any density: one CSR matmul per step."""

    x: torch.Tensor  # (T, C, B) contiguous, step-major
    synapses: Synapses  # rows = branches (N * d_tree), columns = the C inputs


class SparseInputs(NamedTuple):
    """Mostly-zero feed-forward inputs (one-hot characters, spikes): only the nonzero ones are visited (C++ only)."""

    x: torch.Tensor  # (C, T, B), any strides
    by_source: Synapses  # the pattern transposed: rows = the C inputs, columns = branches


class DenseInputGrads(NamedTuple):
    """The gradient of dense feed-forward inputs, filled step by step (their synapses': `weight_grads_block`)."""

    grad_x: torch.Tensor  # (T, C, B)
    by_source: Synapses  # the forward's pattern transposed, with its values


class SparseInputGrads(NamedTuple):
    """The feed-forward synapse gradient of sparse inputs, accumulated step by step from the nonzero inputs."""

    x: torch.Tensor  # (C, T, B), any strides
    grad: Synapses  # the transposed pattern; values: the synapse gradient in that order, accumulated


class Sources(NamedTuple):
    """What a layer's synapses read in the forward pass: z = [x_t ; a_{t-1}] as two patterns."""

    rec: Synapses | None  # rows = branches, columns = the N neurons' previous outputs
    ff: DenseInputs | SparseInputs | None
    rec_keep: torch.Tensor | None  # (N, B) recurrent dropout mask


class SourceGrads(NamedTuple):
    """Where the backward pass sends the branch gradients: back to a_{t-1} and to the feed-forward side."""

    rec_by_source: Synapses | None  # the recurrent pattern transposed: rows = neurons, columns = branches
    ff: DenseInputGrads | SparseInputGrads | None  # None: nothing to compute per step
    rec_keep: torch.Tensor | None  # (N, B)


class StepWeights(NamedTuple):
    """A layer's per-neuron weights as the step loops use them, contiguous."""

    kappa: torch.Tensor  # (N, d_m) kappa_m
    gate_gain: torch.Tensor  # (N, d_m) (1 - kappa_lambda) * 1.7159
    w_y: torch.Tensor  # (N, d_m, 1)
    bias: torch.Tensor  # (N, 1)
    mlp_weights: list[torch.Tensor]  # (N, out, in) per layer, the last one times TANH_SCALE
    mlp_biases: list[torch.Tensor]  # (N, out, 1) per layer, the last one times TANH_SCALE


class NeuronSpec(NamedTuple):
    """Which nonlinearities a layer's neurons use."""

    activation: str  # of the MLP's hidden layers, a key of ACTIVATIONS
    high_pass: bool  # subtract r_t = kappa_r r_{t-1} + (1 - kappa_r) y_t from the output
    rectify: bool  # a_t = ReLU(...) instead of the identity
    kappa_r: float


class Chunk(NamedTuple):
    """The forward pass's chunk-wide tensors, updated in place block by block."""

    activity: torch.Tensor  # (T + 1, N, B), step 0 the carried-in activity
    m: torch.Tensor  # (N, d_m, B) memory
    r: torch.Tensor  # (N, B) high-pass state
    abs_sum: torch.Tensor  # (N,) sum of |TANH_SCALE * MLP output| over steps, batch and d_m


class Block(NamedTuple):
    """The per-step tensors of K steps from t0, each (N, F, K, B), filled by the forward pass for the backward."""

    t0: int
    h0: torch.Tensor  # (N, d_tree + d_m, K, B) MLP inputs [beta ; m_tilde]
    zs: list[torch.Tensor]  # (N, d_mlp, K, B) pre-activations, one per hidden MLP layer
    th: torch.Tensor  # (N, d_m, K, B) tanh(2 delta / 3)
    m: torch.Tensor  # (N, d_m, K, B) memory after each step


class ChunkGrads(NamedTuple):
    """The backward pass's chunk-wide tensors: what it reads, and the state gradients it carries back in place."""

    activity: torch.Tensor  # (T + 1, N, B) the forward's activities
    d_activity: torch.Tensor  # (T, N, B) incoming
    d_abs_sum: torch.Tensor  # (N,) incoming gradient of Chunk.abs_sum
    dm: torch.Tensor  # (N, d_m, B)
    dr: torch.Tensor  # (N, B)
    da_rec: torch.Tensor  # (N, B) gradient reaching a_{t-1} through the recurrent synapses


class BlockGrads(NamedTuple):
    """The gradients of a block's per-step tensors, filled by backward_block for weight_grads_block."""

    d_h0: torch.Tensor  # (N, d_tree + d_m, K, B)
    d_zs: list[torch.Tensor]  # (N, d_mlp, K, B)
    d_delta: torch.Tensor  # (N, d_m, K, B) of the MLP output (times TANH_SCALE)
    d_y: torch.Tensor  # (N, K, B)
    d_pre: torch.Tensor  # (N, K, B) of y - r + bias
    d_m_total: torch.Tensor | None  # (N, d_m, K, B) of each step's new memory; only where tau is learnt


class PatternGrad(NamedTuple):
    """The gradient of a dense-input pattern's synapse values, taken once per block."""

    grad: Synapses  # rows = branches; values: the gradient, accumulated
    sources: torch.Tensor  # (T, C, B) what the pattern reads


class ParamGrads(NamedTuple):
    """A layer's parameter gradients, accumulated in place by weight_grads_block."""

    mlp_weights: list[torch.Tensor]  # (N, out, in)
    mlp_biases: list[torch.Tensor]  # (N, out, 1)
    w_y: torch.Tensor  # (N, d_m, 1)
    bias: torch.Tensor  # (N, 1)
    rec: PatternGrad | None
    ff: PatternGrad | None  # None for sparse inputs: their synapse gradient is taken per step


# --- the torch-ops backend ---------------------------------------------------------------------------------------


class TorchSteps:
    """The step loops as torch ops: per step the sparse matmuls, one bmm per MLP layer and a few elementwise ops."""

    scatters_sparse_inputs = False  # takes DenseInputs only

    @staticmethod
    def forward_block(block: Block, chunk: Chunk, sources: Sources, weights: StepWeights, neuron: NeuronSpec):
        assert not isinstance(sources.ff, SparseInputs)
        n, d_in, steps, batch = block.h0.shape
        d_m = chunk.m.shape[1]
        d_tree = d_in - d_m
        activity, m, r = chunk.activity, chunk.m, chunk.r
        rec_mat = sources.rec.matrix(n) if sources.rec is not None else None
        ff = sources.ff
        ff_mat = ff.synapses.matrix(ff.x.shape[1]) if ff is not None else None
        kappa, gate_gain, w_y = weights.kappa.unsqueeze(-1), weights.gate_gain.unsqueeze(-1), weights.w_y
        n_hidden = len(weights.mlp_weights) - 1
        for k in range(steps):
            t = block.t0 + k
            h = block.h0[:, :, k]  # (N, d_in, B)
            beta = h.new_zeros(n * d_tree, batch)
            if ff_mat is not None:
                beta += ff_mat @ ff.x[t]
            if rec_mat is not None:
                beta += rec_mat @ (activity[t] if sources.rec_keep is None else activity[t] * sources.rec_keep)
            h[:, :d_tree] = beta.view(n, d_tree, batch)
            m_tilde = h[:, d_tree:]
            m_tilde.copy_(m * kappa)
            x = h
            for layer in range(n_hidden):
                z = torch.baddbmm(weights.mlp_biases[layer], weights.mlp_weights[layer], x)  # (N, d_mlp, B)
                block.zs[layer][:, :, k] = z
                x = activate(z, neuron.activation)
            delta = torch.baddbmm(weights.mlp_biases[-1], weights.mlp_weights[-1], x)  # (N, d_m, B), times 2/3
            chunk.abs_sum.add_(delta.abs().sum((1, 2)))
            th_k = torch.tanh(delta)
            block.th[:, :, k] = th_k
            m.copy_(torch.addcmul(m_tilde, gate_gain, th_k))
            block.m[:, :, k] = m
            y = (w_y * m).sum(1)  # (N, B)
            if neuron.high_pass:  # pre = y - r_t + bias with r_t = kappa_r r_{t-1} + (1 - kappa_r) y
                y_minus_r = y - r
                r.add_(y_minus_r, alpha=1.0 - neuron.kappa_r)
                pre = torch.add(weights.bias, y_minus_r, alpha=neuron.kappa_r)
            else:
                pre = y + weights.bias
            activity[t + 1] = F.relu(pre) if neuron.rectify else pre

    @staticmethod
    def backward_block(block: Block, grads: BlockGrads, chunk: ChunkGrads, sources: SourceGrads,
                       weights: StepWeights, neuron: NeuronSpec):
        assert not isinstance(sources.ff, SparseInputGrads)
        n, d_in, steps, batch = grads.d_h0.shape
        d_m = chunk.dm.shape[1]
        d_tree = d_in - d_m
        dm, dr, da_rec, rec_keep = chunk.dm, chunk.dr, chunk.da_rec, sources.rec_keep
        rec_t = sources.rec_by_source.matrix(n * d_tree) if sources.rec_by_source is not None else None
        ff = sources.ff
        ff_t = ff.by_source.matrix(n * d_tree) if ff is not None else None
        kappa, gate_gain, w_y = weights.kappa.unsqueeze(-1), weights.gate_gain.unsqueeze(-1), weights.w_y
        weights_t = [w.transpose(1, 2) for w in weights.mlp_weights]
        abs_scale = chunk.d_abs_sum.view(n, 1, 1)
        for k in reversed(range(steps)):
            t = block.t0 + k
            da = chunk.d_activity[t] + da_rec
            dpre = da * (chunk.activity[t + 1] > 0) if neuron.rectify else da
            if neuron.high_pass:
                dy = torch.add(dpre * neuron.kappa_r, dr, alpha=1.0 - neuron.kappa_r)
                dr.copy_((dr - dpre) * neuron.kappa_r)
            else:
                dy = dpre
            grads.d_pre[:, k] = dpre
            grads.d_y[:, k] = dy
            th_k = block.th[:, :, k]
            dm_total = torch.addcmul(dm, w_y, dy.unsqueeze(1))  # (N, d_m, B)
            g = abs_scale * torch.sign(th_k) + dm_total * gate_gain * (1.0 - th_k * th_k)
            grads.d_delta[:, :, k] = g
            if grads.d_m_total is not None:
                grads.d_m_total[:, :, k] = dm_total
            for layer in reversed(range(len(weights_t))):
                g = torch.bmm(weights_t[layer], g)  # (N, in, B)
                if layer > 0:
                    g = g * activation_slope(block.zs[layer - 1][:, :, k], neuron.activation)
                    grads.d_zs[layer - 1][:, :, k] = g
            grads.d_h0[:, :, k] = g
            dm.copy_((dm_total + g[:, d_tree:]) * kappa)
            d_beta = g[:, :d_tree].reshape(n * d_tree, batch)
            if ff_t is not None:
                ff.grad_x[t] = ff_t @ d_beta
            if rec_t is not None:
                da_rec.copy_(rec_t @ d_beta)
                if rec_keep is not None:
                    da_rec.mul_(rec_keep)

    @staticmethod
    def weight_grads_block(block: Block, grads: BlockGrads, params: ParamGrads, rec_keep: torch.Tensor | None,
                           neuron: NeuronSpec):
        """Per block: one bmm per MLP layer over the K*B (step, batch) pairs, one SDDMM per dense-input pattern."""
        n, d_in, steps, batch = block.h0.shape
        rows, d_tree = steps * batch, d_in - block.m.shape[1]
        inputs = [block.h0] + [activate(z, neuron.activation) for z in block.zs]  # each (N, in, K*B)
        n_layers = len(params.mlp_weights)
        for layer, (inp, g) in enumerate(zip(inputs, [*grads.d_zs, grads.d_delta])):
            g_rows = g.view(n, -1, rows)
            scale = TANH_SCALE if layer == n_layers - 1 else 1.0
            params.mlp_weights[layer].baddbmm_(g_rows, inp.view(n, -1, rows).transpose(1, 2), alpha=scale)
            params.mlp_biases[layer].add_(g_rows.sum(2, keepdim=True), alpha=scale)
        params.w_y.add_(torch.bmm(block.m.view(n, -1, rows), grads.d_y.view(n, rows, 1)))
        params.bias.add_(grads.d_pre.view(n, rows).sum(1, keepdim=True))
        d_beta_rows = grads.d_h0[:, :d_tree].reshape(n * d_tree, rows)
        for pattern, keep in ((params.rec, rec_keep), (params.ff, None)):
            if pattern is None:
                continue
            sources = pattern.sources[block.t0:block.t0 + steps]  # (K, C, B)
            if keep is not None:
                sources = sources * keep
            sources_rows = sources.permute(0, 2, 1).reshape(rows, -1)  # (K*B, C)
            accumulated = pattern.grad.matrix(sources.shape[1])
            pattern.grad.values.copy_(torch.sparse.sampled_addmm(accumulated, d_beta_rows, sources_rows).values())


# --- the C++ backend ---------------------------------------------------------------------------------------------


class CppSteps:
    """The compiled step loops behind TorchSteps' interface.

    The one place that unpacks the named structures into the extension's positional arguments (layer_scan.cpp's
    entry points). Feed-forward tensors travel as [inputs or their gradient, crow, col, values] with a flag for the
    sparse-input form.
    """

    scatters_sparse_inputs = True

    def __init__(self, extension):
        self.extension = extension

    def forward_block(self, block: Block, chunk: Chunk, sources: Sources, weights: StepWeights, neuron: NeuronSpec):
        ff, ff_sparse = _feed_forward_arguments(sources.ff)
        self.extension.forward_block(
            block.h0, block.zs, block.th, block.m, chunk.activity, block.t0, chunk.m, chunk.r, chunk.abs_sum,
            _listed(sources.rec), ff, ff_sparse, sources.rec_keep, weights.kappa, weights.gate_gain, weights.w_y,
            weights.bias, weights.mlp_weights, weights.mlp_biases, neuron.activation, neuron.high_pass, neuron.rectify,
            neuron.kappa_r,
        )

    def backward_block(self, block: Block, grads: BlockGrads, chunk: ChunkGrads, sources: SourceGrads,
                       weights: StepWeights, neuron: NeuronSpec):
        ff, ff_sparse = _feed_forward_arguments(sources.ff)
        self.extension.backward_block(
            chunk.d_activity, chunk.activity, block.t0, block.th, block.zs, grads.d_h0, grads.d_zs, grads.d_delta,
            grads.d_y, grads.d_pre, grads.d_m_total, chunk.dm, chunk.dr, chunk.da_rec, _listed(sources.rec_by_source),
            ff, ff_sparse, sources.rec_keep, weights.kappa, weights.gate_gain, weights.w_y, chunk.d_abs_sum,
            weights.mlp_weights, neuron.activation, neuron.high_pass, neuron.rectify, neuron.kappa_r,
        )

    def weight_grads_block(self, block: Block, grads: BlockGrads, params: ParamGrads, rec_keep: torch.Tensor | None,
                           neuron: NeuronSpec):
        self.extension.weight_grads_block(
            block.h0, block.zs, grads.d_zs, grads.d_h0, grads.d_delta, block.m, grads.d_y, grads.d_pre, block.t0,
            params.mlp_weights, params.mlp_biases, params.w_y, params.bias, _pattern_grad_arguments(params.rec),
            _pattern_grad_arguments(params.ff), rec_keep, neuron.activation, TANH_SCALE,
        )


def _listed(synapses: Synapses | None) -> list[torch.Tensor]:
    return [] if synapses is None else list(synapses)


def _feed_forward_arguments(ff) -> tuple[list[torch.Tensor], bool]:
    """ff as the extension takes it: [inputs (or their gradient), crow, col, values], and whether inputs are sparse."""
    if ff is None:
        return [], False
    if isinstance(ff, DenseInputs):
        return [ff.x, *ff.synapses], False
    if isinstance(ff, SparseInputs):
        return [ff.x, *ff.by_source], True
    if isinstance(ff, DenseInputGrads):
        return [ff.grad_x, *ff.by_source], False
    return [ff.x, *ff.grad], True


def _pattern_grad_arguments(pattern: PatternGrad | None) -> list[torch.Tensor]:
    """[crow, col, gradient, sources (T, C, B)], or empty."""
    return [] if pattern is None else [*pattern.grad, pattern.sources]


@functools.cache
def cpu_kernel():
    """The compiled C++ step loops, or TorchSteps with one warning where they cannot be built here."""
    if os.environ.get("ELMSCALE_TORCH_STEPS") == "1":
        return TorchSteps
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        capability = torch.backends.cpu.get_cpu_capability().lower()
        # The capability is part of the name: machines sharing a home directory keep separate builds. So are the
        # source and the torch installation: torch rebuilds a build made against another environment's headers, so
        # two checkouts or venvs sharing one name (a CI clone beside a working tree) would rebuild it in turn, each
        # trial waiting a build on the other's lock.
        build_key = hashlib.sha1(SOURCE.read_bytes() + torch.__file__.encode()).hexdigest()[:12]
        name = f"elm_layer_scan_{capability}_{build_key}"
        _remove_stale_build_lock(Path(_get_build_directory(name, verbose=False)) / "lock")
        return CppSteps(load(
            name=name,
            sources=[str(SOURCE)],
            # OpenMP for at::parallel_for; libgomp resolves to the copy torch has already loaded (same soname).
            extra_cflags=["-O3", "-fopenmp", *_simd_flags(capability)],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        ))
    except Exception as error:  # noqa: BLE001 - any build failure leaves the torch-ops path working
        warnings.warn(f"elmscale: C++ step loops unavailable ({error}); using the slower torch-ops loops", stacklevel=2)
        return TorchSteps


def _remove_stale_build_lock(lock: Path) -> None:
    """torch's builder waits forever on the lock of a build whose process was killed (a cancelled trial)."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_BUILD_LOCK_S:
        warnings.warn(f"elmscale: removing a stale C++ build lock ({age:.0f} s old): {lock}", stacklevel=3)
        lock.unlink(missing_ok=True)


def _simd_flags(capability: str) -> list[str]:
    if capability == "avx512":
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]
    if capability == "avx2":
        return ["-mavx2", "-mfma"]
    return []


def steps_for(device: torch.device):
    """The step loops for tensors on `device`: the C++ ones on the CPU, torch ops elsewhere."""
    return cpu_kernel() if device.type == "cpu" else TorchSteps
