"""The ELM Network: a recurrent layer of Expressive Leaky Memory neurons, a readout layer and a linear output.

Read top to bottom this is DESIGN.md §2-3. Internally every layer keeps its tensors neuron-major and batch-last,
(N, features, B), so that the per-neuron MLPs are one batched matmul over neurons and the synaptic stage is one
sparse matmul against the (sources, B) activity matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ACTIVATIONS = ("relu2", "relu", "silu")
MEMORY_GAIN = 1.7159  # LeCun's scaled tanh: 1.7159 * tanh(2x/3)
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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ELMConfig has no field {unknown[0]!r}")
        return cls(**values)


# --- synaptic stage ---------------------------------------------------------------------------------------------


class SynapsePattern:
    """A fixed sparse (rows x sources) pattern: row = neuron * d_tree + branch, one entry per synapse.

    Duplicated (row, source) entries are kept apart (sources are drawn with replacement); the matmul sums them.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
        self.shape = (n_rows, n_cols)
        self.nnz = rows.numel()
        self.crow = _compressed(rows, n_rows)
        self.col = cols
        order = torch.argsort(cols, stable=True)  # the transposed pattern, for the backward pass
        self.t_perm = order
        self.t_crow = _compressed(cols[order], n_cols)
        self.t_col = rows[order]

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
    crow = torch.zeros(n + 1, dtype=torch.int64, device=sorted_index.device)
    crow[1:] = torch.cumsum(torch.bincount(sorted_index, minlength=n), 0)
    return crow


class _SparseSynapses(torch.autograd.Function):
    """out = W z for a fixed pattern, W's values trainable.

    Fast because it never materialises the (synapses, B) product: CSR matmul forward, CSR matmul with the
    transposed pattern for dz, and a sampled dense-dense product (SDDMM) for dW that touches only the synapses.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, z: torch.Tensor, pattern: SynapsePattern) -> torch.Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(values, z)
        return pattern.matrix(values) @ z

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        values, z = ctx.saved_tensors
        pattern: SynapsePattern = ctx.pattern
        grad_out = grad_out.contiguous()
        grad_values = grad_z = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.sparse.sampled_addmm(pattern.matrix(values), grad_out, z.T, beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_z = pattern.transposed(values) @ grad_out
        return grad_values, grad_z, None


def sparse_synapses(values: torch.Tensor, z: torch.Tensor, pattern: SynapsePattern) -> torch.Tensor:
    """Branch inputs (rows, cols) from source activity z (sources, cols)."""
    if pattern.nnz == 0:
        return z.new_zeros(pattern.shape[0], z.shape[1])
    return _SparseSynapses.apply(values, z, pattern)


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
        tau_m = self.log_tau_m.exp().unsqueeze(-1)  # (N, d_m, 1)
        kappa_m = torch.exp(-1.0 / tau_m)
        gate = 1.0 - torch.exp(-LAMBDA / tau_m)  # 1 - kappa_lambda
        return kappa_m, gate

    def step(
        self, beta: torch.Tensor, state: LayerState, kappa_m: torch.Tensor, gate: torch.Tensor
    ) -> tuple[LayerState, torch.Tensor]:
        """One time step given the branch inputs beta (N, d_tree, B). Returns the new state and the MLP output."""
        m_tilde = kappa_m * state.m  # (N, d_m, B)
        h = torch.cat((beta, m_tilde), dim=1)  # (N, d_tree + d_m, B)
        last = len(self.mlp_w) - 1
        for i, (w, b) in enumerate(zip(self.mlp_w, self.mlp_b)):
            h = torch.baddbmm(b, w, h)
            if i < last:
                h = _activate(h, self.activation)
        delta = h  # (N, d_m, B)
        m = m_tilde + gate * (MEMORY_GAIN * torch.tanh(delta * (2.0 / 3.0)))
        y = (self.w_y * m).sum(dim=1)  # (N, B)
        if self.high_pass:
            r = self.kappa_r * state.r + (1.0 - self.kappa_r) * y
            pre = y - r + self.bias
        else:
            r = state.r
            pre = y + self.bias
        a = F.relu(pre) if self.rectify else pre
        return LayerState(m, r, a), delta


def _activate(h: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu2":
        return torch.square(F.relu(h))
    if name == "relu":
        return F.relu(h)
    return F.silu(h)


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

        # The feed-forward share of the synapses depends only on the inputs: one sparse matmul for the whole chunk.
        ff_values, rec_values = hidden.synapse_values()
        beta_ff = sparse_synapses(ff_values, inputs.reshape(n_in, steps * batch), hidden.ff)
        # unbind, not beta_ff[:, :, t]: its backward stacks once instead of zero-filling a full-size grad per step.
        beta_ff_steps = beta_ff.view(hidden.n, hidden.d_tree, steps, batch).unbind(2)  # T x (N, d_tree, B)

        kappa_m, gate = hidden.decays()
        h_state = state.hidden
        activities, mlp_abs = [], []
        for t in range(steps):
            a_prev = h_state.a if rec_keep is None else h_state.a * rec_keep
            beta = beta_ff_steps[t] + sparse_synapses(rec_values, a_prev, hidden.rec).view(hidden.n, hidden.d_tree, batch)
            h_state, delta = hidden.step(beta, h_state, kappa_m, gate)
            activities.append(h_state.a)
            mlp_abs.append(delta.abs().mean(dim=(1, 2)))
        hidden_a = torch.stack(activities, dim=1)  # (N, T, B)

        # The readout reads only the hidden layer's current activity: its synaptic stage is one matmul too.
        ro_values, _ = readout.synapse_values()
        beta_ro = sparse_synapses(ro_values, hidden_a.reshape(hidden.n, steps * batch), readout.ff)
        beta_ro_steps = beta_ro.view(readout.n, readout.d_tree, steps, batch).unbind(2)
        kappa_m, gate = readout.decays()
        r_state = state.readout
        outputs = []
        for t in range(steps):
            r_state, _ = readout.step(beta_ro_steps[t], r_state, kappa_m, gate)
            outputs.append(r_state.a)
        readout_a = torch.stack(outputs, dim=0)  # (T, n_out, B)
        logits = self.output(readout_a.permute(2, 0, 1))  # (B, T, n_out)
        return ELMOutput(
            logits=logits,
            state=ELMState(h_state, r_state),
            mlp_out_abs=torch.stack(mlp_abs).mean(0),
            activity=hidden_a.mean(),
        )


def _variational_mask(n: int, batch: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """One dropout mask per sequence (n, B), shared by every time step, scaled to keep the expectation."""
    keep = torch.rand(n, batch, device=like.device) >= p
    return keep.to(like.dtype) / (1.0 - p)
