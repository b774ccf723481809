"""Mutual information I_q(x; z) and KL(q(z) || p(z)) as a local `evaluate` module.

Add every evaluation sentence's Gaussian posterior as `mu` and `logvar` (lists of n floats); compute()
returns He et al. (2019)'s estimate over the whole set, in nats, with one z sample per sentence
(`seed` fixes it). Same code as hf_bnvae.evaluation.mutual_information.
"""

import datasets
import evaluate
import torch

from hf_bnvae.evaluation import mutual_information


class MutualInformation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="He, Spokoyny, Neubig and Berg-Kirkpatrick. Lagging Inference Networks and Posterior Collapse "
            "in Variational Autoencoders. ICLR 2019.",
            inputs_description="mu, logvar: lists of lists of floats, (N, n).",
            features=datasets.Features(
                {
                    "mu": datasets.Sequence(datasets.Value("float64")),
                    "logvar": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, mu, logvar, seed=0):
        mi, aggregate_kl = mutual_information(
            torch.tensor(mu, dtype=torch.float64),
            torch.tensor(logvar, dtype=torch.float64),
            torch.Generator().manual_seed(seed),
        )
        return {"mutual_information": mi, "aggregate_kl": aggregate_kl}
