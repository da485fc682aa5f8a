"""Reports: collecting runs, the paper's tables, figure data and plots, cross-task transfer, W&B."""
