"""MAPPO in JAX: shared-parameter GNN actor and critic, one compiled program per chunk.

``train_chunk(state)`` runs K updates as one XLA program: each update is a ``lax.scan`` over
``rollout_steps`` env steps of ``num_envs`` vmapped environments (auto-reset, episode
truncation, the CBF safety filter in the loop), GAE, then ``epochs`` x ``minibatches`` clipped
PPO steps, all under an outer ``lax.scan`` over the K updates.  The Python loop around it
(``train``) only logs, checkpoints and stops.

* Parameter sharing: one actor and one critic for every robot (samples are robot-steps).
* Critic: the GNN on the robot's own observation; ``centralised_critic=True`` adds the
  team's mean observation (training only - the actor stays decentralised).
* GAE(lambda) with truncation bootstrapped from the value of the final observation.
* Clipped surrogate, value loss, Gaussian entropy bonus, global-norm gradient clipping, Adam.
* Observation normalisation (running mean/variance, stored in the actor params so that the
  saved params are the whole policy) and reward scaling by the running standard deviation of
  the discounted return.
* Deterministic: the same seed gives the same parameters (same device and JAX version).
* ``zero_grad=True`` zeroes every gradient (a switch for the test that learning is real).

Checkpoints are ``flax.serialization`` msgpack files of the whole ``TrainState`` (parameters,
optimiser, normalisers, env states, keys), so resuming gives the same next update as not
stopping.  ``init_seeds`` / ``chunk_seeds`` run several seeds at once (``vmap`` over a leading
seed axis); ``shard`` lays a state out for data parallelism over several devices (env axis split,
parameters replicated), on which ``chunk`` runs unchanged.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from marl_robots.core import defaults
from marl_robots.policies import POLICIES
from marl_robots.policies.gnn import GNN, entity_mask
from marl_robots.sim import wrappers as wr
from marl_robots.sim.env import EnvConfig, NavigationEnv, total_reward
from marl_robots.sim.tasks.navigation import NavigationConfig

LOG_2PI_E = math.log(2.0 * math.pi * math.e)
_tree_norm = optax.tree.norm if hasattr(optax, "tree") else optax.global_norm


@dataclass(frozen=True)
class TrainConfig:
    """Static training configuration (hashable; everything that shapes the program).

    Attributes:
        policy: ``gnn`` or ``cbf-tuning``.
        robots, scenario, robot: the navigation instance; arena_m: its size [m];
            max_obstacles: obstacle budget.  ``scenario`` may name several, comma-separated
            (``antipodal,random``): the envs are split equally between them (``wrappers.Mix``).
        num_envs: parallel environments; rollout_steps: steps per env per update.
        episode_length: truncation length [steps].
        epochs, minibatches: PPO passes over each rollout and minibatches per pass.
        lr: Adam step size; max_grad_norm: global gradient-norm clip.
        discount, gae_lambda, clip, entropy_coef, value_coef: PPO constants.
        centralised_critic: critic also sees the team's mean observation.
        hidden: width of the actor's GNN (and of a ``gnn`` critic).
        critic: ``mlp`` (two 64-wide layers on the flat observation: cheap, training only)
            or ``gnn`` (the actor's architecture).
        residual: ``gnn`` only - scale of the learned correction around go-to-goal
            (0: the network commands the velocity alone).
        team_reward: weight w of the team mean in each robot's reward,
            ``(1 - w) r_i + w mean_j r_j`` (1: fully cooperative reward).
        time_penalty: reward subtracted per step while a robot is away from its goal
            (``EnvConfig.time_penalty``).
        normalise_obs, normalise_reward: running normalisers on/off.
        zero_grad: zero every gradient (learning must then fail; for tests only).
    """

    policy: str = "gnn"
    robots: int = 8
    scenario: str = "corridor"
    robot: str = "unicycle"
    arena_m: tuple[float, float] = defaults.ARENA_M
    max_obstacles: int = 4
    num_envs: int = 64
    rollout_steps: int = 64
    episode_length: int = 900
    epochs: int = 4
    minibatches: int = 4
    lr: float = 3e-4
    max_grad_norm: float = 0.5
    discount: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    centralised_critic: bool = False
    hidden: int = 32
    critic: str = "mlp"
    residual: float = 0.0
    team_reward: float = 0.0
    time_penalty: float = 0.01
    normalise_obs: bool = True
    normalise_reward: bool = True
    zero_grad: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.team_reward <= 1.0:
            raise ValueError(f"team_reward must lie in [0, 1], got {self.team_reward}")
        if not (math.isfinite(self.time_penalty) and self.time_penalty >= 0.0):
            raise ValueError(f"time_penalty must be a finite number >= 0, got {self.time_penalty}")
        if self.residual and self.policy != "gnn":
            raise ValueError("residual applies to the gnn policy only")
        if self.num_envs % len(self.scenarios):
            raise ValueError(
                f"num_envs {self.num_envs} must be divisible by the number of scenarios "
                f"({len(self.scenarios)}: {self.scenario})"
            )

    @property
    def scenarios(self) -> tuple[str, ...]:
        """The training scenarios (``scenario`` split at commas)."""
        return tuple(s.strip() for s in self.scenario.split(",") if s.strip())

    def env_config(self, scenario: str | None = None) -> EnvConfig:
        """The ``EnvConfig`` of the training instance in ``scenario`` (default: the first)."""
        task = NavigationConfig(
            robots=self.robots,
            scenario=scenario or self.scenarios[0],
            robot=self.robot,
            arena_m=tuple(self.arena_m),
            max_obstacles=self.max_obstacles,
        )
        return EnvConfig(task=task, time_penalty=self.time_penalty)

    def to_json(self) -> dict:
        """A JSON-able dict, as it reads back from JSON (``from_json`` inverts it)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["arena_m"] = tuple(d["arena_m"])
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**d)


