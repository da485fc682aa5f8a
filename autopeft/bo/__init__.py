"""Multi-objective Bayesian optimisation over the AutoPEFT search space (in progress, issue #4)."""
