"""Training-step speed of the ELM Network at the reference configs, against the JAX anchors and the plain step.

    .venv/bin/python benchmarks/elm_step.py [--repeats 3] [--threads N] [--configs enwik8,small,shd]

Prints, in one run, per config: train tokens/s (forward + backward + Adam, median of repeats after one warm-up
step), the ratio to the authors' JAX figures (benchmarks/anchors.py: their source and date), the ratio to the
model's plain batched step with autograd (ELMNetwork(cfg, fast=False), the equality tests' reference; timed on a
few time steps and scaled linearly to the full sequence), the arithmetic
share (the same sparse-matmul/SDDMM/bmm shapes timed alone as torch ops, times their counts, over the step time;
above 1 where the fused C++ step loops do that work faster than the separate torch kernels) and the peak
memory of the step (ru_maxrss of a fresh process). Each config runs in its own subprocess so peaks do not mix.
Where CUDA is available it also prints GPU tokens/s at the Enwik8 reference with batch 8 and 64.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchors import JAX_TRAIN_TOKENS_PER_S, REFERENCE_CONFIGS  # noqa: E402

from elm_core.fast_ops import WEIGHT_GRAD_ROWS, inputs_are_sparse  # noqa: E402
from elm_core.model import ELMConfig, ELMLayer, ELMNetwork  # noqa: E402

REFERENCE_STEPS = {"enwik8": 5, "small": 10, "shd": 50}
SPIKE_DENSITY = 0.03


def make_batch(name: str, cfg: ELMConfig, batch: int, steps: int, device: str):
    generator = torch.Generator().manual_seed(0)
    if name == "shd":
        x = (torch.rand(batch, steps, cfg.n_input, generator=generator) < SPIKE_DENSITY).float()
        y = torch.randint(0, cfg.n_output, (batch,), generator=generator)
    else:
        x = torch.randint(0, cfg.n_input, (batch, steps), generator=generator)
        y = torch.randint(0, cfg.n_output, (batch, steps), generator=generator)
    return x.to(device), y.to(device)


def train_step_fn(net: torch.nn.Module, forward, x, y, last_only: bool):
    """One training step as the trainer does it: loss + both regularisers, backward, Adam."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step():
        out = forward(x)
        logits = out[0]
        if last_only:
            loss = F.cross_entropy(logits[:, -1], y)
        else:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        if hasattr(out, "mlp_out_abs"):
            loss = loss + 0.01 * out.mlp_out_abs.square().mean() + out.activity
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def kernel_seconds(fn, repeats: int = 5) -> float:
    """Median time of one call of a single kernel, timed alone."""
    fn()
    inner = 3
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - started) / inner)
    return statistics.median(times)


