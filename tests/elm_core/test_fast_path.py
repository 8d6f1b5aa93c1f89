"""The fast path (fast_ops.LayerScan with its hand-written backward) equals the model's plain step
(ELMLayer.step, run by ELMNetwork(cfg, fast=False)): outputs, regulariser terms, every parameter's gradient and the
gradient of a carried-in state — with the C++ step loops and with the torch-ops loops, for dense inputs and for
sparse ones (scattered from the nonzero inputs)."""

import os

import pytest
import torch

from elm_core import fast_ops
from elm_core.model import ELMConfig, ELMNetwork, ELMState, LayerState
from elm_core.step_kernels import STALE_BUILD_LOCK_S, SparseInputs, TorchSteps, _remove_stale_build_lock, cpu_kernel

MASK_SEED = 1234


def small_config(**changes) -> ELMConfig:
    base = dict(n_input=7, n_output=5, n_hidden=9, d_m=3, d_tree=4, d_branch=3, rho_rec=0.5, tau_m_min=1.0,
                tau_m_max=20.0, tau_r=3.0, seed=3)
    base.update(changes)
    return ELMConfig(**base)


def fast_and_reference(cfg: ELMConfig) -> tuple[ELMNetwork, ELMNetwork]:
    """Two networks with the same parameters and wiring: one on the fast path, one on the plain step."""
    return ELMNetwork(cfg).train(), ELMNetwork(cfg, fast=False).train()


def carried_state(net: ELMNetwork, batch: int) -> ELMState:
    """A non-zero state, as after an earlier chunk, that requires grad so its gradient can be checked too."""
    torch.manual_seed(7)
    with torch.no_grad():
        warm = net.eval()(torch.randint(0, net.cfg.n_input, (batch, 4))).state
    net.train()
    return ELMState(*(LayerState(*(t.clone().requires_grad_() for t in layer)) for layer in warm))


def loss_of(logits, state: ELMState, mlp_abs, activity) -> torch.Tensor:
    """Touches every output the trainer uses (logits, both regularisers) and every carried-out state tensor."""
    weights = torch.linspace(-1.0, 1.0, logits.numel()).view_as(logits)
    total = (logits * weights).sum() + 0.3 * mlp_abs.square().mean() + 0.7 * activity
    for k, layer in enumerate(state):
        for j, t in enumerate(layer):
            total = total + (0.1 + 0.05 * (k + j)) * t.square().sum()
    return total


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale.item(), msg=name)


CASES = [
    {},
    {"l_mlp": 0},
    {"l_mlp": 2, "activation": "silu"},
    {"l_mlp": 2, "d_mlp": 5, "activation": "relu"},
    {"rho_rec": 0.0},
    {"rho_rec": 1.0},
    {"input_dropout": 0.3, "recurrent_dropout": 0.4},
    {"learn_tau": True, "readout_l_mlp": 1},
    {"n_hidden": 13, "d_tree": 3, "d_branch": 5, "d_m": 4, "rho_rec": 0.8, "input_dropout": 0.2,
     "recurrent_dropout": 0.2, "learn_tau": True, "l_mlp": 2, "seed": 11},
]


class RecordingSteps:
    """The step loops under test, recording whether the hidden layer took the sparse-input path."""

    def __init__(self, steps):
        self.steps, self.ff_sparse = steps, []

    def forward_block(self, block, chunk, sources, weights, neuron):
        self.ff_sparse.append(isinstance(sources.ff, SparseInputs))
        self.steps.forward_block(block, chunk, sources, weights, neuron)

    def __getattr__(self, name):
        return getattr(self.steps, name)


def built_cpp_steps():
    steps = cpu_kernel()
    if steps is TorchSteps:
        pytest.fail("the C++ step loops did not build on this machine")
    return steps


@pytest.fixture(params=["cpp", "torch"])
def step_loops(request, monkeypatch) -> RecordingSteps:
    recording = RecordingSteps(built_cpp_steps() if request.param == "cpp" else TorchSteps)
    monkeypatch.setattr(fast_ops, "steps_for", lambda device: recording)
    return recording


def chunk_inputs(kind: str, cfg: ELMConfig, batch: int, steps: int) -> torch.Tensor:
    """Dense: token ids over 7 symbols (one-hot density 1/7). Sparse: spikes on 2 of 40 channels per step."""
    generator = torch.Generator().manual_seed(5)
    if kind == "dense":
        return torch.randint(0, cfg.n_input, (batch, steps), generator=generator)
    spikes = torch.zeros(batch, steps, cfg.n_input)
    channels = torch.randint(0, cfg.n_input, (batch, steps, 2), generator=generator)
    return spikes.scatter_(2, channels, 1.0)


@pytest.mark.parametrize("inputs", ["dense", "sparse"])
@pytest.mark.parametrize("changes", CASES)
def test_fast_path_outputs_and_every_gradient_equal_the_reference(changes, inputs, step_loops):
    assert_fast_path_equals_reference(changes, inputs, step_loops, batch=3)


@pytest.mark.parametrize("inputs", ["dense", "sparse"])
@pytest.mark.parametrize("batch", [1, 8, 11, 17])
def test_every_batch_size_equals_the_reference(batch, inputs, step_loops):
    """The C++ loops work in chunks of 8 batch lanes: one lane, a full chunk, a full chunk plus a partial one."""
    assert_fast_path_equals_reference(CASES[-1], inputs, step_loops, batch)


