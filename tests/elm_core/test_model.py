"""The ELM Network against DESIGN §2-3: parameter counts, the plain reference step, chunking, gradients, seeds."""

import pytest
import torch

from elm_core.model import ELMConfig, ELMNetwork
from elm_core.params import count_parameters


def small_config(**changes) -> ELMConfig:
    base = dict(n_input=7, n_output=5, n_hidden=6, d_m=3, d_tree=4, d_branch=3, rho_rec=0.5, tau_m_min=1.0,
                tau_m_max=20.0, tau_r=3.0, seed=1)
    base.update(changes)
    return ELMConfig(**base)


def trainable_numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"l_mlp": 0},
        {"l_mlp": 2},
        {"l_mlp": 3, "d_mlp": 7},
        {"readout_l_mlp": 1},
        {"readout_l_mlp": 2, "readout_d_m": 4},
        {"d_m": 1, "d_tree": 1, "d_branch": 1},
        {"n_hidden": 13, "d_tree": 5, "d_branch": 7, "d_mlp": 11},
        {"learn_tau": True},
        {"rho_rec": 0.0},
        {"rho_rec": 1.0},
    ],
)
def test_formula_equals_built_model_numel(changes):
    cfg = small_config(**changes)
    assert count_parameters(cfg).params_total == trainable_numel(ELMNetwork(cfg))


def test_reference_configs_have_the_published_sizes():
    assert count_parameters(ELMConfig()).params_total == 3_516_748
    assert count_parameters(ELMConfig(n_hidden=256)).params_total == 1_050_700
    shd = ELMConfig(n_input=700, n_output=19, n_hidden=96, d_m=5, d_tree=30, d_branch=10, rho_rec=0.25)
    assert count_parameters(shd).params_total == 77_310


def test_k_e_and_k_c_split_the_neuron():
    counts = count_parameters(ELMConfig())
    assert counts.k_c == 750
    assert counts.k_e + counts.k_c == counts.params_neuron
    assert counts.params_hidden == 1024 * counts.params_neuron


@pytest.mark.parametrize(
    "changes",
    [{}, {"l_mlp": 0}, {"l_mlp": 2, "activation": "silu"}, {"activation": "relu"}, {"rho_rec": 0.0},
     {"rho_rec": 1.0}, {"learn_tau": True}],
)
def test_fast_path_equals_the_reference_step(changes):
    torch.manual_seed(0)
    cfg = small_config(**changes)
    x = torch.randint(0, cfg.n_input, (3, 6))
    fast = ELMNetwork(cfg)(x)
    slow = ELMNetwork(cfg, fast=False)(x)
    torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.state.hidden.m, slow.state.hidden.m, rtol=1e-5, atol=1e-5)  # (N, d_m, B)


def test_float_inputs_with_dropout_off_in_eval_match_reference():
    cfg = small_config(input_dropout=0.3, recurrent_dropout=0.3, embedding_scale=1.0)
    x = (torch.rand(2, 5, cfg.n_input) < 0.3).float()
    fast, slow = ELMNetwork(cfg).eval(), ELMNetwork(cfg, fast=False).eval()
    torch.testing.assert_close(fast(x).logits, slow(x).logits, rtol=1e-5, atol=1e-5)


def test_two_chunks_with_carried_state_equal_one_run():
    cfg = small_config()
    net = ELMNetwork(cfg)
    x = torch.randint(0, cfg.n_input, (4, 10))
    whole = net(x)
    first = net(x[:, :4])
    second = net(x[:, 4:], first.state)
    torch.testing.assert_close(torch.cat((first.logits, second.logits), dim=1), whole.logits)
    for a, b in zip(second.state.hidden, whole.state.hidden):
        torch.testing.assert_close(a, b)


def test_reset_zeroes_only_the_chosen_batch_elements():
    cfg = small_config()
    net = ELMNetwork(cfg)
    state = net(torch.randint(0, cfg.n_input, (3, 4))).state
    reset = state.reset(torch.tensor([True, False, True]))
    assert reset.hidden.m[..., 1].abs().sum() == 0
    torch.testing.assert_close(reset.hidden.m[..., 0], state.hidden.m[..., 0])


@pytest.mark.parametrize("changes", [{}, {"l_mlp": 0}, {"l_mlp": 2}, {"learn_tau": True},
                                     {"input_dropout": 0.2, "recurrent_dropout": 0.2}])
def test_gradients_reach_every_parameter_and_are_finite(changes):
    cfg = small_config(**changes)
    net = ELMNetwork(cfg).train()
    out = net(torch.randint(0, cfg.n_input, (2, 8)))
    loss = out.logits.square().mean() + out.mlp_out_abs.mean() ** 2 + out.activity
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_match_the_reference_step():
    cfg = small_config(l_mlp=2, rho_rec=0.6)
    x = torch.randint(0, cfg.n_input, (2, 5))
    fast_net, slow_net = ELMNetwork(cfg), ELMNetwork(cfg, fast=False)
    fast_net(x).logits.sum().backward()
    slow_net(x).logits.sum().backward()
    slow_grads = dict(slow_net.named_parameters())
    for name, p in fast_net.named_parameters():
        torch.testing.assert_close(p.grad, slow_grads[name].grad, rtol=1e-5, atol=1e-5, msg=name)


def test_same_seed_same_wiring_and_outputs_other_seed_differs():
    x = torch.randint(0, 7, (2, 5))
    a, b, c = ELMNetwork(small_config()), ELMNetwork(small_config()), ELMNetwork(small_config(seed=2))
    assert torch.equal(a.hidden.sources, b.hidden.sources)
    torch.testing.assert_close(a(x).logits, b(x).logits, rtol=0, atol=0)
    assert not torch.equal(a.hidden.sources, c.hidden.sources)


def test_wiring_respects_rho_rec_and_is_a_buffer():
    net = ELMNetwork(ELMConfig(n_input=50, n_output=3, n_hidden=200, d_m=2, d_tree=10, d_branch=10, rho_rec=0.3))
    recurrent_share = (net.hidden.sources >= 50).float().mean().item()
    assert 0.27 < recurrent_share < 0.33
    assert "hidden.sources" in dict(net.named_buffers())
    assert (net.readout.sources < 200).all()  # the readout reads the hidden layer only


@pytest.mark.parametrize(
    "field, value",
    [("d_m", 0), ("rho_rec", 1.5), ("rho_rec", -0.1), ("tau_m_min", 100.0), ("activation", "tanh"),
     ("n_hidden", 0), ("l_mlp", -1), ("input_dropout", 1.0), ("tau_r", 0.0), ("d_branch", 2.5)],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ELMConfig(**{field: value})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_forward_and_gradients_match_cpu():
    cfg = small_config(n_hidden=32)
    x = torch.randint(0, cfg.n_input, (4, 12))
    cpu_net = ELMNetwork(cfg)
    gpu_net = ELMNetwork(cfg).cuda()
    cpu_out = cpu_net(x).logits
    gpu_out = gpu_net(x.cuda()).logits
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-4, atol=1e-4)
    cpu_out.sum().backward()
    gpu_out.sum().backward()
    for (name, p), q in zip(cpu_net.named_parameters(), gpu_net.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-4, atol=1e-4, msg=name)
