"""Meta re-weighting of training examples: L2RW and RBC/GBC, reproduced."""
