"""The federation core: runs, rounds and replies, with no transport.

Theory of operation. A `RunLoop` opens a run (or resumes the last unfinished one
from the store) and hands a Flower strategy a `NodeGrid`. The strategy samples node
ids from the grid and sends it one message per node per phase; the grid encodes the
phase's task once, sends the same bytes to every node through `Nodes`, and waits.
Replies arrive on another thread through `NodeGrid.deliver` (a result or the
client's error) or `NodeGrid.node_lost` (the node went away); each is checked by the
pure `check_reply` against the run's `ReplyLimits` (bounded metrics, `num_examples`
up to a cap, deltas clipped to the run's norm bound) and becomes a record the
strategy can aggregate, or an error reply it skips: nothing one reply holds ends the
run. Under DP, `DifferentialPrivacyOverValidReplies` aggregates the valid replies
with noise sized to them, and the accountant's state is stored with every round so
that a resumed run's ε carries on. When a phase ends the grid emits its `PhaseReport`; after each round
the loop evaluates the global model and passes the round's record and checkpoint to
its `RunSink`. `RunControl` pauses between phases and stops at the next one.

Nothing here imports Starlette, uvicorn, websockets or prometheus_client, nor the
`coordinator.server` package: `make lint` checks that with import-linter.
"""
