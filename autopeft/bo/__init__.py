"""Multi-objective Bayesian optimisation over the AutoPEFT search space."""
