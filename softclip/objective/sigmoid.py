"""The pairwise sigmoid loss (SigLIP, arXiv 2303.15343) with soft per-pair labels (``loss.contrastive: sigmoid``).

Same contract as :func:`softclip.objective.reference.direction_terms`: one direction at a time, a block of
logits Z ``[N_l, N_g]`` (here Z = s·U V_gᵀ + b with the learnable bias b) whose local row i has its positive at
global column ``offset + i``, and the direction's log target log Y (rows of log-probabilities, or None for Y = I).

Every entry of the block is its own binary question, "is this pair a match?", with p = σ(z):

- sigmoid InfoNCE  L_nce  = −(1/N_l) Σ_ij log σ(ℓ_ij z_ij),  ℓ = 2I − 1   (open_clip's ``SigLipLoss``)
- soft loss        L_soft =  (1/N_l) Σ_ij D((y_ij, 1 − y_ij) ‖ (σ(z_ij), σ(−z_ij)))

with D any ``loss.divergence`` applied to the two-point distribution of each pair (``kl``: the binary KL; ``ce``:
binary cross-entropy with soft labels; ``symkl``: both KLs, the reverse one with ``loss.reverse_floor``, and
``loss.one_hot_rows: forward`` dropping it on pairs whose label is exactly 0 or 1, where it is only the floor).

**Per-pair labels from row targets.** The label of pair (i, j) is y_ij = Y_ij, the target row's own
probability. Every family's Y is row-stochastic with one true caption per image in expectation, so a row's labels
sum to 1, as the hard labels' single 1 does: softening moves label mass from the positive to the pairs the target
deems similar, it does not add positives (hard: I; label smoothing: 1 − β + β/N on the diagonal, β/N elsewhere;
self-similarity and momentum: (1 − β)·I + β·softmax; the oracle: β/k on each of the k true matches plus 1 − β on
the diagonal). The two directions are two halves over the same pairs (i2t uses Y^{i2t}_ij, t2i uses Y^{t2i}_ji)
with weight ½ each, so with a divergence whose gradient is linear in y (kl, ce) the pair's gradient is
σ(z_ij) − ½(Y^{i2t}_ij + Y^{t2i}_ji). With Y = I both halves are ``SigLipLoss``, and their mean is too.

The disentangled-negatives term renormalises a softmax over a row's negatives and has no form here
(``loss.re_weight`` must be 0). Plain autograd: the pair stack [N_l, N_g, 2] is small at the batch sizes this
suite trains on a CPU; the ``fused`` InfoNCE path has no sigmoid counterpart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from softclip.objective.reference import DirectionSpec, divergence_rows

LOG_HALF = -math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x <= 0, accurate at both ends (−inf at x = 0, 0 at x = −inf). Shape preserved."""
    return torch.where(x > LOG_HALF, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pair_labels(n_local: int, n_global: int, offset: int, like: torch.Tensor) -> torch.Tensor:
    """ℓ [N_l, N_g]: +1 at (i, offset + i), −1 elsewhere (``like``'s dtype and device)."""
    labels = torch.full((n_local, n_global), -1.0, dtype=like.dtype, device=like.device)
    labels.diagonal(offset).fill_(1.0)
    return labels


def pair_divergence(logits: torch.Tensor, log_y: torch.Tensor, spec: DirectionSpec) -> torch.Tensor:
    """Σ_ij D((y, 1 − y) ‖ (σ(z), σ(−z))) over the block: logits, log_y [N_l, N_g] -> scalar (differentiable)."""
    log_p = torch.stack((F.logsigmoid(logits), F.logsigmoid(-logits)), dim=-1).view(-1, 2)
    log_t = torch.stack((log_y, log1mexp(log_y.clamp_max(0.0))), dim=-1).view(-1, 2)
    return divergence_rows(log_t, log_p, spec).sum()


def direction_terms(
    logits: torch.Tensor, log_y: torch.Tensor | None, keep: torch.Tensor | None, spec: DirectionSpec
) -> tuple[torch.Tensor, ...]:
    """All terms of one direction of the sigmoid loss (contract of ``reference.direction_terms``).

    Args:
        logits: [N_l, N_g] Z = s·U V_gᵀ + b.
        log_y: [N_l, N_g] log Y (no gradient), or None (hard labels: only the sigmoid InfoNCE is computed).
        keep: must be None (no disentangled-negatives term).
        spec: offset, divergence, weights, floor and one-hot rule (``re_weight`` must be None).

    Returns:
        (total, nce, soft, re_sum, pos_mass, neg_entropy): total = w_nce·nce + w_soft·soft is the only
        differentiable output; nce and soft are sums over the block's pairs divided by N_l; re_sum is 0;
        pos_mass the mean σ(z_ii); neg_entropy the mean over rows of Σ_j y log y.
    """
    if keep is not None or spec.re_weight is not None:
        raise ValueError("the sigmoid loss has no disentangled-negatives term (loss.re_weight must be 0)")
    n_local, n_global = logits.shape
    labels = pair_labels(n_local, n_global, spec.offset, logits)
    nce = -F.logsigmoid(labels * logits).sum() / n_local
    total, zero = spec.nce_weight * nce, logits.new_zeros(())
    soft = neg_entropy = zero
    if log_y is not None:
        y = log_y.exp()
        neg_entropy = torch.where(y > 0, y * log_y, 0.0).sum(1).mean()
        if spec.soft_weight > 0:
            soft = pair_divergence(logits, log_y, spec) / n_local
            total = total + spec.soft_weight * soft
    pos_mass = torch.sigmoid(logits.detach().diagonal(spec.offset)).mean()
    return (total, nce.detach(), soft.detach(), zero, pos_mass, neg_entropy)
