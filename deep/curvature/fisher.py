"""The empirical Fisher F of a full-batch loss (the uncentred covariance of per-term gradients), as an operator.

The loss of a chunk is a mean over T_i terms (examples, or every token of every example), each term a
function of one row f_t of the outputs (the last axis: classes or regression targets):
L_i = (1/T_i) sum_t l_t(f_t).  With e_t = dl_t/df_t = T_i dL_i/df_t (the term's own output gradient) and
g_t = J_t^T e_t its gradient in parameter space,

    F = sum_i (n_i / N) (1/T_i) sum_{t in chunk i} g_t g_t^T,

i.e. (1/T) sum_t g_t g_t^T over all T terms of the full batch when every example has as many terms
(Kunstner, Hennig and Balles 2019 call it the empirical Fisher; curvlinops' ``EFLinearOperator``).  For
cross-entropy it is curvlinops' EF exactly; for ``torch.nn.MSELoss()`` (a mean over the C outputs as well)
curvlinops takes l_t = sum_c (f_tc - y_tc)^2, C times our term (1/C) sum_c (f_tc - y_tc)^2, so its EF is C
times ours.  F is positive semi-definite and of rank at most T.

One product F v per chunk through the graphs the Gauss-Newton operator keeps (:mod:`deep.curvature.ggn`):
J v by the double-vjp trick, the per-term weights e_t (e_t . (J v)_t) / T_i, and J^T of those by a
backward pass: F v = J^T diag_t(e_t e_t^T) J v / T_i, the Gauss-Newton product with H_L replaced by the
outer products of the output gradients.
"""

from __future__ import annotations

from torch import Tensor

from .ggn import GGNOperator, _ChunkGraphs


def term_rows(t: Tensor) -> Tensor:
    """The outputs (or a tensor shaped like them) as (terms, C) rows: the last axis is C; a 1-d output
    has one value per term."""
    return t.reshape(-1, 1) if t.ndim <= 1 else t.reshape(-1, t.shape[-1])


class _FisherChunk(_ChunkGraphs):
    """One chunk's kept graphs, multiplying by (1/T_i) J^T diag_t(e_t e_t^T) J."""

    def __init__(self, op, leaves, order, inputs, targets) -> None:
        super().__init__(op, leaves, order, inputs, targets)
        rows = term_rows(self.dl_df.detach())
        self.terms = rows.shape[0]
        self.e = rows * self.terms  # e_t = T_i dL_i/df_t

    def product(self, parts: list[Tensor]) -> list[Tensor]:
        jv = term_rows(self.jacobian_product(parts))
        weights = self.e * (self.e * jv).sum(dim=1, keepdim=True) / self.terms
        return self.transpose_product(weights.reshape(self.out.shape))


class EmpiricalFisherOperator(GGNOperator):
    """F v = sum_i (n_i/N) (1/T_i) sum_t g_t (g_t . v) over the chunks of ``data`` (module docstring).

    Units: those of the Hessian (loss units per squared parameter unit).  ``loss_fn`` must be a mean over
    terms that each depend on one row of the outputs (every loss of :mod:`deep.training.losses` is).
    """

    strategy = "empirical_fisher"
    chunk_graphs = _FisherChunk
