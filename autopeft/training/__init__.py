"""Training one configuration: backbones, the PEFT model, its Lightning module, train-and-evaluate, the objective."""
