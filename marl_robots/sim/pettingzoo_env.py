"""PettingZoo ``ParallelEnv`` adapter over one environment of the ``sim.env`` contract.

For ecosystem users (PettingZoo/Gymnasium tooling, other MARL libraries): agents are named
``robot_<i>``; each one's observation is its row of ``State.obs`` (a float32 ``Box``), its
action the velocity of its control point [m/s] (a ``Box`` within +-v_max), optionally followed
by its class-K gain [1/s] (``tune_gamma=True``, within ``wrappers.GAMMA_BOUNDS``).  Every
command passes the CBF safety filter.  The reward is ``env.total_reward``; ``infos`` carry the
named reward and cost terms.  Episodes end for all robots together: terminated when every
robot is at its goal, truncated after ``episode_length`` steps.

The JAX core stays pure; this adapter holds the current state and a NumPy RNG, as the
PettingZoo API requires.  It runs one jit-compiled step per call (use the JAX env with
``wrappers.Vmap`` for speed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl_robots.sim import wrappers as wr
from marl_robots.sim.env import EnvConfig, NavigationEnv, total_reward


class NavigationParallelEnv(ParallelEnv):
    """``navigation`` as a PettingZoo parallel environment.

    Args:
        config: ``EnvConfig`` of the underlying env.
        episode_length: truncation length [steps].
        tune_gamma: append a per-robot class-K gain to each action.
        render_mode: only ``None`` is supported (use ``marl-robots sim`` for pictures).
    """

    metadata = {"name": "marl_robots_navigation_v0", "render_modes": []}

    def __init__(
        self,
        config: EnvConfig | None = None,
        episode_length: int = 600,
        tune_gamma: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError("render_mode must be None")
        self.render_mode = None
        config = config if config is not None else EnvConfig()
        base = NavigationEnv(config)
        self._env = wr.SafetyFilter(wr.Episode(base, episode_length))
        self._params = base.default_params()
        self._weights = config.cost_weights
        self.tune_gamma = tune_gamma
        self.possible_agents = [f"robot_{i}" for i in range(base.n)]
        self.agents: list[str] = []
        v = float(self._params.robot.v_max)
        lo = [-v] * base.d + ([wr.GAMMA_BOUNDS[0]] if tune_gamma else [])
        hi = [v] * base.d + ([wr.GAMMA_BOUNDS[1]] if tune_gamma else [])
        self._action_space = spaces.Box(np.float32(lo), np.float32(hi), dtype=np.float32)
        self._obs_space = spaces.Box(-np.inf, np.inf, (base.obs_layout.dim,), np.float32)
        self._reset = jax.jit(self._env.reset)
        self._step = jax.jit(self._env.step)
        self._state = None
        self._rng = np.random.default_rng()

    def observation_space(self, agent: str) -> spaces.Box:
        """The same ``Box`` object for every agent."""
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Box:
        return self._action_space

    def _obs(self) -> dict[str, np.ndarray]:
        obs = np.asarray(self._state.obs, np.float32)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        key = jax.random.PRNGKey(int(self._rng.integers(0, 2**31 - 1)))
        self._state = self._reset(key, self._params)
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset()")
        n, d = len(self.possible_agents), self._env.unwrapped.d
        raw = np.zeros((n, self._action_space.shape[0]), np.float32)
        for i, a in enumerate(self.possible_agents):
            if a in actions:
                raw[i] = np.asarray(actions[a], np.float32)
        u = jnp.asarray(raw[:, :d])
        action = {"u": u, "gamma": jnp.asarray(raw[:, d])} if self.tune_gamma else u
        self._state = self._step(self._state, action, self._params)
        s = self._state
        reward = np.asarray(total_reward(s, self._weights))
        truncated = bool(s.info["truncation"])
        terminated = bool(s.done) and not truncated
        terms = {**{f"reward/{k}": v for k, v in s.reward.items()}}
        terms.update({f"cost/{k}": v for k, v in s.cost.items()})
        terms = {k: np.asarray(v) for k, v in terms.items()}
        obs = self._obs()
        agents = self.possible_agents
        rewards = {a: float(reward[i]) for i, a in enumerate(agents)}
        terminations = {a: terminated for a in agents}
        truncations = {a: truncated for a in agents}
        infos = {a: {k: float(v[i]) for k, v in terms.items()} for i, a in enumerate(agents)}
        if terminated or truncated:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None

    def state(self) -> np.ndarray:
        """Global state: every robot's observation, concatenated."""
        return np.asarray(self._state.obs, np.float32).reshape(-1)
