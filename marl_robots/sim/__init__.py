"""Pure, jit-able simulation: robot models, tasks, scenarios and closed-loop rollouts."""