class CriticMLP(nn.Module):
    """Value MLP on the flat (normalised) observation [..., obs_dim] (+ ``extra``) -> [..., 1].

    The critic is used in training only, so it need not be permutation-invariant; an MLP costs
    a fraction of the attention GNN per sample.
    """

    hidden: int = 64

    @nn.compact
    def __call__(
        self, obs: jax.Array, mask: jax.Array | None = None, extra: jax.Array | None = None
    ) -> jax.Array:
        """``mask`` (the GNN critic's entity mask) is not used: the flags are in ``obs``."""
        del mask
        x = obs if extra is None else jnp.concatenate([obs, extra], -1)
        x = nn.tanh(nn.Dense(self.hidden)(x))
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)


class RunningStats(NamedTuple):
    """Running mean and variance (parallel Welford) over a feature axis."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @staticmethod
    def create(shape) -> RunningStats:
        return RunningStats(jnp.zeros(shape), jnp.ones(shape), jnp.float32(1e-4))

    def update(self, x: jax.Array) -> RunningStats:
        """Fold in samples x [..., *shape]."""
        axes = tuple(range(x.ndim - self.mean.ndim))
        b_mean, b_var = jnp.mean(x, axes), jnp.var(x, axes)
        b_count = jnp.float32(math.prod(x.shape[: len(axes)]))
        total = self.count + b_count
        delta = b_mean - self.mean
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        return RunningStats(mean, m2 / total, total)


class TrainState(NamedTuple):
    """Everything the training loop carries (a pytree; checkpointed whole)."""

    actor: dict
    critic: dict
    opt_state: object
    obs_stats: RunningStats
    ret_stats: RunningStats
    returns: jax.Array
    env_state: object
    key: jax.Array
    update: jax.Array


class Trainer:
    """MAPPO for one ``TrainConfig``: builds the env stack, the policy and the programs."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = c = config
        bases = [NavigationEnv(c.env_config(sc)) for sc in c.scenarios]
        self.base = base = bases[0]
        size = c.num_envs // len(bases)
        stacks = [
            wr.AutoReset(wr.SafetyFilter(wr.Vmap(wr.Episode(b, c.episode_length), size)))
            for b in bases
        ]
        # Several scenarios: equal shares of the envs side by side on the env axis.
        self.env = stacks[0] if len(stacks) == 1 else wr.Mix(stacks, [size] * len(stacks))
        self.env_params = base.default_params()
        self.policy = POLICIES.get(c.policy)(base, self.env_params, **policy_kwargs(c))
        if not getattr(self.policy, "learned", False):
            raise ValueError(f"policy {c.policy!r} has no parameters to train")
        if c.critic == "gnn":
            self.critic_net = GNN(base.obs_layout, 1, hidden=c.hidden, out_scale=1.0)
        elif c.critic == "mlp":
            self.critic_net = CriticMLP()
        else:
            raise ValueError(f"critic must be 'mlp' or 'gnn', got {c.critic!r}")
        self.optimiser = optax.chain(
            optax.clip_by_global_norm(c.max_grad_norm), optax.adam(c.lr, eps=1e-5)
        )
        batch = c.num_envs * c.rollout_steps
        if batch % c.minibatches:
            raise ValueError("num_envs * rollout_steps must be divisible by minibatches")

    # -- networks -------------------------------------------------------------------------
    def _critic_extra(self, obs_n):
        if not self.config.centralised_critic:
            return None
        return jnp.broadcast_to(jnp.mean(obs_n, axis=-2, keepdims=True), obs_n.shape)

    def value(self, critic, actor, obs):
        """V [..., n] of raw observations [..., n, obs_dim]."""
        obs_n = self.policy.normalise(actor, obs)
        mask = entity_mask(self.base.obs_layout, obs)
        return self.critic_net.apply(critic, obs_n, mask, self._critic_extra(obs_n))[..., 0]

    @staticmethod
    def log_prob(raw, mean, log_std):
        z = (raw - mean) * jnp.exp(-log_std)
        return jnp.sum(-0.5 * z * z - log_std - 0.5 * math.log(2.0 * math.pi), axis=-1)

    # -- state ----------------------------------------------------------------------------
    def init(self, seed: int) -> TrainState:
        """Fresh training state for ``seed``."""
        key = jax.random.PRNGKey(seed)
        key, k_actor, k_critic, k_env = jax.random.split(key, 4)
        actor = self.policy.init(k_actor)
        lay = self.base.obs_layout
        obs = jnp.zeros((1, self.base.n, lay.dim))
        critic = self.critic_net.init(
            k_critic, obs, entity_mask(lay, obs), self._critic_extra(obs)
        )
        trainable = {"actor": {"net": actor["net"], "log_std": actor["log_std"]}, "critic": critic}
        env_state = self.env.reset(k_env, self.env_params)
        return TrainState(
            actor=actor,
            critic=critic,
            opt_state=self.optimiser.init(trainable),
            obs_stats=RunningStats.create((lay.dim,)),
            ret_stats=RunningStats.create(()),
            returns=jnp.zeros((self.config.num_envs, self.base.n)),
            env_state=env_state,
            key=key,
            update=jnp.int32(0),
        )

    # -- one update -----------------------------------------------------------------------
    def _rollout(self, ts: TrainState):
        c, env, params = self.config, self.env, self.env_params

        def step(carry, _):
            env_state, key, returns, ret_stats = carry
            obs = env_state.obs
            mean, log_std = self.policy.distribution(ts.actor, obs)
            key, k = jax.random.split(key)
            raw = mean + jnp.exp(log_std) * jax.random.normal(k, mean.shape)
            logp = self.log_prob(raw, mean, log_std)
            v = self.value(ts.critic, ts.actor, obs)
            nxt = env.step(env_state, self.policy.to_action(raw, obs), params)
            reward = total_reward(nxt, self.env.config.cost_weights)
            if c.team_reward:
                team = jnp.mean(reward, axis=-1, keepdims=True)
                reward = (1.0 - c.team_reward) * reward + c.team_reward * team
            done = nxt.done
            trunc = nxt.info["truncation"]
            # The final observation's value only matters where an episode was truncated.
            v_final = jax.lax.cond(
                jnp.any(trunc),
                lambda o: self.value(ts.critic, ts.actor, o),
                lambda o: jnp.zeros(o.shape[:-1], jnp.float32),
                nxt.info["final_obs"],
            )
            returns = returns * c.discount + reward
            ret_stats = ret_stats.update(returns)
            returns = jnp.where(done[:, None], 0.0, returns)
            scale = jnp.sqrt(ret_stats.var + 1e-8) if c.normalise_reward else 1.0
            r = reward / scale
            log = {
                "reward": jnp.mean(reward),
                "episodes": jnp.sum(done),
                "success": jnp.sum(jnp.where(done, nxt.metrics["success"], 0.0)),
                "collisions": jnp.sum(nxt.cost["collision"]),
                "interventions": jnp.mean(nxt.cost["intervention"]),
            }
            tr = (obs, raw, logp, v, r, done, trunc, v_final)
            return (nxt, key, returns, ret_stats), (tr, log)

        carry = (ts.env_state, ts.key, ts.returns, ts.ret_stats)
        carry, (traj, logs) = jax.lax.scan(step, carry, None, length=c.rollout_steps)
        return carry, traj, logs

    def _gae(self, traj, last_v):
        c = self.config
        obs, raw, logp, v, r, done, trunc, v_final = traj
        # Truncated episodes are bootstrapped with the value of their final observation.
        r = r + c.discount * jnp.where(trunc[..., None], v_final, 0.0)
        d = done[..., None].astype(jnp.float32)

        def back(carry, x):
            adv_next, v_next = carry
            r_t, v_t, d_t = x
            delta = r_t + c.discount * v_next * (1.0 - d_t) - v_t
            adv = delta + c.discount * c.gae_lambda * (1.0 - d_t) * adv_next
            return (adv, v_t), adv

        _, adv = jax.lax.scan(back, (jnp.zeros_like(last_v), last_v), (r, v, d), reverse=True)
        return adv, adv + v

    def _loss(self, trainable, actor_rest, batch):
        c = self.config
        obs, raw, logp_old, v_old, adv, target = batch
        actor = {**actor_rest, **trainable["actor"]}
        mean, log_std = self.policy.distribution(actor, obs)
        logp = self.log_prob(raw, mean, log_std)
        ratio = jnp.exp(logp - logp_old)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - c.clip, 1 + c.clip) * adv))
        v = self.value(trainable["critic"], actor, obs)
        v_clip = v_old + jnp.clip(v - v_old, -c.clip, c.clip)
        vf = 0.5 * jnp.mean(jnp.maximum((v - target) ** 2, (v_clip - target) ** 2))
        entropy = jnp.sum(log_std + 0.5 * LOG_2PI_E)
        loss = pg + c.value_coef * vf - c.entropy_coef * entropy
        return loss, {"policy_loss": pg, "value_loss": vf, "entropy": entropy}

    def update(self, ts: TrainState, _=None):
        """One MAPPO update (rollout, GAE, PPO epochs); returns ``(state, log dict)``."""
        c = self.config
        (env_state, key, returns, ret_stats), traj, logs = self._rollout(ts)
        last_v = self.value(ts.critic, ts.actor, env_state.obs)
        adv, target = self._gae(traj, last_v)
        obs, raw, logp, v = traj[:4]
        data = (obs, raw, logp, v, adv, target)
        # Samples are team-steps [T * E, n, ...] so a centralised critic sees whole teams.
        data = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
        actor_rest = {k: ts.actor[k] for k in ("obs_mean", "obs_std")}
        trainable = {
            "actor": {"net": ts.actor["net"], "log_std": ts.actor["log_std"]},
            "critic": ts.critic,
        }
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)

        def epoch(carry, _):
            trainable, opt_state, key = carry
            key, k = jax.random.split(key)
            size = data[0].shape[0]
            perm = jax.random.permutation(k, size)
            mbs = jax.tree_util.tree_map(
                lambda x: x[perm].reshape((c.minibatches, -1) + x.shape[1:]), data
            )

            def minibatch(carry, mb):
                trainable, opt_state = carry
                (_, aux), grads = grad_fn(trainable, actor_rest, mb)
                if c.zero_grad:
                    grads = jax.tree_util.tree_map(jnp.zeros_like, grads)
                aux["grad_norm"] = _tree_norm(grads)
                updates, opt_state = self.optimiser.update(grads, opt_state, trainable)
                return (optax.apply_updates(trainable, updates), opt_state), aux

            (trainable, opt_state), aux = jax.lax.scan(minibatch, (trainable, opt_state), mbs)
            return (trainable, opt_state, key), aux

        (trainable, opt_state, key), aux = jax.lax.scan(
            epoch, (trainable, ts.opt_state, key), None, length=c.epochs
        )
        obs_stats = ts.obs_stats.update(obs.reshape(-1, obs.shape[-1]))
        if c.normalise_obs:
            actor_rest = {
                "obs_mean": obs_stats.mean,
                "obs_std": jnp.sqrt(obs_stats.var + 1e-8),
            }
        actor = {**actor_rest, **trainable["actor"]}
        ts = TrainState(
            actor,
            trainable["critic"],
            opt_state,
            obs_stats,
            ret_stats,
            returns,
            env_state,
            key,
            ts.update + 1,
        )
        episodes = jnp.sum(logs["episodes"])
        log = {
            "reward": jnp.mean(logs["reward"]),
            "episodes": episodes,
            "success": jnp.sum(logs["success"]) / jnp.maximum(episodes, 1),
            "collisions": jnp.sum(logs["collisions"]),
            "interventions": jnp.mean(logs["interventions"]),
            **{k: jnp.mean(v) for k, v in aux.items()},
        }
        return ts, log

    def chunk(self, updates: int):
        """A jit-compiled ``state -> (state, logs [updates])`` running ``updates`` updates.

        Runs where its input lives: on one device, or data-parallel over several when the
        state comes from ``shard`` (XLA partitions the program; the losses are means over the
        whole batch, so the gradients are all-reduced and the result is one device's).
        """
        return jax.jit(lambda ts: jax.lax.scan(self.update, ts, None, length=updates))

    # -- several seeds, several devices ---------------------------------------------------
    def init_seeds(self, seeds) -> TrainState:
        """Training states of several seeds stacked on a leading axis [S, ...] (vmapped init)."""
        return jax.vmap(self.init)(jnp.asarray(seeds, jnp.int32))

    def chunk_seeds(self, updates: int):
        """``chunk`` vmapped over the leading seed axis: S independent runs in one program."""
        run = lambda ts: jax.lax.scan(self.update, ts, None, length=updates)  # noqa: E731
        return jax.jit(jax.vmap(run))

    def shard(self, ts: TrainState, devices=None, seeds: bool = False) -> TrainState:
        """``ts`` laid out for data parallelism over ``devices`` (default: all).

        Leaves with an env axis (env states, discounted returns) are split over the devices
        along it; parameters, optimiser and normaliser states are replicated.  ``seeds``: ``ts``
        comes from ``init_seeds`` (env axis second, after the seed axis; run it with
        ``chunk_seeds``).  ``num_envs`` must be divisible by the device count.  Multi-host:
        start every process with ``jax.distributed.initialize()`` and pass ``jax.devices()``
        (all hosts' devices).
        """
        devices = list(devices if devices is not None else jax.devices())
        if self.config.num_envs % len(devices):
            raise ValueError(f"num_envs {self.config.num_envs} not divisible by {len(devices)}")
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        axis = 1 if seeds else 0
        spec = jax.sharding.PartitionSpec(*([None] * axis), "data")
        split = jax.sharding.NamedSharding(mesh, spec)
        whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

        def put(x, batched: bool):
            on_env_axis = batched and x.ndim > axis and x.shape[axis] == self.config.num_envs
            return jax.device_put(x, split if on_env_axis else whole)

        env_part = {"env_state": ts.env_state, "returns": ts.returns}
        rest = ts._replace(env_state=None, returns=None)
        env_part = jax.tree_util.tree_map(lambda x: put(x, True), env_part)
        rest = jax.tree_util.tree_map(lambda x: put(x, False), rest)
        return rest._replace(**env_part)

    def compiled(self, updates: int, example: TrainState):
        """``chunk(updates)`` compiled ahead of time for states like ``example`` (cached)."""
        cache = self.__dict__.setdefault("_compiled", {})
        if updates not in cache:
            cache[updates] = self.chunk(updates).lower(example).compile()
        return cache[updates]


