"""Central DP over the replies a round actually has.

Flower's `DifferentialPrivacyClientSideFixedClipping` voids a whole round when any
sampled client fails, and calibrates its noise for the number it sampled. Browsers
close tabs: one lost client would void every DP round it sampled. This wrapper
aggregates the valid replies, adds noise with standard deviation z·C/n for the n
clients it averaged (the sensitivity of a uniform mean of n deltas clipped to C is
C/n, so the effective noise multiplier stays z), and composes that release with the
accountant. A streamed shard record counts as all the clients folded into it. The
deltas are clipped to C by the grid's reply check, not by trusting the clients
(`coordinator.federation.replies`).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import getLogger

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, add_gaussian_noise_inplace, compute_stdv
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from coordinator.federation.aggregation import CLIENTS_KEY, WEIGHT_KEY

log = getLogger(__name__)


class DifferentialPrivacyOverValidReplies(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP, minus the all-or-nothing round."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's train messages, with the clipping norm for honest clients to apply themselves.

        The privacy event is composed when the round is aggregated, sized by the replies it has.
        """
        config[KEY_CLIPPING_NORM] = self.clipping_norm
        return list(self.strategy.configure_train(server_round, arrays, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The noised uniform mean of the valid replies; (None, None) and no privacy spent when there are none."""
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        if len(valid) < len(replies):
            log.info("round %d: aggregating %d of %d replies under DP", server_round, len(valid), len(replies))
        if not valid:
            return None, None
        clients = _clients(valid)
        arrays, metrics = self.strategy.aggregate_train(server_round, valid)
        if arrays is None:
            return None, metrics
        ndarrays = arrays.to_numpy_ndarrays()
        add_gaussian_noise_inplace(ndarrays, compute_stdv(self.noise_multiplier, self.clipping_norm, clients))
        noised = ArrayRecord({k: Array(np.asarray(v)) for k, v in zip(arrays.keys(), ndarrays, strict=True)})
        if self.accountant is not None:
            population = self.accountant.config.population_size
            # Without amplification the sample size is reporting metadata only; ε depends on z and the release count.
            self._compose_release(GaussianPrivacyEvent(self.noise_multiplier, min(clients, population), population))
        return noised, metrics


def _clients(replies: list[Message]) -> int:
    """How many clients the replies average: each is one client's record or a shard's folded mean.

    The noise is calibrated for a uniform mean, so every client must weigh 1: a record's weight
    must equal the number of clients it holds (the grid's `uniform_weights` makes it so).
    """
    total = 0
    for reply in replies:
        metrics = next(iter(reply.content.metric_records.values()))
        weight, count = metrics.get(WEIGHT_KEY), metrics.get(CLIENTS_KEY, 1)
        if not isinstance(count, int) or count < 1 or weight != count:
            raise ValueError("DP aggregation needs a weight of 1 per client (uniform weights)")
        total += count
    return total
