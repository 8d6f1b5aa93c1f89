"""The ELM Network: a recurrent layer of Expressive Leaky Memory neurons, a readout layer and a linear output.

Read top to bottom this is DESIGN.md §2-3; the time loop of a layer (§2 steps 1-5 for all N neurons at once) and its
hand-written backward pass live in `fast_ops.LayerScan`. Every layer keeps its tensors neuron-major, so that the
per-neuron MLPs are one batched matmul over neurons and the synaptic stage is one sparse matmul against the
(sources, B) activity matrix. The carried state is batch-last: m (N, d_m, B), r and a (N, B).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .fast_ops import MEMORY_GAIN, LayerScan, ScanSpec, SynapsePattern

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ACTIVATIONS = ("relu2", "relu", "silu")
LAMBDA = 5.0  # kappa_lambda = exp(-lambda * dt / tau_m)


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
            raise ValueError(f"ELMConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")

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
        d_tree: int,
        d_branch: int,
        rho_rec: float,
        cfg: ELMConfig,
        generator: torch.Generator,
        high_pass: bool,
        rectify: bool,
    ):
        super().__init__()
        self.n, self.d_m, self.d_tree, self.d_branch = n_neurons, d_m, d_tree, d_branch
        self.input_scale = cfg.input_scale
        self.high_pass, self.rectify = high_pass, rectify
        self.activation = cfg.activation
        k_c = d_tree * d_branch

        # Wiring: k_c sources per neuron drawn with replacement; recurrent with probability rho_rec.
        is_rec = torch.rand(n_neurons, k_c, generator=generator) < rho_rec
        ff_src = torch.randint(0, n_inputs, (n_neurons, k_c), generator=generator)
        rec_src = torch.randint(0, n_neurons, (n_neurons, k_c), generator=generator)
        sources = torch.where(is_rec, n_inputs + rec_src, ff_src)
        self.register_buffer("sources", sources)  # (N, k_c) index into [inputs ; own outputs]
        row = torch.arange(n_neurons * k_c) // d_branch
        flat_rec = is_rec.flatten()
        self.register_buffer("ff_index", torch.nonzero(~flat_rec).flatten(), persistent=False)
        self.register_buffer("rec_index", torch.nonzero(flat_rec).flatten(), persistent=False)
        n_rows = n_neurons * d_tree
        self.ff = SynapsePattern(row[~flat_rec], ff_src.flatten()[~flat_rec], n_rows, n_inputs)
        self.rec = SynapsePattern(row[flat_rec], rec_src.flatten()[flat_rec], n_rows, n_neurons)

        bound = 1.0 / math.sqrt(d_branch)
        self.w_syn = nn.Parameter(torch.empty(n_neurons, k_c).uniform_(-bound, bound, generator=generator))

        # Per-neuron MLP, weights stored (N, out, in) so that one baddbmm steps all neurons.
        widths = [d_tree + d_m] + [d_mlp] * l_mlp + [d_m]
        self.mlp_w = nn.ParameterList()
        self.mlp_b = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            b = 1.0 / math.sqrt(fan_in)
            self.mlp_w.append(nn.Parameter(torch.empty(n_neurons, fan_out, fan_in).uniform_(-b, b, generator=generator)))
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
        self.scan_spec = ScanSpec(
            self.ff, self.rec, n_neurons, d_m, d_tree, cfg.activation, high_pass, rectify, self.kappa_r
        )

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        device = self.sources.device
        self.ff.to(device)
        self.rec.to(device)
        return self

    def synapse_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Synapse weights times input_scale, split into the feed-forward and recurrent patterns."""
        scaled = self.w_syn.flatten() * self.input_scale
        return scaled[self.ff_index], scaled[self.rec_index]

    def initial_state(self, batch: int, device, dtype) -> LayerState:
        zeros = torch.zeros(self.n, batch, device=device, dtype=dtype)
        return LayerState(torch.zeros(self.n, self.d_m, batch, device=device, dtype=dtype), zeros, zeros)

    def decays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """kappa_m and 1 - kappa_lambda, each (N, d_m)."""
        tau_m = self.log_tau_m.exp()
        kappa_m = torch.exp(-1.0 / tau_m)
        gate = 1.0 - torch.exp(-LAMBDA / tau_m)  # 1 - kappa_lambda
        return kappa_m, gate

    def scan(self, sources: torch.Tensor, state: LayerState, rec_keep: torch.Tensor | None):
        """Run the layer over a chunk. sources: external inputs (C, T, B); rec_keep: recurrent dropout mask (N, B).

        Returns the activities (T, N, B), the new state and the mean |MLP output| of each neuron (N,).
        """
        ff_values, rec_values = self.synapse_values()
        kappa_m, gate = self.decays()
        mlp = [t for pair in zip(self.mlp_w, self.mlp_b) for t in pair]
        activity, m, r, mlp_abs = LayerScan.apply(
            self.scan_spec, sources, ff_values, rec_values, kappa_m, gate * MEMORY_GAIN, self.w_y, self.bias,
            state.m, state.r, state.a, rec_keep, *mlp,
        )
        return activity, LayerState(m, r, activity[-1]), mlp_abs


# --- the network -------------------------------------------------------------------------------------------------


class ELMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, n_output)
    state: ELMState
    mlp_out_abs: torch.Tensor  # (N,) mean |MLP output| of each hidden neuron over the chunk
    activity: torch.Tensor  # () mean hidden activity over the chunk


class ELMNetwork(nn.Module):
    def __init__(self, cfg: ELMConfig):
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        self.hidden = ELMLayer(
            cfg.n_hidden, cfg.n_input, cfg.d_m, cfg.d_mlp, cfg.l_mlp, cfg.d_tree, cfg.d_branch, cfg.rho_rec,
            cfg, generator, high_pass=True, rectify=True,
        )
        self.readout = ELMLayer(
            cfg.n_output, cfg.n_hidden, cfg.readout_d_m, 2 * cfg.readout_d_m, cfg.readout_l_mlp, cfg.d_tree,
            cfg.d_branch, 0.0, cfg, generator, high_pass=False, rectify=False,
        )
        self.output = nn.Linear(cfg.n_output, cfg.n_output)
        bound = 1.0 / math.sqrt(cfg.n_output)
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound, generator=generator)
            self.output.bias.uniform_(-bound, bound, generator=generator)

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> ELMState:
        device = device or self.output.weight.device
        return ELMState(self.hidden.initial_state(batch, device, dtype), self.readout.initial_state(batch, device, dtype))

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
            hidden_a, hidden_state, mlp_abs = hidden.scan(inputs.float(), state.hidden, rec_keep)  # (T, N, B)
            # The readout reads only the hidden layer's current activity.
            readout_a, readout_state, _ = readout.scan(hidden_a.permute(1, 0, 2), state.readout, None)  # (T, n_out, B)
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
