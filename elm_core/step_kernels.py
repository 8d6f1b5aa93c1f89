"""The per-step loops of an ELM layer scan, one call per block of K time steps, in two interchangeable backends.

- `csrc/layer_scan.cpp` (CPU): each neuron's whole step in C++ with the batch as the SIMD axis; built once per
  machine with torch's JIT extension builder and cached (~1 min the first time).
- `TorchSteps` (any device; the CPU fallback where no C++ compiler is found): the same loops as torch ops.

Both fill the same block buffers (layouts in layer_scan.cpp's header), update the carried state in place and
accumulate a block's parameter gradients from those buffers (`weight_grads_block`); `fast_ops.LayerScan` chains
the blocks of a chunk.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ACTIVATION_CODES = {"relu2": 0, "relu": 1, "silu": 2}
SOURCE = Path(__file__).with_name("csrc") / "layer_scan.cpp"
# A build takes about a minute; a lock file older than this was left by a process killed while building.
STALE_BUILD_LOCK_S = 600


def activate(z: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu2":
        return torch.square(F.relu(z))
    if name == "relu":
        return F.relu(z)
    return F.silu(z)


def activation_slope(z: torch.Tensor, name: str) -> torch.Tensor:
    """d activate(z) / dz."""
    if name == "relu2":
        return 2.0 * F.relu(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


class TorchSteps:
    """The step loops as torch ops: per step the sparse matmuls, one bmm per MLP layer and a few elementwise ops.

    Feed-forward synapses come in the dense-input form only (ff_sparse is a C++ path).
    """

    @staticmethod
    def forward_block(h0, zs, th, m_blk, activity, t0, m, r, abs_sum, rec, ff, ff_sparse, rec_keep,
                      kappa, gate_gain, w_y, bias, weights, biases, activation, high_pass, rectify, kappa_r):
        assert not ff_sparse
        n, d_in, steps, batch = h0.shape
        d_m = m.shape[1]
        d_tree = d_in - d_m
        rec_mat = _csr(rec, (n * d_tree, n))
        ff_mat = _csr(ff[1:], (n * d_tree, ff[0].shape[1])) if ff else None
        name = _activation_name(activation)
        kappa, gate_gain, w_y = kappa.unsqueeze(-1), gate_gain.unsqueeze(-1), w_y.view(n, d_m, 1)
        for k in range(steps):
            t = t0 + k
            h = h0[:, :, k]  # (N, d_in, B)
            beta = h.new_zeros(n * d_tree, batch)
            if ff_mat is not None:
                beta += ff_mat @ ff[0][t]
            if rec_mat is not None:
                beta += rec_mat @ (activity[t] if rec_keep is None else activity[t] * rec_keep)
            h[:, :d_tree] = beta.view(n, d_tree, batch)
            m_tilde = h[:, d_tree:]
            m_tilde.copy_(m * kappa)
            x = h
            for layer in range(len(weights) - 1):
                z = torch.baddbmm(biases[layer], weights[layer], x)  # (N, d_mlp, B)
                zs[layer][:, :, k] = z
                x = activate(z, name)
            delta = torch.baddbmm(biases[-1], weights[-1], x)  # (N, d_m, B), already times 2/3
            abs_sum += delta.abs().sum((1, 2))
            th_k = torch.tanh(delta)
            th[:, :, k] = th_k
            m.copy_(torch.addcmul(m_tilde, gate_gain, th_k))
            m_blk[:, :, k] = m
            y = (w_y * m).sum(1)  # (N, B)
            if high_pass:  # pre = y - r_t + bias with r_t = kappa_r r_{t-1} + (1 - kappa_r) y
                y_minus_r = y - r
                r.add_(y_minus_r, alpha=1.0 - kappa_r)
                pre = torch.add(bias, y_minus_r, alpha=kappa_r)
            else:
                pre = y + bias
            activity[t + 1] = F.relu(pre) if rectify else pre

    @staticmethod
    def backward_block(grad_activity, activity, t0, th, zs, d_h0, d_zs, d_delta, d_y, d_pre, d_m_total, dm, dr,
                       da_rec, rec_t, ff, ff_sparse, rec_keep, kappa, gate_gain, w_y, abs_scale, weights_in,
                       activation, high_pass, rectify, kappa_r):
        assert not ff_sparse
        n, d_in, steps, batch = d_h0.shape
        d_m = dm.shape[1]
        d_tree = d_in - d_m
        rec_t = _csr(rec_t, (n, n * d_tree))
        grad_x = ff[3] if ff and ff[3].numel() else None
        ff_t = _csr(ff[:3], (grad_x.shape[1], n * d_tree)) if grad_x is not None else None
        name = _activation_name(activation)
        kappa, gate_gain, w_y = kappa.unsqueeze(-1), gate_gain.unsqueeze(-1), w_y.view(n, d_m, 1)
        weights_t = [w.transpose(1, 2) for w in weights_in]
        abs_scale = abs_scale.view(n, 1, 1)
        for k in reversed(range(steps)):
            t = t0 + k
            da = grad_activity[t] + da_rec
            dpre = da * (activity[t + 1] > 0) if rectify else da
            if high_pass:
                dy = torch.add(dpre * kappa_r, dr, alpha=1.0 - kappa_r)
                dr.copy_((dr - dpre) * kappa_r)
            else:
                dy = dpre
            d_pre[:, k] = dpre
            d_y[:, k] = dy
            th_k = th[:, :, k]
            dm_total = torch.addcmul(dm, w_y, dy.unsqueeze(1))  # (N, d_m, B)
            g = abs_scale * torch.sign(th_k) + dm_total * gate_gain * (1.0 - th_k * th_k)
            d_delta[:, :, k] = g
            if d_m_total is not None:
                d_m_total[:, :, k] = dm_total
            for layer in reversed(range(len(weights_t))):
                g = torch.bmm(weights_t[layer], g)  # (N, in, B)
                if layer > 0:
                    g = g * activation_slope(zs[layer - 1][:, :, k], name)
                    d_zs[layer - 1][:, :, k] = g
            d_h0[:, :, k] = g
            dm.copy_((dm_total + g[:, d_tree:]) * kappa)
            d_beta = g[:, :d_tree].reshape(n * d_tree, batch)
            if ff_t is not None:
                grad_x[t] = ff_t @ d_beta
            if rec_t is not None:
                da_rec.copy_(rec_t @ d_beta)
                if rec_keep is not None:
                    da_rec.mul_(rec_keep)


    @staticmethod
    def weight_grads_block(h0, zs, d_zs, d_h0, d_delta, m_blk, d_y, d_pre, t0, grad_weights, grad_biases, grad_w_y,
                           grad_bias, rec_grads, ff_grads, rec_keep, activation, last_scale):
        """Per block: one bmm per MLP layer over the K*B (step, batch) pairs, one SDDMM per dense-input pattern."""
        n, d_in, steps, batch = h0.shape
        rows, d_tree = steps * batch, d_in - m_blk.shape[1]
        name = _activation_name(activation)
        inputs = [h0] + [activate(z, name) for z in zs]  # each (N, in, K, B), i.e. (N, in, K*B)
        for layer, (inp, g) in enumerate(zip(inputs, d_zs + [d_delta])):
            g_rows = g.view(n, -1, rows)
            scale = last_scale if layer == len(grad_weights) - 1 else 1.0
            grad_weights[layer].baddbmm_(g_rows, inp.view(n, -1, rows).transpose(1, 2), alpha=scale)
            grad_biases[layer].add_(g_rows.sum(2, keepdim=True), alpha=scale)
        grad_w_y += torch.bmm(m_blk.view(n, -1, rows), d_y.view(n, rows, 1))
        grad_bias += d_pre.view(n, rows).sum(1, keepdim=True)
        d_beta_rows = d_h0[:, :d_tree].reshape(n * d_tree, rows)
        for grads, keep in ((rec_grads, rec_keep), (ff_grads, None)):
            if not grads:
                continue
            crow, col, grad, sources = grads
            sources = sources[t0:t0 + steps]  # (K, C, B)
            if keep is not None:
                sources = sources * keep
            accumulated = _csr([crow, col, grad], (n * d_tree, sources.shape[1]))
            sources_rows = sources.permute(0, 2, 1).reshape(rows, -1)  # (K*B, C)
            grad.copy_(torch.sparse.sampled_addmm(accumulated, d_beta_rows, sources_rows).values())


def _csr(pattern: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor | None:
    """A sparse CSR matrix from [crow, col, values], or None for an empty pattern."""
    if not pattern:
        return None
    return torch.sparse_csr_tensor(*pattern, shape, check_invariants=False)


def _activation_name(code: int) -> str:
    return next(name for name, value in ACTIVATION_CODES.items() if value == code)


@functools.cache
def cpu_kernel():
    """The compiled C++ step loops, or TorchSteps with one warning where they cannot be built here."""
    if os.environ.get("ELMSCALE_TORCH_STEPS") == "1":
        return TorchSteps
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        capability = torch.backends.cpu.get_cpu_capability().lower()
        # The capability is part of the name: machines sharing a home directory keep separate builds.
        name = f"elm_layer_scan_{capability}"
        _remove_stale_build_lock(Path(_get_build_directory(name, verbose=False)) / "lock")
        return load(
            name=name,
            sources=[str(SOURCE)],
            # OpenMP for at::parallel_for; libgomp resolves to the copy torch has already loaded (same soname).
            extra_cflags=["-O3", "-fopenmp", *_simd_flags(capability)],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
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