def assert_fast_path_equals_reference(changes: dict, inputs: str, step_loops: RecordingSteps, batch: int) -> None:
    cfg = small_config(**changes, **({"n_input": 40} if inputs == "sparse" else {}))
    fast_net, slow_net = fast_and_reference(cfg)
    x = chunk_inputs(inputs, cfg, batch, 7)
    fast_state, slow_state = carried_state(fast_net, batch), carried_state(fast_net, batch)

    torch.manual_seed(MASK_SEED)  # both draw the same dropout masks
    fast = fast_net(x, fast_state)
    torch.manual_seed(MASK_SEED)
    slow = slow_net(x, slow_state)
    scattered = inputs == "sparse" and step_loops.steps is not TorchSteps and fast_net.hidden.ff.nnz > 0
    assert step_loops.ff_sparse[0] == scattered
    assert_close_relative(fast.logits, slow.logits, "logits")
    assert_close_relative(fast.mlp_out_abs, slow.mlp_out_abs, "mlp_out_abs")
    assert_close_relative(fast.activity, slow.activity, "activity")
    for layer_fast, layer_slow in zip(fast.state, slow.state):
        for a, b in zip(layer_fast, layer_slow):
            assert_close_relative(a, b, "carried-out state")

    loss_of(*fast).backward()
    loss_of(*slow).backward()
    slow_params = dict(slow_net.named_parameters())
    for name, p in fast_net.named_parameters():
        assert p.grad is not None, name
        assert_close_relative(p.grad, slow_params[name].grad, name)
    for layer_fast, layer_slow in zip(fast_state, slow_state):
        for a, b in zip(layer_fast, layer_slow):
            expected = torch.zeros_like(b) if b.grad is None else b.grad  # the readout never reads its own a
            assert_close_relative(a.grad, expected, "carried-in state")


@pytest.mark.parametrize("inputs", ["dense", "sparse"])
def test_long_chunk_spans_several_weight_gradient_blocks(inputs, step_loops):
    """T*B above the block size: blocks must hand the state and its gradient over exactly."""
    cfg = small_config(l_mlp=2, rho_rec=0.7, **({"n_input": 40} if inputs == "sparse" else {}))
    fast_net, slow_net = fast_and_reference(cfg)
    x = chunk_inputs(inputs, cfg, 2, 140)  # 2 x 140 = 280 rows: three blocks of WEIGHT_GRAD_ROWS = 128
    fast = fast_net(x)
    slow = slow_net(x)
    assert_close_relative(fast.logits, slow.logits, "logits")
    fast.logits.sum().backward()
    slow.logits.sum().backward()
    slow_params = dict(slow_net.named_parameters())
    for name, p in fast_net.named_parameters():
        assert_close_relative(p.grad, slow_params[name].grad, name)


@pytest.mark.parametrize("inputs", ["dense", "sparse"])
def test_two_threads_give_the_one_thread_results_bit_for_bit(inputs):
    """The C++ loops split neurons across threads (96 are enough work for two); each neuron's sums run on one
    thread in a fixed order, so the thread count may not change a single bit."""
    built_cpp_steps()
    cfg = small_config(n_hidden=96, d_tree=8, d_branch=4, d_m=4, d_mlp=16, rho_rec=0.5, recurrent_dropout=0.3,
                       **({"n_input": 40} if inputs == "sparse" else {}))
    x = chunk_inputs(inputs, cfg, 8, 40)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            net = ELMNetwork(cfg).train()
            torch.manual_seed(MASK_SEED)
            out = net(x)
            loss_of(*out).backward()
            results.append([out.logits, *out.state.hidden, *(p.grad for p in net.parameters())])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("changes", [{}, {"learn_tau": True, "l_mlp": 2, "rho_rec": 1.0}])
def test_gpu_fast_path_equals_cpu(changes):
    cfg = small_config(n_hidden=40, **changes)
    x = torch.randint(0, cfg.n_input, (4, 300))  # several weight-gradient blocks
    cpu_net, gpu_net = ELMNetwork(cfg), ELMNetwork(cfg).cuda()
    cpu_out = cpu_net(x)
    gpu_out = gpu_net(x.cuda())
    torch.testing.assert_close(gpu_out.logits.cpu(), cpu_out.logits, rtol=1e-4, atol=1e-4)
    loss_of(*cpu_out).backward()
    loss_of(*gpu_out).backward()
    for (name, p), q in zip(cpu_net.named_parameters(), gpu_net.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_bf16_autocast_keeps_the_recurrence_in_fp32():
    cfg = small_config(n_hidden=40)
    net = ELMNetwork(cfg).cuda()
    x = torch.randint(0, cfg.n_input, (4, 30), device="cuda")
    plain = net(x).logits
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = net(x).logits
    torch.testing.assert_close(mixed.float(), plain, rtol=2e-2, atol=2e-2)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    _remove_stale_build_lock(lock)
    assert lock.exists()  # a build may be running right now
    old = lock.stat().st_mtime - STALE_BUILD_LOCK_S - 1
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale C\\+\\+ build lock"):
        _remove_stale_build_lock(lock)
    assert not lock.exists()