def policy_kwargs(config: TrainConfig) -> dict:
    """Constructor options of the trained policy (saved in the bundle's ``policy.json``)."""
    kw = {"hidden": config.hidden}
    if config.policy == "gnn":
        kw["residual"] = config.residual
    return kw


@functools.lru_cache(maxsize=4)
def trainer_for(config: TrainConfig) -> Trainer:
    """The ``Trainer`` of ``config``, shared so that its compiled programs are reused."""
    return Trainer(config)


# -- files ------------------------------------------------------------------------------------
def save_checkpoint(path: Path, ts: TrainState, config: TrainConfig, extra: dict) -> None:
    """Write ``ts`` (msgpack) and its metadata (JSON) atomically into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.to_bytes(jax.device_get(ts))
    tmp = path / "state.msgpack.tmp"
    tmp.write_bytes(blob)
    tmp.replace(path / "state.msgpack")
    meta = {"config": config.to_json(), **extra}
    (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_checkpoint(path: Path, template: TrainState) -> tuple[TrainState, dict]:
    """Restore a ``TrainState`` saved by ``save_checkpoint`` into ``template``'s structure."""
    ts = flax.serialization.from_bytes(template, (path / "state.msgpack").read_bytes())
    ts = jax.tree_util.tree_map(jnp.asarray, ts)
    return ts, json.loads((path / "meta.json").read_text())


def save_policy(path: Path, policy_name: str, actor: dict, config: TrainConfig, extra: dict):
    """Write a policy bundle: ``params.msgpack`` and ``policy.json`` (name, configs, metrics)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.msgpack").write_bytes(flax.serialization.to_bytes(jax.device_get(actor)))
    meta = {
        "policy": policy_name,
        "policy_kwargs": policy_kwargs(config),
        "train_config": config.to_json(),
        **extra,
    }
    (path / "policy.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_policy(path: Path, env, env_params=None):
    """``(policy, params, meta)`` of a bundle written by ``save_policy``, for ``env``."""
    meta = json.loads((path / "policy.json").read_text())
    policy = POLICIES.get(meta["policy"])(env, env_params, **meta.get("policy_kwargs", {}))
    template = policy.init(jax.random.PRNGKey(0))
    params = flax.serialization.from_bytes(template, (path / "params.msgpack").read_bytes())
    return policy, jax.tree_util.tree_map(jnp.asarray, params), meta
