"""The ELM Network: a recurrent layer of Expressive Leaky Memory neurons, a readout layer and a linear output.

Read top to bottom this is DESIGN.md §2-3. `ELMLayer.step` is one time step of all N neurons written as the
equations; `ELMLayer.forward` runs it over a chunk, or, by default, hands the chunk to the fast path
(`fast_ops.scan_layer`: C++ step loops and a hand-written backward pass), which the equality tests hold to the
plain step. Every layer keeps its tensors neuron-major, so that the per-neuron MLPs are one batched matmul over
neurons. The carried state is batch-last: m (N, d_m, B), r and a (N, B).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .fast_ops import LayerParams, ScanSpec, SynapsePattern, scan_layer
from .step_kernels import ACTIVATIONS, NeuronSpec, activate

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

LAMBDA = 5.0  # kappa_lambda = exp(-lambda * dt / tau_m)
MEMORY_GAIN = 1.7159  # LeCun's scaled tanh: 1.7159 * tanh(2x/3)


@dataclass(frozen=True)
class ELMConfig:
    """Every knob of the network; defaults are the Enwik8 reference configuration (DESIGN §4)."""

    n_input: int = 204
    n_output: int = 204
    n_hidden: int = 1024
    d_m: int = 15
    d_mlp: int | None = None  # None means 2 * d_m
    l_mlp: int = 1
    d_tree: int = 50
    d_branch: int = 15
    rho_rec: float = 0.8
    input_scale: float = 10.0
    tau_m_min: float = 0.1
    tau_m_max: float = 100.0
    tau_r: float = 2.0
    readout_d_m: int = 3
    readout_l_mlp: int = 0
    activation: str = "relu2"
    learn_tau: bool = False
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    embedding_scale: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 2 * self.d_m)
        self.validate()

    def validate(self) -> None:
        positive_ints = ("n_input", "n_output", "n_hidden", "d_m", "d_mlp", "d_tree", "d_branch", "readout_d_m")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ELMConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("l_mlp", "readout_l_mlp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ELMConfig.{name} must be an integer >= 0, got {value!r}")
        if not 0.0 <= self.rho_rec <= 1.0:
            raise ValueError(f"ELMConfig.rho_rec must lie in [0, 1], got {self.rho_rec!r}")
        for name in ("input_dropout", "recurrent_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ELMConfig.{name} must lie in [0, 1), got {value!r}")
        for name in ("tau_m_min", "tau_m_max", "tau_r", "input_scale", "embedding_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ELMConfig.{name} must be a finite number > 0, got {value!r}")
        if self.tau_m_min >= self.tau_m_max:
            raise ValueError(
                f"ELMConfig.tau_m_min must be < tau_m_max, got tau_m_min={self.tau_m_min!r} >= {self.tau_m_max!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ELMConfig.activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def k_c(self) -> int:
        return self.d_tree * self.d_branch

    def replace(self, **changes) -> ELMConfig:
        if "d_m" in changes and "d_mlp" not in changes and self.d_mlp == 2 * self.d_m:
            changes["d_mlp"] = None  # keep the 2*d_m default tied to d_m
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ELMConfig:
        return strict_from_dict(cls, values)


def strict_from_dict(cls, values: dict):
    """Build a config dataclass, naming the first key it does not know instead of a TypeError."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
    return cls(**values)


# --- one layer of ELM neurons ------------------------------------------------------------------------------------


class LayerState(NamedTuple):
    m: torch.Tensor  # (N, d_m, B) memory
    r: torch.Tensor  # (N, B) high-pass state
    a: torch.Tensor  # (N, B) output activity


class ELMState(NamedTuple):
    """Carried across chunks for truncated BPTT. Batch is the last axis of every tensor."""

    hidden: LayerState
    readout: LayerState

    def detach(self) -> ELMState:
        return ELMState(*(LayerState(*(t.detach() for t in layer)) for layer in self))

    def reset(self, keep: torch.Tensor) -> ELMState:
        """Zero the state of batch elements where keep (B,) is False."""
        keep = keep.to(self.hidden.a.dtype)
        return ELMState(*(LayerState(*(t * keep for t in layer)) for layer in self))


