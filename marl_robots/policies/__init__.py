"""Policies behind one interface, looked up by name through ``POLICIES``.

Every entry is a class constructed from an env (``policy = POLICIES.get(name)(env)``, static
config only) with

* ``init(key) -> params`` - a params pytree (constants for hand-written policies),
* ``apply(params, obs) -> action`` - obs [..., n, obs_dim] to the env action, pure and
  decentralised: robot i's action depends only on ``obs[..., i, :]``.

Learned policies add ``distribution(params, obs) -> (mean, log_std)`` over an unbounded raw
action and ``to_action(raw, obs)``, the bounded map from a raw action to the env action (so no
network output can leave the filter's contract).  Actions are control-point velocities
[..., n, d] or ``{"u": ..., "gamma": [..., n]}`` for the ``SafetyFilter`` wrapper.

* ``go-to-goal`` - the cooperative go-to-goal of ``controllers.nominal`` (parameter-free),
* ``gnn`` - attention GNN outputting the nominal velocity command,
* ``cbf-tuning`` - attention GNN outputting each robot's class-K gain around go-to-goal,
* ``corridor-yield`` - hand-written keep-right-and-yield rule for the corridor (the teacher that
  ``policies.imitation`` distils into ``gnn``; a baseline, not a learned policy).
"""

from marl_robots.core.registry import Registry

POLICIES = Registry("policy")
POLICIES.register("go-to-goal", "marl_robots.policies.heuristic:GoToGoal")
POLICIES.register("gnn", "marl_robots.policies.gnn:GNNPolicy")
POLICIES.register("cbf-tuning", "marl_robots.policies.gnn:CBFTuningPolicy")
POLICIES.register("corridor-yield", "marl_robots.policies.heuristic:CorridorYield")
