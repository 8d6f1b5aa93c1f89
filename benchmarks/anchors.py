"""The reference configs the benchmarks time and the peer figures they are compared with.

JAX_TRAIN_TOKENS_PER_S: the authors' own JAX/Equinox ELM Network (jax.lax.scan over time, vmap over neurons and
batch, jitted train step with Adam/Adamax and the regularisers), training tokens/s (a token is one batch element at
one time step) at each config's batch x time. Measured 2026-11-22 on a 2-core CPU machine of the kind elmscale is
developed on, median of 3 runs of 10 timed steps after compilation, best of JAX 0.4.35 and 0.10.2; recorded in the
project's shared/ANCHORS.md. They are constants because JAX is not a dependency of this project: rerunning them
needs the authors' code.
"""

from __future__ import annotations

from elm_core.model import ELMConfig

# name: (model config, batch size, sequence length) - DESIGN.md §4.
REFERENCE_CONFIGS = {
    "enwik8": (ELMConfig(), 8, 100),
    "small": (ELMConfig(n_hidden=256), 8, 100),
    "shd": (ELMConfig(n_input=700, n_output=19, n_hidden=96, d_m=5, d_tree=30, d_branch=10, rho_rec=0.25,
                      tau_m_min=1.0, tau_m_max=500.0, tau_r=5.0, embedding_scale=1.0), 8, 1000),
}
JAX_TRAIN_TOKENS_PER_S = {"enwik8": 58.0, "small": 276.0, "shd": 3550.0}