def layer_arithmetic_seconds(
    layer: ELMLayer, sources: torch.Tensor, batch: int, steps: int, sources_grad: bool
) -> float:
    """The unavoidable work of one layer over a chunk: its matmul/gather shapes timed alone, times their counts.

    Per step: the recurrent sparse matmul and its transpose, each MLP layer's bmm forward and backward, y = w_y m, and
    the feed-forward share: for sparse inputs (sources (C, T, B) mostly zero) the scatter of the active inputs'
    synapse columns and its gradient gather, each timed as one index_add_ of that many synapses; for dense inputs
    the sparse matmul and, where the sources need a gradient (the readout reads the hidden activities), its
    transpose. Per block of K steps: the weight-gradient bmms and the SDDMMs of the dense patterns.
    """
    n, d_m, branches = layer.n, layer.d_m, layer.n * layer.d_tree
    ff_values, rec_values = torch.randn(layer.ff.nnz), torch.randn(layer.rec.nnz)
    block = max(1, WEIGHT_GRAD_ROWS // batch)
    n_blocks = -(-steps // block)
    rows = block * batch
    n_sources = sources.shape[0]
    per_step = []
    per_block = []
    if layer.rec.nnz:
        rec, rec_t = layer.rec.by_branch(rec_values).matrix(n), layer.rec.by_source(rec_values).matrix(branches)
        a_step, g_step = torch.rand(n, batch), torch.randn(branches, batch)
        per_step += [lambda: rec @ a_step, lambda: rec_t @ g_step]
        g_beta, a_cols = torch.randn(branches, rows), torch.rand(rows, n)
        per_block.append(lambda: torch.sparse.sampled_addmm(rec, g_beta, a_cols, beta=0.0))
    if layer.ff.nnz and inputs_are_sparse(sources):
        active = (sources != 0).sum((0, 2)).float().mean().item()  # active inputs per step, all batch elements
        synapses = int(active * layer.ff.nnz / n_sources)  # their synapse columns
        beta = torch.zeros(branches)
        index, values = torch.randint(0, branches, (synapses,)), torch.randn(synapses)
        per_step += [lambda: beta.index_add_(0, index, values)] * 2
    elif layer.ff.nnz:
        ff = layer.ff.by_branch(ff_values).matrix(n_sources)
        x_step, x_cols = torch.rand(n_sources, batch), torch.rand(rows, n_sources)
        g_ff, g_step = torch.randn(branches, rows), torch.randn(branches, batch)
        per_step.append(lambda: ff @ x_step)
        per_block.append(lambda: torch.sparse.sampled_addmm(ff, g_ff, x_cols, beta=0.0))
        if sources_grad:
            ff_t = layer.ff.by_source(ff_values).matrix(branches)
            per_step.append(lambda: ff_t @ g_step)
    for w in layer.mlp_w:
        fan_out, fan_in = w.shape[1:]
        w_t, w_c = torch.randn(n, fan_in, fan_out), torch.randn(n, fan_out, fan_in)
        h, g = torch.randn(n, batch, fan_in), torch.randn(n, batch, fan_out)
        g_rows, h_rows = torch.randn(n, fan_out, rows), torch.randn(n, rows, fan_in)
        per_step += [lambda h=h, w_t=w_t: torch.bmm(h, w_t), lambda g=g, w_c=w_c: torch.bmm(g, w_c)]
        per_block.append(lambda g_rows=g_rows, h_rows=h_rows: torch.bmm(g_rows, h_rows))
    m, w_y = torch.randn(n, batch, d_m), torch.randn(n, d_m, 1)
    per_step.append(lambda: torch.bmm(m, w_y))
    return steps * sum(map(kernel_seconds, per_step)) + n_blocks * sum(map(kernel_seconds, per_block))


def measure_cpu(name: str, repeats: int) -> dict:
    cfg, batch, steps = REFERENCE_CONFIGS[name]
    torch.manual_seed(0)
    net = ELMNetwork(cfg).train()
    x, y = make_batch(name, cfg, batch, steps, "cpu")
    step = train_step_fn(net, net, x, y, last_only=name == "shd")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    step_s = median_seconds(step, repeats)
    cpu_s = (time.process_time() - started) / (repeats + 1)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    ref_steps = REFERENCE_STEPS[name]
    ref_net = ELMNetwork(cfg, fast=False).train()
    ref_step = train_step_fn(ref_net, ref_net, x[:, :ref_steps], y[:, :ref_steps] if name != "shd" else y,
                             last_only=name == "shd")
    ref_s = median_seconds(ref_step, 1) * steps / ref_steps

    hidden_inputs = net.embed(x).permute(2, 1, 0)  # (C, T, B)
    arithmetic_s = layer_arithmetic_seconds(net.hidden, hidden_inputs, batch, steps, sources_grad=False)
    dense = torch.ones(cfg.n_hidden, 1, batch)  # the readout's sources, the hidden activities, count as dense
    arithmetic_s += layer_arithmetic_seconds(net.readout, dense, batch, steps, sources_grad=True)
    tokens = batch * steps
    return {
        "config": name, "threads": torch.get_num_threads(), "tokens_per_s": tokens / step_s,
        "cpu_time_tokens_per_s": tokens / cpu_s, "step_s": step_s,
        "vs_anchor": tokens / step_s / JAX_TRAIN_TOKENS_PER_S[name],
        "vs_reference_step": ref_s / step_s, "reference_step_s": ref_s, "arithmetic_share": arithmetic_s / step_s,
        "peak_rss_mib": peak_kib / 1024, "step_rss_growth_mib": (peak_kib - rss_before) / 1024,
    }


def measure_gpu(batch: int, repeats: int) -> dict:
    cfg, _, steps = REFERENCE_CONFIGS["enwik8"]
    net = ELMNetwork(cfg).cuda().train()
    x, y = make_batch("enwik8", cfg, batch, steps, "cuda")
    step = train_step_fn(net, net, x, y, last_only=False)
    step_s = median_seconds(step, repeats, torch.cuda.synchronize)
    return {"config": f"enwik8 GPU batch {batch}", "tokens_per_s": batch * steps / step_s, "step_s": step_s,
            "device": torch.cuda.get_device_name()}


def run_in_subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--configs", default="enwik8,small,shd")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--gpu-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure_cpu(args.one, args.repeats)))
        return
    if args.gpu_batch:
        print(json.dumps(measure_gpu(args.gpu_batch, args.repeats)))
        return

    common = ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}, cpu count {os.cpu_count()}")
    header = (f"{'config':8} {'thr':>3} {'tokens/s':>9} {'cpu-time tok/s':>14} {'x JAX anchor':>12} "
              f"{'x plain step':>12} {'arith share':>11} {'peak RSS MiB':>12} {'step growth MiB':>15}")
    print(header)
    for name in args.configs.split(","):
        r = run_in_subprocess(["--one", name, *common])
        print(f"{name:8} {r['threads']:>3} {r['tokens_per_s']:>9.0f} {r['cpu_time_tokens_per_s']:>14.0f} "
              f"{r['vs_anchor']:>12.1f} {r['vs_reference_step']:>12.1f} {r['arithmetic_share']:>11.2f} "
              f"{r['peak_rss_mib']:>12.0f} {r['step_rss_growth_mib']:>15.0f}")
    if torch.cuda.is_available():
        for batch in (8, 64):
            r = run_in_subprocess(["--gpu-batch", str(batch), *common])
            print(f"{r['config']} on {r['device']}: {r['tokens_per_s']:.0f} tokens/s ({r['step_s']:.3f} s/step)")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    steps = ", ".join(f"{name} {n}" for name, n in REFERENCE_STEPS.items())
    print(f"plain step: ELMNetwork(cfg, fast=False) timed on a few time steps ({steps}) and scaled linearly to the"
          " full T; cpu-time tok/s uses the process CPU time (less sensitive to other jobs on the machine)")


if __name__ == "__main__":
    main()
