"""Model-predictive controllers (MPPI in torch, gradient-based MPC on CasADi) and a baseline."""
