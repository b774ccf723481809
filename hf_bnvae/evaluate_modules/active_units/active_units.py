"""Active units (Burda et al., 2016) as a local `evaluate` module: evaluate.load(<this folder>).

Add the posterior means E_q[z|x] of every evaluation sentence as `posterior_means` (one list of n
floats per sentence); compute() returns the number of dimensions whose variance over the set
(N-1 divisor) is >= threshold (default 0.01), and the variances. Same code as
hf_bnvae.evaluation.active_units.
"""

import datasets
import evaluate
import torch

from hf_bnvae.evaluation import active_units


class ActiveUnits(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Burda, Grosse and Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.",
            inputs_description="posterior_means: list of lists of floats, (N, n).",
            features=datasets.Features({"posterior_means": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, posterior_means, threshold=0.01):
        count, variances = active_units(torch.tensor(posterior_means, dtype=torch.float64), threshold)
        return {"active_units": count, "variances": variances.tolist()}