class ELMLayer(nn.Module):
    """N ELM neurons that step together. Sources are [external inputs ; the layer's own previous outputs]."""

    def __init__(
        self,
        n_neurons: int,
        n_inputs: int,
        d_m: int,
        d_mlp: int,
        l_mlp: int,
        rho_rec: float,
        cfg: ELMConfig,
        generator: torch.Generator,
        high_pass: bool,
        rectify: bool,
        fast: bool = True,
    ):
        super().__init__()
        self.n, self.d_m, self.d_tree, self.d_branch = n_neurons, d_m, cfg.d_tree, cfg.d_branch
        self.input_scale = cfg.input_scale
        self.high_pass, self.rectify = high_pass, rectify
        self.activation = cfg.activation
        self.fast = fast
        k_c = cfg.k_c

        # Wiring: k_c sources per neuron drawn with replacement; recurrent with probability rho_rec.
        is_rec = torch.rand(n_neurons, k_c, generator=generator) < rho_rec
        ff_src = torch.randint(0, n_inputs, (n_neurons, k_c), generator=generator)
        rec_src = torch.randint(0, n_neurons, (n_neurons, k_c), generator=generator)
        sources = torch.where(is_rec, n_inputs + rec_src, ff_src)
        self.register_buffer("sources", sources)  # (N, k_c) index into [inputs ; own outputs]

        bound = 1.0 / math.sqrt(self.d_branch)
        self.w_syn = nn.Parameter(torch.empty(n_neurons, k_c).uniform_(-bound, bound, generator=generator))

        # Per-neuron MLP, weights stored (N, out, in) so that one baddbmm steps all neurons.
        widths = [self.d_tree + d_m] + [d_mlp] * l_mlp + [d_m]
        self.mlp_w = nn.ParameterList()
        self.mlp_b = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            b = 1.0 / math.sqrt(fan_in)
            weight = torch.empty(n_neurons, fan_out, fan_in).uniform_(-b, b, generator=generator)
            self.mlp_w.append(nn.Parameter(weight))
            self.mlp_b.append(nn.Parameter(torch.empty(n_neurons, fan_out, 1).uniform_(-b, b, generator=generator)))
        b = 1.0 / math.sqrt(d_m)
        self.w_y = nn.Parameter(torch.empty(n_neurons, d_m, 1).uniform_(-b, b, generator=generator))
        self.bias = nn.Parameter(torch.zeros(n_neurons, 1))

        log_tau = torch.linspace(math.log(cfg.tau_m_min), math.log(cfg.tau_m_max), d_m).expand(n_neurons, d_m)
        if cfg.learn_tau:
            self.log_tau_m = nn.Parameter(log_tau.clone())
        else:
            self.register_buffer("log_tau_m", log_tau.clone())
        self.kappa_r = math.exp(-1.0 / cfg.tau_r)

        # The fast path's view of the wiring: feed-forward and recurrent synapses as two sparse patterns whose rows
        # are branches (neuron * d_tree + branch), so the synaptic stage is a sparse matmul, never a gather.
        row = torch.arange(n_neurons * k_c) // self.d_branch
        flat_rec = is_rec.flatten()
        self.register_buffer("ff_index", torch.nonzero(~flat_rec).flatten(), persistent=False)
        self.register_buffer("rec_index", torch.nonzero(flat_rec).flatten(), persistent=False)
        n_rows = n_neurons * self.d_tree
        self.ff = SynapsePattern(row[~flat_rec], ff_src.flatten()[~flat_rec], n_rows, n_inputs)
        self.rec = SynapsePattern(row[flat_rec], rec_src.flatten()[flat_rec], n_rows, n_neurons)
        self.scan_spec = ScanSpec(self.ff, self.rec, NeuronSpec(cfg.activation, high_pass, rectify, self.kappa_r))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        device = self.sources.device
        self.ff.to(device)
        self.rec.to(device)
        return self

    def initial_state(self, batch: int, device, dtype) -> LayerState:
        zeros = torch.zeros(self.n, batch, device=device, dtype=dtype)
        return LayerState(torch.zeros(self.n, self.d_m, batch, device=device, dtype=dtype), zeros, zeros)

    def decays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kappa_m and 1 - kappa_lambda, each (N, d_m)."""
        tau_m = self.log_tau_m.exp()
        kappa_m = torch.exp(-1.0 / tau_m)
        gate = 1.0 - torch.exp(-LAMBDA / tau_m)  # 1 - kappa_lambda
        return kappa_m, gate

    def step(self, x_t: torch.Tensor, state: LayerState, rec_keep: torch.Tensor | None):
        """One time step of all N neurons (DESIGN §2, steps 1-5). x_t: external inputs (C, B).

        Returns the new state and the MLP output delta (N, d_m, B).
        """
        kappa_m, gate = self.decays()  # 4. timescales: kappa_m and 1 - kappa_lambda, (N, d_m)
        a_prev = state.a if rec_keep is None else state.a * rec_keep
        z = torch.cat((x_t, a_prev))  # (C + N, B) = [x_t ; a_{t-1}]
        u = z[self.sources]  # (N, k_c, B)  1. synaptic input
        weighted = self.input_scale * self.w_syn.unsqueeze(-1) * u
        beta = weighted.view(self.n, self.d_tree, self.d_branch, -1).sum(2)  # (N, d_tree, B)  2. branches
        m_tilde = kappa_m.unsqueeze(-1) * state.m  # (N, d_m, B)  3. memory
        h = torch.cat((beta, m_tilde), 1)  # (N, d_tree + d_m, B)
        for layer, (w, b) in enumerate(zip(self.mlp_w, self.mlp_b)):
            h = torch.baddbmm(b, w, h)  # (N, out, B)
            if layer < len(self.mlp_w) - 1:
                h = activate(h, self.activation)
        delta = h  # (N, d_m, B)
        m = m_tilde + gate.unsqueeze(-1) * MEMORY_GAIN * torch.tanh(2 * delta / 3)
        y = (self.w_y * m).sum(1)  # (N, B)  5. output
        r = state.r
        if self.high_pass:
            r = self.kappa_r * r + (1 - self.kappa_r) * y
            y = y - r
        a = F.relu(y + self.bias) if self.rectify else y + self.bias
        return LayerState(m, r, a), delta

    def forward(self, inputs: torch.Tensor, state: LayerState, rec_keep: torch.Tensor | None):
        """Run the layer over a chunk. inputs: external inputs (C, T, B); rec_keep: recurrent dropout mask (N, B).

        Returns the activities (T, N, B), the new state and the mean |MLP output| of each neuron (N,).
        """
        if self.fast:
            # All T steps in one autograd Function: C++ step loops on the CPU, a hand-written backward pass.
            kappa_m, gate = self.decays()
            scaled = self.w_syn.flatten() * self.input_scale
            params = LayerParams(
                scaled[self.ff_index], scaled[self.rec_index], kappa_m, gate * MEMORY_GAIN, self.w_y, self.bias,
                tuple(self.mlp_w), tuple(self.mlp_b),
            )
            activity, m, r, mlp_abs = scan_layer(self.scan_spec, inputs, state, params, rec_keep)
            return activity, LayerState(m, r, activity[-1]), mlp_abs
        # manual implementation: the plain step T times, autograd keeping the graph over time
        activity, abs_delta = [], []
        for x_t in inputs.unbind(1):  # (C, B)
            state, delta = self.step(x_t, state, rec_keep)
            activity.append(state.a)
            abs_delta.append(delta.abs().mean((1, 2)))  # (N,)
        return torch.stack(activity), state, torch.stack(abs_delta).mean(0)


# --- the network -------------------------------------------------------------------------------------------------


class ELMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, n_output)
    state: ELMState
    mlp_out_abs: torch.Tensor  # (N,) mean |MLP output| of each hidden neuron over the chunk
    activity: torch.Tensor  # () mean hidden activity over the chunk


class ELMNetwork(nn.Module):
    """The network of DESIGN §3. fast=False runs the plain step instead of the fast path (the tests' reference)."""

    def __init__(self, cfg: ELMConfig, fast: bool = True):
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        self.hidden = ELMLayer(
            cfg.n_hidden, cfg.n_input, cfg.d_m, cfg.d_mlp, cfg.l_mlp, cfg.rho_rec, cfg, generator,
            high_pass=True, rectify=True, fast=fast,
        )
        self.readout = ELMLayer(
            cfg.n_output, cfg.n_hidden, cfg.readout_d_m, 2 * cfg.readout_d_m, cfg.readout_l_mlp, 0.0, cfg, generator,
            high_pass=False, rectify=False, fast=fast,
        )
        self.output = nn.Linear(cfg.n_output, cfg.n_output)
        bound = 1.0 / math.sqrt(cfg.n_output)
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound, generator=generator)
            self.output.bias.uniform_(-bound, bound, generator=generator)

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> ELMState:
        device = device or self.output.weight.device
        hidden = self.hidden.initial_state(batch, device, dtype)
        return ELMState(hidden, self.readout.initial_state(batch, device, dtype))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) become scaled one-hot vectors; float inputs (B, T, C) are scaled as given."""
        if x.dtype in (torch.int64, torch.int32):
            x = F.one_hot(x.long(), self.cfg.n_input).to(self.output.weight.dtype)
        elif x.shape[-1] != self.cfg.n_input:
            raise ValueError(f"input has {x.shape[-1]} channels, ELMConfig.n_input is {self.cfg.n_input}")
        return x * self.cfg.embedding_scale

    def forward(self, x: torch.Tensor, state: ELMState | None = None) -> ELMOutput:
        x = self.embed(x)
        batch, steps, n_in = x.shape
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        hidden, readout = self.hidden, self.readout
        inputs = x.permute(2, 1, 0)  # (C, T, B)
        rec_keep = None
        if self.training and self.cfg.input_dropout > 0:
            inputs = inputs * _variational_mask(n_in, batch, self.cfg.input_dropout, x).unsqueeze(1)
        if self.training and self.cfg.recurrent_dropout > 0:
            rec_keep = _variational_mask(hidden.n, batch, self.cfg.recurrent_dropout, x)

        # The recurrence runs in fp32 even under autocast: bf16 steps drift from the reference over long sequences.
        with torch.autocast(x.device.type, enabled=False):
            state = _as_float(state)
            hidden_a, hidden_state, mlp_abs = hidden(inputs.float(), state.hidden, rec_keep)  # (T, N, B)
            # The readout reads only the hidden layer's current activity.
            readout_a, readout_state, _ = readout(hidden_a.permute(1, 0, 2), state.readout, None)  # (T, n_out, B)
        logits = self.output(readout_a.permute(2, 0, 1))  # (B, T, n_out)
        return ELMOutput(
            logits=logits,
            state=ELMState(hidden_state, readout_state),
            mlp_out_abs=mlp_abs,
            activity=hidden_a.mean(),
        )


def _as_float(state: ELMState) -> ELMState:
    return ELMState(*(LayerState(*(t.float() for t in layer)) for layer in state))


def _variational_mask(n: int, batch: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """One dropout mask per sequence (n, B), shared by every time step, scaled to keep the expectation."""
    keep = torch.rand(n, batch, device=like.device) >= p
    return keep.to(like.dtype) / (1.0 - p)
